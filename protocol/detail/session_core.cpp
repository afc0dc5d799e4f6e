// The yamux state machine, flow control and frame scheduler; see session_core.hpp.
#include "session_core.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include "../errors.hpp"
#include "../stream.hpp"

namespace socketmaster::yamux::detail {

namespace {
// Headers gathered into one write; batch_headers_ is reserved to this so pointers into it stay valid.
constexpr std::size_t max_batch_frames = 256;
// Buffers in one gather write (Asio hands at most 64 to one writev).
constexpr std::size_t max_batch_buffers = 64;
// Session-level frames (ping replies, go-away) that may wait for the writer; a peer that floods pings
// without reading our replies is cut off here instead of growing our memory.
constexpr std::size_t max_session_frames = 4096;

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
}  // namespace

session_core::session_core(asio::any_io_executor ex, role r, const config& cfg)
    : executor_(std::move(ex)),
      role_(r),
      config_(cfg),
      next_id_(r == role::client ? 1 : 2),
      wake_(executor_),
      housekeeping_timer_(executor_) {
  batch_headers_.reserve(max_batch_frames);
}

session_core::~session_core() {
  // Normally close() has completed every operation; this only runs for a session that was never
  // started or whose executor stopped, and must not leave handlers (and their work guards) behind.
  for (auto* op : inline_completions_) op->post();
  for (auto* op : accept_ops_) op->complete(make_error_code(errc::session_closed), stream{});
  for (auto& [id, p] : pings_)
    if (p.op) p.op->complete(make_error_code(errc::session_closed), {});
  for (auto* op : close_ops_) op->complete(close_reason_);
  for (auto* op : idle_ops_) op->complete(close_reason_);
  for (auto* op : orphan_writes_) op->complete(asio::error::operation_aborted, 0);
  for (auto& [id, s] : streams_) {
    if (s->read_op) s->read_op->complete(make_error_code(errc::session_closed), 0);
    if (s->write_op) s->write_op->complete(make_error_code(errc::session_closed), 0);
  }
}

void session_core::use_shared_ring(std::shared_ptr<shared_ring> ring, bool sending) {
  ring_ = std::move(ring);
  ring_sending_ = sending;
  if (ring_ && !sending) reader_.accept_ring_frames();
}

void session_core::start() {
  auto self = shared_from_this();
  asio::co_spawn(executor_, [self]() -> asio::awaitable<void> { co_await self->housekeeping(); },
                 [self](std::exception_ptr e) {
                   if (e) self->close(make_error_code(errc::protocol_error));
                 });
  start_io();
  // Measure the round trip early: receive-window auto-tuning needs it.
  const std::uint32_t id = next_ping_++;
  pings_[id] = {clock::now(), nullptr};
  queue_session_frame({protocol_version, frame_type::ping, flags::syn, 0, id});
}

// ---------------------------------------------------------------------------------------------
// Streams

stream_state* session_core::find(std::uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

stream_state& session_core::create_stream(std::uint32_t id) {
  stream_state* s;
  if (!spare_streams_.empty()) {
    auto node = std::move(spare_streams_.back());
    spare_streams_.pop_back();
    node.key() = id;
    s = node.mapped().get();
    streams_.insert(std::move(node));
  } else {
    s = streams_.emplace(id, std::make_unique<stream_state>()).first->second.get();
  }
  s->id = id;
  s->recv_window = config_.initial_stream_window;
  s->recv_window_size = config_.initial_stream_window;
  s->last_update = clock::now();
  return *s;
}

void session_core::erase_stream(std::uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  window_growth_ -= it->second->recv_window_size - config_.initial_stream_window;
  auto node = streams_.extract(it);
  opened_stream_answered(*node.mapped());  // an id that leaves unanswered must not hold a slot forever
  if (streams_.empty() && !idle_ops_.empty()) {
    auto idle = std::move(idle_ops_);
    idle_ops_.clear();
    for (auto* op : idle) op->complete(closed_ ? close_reason_ : std::error_code{});
  }
  if (spare_streams_.size() < max_spare_streams) {
    *node.mapped() = stream_state{};
    spare_streams_.push_back(std::move(node));
  }
}

stream_state* session_core::open(std::error_code& ec) {
  ec.clear();
  if (closed_ || failing_) {
    ec = closed_ ? close_reason_ : make_error_code(errc::session_closed);
    return nullptr;
  }
  if (remote_go_away_) {
    ec = errc::remote_go_away;
    return nullptr;
  }
  if (streams_.size() >= config_.max_streams || next_id_ >= std::numeric_limits<std::uint32_t>::max() - 1) {
    ec = errc::streams_exhausted;
    return nullptr;
  }
  const std::uint32_t id = next_id_;
  next_id_ += 2;
  auto& s = create_stream(id);
  s.pending_flags |= flags::syn;
  s.pending_delta = config_.initial_stream_window - initial_stream_window;
  // Like hashicorp/yamux, keep at most max_unacknowledged_opens SYNs unanswered: a peer that ACKs
  // when its application accepts is then never asked to queue more than its backlog. Beyond the
  // limit the stream is usable at once, its SYN (and data) simply wait for an ACK to come back.
  if (unacknowledged_opens_ < config_.max_unacknowledged_opens) {
    ++unacknowledged_opens_;
    s.awaiting_ack = true;
    s.syn_queued = clock::now();
    queue_control(s);
  } else {
    s.syn_deferred = true;
    deferred_opens_.push_back(id);
  }
  return &s;
}

void session_core::opened_stream_answered(stream_state& s) {
  if (!s.awaiting_ack) return;
  s.awaiting_ack = false;
  --unacknowledged_opens_;
  while (unacknowledged_opens_ < config_.max_unacknowledged_opens && !deferred_opens_.empty()) {
    stream_state* next = find(deferred_opens_.front());
    deferred_opens_.pop_front();
    if (!next || !next->syn_deferred) continue;
    next->syn_deferred = false;
    if (next->reset) continue;  // reset before its SYN left: nothing to announce
    next->awaiting_ack = true;
    next->syn_queued = clock::now();
    ++unacknowledged_opens_;
    queue_control(*next);
    queue_data(*next);
  }
}

void session_core::add_accept_op(accept_op* op) {
  if (closed_) {
    op->complete(close_reason_, stream{});
    return;
  }
  if (!backlog_.empty()) {
    stream_state* s = backlog_.front();
    backlog_.pop_front();
    hand_over(*s, op);
    return;
  }
  accept_ops_.push_back(op);
}

void session_core::add_ping_op(ping_op* op) {
  if (closed_ || failing_) {
    op->complete(closed_ ? close_reason_ : make_error_code(errc::session_closed), {});
    return;
  }
  const std::uint32_t id = next_ping_++;
  pings_[id] = {clock::now(), op};
  queue_session_frame({protocol_version, frame_type::ping, flags::syn, 0, id});
}

void session_core::add_close_op(pending_op<std::error_code>* op) {
  if (closed_) {
    op->complete(close_reason_);
    return;
  }
  close_ops_.push_back(op);
}

void session_core::add_idle_op(pending_op<std::error_code>* op) {
  if (closed_) {
    op->complete(close_reason_);
    return;
  }
  if (streams_.empty()) {
    op->complete({});
    return;
  }
  idle_ops_.push_back(op);
}

void session_core::go_away(go_away_code code) {
  if (closed_ || failing_) return;
  if (code != go_away_code::normal) {
    fail(make_error_code(errc::session_closed), code);
    return;
  }
  if (local_go_away_) return;
  local_go_away_ = true;
  queue_session_frame({protocol_version, frame_type::go_away, 0, 0, static_cast<std::uint32_t>(code)});
  go_away_ping_ = next_ping_++;
  pings_[go_away_ping_] = {clock::now(), nullptr};
  queue_session_frame({protocol_version, frame_type::ping, flags::syn, 0, go_away_ping_});
}

void session_core::close(std::error_code reason) {
  if (closed_) return;
  closed_ = true;
  close_reason_ = reason ? reason : make_error_code(errc::session_closed);
  failing_ = false;
  wake_.cancel();
  housekeeping_timer_.cancel();
  close_transport();

  auto accepts = std::move(accept_ops_);
  accept_ops_.clear();
  for (auto* op : accepts) op->complete(close_reason_, stream{});
  // Streams the peer opened but nobody accepted have no owner but us.
  for (auto* s : backlog_) erase_stream(s->id);
  backlog_.clear();
  std::vector<std::uint32_t> released;
  for (auto& [id, s] : streams_) {
    s->pending_flags = 0;
    s->pending_delta = 0;
    if (s->released) {
      released.push_back(id);
      continue;
    }
    fail_stream_ops(*s, close_reason_);
    deliver_to_reader(*s);
  }
  for (auto id : released) {
    auto* s = find(id);
    if (s->write_op) {  // in flight: completed by batch_done
      orphan_writes_.push_back(s->write_op);
      s->write_op = nullptr;
    }
    erase_stream(id);
  }
  auto pings = std::move(pings_);
  pings_.clear();
  for (auto& [id, p] : pings)
    if (p.op) p.op->complete(close_reason_, {});
  control_queue_.clear();
  data_queue_.clear();
  session_frames_.clear();
  auto closes = std::move(close_ops_);
  close_ops_.clear();
  for (auto* op : closes) op->complete(close_reason_);
  auto idle = std::move(idle_ops_);
  idle_ops_.clear();
  for (auto* op : idle) op->complete(close_reason_);
}

void session_core::fail(std::error_code ec, go_away_code code) {
  if (closed_ || failing_) return;
  failing_ = true;
  failing_reason_ = ec;
  failing_since_ = clock::now();
  local_go_away_ = true;
  session_frames_.push_back({protocol_version, frame_type::go_away, 0, 0, static_cast<std::uint32_t>(code)});
  notify_writer();
}

// ---------------------------------------------------------------------------------------------
// Stream operations (from handles)

void session_core::read_some(stream_state& s, io_op* op) {
  if (s.read_op) {
    op->complete(asio::error::already_started, 0);
    return;
  }
  s.read_op = op;
  std::size_t capacity = 0;
  for (std::size_t i = 0; i < s.read_buf_count; ++i) capacity += s.read_bufs[i].size();
  if (capacity == 0) {
    complete_read(s, {}, 0);
    return;
  }
  deliver_to_reader(s);
}

std::size_t session_core::read_buffered(stream_state& s, asio::mutable_buffer b) {
  if (s.read_op || s.recv_buf.empty()) return 0;
  const std::size_t n = s.recv_buf.read({static_cast<std::byte*>(b.data()), b.size()});
  consumed(s, n);
  return n;
}

std::size_t session_core::consume_buffered(stream_state& s, std::size_t n) {
  if (s.read_op) return 0;
  n = std::min(n, s.recv_buf.size());
  s.recv_buf.drop(n);
  if (n > 0) consumed(s, n);
  return n;
}

void session_core::write_some(stream_state& s, io_op* op, bool last) {
  if (s.write_op) {
    op->complete(asio::error::already_started, 0);
    return;
  }
  s.write_op = op;
  std::error_code ec;
  if (s.reset)
    ec = errc::stream_reset;
  else if (s.fin_sent || (s.pending_flags & flags::fin) || s.fin_after_write)
    ec = errc::stream_closed;
  else if (closed_ || failing_)
    ec = closed_ ? close_reason_ : make_error_code(errc::session_closed);
  if (ec || s.write_total == 0) {
    complete_write(s, ec, 0);
    if (!ec && last) shutdown_send(s);
    return;
  }
  s.fin_with_write = last;
  queue_data(s, false);
  send_now_or_wake();
}

void session_core::send_now_or_wake() {
  // At low load, what an application's call queued goes out at once, in the turn that made it
  // (write_directly): waking the writer coroutine costs a turn of the event loop, an epoll_wait of
  // its own, on the path of every request (issue 6: latency at a fixed rate). Under load the writer
  // gathers instead: within direct_write_gap of a direct write, frames wait for the writer, so that
  // one system call carries the frames of many streams. Only from the handles' calls, as their
  // last step: the batch's bookkeeping (finish_if_done) may free a released stream. "Parked": the
  // writer waits for work (perhaps woken already, by an open, its turn still to come); no batch is
  // under way.
  const auto now = clock::now();
  if (closed_ || !writer_parked_ || writing_ || writing_directly_ || now - last_direct_write_ < direct_write_gap) {
    notify_writer();
    return;
  }
  last_direct_write_ = now;
  writing_directly_ = true;
  const bool done = write_directly();
  writing_directly_ = false;
  if (!done) notify_writer();
}

void session_core::shutdown_send(stream_state& s) {
  if (s.reset || s.fin_sent || (s.pending_flags & flags::fin) || s.fin_after_write || closed_) return;
  if (s.write_op) {
    if (s.write_in_flight) {
      s.fin_after_write = true;
      return;
    }
    complete_write(s, asio::error::operation_aborted, 0);
  }
  s.pending_flags |= flags::fin;
  queue_control(s, false);
  send_now_or_wake();
}

void session_core::reset(stream_state& s) {
  if (s.reset) return;
  s.reset = true;
  s.recv_buf.clear();
  fail_stream_ops(s, make_error_code(errc::stream_reset));
  if (closed_) return;
  if (s.syn_deferred || (s.pending_flags & flags::syn)) {
    // The peer never heard of it (its SYN has not left): an RST alone would name an id the peer
    // never saw, which fails the session at a strict peer (ours). Nothing goes out, and a slot
    // among the unacknowledged opens it held goes to the next deferred open.
    s.pending_flags = 0;
    s.pending_delta = 0;
    opened_stream_answered(s);
    return;
  }
  s.pending_flags = flags::rst;
  s.pending_delta = 0;
  queue_control(s);
}

void session_core::cancel(stream_state& s) {
  if (s.read_op) complete_read(s, asio::error::operation_aborted, 0);
  if (s.write_op) {
    if (s.write_in_flight)
      s.write_cancelled = true;
    else
      complete_write(s, asio::error::operation_aborted, 0);
  }
}

void session_core::cancel_op(void* op, std::uint32_t key) {
  if (key != 0) {
    if (auto* s = find(key)) {
      if (s->read_op == op) complete_read(*s, asio::error::operation_aborted, 0);
      if (s->write_op == op) {
        if (s->write_in_flight)
          s->write_cancelled = true;
        else
          complete_write(*s, asio::error::operation_aborted, 0);
      }
    }
    return;
  }
  if (auto it = std::find(accept_ops_.begin(), accept_ops_.end(), op); it != accept_ops_.end()) {
    auto* a = *it;
    accept_ops_.erase(it);
    a->complete(asio::error::operation_aborted, stream{});
    return;
  }
  for (auto it = pings_.begin(); it != pings_.end(); ++it) {
    if (it->second.op == op) {
      auto* p = it->second.op;
      it->second.op = nullptr;  // a late reply is still used for the RTT estimate
      p->complete(asio::error::operation_aborted, {});
      return;
    }
  }
  for (auto* ops : {&close_ops_, &idle_ops_}) {
    auto it = std::find(ops->begin(), ops->end(), op);
    if (it != ops->end()) {
      auto* c = *it;
      ops->erase(it);
      c->complete(asio::error::operation_aborted);
      return;
    }
  }
}

void session_core::release(stream_state& s) {
  s.released = true;
  s.sink = nullptr;
  if (s.read_op) complete_read(s, asio::error::operation_aborted, 0);
  if (s.write_op) {
    if (s.write_in_flight) {
      orphan_writes_.push_back(s.write_op);
      s.write_op = nullptr;
      s.write_in_flight = false;
    } else {
      complete_write(s, asio::error::operation_aborted, 0);
    }
  }
  if (closed_ || s.syn_deferred) {  // a deferred stream was never announced: nothing to tell the peer
    erase_stream(s.id);
    return;
  }
  bool fin_queued = false;
  if (!s.fully_closed()) {
    // Graceful close, like a TCP socket's: our FIN follows whatever was written; what the peer still
    // sends is credited back and dropped until its FIN or RST frees the id.
    if (!s.fin_sent && !(s.pending_flags & flags::fin)) {
      s.pending_flags |= flags::fin;
      queue_control(s, false);
      fin_queued = true;
    }
    const std::size_t unread = s.recv_buf.size();
    s.recv_buf.clear();
    if (unread) consumed(s, unread);
  }
  s.released_at = clock::now();  // see config::stream_close_timeout (housekeeping)
  finish_if_done(s);
  if (fin_queued) send_now_or_wake();  // last: `s` may be gone after it
}

void session_core::finish_if_done(stream_state& s) {
  if (s.released && s.fully_closed() && s.pending_flags == 0 && !s.in_control_queue) erase_stream(s.id);
}

void session_core::complete_read(stream_state& s, std::error_code ec, std::size_t n) {
  // A read that already holds payload completes with it; an error shows on the next read.
  if (s.read_filled > 0) {
    complete_filled_read(s);
    return;
  }
  auto* op = s.read_op;
  s.read_op = nullptr;
  s.read_buf_count = 0;
  // The reader has bytes to deal with first: no sink may overtake them, however late its handler
  // runs (a posted completion), until it offers again (payload_sink.hpp).
  if (n > 0) s.sink = nullptr;
  deliver(op->finish(ec, n));
}

// Copies payload into the pending read's buffers after what it already holds; returns how much fit.
std::size_t session_core::fill_read(stream_state& s, std::span<const std::byte> data) {
  std::size_t skip = s.read_filled;
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.read_buf_count && n < data.size(); ++i) {
    const auto& b = s.read_bufs[i];
    if (skip >= b.size()) {
      skip -= b.size();
      continue;
    }
    const std::size_t k = std::min(b.size() - skip, data.size() - n);
    std::memcpy(static_cast<std::byte*>(b.data()) + skip, data.data() + n, k);
    n += k;
    skip = 0;
  }
  if (n > 0 && s.read_filled == 0) filled_reads_.push_back(s.id);
  s.read_filled += n;
  return n;
}

void session_core::complete_filled_read(stream_state& s) {
  const std::size_t n = std::exchange(s.read_filled, 0);
  complete_read(s, {}, n);
  consumed(s, n);
}

void session_core::complete_write(stream_state& s, std::error_code ec, std::size_t n) {
  auto* op = s.write_op;
  s.write_op = nullptr;
  s.write_buf_count = 0;
  s.write_total = 0;
  s.write_offset = 0;
  s.write_in_flight = false;
  s.write_cancelled = false;
  s.fin_with_write = false;
  op->complete(ec, n);
}

void session_core::fail_stream_ops(stream_state& s, std::error_code ec) {
  if (s.read_op && s.recv_buf.empty()) complete_read(s, ec, 0);
  if (s.write_op && !s.write_in_flight) complete_write(s, ec, 0);
}

void session_core::deliver_to_reader(stream_state& s) {
  if (!s.read_op) return;
  if (s.read_filled > 0) {  // its buffers hold payload already (only while on_input() runs)
    complete_filled_read(s);
    return;
  }
  if (!s.recv_buf.empty()) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.read_buf_count && !s.recv_buf.empty(); ++i) {
      auto& b = s.read_bufs[i];
      n += s.recv_buf.read({static_cast<std::byte*>(b.data()), b.size()});
    }
    complete_read(s, {}, n);
    consumed(s, n);
    return;
  }
  if (s.reset)
    complete_read(s, make_error_code(errc::stream_reset), 0);
  else if (s.remote_fin)
    complete_read(s, asio::error::eof, 0);
  else if (closed_)
    complete_read(s, close_reason_, 0);
  else if (s.pending_flags & flags::ack)
    queue_control(s);  // the reader waits for the peer: its answer is not imminent, so ACK now
}

void session_core::return_credit(stream_state& s, clock::time_point now) {
  if (closed_ || s.reset || s.remote_fin) return;
  s.last_update = now;
  s.recv_window += s.credit_owed;
  s.pending_delta += s.credit_owed;
  s.credit_owed = 0;
  queue_control(s);
}

void session_core::consumed(stream_state& s, std::size_t n) {
  if (closed_ || s.reset || s.remote_fin) return;
  s.credit_owed += static_cast<std::uint32_t>(n);
  if (s.credit_owed < s.recv_window_size / 2) return;
  std::uint32_t delta = s.credit_owed;
  s.credit_owed = 0;
  const auto now = clock::now();
  // Auto-tuning: a reader that got through half its window within two round trips is limited by
  // the window, not by itself; double it, within the per-stream maximum and the session budget.
  // The round trip taken as at least config::window_tuning_min_rtt (see there why).
  const clock::duration tuning_rtt = std::max<clock::duration>(rtt_, config_.window_tuning_min_rtt);
  if (now - s.last_update < 2 * tuning_rtt && s.recv_window_size < config_.max_stream_window) {
    std::size_t grow = std::min<std::size_t>(s.recv_window_size, config_.max_stream_window - s.recv_window_size);
    grow = std::min(grow, config_.session_window_budget > window_growth_
                              ? config_.session_window_budget - window_growth_
                              : std::size_t{0});
    s.recv_window_size += static_cast<std::uint32_t>(grow);
    window_growth_ += grow;
    delta += static_cast<std::uint32_t>(grow);
  }
  s.last_update = now;
  s.recv_window += delta;
  s.pending_delta += delta;
  queue_control(s);
}

// ---------------------------------------------------------------------------------------------
// Incoming frames

std::size_t session_core::on_input(std::span<const std::byte> in) {
  collecting_ = true;
  const std::size_t used = handle_frames(in);
  if (closed_)
    sink_piece_count_ = 0;  // the streams are gone
  else
    flush_sink_pieces();  // the pieces lie in `in` and in the ring
  // Every span of the ring taken in this input has been sent, copied, dropped or held by now.
  if (ring_ && !ring_sending_) ring_->release();
  // Reads that payload went straight into complete now, once per transport read rather than once
  // per frame: the reader gets everything that arrived, and its next read finds the next batch.
  for (const std::uint32_t id : filled_reads_)
    if (stream_state* s = find(id); s && s->read_op && s->read_filled > 0) complete_filled_read(*s);
  filled_reads_.clear();
  collecting_ = false;
  return used;
}

void session_core::deliver(finished_op* op) {
  if (collecting_)
    inline_completions_.push_back(op);
  else
    op->post();
}

void session_core::run_inline_completions() {
  // The reads and accepts this input completed run their handlers now, in the read loop's turn,
  // instead of one turn of the event loop later (at low load an epoll_wait of its own on the path
  // of every request: issue 6, p99 at a fixed rate). Safe here: on_input() has returned and the
  // read loop holds nothing a handler could invalidate; a handler that starts another operation
  // of ours gets it posted as usual. The list is taken first: a handler may lead to more input
  // being handled only through a later read, never re-entrantly.
  auto ops = std::move(inline_completions_);
  inline_completions_.clear();
  for (std::size_t i = 0; i < ops.size(); ++i) {
    try {
      ops[i]->dispatch();
    } catch (...) {
      // As if it had been posted: the exception leaves io_context::run(), the others still run.
      for (std::size_t j = i + 1; j < ops.size(); ++j) ops[j]->post();
      throw;
    }
  }
}

std::size_t session_core::handle_frames(std::span<const std::byte> in) {
  std::size_t offset = 0;
  while (!closed_ && !failing_) {
    std::size_t used = 0;
    const auto ev = reader_.next(in.subspan(offset), used);
    offset += used;
    switch (ev.what) {
      case frame_reader::kind::need_more:
        return offset;
      case frame_reader::kind::header:
        handle_header(ev.header);
        break;
      case frame_reader::kind::payload:
        handle_payload(payload_stream_, ev.data);
        break;
      case frame_reader::kind::error:
        fail(ev.error, go_away_code::protocol_error);
        return in.size();
    }
  }
  return in.size();
}

void session_core::on_read_error(std::error_code ec) {
  if (closed_) return;
  if (failing_) {
    close(failing_reason_);
    return;
  }
  if (ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
    close(make_error_code(errc::session_closed));
  else
    close(ec);
}

void session_core::handle_header(const frame_header& h) {
  const bool carries_payload = h.type == frame_type::data || h.type == frame_type::ring_data;
  if (sink_piece_count_ > 0 && (!carries_payload || h.stream_id != sink_stream_ || h.flags != 0))
    flush_sink_pieces();
  // A RingData frame's bytes are the ring's next span whatever becomes of its stream: the writer
  // placed them there, so the reader's position must move past them in every case.
  std::span<const std::byte> ring_bytes;
  if (h.type == frame_type::ring_data) {
    if (h.length > ring_->capacity()) {
      fail(make_error_code(errc::protocol_error), go_away_code::protocol_error);
      return;
    }
    ring_bytes = ring_->take(h.length);
    ring_payload_bytes_ += h.length;
  }
  switch (h.type) {
    case frame_type::data:
    case frame_type::ring_data:
    case frame_type::window_update: {
      if (h.has(flags::syn)) {
        incoming_syn(h);
        if (closed_ || failing_) return;
      }
      stream_state* s = find(h.stream_id);
      // A stream we no longer know may have just ended (its late frames are skipped), but one that
      // was never opened cannot: hashicorp/yamux skips both; we end a session that does the latter.
      if (!s && !h.has(flags::syn) && never_opened(h.stream_id)) {
        fail(make_error_code(errc::unknown_stream), go_away_code::protocol_error);
        return;
      }
      if (carries_payload) {
        payload_stream_ = 0;
        if (!s) return;  // unknown or refused stream: its payload is skipped
        if (h.length > s->recv_window) {
          fail(make_error_code(errc::window_exceeded), go_away_code::protocol_error);
          return;
        }
        s->recv_window -= h.length;
        if (h.length > 0) {
          payload_stream_ = h.stream_id;
          // FIN and RST take effect after the payload they travel with.
          payload_flags_ = h.flags & (flags::fin | flags::rst);
          handle_stream_flags(*s, h.flags & ~(flags::fin | flags::rst));
          if (h.type == frame_type::ring_data) {
            // The whole payload is here: handled as a Data frame's last chunk.
            handle_payload(h.stream_id, ring_bytes);
          }
          return;
        }
        handle_stream_flags(*s, h.flags);
        return;
      }
      if (!s) return;
      if (h.length > std::numeric_limits<std::uint32_t>::max() - s->send_window) {
        fail(make_error_code(errc::protocol_error), go_away_code::protocol_error);
        return;
      }
      s->send_window += h.length;
      handle_stream_flags(*s, h.flags);
      if ((s = find(h.stream_id))) queue_data(*s);
      return;
    }
    case frame_type::ping:
      handle_ping(h);
      return;
    case frame_type::go_away:
      handle_go_away(h);
      return;
  }
}

void session_core::handle_payload(std::uint32_t id, std::span<const std::byte> data) {
  const bool frame_done = reader_.payload_remaining() == 0;
  stream_state* s = id ? find(id) : nullptr;
  if (!s) return;
  if (s->released || s->reset) {
    consumed(*s, data.size());
  } else if (s->sink && s->recv_buf.empty() && s->read_filled == 0) {
    // Offered in place (payload_sink.hpp), gathered with the next frames' payload for the stream.
    if (sink_stream_ != id) flush_sink_pieces();
    sink_stream_ = id;
    sink_pieces_[sink_piece_count_++] = data;
    if (sink_piece_count_ == sink_pieces_.size()) flush_sink_pieces();
  } else {
    deliver_payload(*s, data);
  }
  if (frame_done && payload_flags_) {
    flush_sink_pieces();  // the flags take effect after the payload
    const auto f = payload_flags_;
    payload_flags_ = 0;
    if ((s = find(id))) handle_stream_flags(*s, f);
  }
}

void session_core::deliver_payload(stream_state& s, std::span<const std::byte> data) {
  if (data.empty()) return;
  if (s.read_op && s.recv_buf.empty()) {
    // Straight into the waiting reader's buffers; only what does not fit is buffered.
    data = data.subspan(fill_read(s, data));
    if (data.empty()) return;
  }
  // Bytes in the shared ring wait where they are (the master sends them to a client that was not
  // ready from there, as it would have from this buffer), with no copy. Short pieces are copied:
  // each held piece costs a block and an entry of the ring's list, and a peer sending a stream's
  // window as one-byte RingData frames must not make that dozens of times the window.
  if (ring_ && !ring_sending_ && data.size() >= shared_ring::min_payload && ring_->contains(data.data()))
    s.recv_buf.append_held(data, *ring_, ring_->hold(data));
  else
    s.recv_buf.append(data);
}

void session_core::let_ring_go() {
  for (auto& [id, s] : streams_) s->recv_buf.internalize();
}

void session_core::flush_sink_pieces() {
  if (sink_piece_count_ == 0) return;
  const auto pieces = std::span(sink_pieces_).first(sink_piece_count_);
  sink_piece_count_ = 0;
  stream_state* s = find(std::exchange(sink_stream_, 0));
  if (!s) return;
  // Only Data frames without flags for the same stream came between the pieces (handle_header
  // flushes before anything else), so the offer still stands as it did for the first piece.
  std::size_t taken = s->sink->take(pieces);
  std::size_t total = 0;
  for (const auto& p : pieces) total += p.size();
  if (taken < total) s->sink = nullptr;
  if (taken > 0) consumed(*s, taken);
  // What the sink left goes on the usual way, in order.
  for (const auto& p : pieces) {
    const std::size_t skip = std::min(taken, p.size());
    taken -= skip;
    deliver_payload(*s, p.subspan(skip));
  }
}

void session_core::handle_stream_flags(stream_state& s, std::uint16_t f) {
  if (f & (flags::ack | flags::rst)) opened_stream_answered(s);
  if ((f & flags::rst) && !s.reset) {
    s.reset = true;
    s.recv_buf.clear();
    s.pending_flags = 0;
    s.pending_delta = 0;
    fail_stream_ops(s, make_error_code(errc::stream_reset));
    finish_if_done(s);
    return;
  }
  if ((f & flags::fin) && !s.remote_fin) {
    s.remote_fin = true;
    deliver_to_reader(s);
    finish_if_done(s);
  }
}

bool session_core::never_opened(std::uint32_t id) const {
  if (id == 0) return true;
  const bool ours = (id % 2 == 1) == (role_ == role::client);
  return ours ? id >= next_id_ : id > highest_peer_id_;
}

void session_core::incoming_syn(const frame_header& h) {
  const std::uint32_t id = h.stream_id;
  const bool peer_is_client = role_ == role::server;
  if (id == 0 || (id % 2 == 1) != peer_is_client) {
    fail(make_error_code(errc::protocol_error), go_away_code::protocol_error);
    return;
  }
  if (find(id)) {
    fail(make_error_code(errc::duplicate_stream), go_away_code::protocol_error);
    return;
  }
  highest_peer_id_ = std::max(highest_peer_id_, id);
  const bool refusing = local_go_away_ && (go_away_acknowledged_ || failing_);  // see go_away_ping_
  if (refusing || backlog_.size() >= config_.accept_backlog || streams_.size() >= config_.max_streams) {
    queue_session_frame({protocol_version, frame_type::window_update, flags::rst, id, 0});
    return;
  }
  auto& s = create_stream(id);
  if (!accept_ops_.empty()) {
    auto* op = accept_ops_.front();
    accept_ops_.pop_front();
    hand_over(s, op);
  } else {
    backlog_.push_back(&s);
  }
}

void session_core::hand_over(stream_state& s, accept_op* op) {
  // The ACK goes out when the application takes the stream, as hashicorp/yamux does: an opener
  // that limits its unacknowledged SYNs (hashicorp blocks at 256) is thereby paced by our accepts
  // and never runs into the backlog limit. An application that accepts promptly ACKs promptly.
  s.pending_flags |= flags::ack;
  s.pending_delta = config_.initial_stream_window - initial_stream_window;
  // A window delta needs a WindowUpdate of its own, which carries the ACK at no extra cost.
  if (!config_.ack_with_first_frame || s.pending_delta != 0)
    queue_control(s);
  else
    deferred_acks_.push_back(s.id);  // see config::ack_with_first_frame
  deliver(op->finish({}, stream(shared_from_this(), &s)));
}

// The deferred ACKs that are still pending go into the control queue (and wake the writer).
void session_core::flush_deferred_acks() {
  for (const std::uint32_t id : deferred_acks_)
    if (stream_state* s = find(id); s && (s->pending_flags & flags::ack)) queue_control(*s);
  deferred_acks_.clear();
}

void session_core::handle_ping(const frame_header& h) {
  if (h.has(flags::syn)) {
    queue_session_frame({protocol_version, frame_type::ping, flags::ack, 0, h.length});
    return;
  }
  if (!h.has(flags::ack)) return;
  auto it = pings_.find(h.length);
  if (it == pings_.end()) return;
  const auto elapsed = clock::now() - it->second.sent;
  rtt_ = elapsed;
  if (h.length == keepalive_ping_) keepalive_outstanding_ = false;
  if (h.length == go_away_ping_) go_away_acknowledged_ = true;
  auto* op = it->second.op;
  pings_.erase(it);
  if (op) op->complete({}, elapsed);
}

void session_core::handle_go_away(const frame_header& h) {
  switch (static_cast<go_away_code>(h.length)) {
    case go_away_code::normal:
      remote_go_away_ = true;
      return;
    case go_away_code::protocol_error:
      close(make_error_code(errc::peer_protocol_error));
      return;
    case go_away_code::internal_error:
      close(make_error_code(errc::peer_internal_error));
      return;
  }
  fail(make_error_code(errc::protocol_error), go_away_code::protocol_error);
}

// ---------------------------------------------------------------------------------------------
// The writer's side

void session_core::queue_control(stream_state& s, bool wake) {
  if (s.in_control_queue || closed_) return;
  s.in_control_queue = true;
  control_queue_.push_back(s.id);
  if (wake) notify_writer();
}

void session_core::queue_data(stream_state& s, bool wake) {
  if (s.in_data_queue || closed_ || !s.write_op || s.write_in_flight || s.send_window == 0 || s.syn_deferred) return;
  s.in_data_queue = true;
  data_queue_.push_back(s.id);
  if (wake) notify_writer();
}

void session_core::queue_session_frame(const frame_header& h) {
  if (closed_) return;
  if (session_frames_.size() >= max_session_frames) {
    fail(make_error_code(errc::protocol_error), go_away_code::protocol_error);
    return;
  }
  session_frames_.push_back(h);
  notify_writer();
}

void session_core::notify_writer() {
  if (!writer_waiting_) return;
  writer_waiting_ = false;
  wake_.cancel();
}

asio::awaitable<void> session_core::wait_for_work() {
  writer_waiting_ = true;
  writer_parked_ = true;
  wake_.expires_at(clock::time_point::max());
  co_await wake_.async_wait(use_tuple);
  writer_waiting_ = false;
  writer_parked_ = false;
}

void session_core::push_header(const frame_header& h) {
  auto& slot = batch_headers_.emplace_back(encode(h));
  batch_out_->push_back(asio::buffer(slot));
}

void session_core::emit_stream_control(stream_state& s) {
  if (s.syn_deferred) return;  // everything waits for its SYN; opened_stream_answered() requeues it
  if (s.pending_flags == 0 && s.pending_delta == 0) {
    finish_if_done(s);
    return;
  }
  // A bare SYN or ACK can ride on the Data frame this stream is about to send.
  const bool open_flags_only = (s.pending_flags & ~(flags::syn | flags::ack)) == 0 && s.pending_delta == 0;
  if (open_flags_only && s.in_data_queue) return;
  const std::uint16_t f = s.pending_flags;
  push_header({protocol_version, frame_type::window_update, f, s.id, s.pending_delta});
  s.pending_flags = 0;
  s.pending_delta = 0;
  if (f & flags::fin) s.fin_sent = true;
  finish_if_done(s);
}

void session_core::emit_data_frame(stream_state& s, std::size_t& batch_bytes) {
  const std::size_t n = std::min<std::size_t>(
      {config_.max_frame_payload, s.send_window, s.write_total - s.write_offset});
  const std::uint16_t f = s.pending_flags & (flags::syn | flags::ack);
  s.pending_flags &= static_cast<std::uint16_t>(~(flags::syn | flags::ack));
  // Through the shared ring when there is room: one copy here instead of the two through the socket.
  std::byte* slot = ring_sending_ && n >= shared_ring::min_payload ? ring_->reserve(n) : nullptr;
  push_header({protocol_version, slot ? frame_type::ring_data : frame_type::data, f, s.id, static_cast<std::uint32_t>(n)});
  if (slot) {
    ring_payload_bytes_ += n;
    ring_written_since_tick_ = ring_resident_ = true;
  }
  std::size_t skip = s.write_offset;
  std::size_t left = n;
  for (std::size_t i = 0; i < s.write_buf_count && left > 0; ++i) {
    const auto& b = s.write_bufs[i];
    if (skip >= b.size()) {
      skip -= b.size();
      continue;
    }
    const std::size_t k = std::min(b.size() - skip, left);
    const auto* from = static_cast<const std::byte*>(b.data()) + skip;
    if (slot) {
      std::memcpy(slot, from, k);
      slot += k;
    } else {
      batch_out_->push_back(asio::const_buffer(from, k));
    }
    skip = 0;
    left -= k;
  }
  s.send_window -= static_cast<std::uint32_t>(n);
  s.write_offset += n;
  batch_bytes += n + header_size;
  if (s.fin_with_write && s.write_offset == s.write_total) {
    // A frame of its own rather than FIN on the Data frame: hashicorp/yamux acts on a Data frame's
    // flags before it buffers the payload, so its reader could see EOF first and lose the data.
    push_header({protocol_version, frame_type::window_update, flags::fin, s.id, 0});
    s.fin_with_write = false;
    s.fin_sent = true;
    batch_bytes += header_size;
  }
}

bool session_core::announce_pending_opens() {
  // A stream waiting for its SYN is in the control queue, or in the data queue when the SYN was
  // to ride on its first Data frame.
  for (const auto* queue : {&control_queue_, &data_queue_}) {
    for (const std::uint32_t id : *queue) {
      stream_state* s = find(id);
      if (!s || s->syn_deferred || !(s->pending_flags & flags::syn)) continue;
      if (batch_headers_.size() >= max_batch_frames) return false;  // the rest, and the answer, next batch
      // A bare SYN with the window delta it would have carried; the stream's data follows later.
      push_header({protocol_version, frame_type::window_update, flags::syn, s->id, s->pending_delta});
      s->pending_flags &= static_cast<std::uint16_t>(~flags::syn);
      s->pending_delta = 0;
    }
  }
  return true;
}

bool session_core::prepare_batch(std::vector<asio::const_buffer>& out) {
  out.clear();
  batch_headers_.clear();
  batch_streams_.clear();
  if (closed_) return false;
  batch_out_ = &out;

  // Session frames go first, except that our answer to a ping must not overtake a SYN queued
  // before it: a peer that sent GoAway and then a ping (as go_away() does) takes our answer as proof
  // that no SYN of ours is still on its way, and refuses any later one with RST — a raw TCP
  // connection opened just before the GoAway arrived would be cut. hashicorp/yamux keeps this
  // order with its single send queue; we announce the waiting SYNs ahead of the answer instead.
  const bool answering_ping = std::any_of(session_frames_.begin(), session_frames_.end(), [](const frame_header& h) {
    return h.type == frame_type::ping && h.has(flags::ack);
  });
  const bool syns_announced = failing_ || !answering_ping || announce_pending_opens();
  std::size_t taken = 0;
  for (; syns_announced && taken < session_frames_.size() && batch_headers_.size() < max_batch_frames; ++taken)
    push_header(session_frames_[taken]);
  session_frames_.erase(session_frames_.begin(), session_frames_.begin() + static_cast<std::ptrdiff_t>(taken));

  if (!failing_) {
    while (!control_queue_.empty() && batch_headers_.size() < max_batch_frames) {
      const std::uint32_t id = control_queue_.front();
      control_queue_.pop_front();
      stream_state* s = find(id);
      if (!s) continue;
      s->in_control_queue = false;
      emit_stream_control(*s);
    }
    std::size_t bytes = 0;
    // Room for a Data frame (header and payload buffers) and the FIN that may follow it.
    while (!data_queue_.empty() && bytes < config_.max_batch_bytes && batch_headers_.size() + 2 <= max_batch_frames &&
           out.size() + 2 + max_op_buffers <= max_batch_buffers) {
      const std::uint32_t id = data_queue_.front();
      data_queue_.pop_front();
      stream_state* s = find(id);
      if (!s) continue;
      s->in_data_queue = false;
      if (!s->write_op || s->reset || s->send_window == 0 || s->write_offset == s->write_total ||
          s->write_cancelled)
        continue;
      emit_data_frame(*s, bytes);
      if (!s->write_in_flight) {
        s->write_in_flight = true;
        batch_streams_.push_back(id);
      }
      if (s->write_offset < s->write_total && s->send_window > 0) {
        s->in_data_queue = true;  // round robin: back of the line
        data_queue_.push_back(id);
      }
    }
  }
  // Deferred ACKs ride along with a batch that goes out anyway, at no system call of their own;
  // one whose stream has data queued waits to ride on that.
  if (!out.empty() && !failing_) {
    std::erase_if(deferred_acks_, [&](std::uint32_t id) {
      stream_state* s = find(id);
      if (!s || !(s->pending_flags & flags::ack) || s->in_control_queue) return true;
      if (s->in_data_queue || batch_headers_.size() >= max_batch_frames || out.size() >= max_batch_buffers)
        return false;
      emit_stream_control(*s);
      return true;
    });
  }
  batch_out_ = nullptr;
  // Adjacent headers (session frames, window updates) sit side by side in batch_headers_: one buffer.
  std::size_t w = 0;
  for (std::size_t r = 0; r < out.size(); ++r) {
    if (w > 0 && static_cast<const std::byte*>(out[w - 1].data()) + out[w - 1].size() == out[r].data())
      out[w - 1] = asio::const_buffer(out[w - 1].data(), out[w - 1].size() + out[r].size());
    else
      out[w++] = out[r];
  }
  out.resize(w);
  writing_ = !out.empty();
  if (writing_) write_started_ = clock::now();
  return writing_;
}

void session_core::batch_done(std::error_code ec) {
  writing_ = false;
  for (const std::uint32_t id : batch_streams_) {
    stream_state* s = find(id);
    if (!s || !s->write_op || !s->write_in_flight) continue;
    s->write_in_flight = false;
    const std::size_t n = s->write_offset;
    if (ec || closed_)
      complete_write(*s, closed_ ? close_reason_ : ec, n);
    else if (s->write_cancelled)
      complete_write(*s, asio::error::operation_aborted, n);
    else if (s->reset)
      complete_write(*s, make_error_code(errc::stream_reset), n);
    else
      complete_write(*s, {}, n);
    if (s->fin_after_write && !closed_ && !s->reset) {
      s->fin_after_write = false;
      s->pending_flags |= flags::fin;
      queue_control(*s);
    }
  }
  batch_streams_.clear();
  auto orphans = std::move(orphan_writes_);
  orphan_writes_.clear();
  for (auto* op : orphans) op->complete(asio::error::operation_aborted, 0);
  if (ec) {
    // A peer that closed the connection ends the session the same way whichever loop hears of it
    // first (the writer does when its batch goes out as an immediate system call).
    const bool peer_gone = ec == asio::error::broken_pipe || ec == asio::error::connection_reset;
    close(failing_ ? failing_reason_ : peer_gone ? make_error_code(errc::session_closed) : ec);
    return;
  }
  if (failing_ && session_frames_.empty()) close(failing_reason_);
}

asio::awaitable<void> session_core::housekeeping() {
  using std::chrono::milliseconds;
  milliseconds tick = config_.write_timeout;
  if (config_.enable_keepalive) tick = std::min(tick, config_.keepalive_interval);
  if (config_.stream_open_timeout.count() > 0) tick = std::min(tick, config_.stream_open_timeout);
  if (config_.stream_close_timeout.count() > 0) tick = std::min(tick, config_.stream_close_timeout);
  tick = std::max(milliseconds(1), tick / 4);
  auto next_ping = clock::now() + config_.keepalive_interval;
  clock::time_point keepalive_sent{};
  while (!closed_) {
    housekeeping_timer_.expires_after(tick);
    co_await housekeeping_timer_.async_wait(use_tuple);
    if (closed_) co_return;
    const auto now = clock::now();
    if (writing_ && now - write_started_ > config_.write_timeout) {
      close(make_error_code(errc::write_timeout));
      co_return;
    }
    if (failing_ && now - failing_since_ > config_.write_timeout) {
      close(failing_reason_);
      co_return;
    }
    if (keepalive_outstanding_ && now - keepalive_sent > config_.write_timeout) {
      close(make_error_code(errc::keepalive_timeout));
      co_return;
    }
    // A span of the ring held since the last tick (a client that stopped reading) keeps the writer
    // from reusing everything after it, so the peer's bulk payload falls back to the socket: its
    // stream copies it in, and the ring is free again. Copying whenever much was held instead (at
    // half of the ring) cost the master twice its CPU per GiB for a client merely lagging.
    // A ring idle for a whole tick gives its pages back (shared_ring::trim).
    if (ring_ && ring_sending_) {
      if (!ring_written_since_tick_ && ring_resident_ && ring_->trim()) ring_resident_ = false;
      ring_written_since_tick_ = false;
    }
    if (ring_ && !ring_sending_) {
      const auto oldest = ring_->oldest_hold();
      if (oldest && oldest == oldest_hold_at_last_tick_) let_ring_go();
      oldest_hold_at_last_tick_ = ring_->oldest_hold();
    }
    // At most max_unacknowledged_opens streams await an answer; scanning the table for them once
    // a tick costs little and needs no bookkeeping of its own.
    if (config_.stream_open_timeout.count() > 0 && unacknowledged_opens_ > 0 && !failing_) {
      for (const auto& [id, s] : streams_) {
        if (s->awaiting_ack && now - s->syn_queued > config_.stream_open_timeout) {
          fail(make_error_code(errc::stream_open_timeout), go_away_code::normal);
          break;
        }
      }
    }
    // Released streams the peer has not finished in time are reset. A scan of the table, bounded
    // by max_streams, rather than a list of its own that every released stream would join.
    // The same scan returns credit a reader earned but has not given back (less than half its
    // window, see consumed()) once it is a tick old: with a window grown to 16 MiB, a reader
    // taking 100 KiB/s would otherwise return credit every 80 s, and its peer could not tell it
    // from one that stopped reading (the master resets a stream whose service takes no request
    // body bytes for --service-write-timeout-ms).
    {
      std::vector<std::uint32_t> overdue;
      for (const auto& [id, s] : streams_) {
        if (config_.stream_close_timeout.count() > 0 && s->released && !s->remote_fin && !s->reset &&
            now - s->released_at > config_.stream_close_timeout)
          overdue.push_back(id);
        else if (s->credit_owed > 0 && now - s->last_update >= tick)
          return_credit(*s, now);
      }
      for (const std::uint32_t id : overdue) {
        if (stream_state* s = find(id)) {
          reset(*s);           // RST; the entry goes once it is out
          finish_if_done(*s);  // or now, when there was nothing to send
        }
      }
    }
    flush_deferred_acks();  // at the latest now (config::ack_with_first_frame)
    if (config_.enable_keepalive && !keepalive_outstanding_ && now >= next_ping) {
      keepalive_ping_ = next_ping_++;
      keepalive_outstanding_ = true;
      keepalive_sent = now;
      pings_[keepalive_ping_] = {now, nullptr};
      queue_session_frame({protocol_version, frame_type::ping, flags::syn, 0, keepalive_ping_});
      next_ping = now + config_.keepalive_interval;
    }
  }
}

}  // namespace socketmaster::yamux::detail
