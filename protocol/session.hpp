// A yamux session (hashicorp/yamux wire format) over any Asio byte stream: TCP, a Unix socket,
// asio::ssl::stream, or a test stream. The session owns its transport and runs three coroutines on
// the transport's executor: a read loop that feeds frames to the state machine, one writer that
// gathers ready frames into a single write, and a housekeeping timer (keepalive, write deadline).
//
// Concurrency: a session and its streams must be used from the transport's executor only.
// Ownership: the session handle owns the session; destroying it closes the session. Streams keep
// the session's memory alive (they share it) but not the session itself.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <limits>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include <asio/async_result.hpp>
#include <asio/basic_stream_socket.hpp>
#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "config.hpp"
#include "detail/session_core.hpp"
#include "errors.hpp"
#include "stream.hpp"

namespace socketmaster::yamux {

namespace detail {

template <class AsyncStream>
void close_transport(AsyncStream& s) {
  std::error_code ec;
  if constexpr (requires { s.lowest_layer().close(ec); })
    s.lowest_layer().close(ec);
  else
    s.lowest_layer().close();
}

// A plain TCP or Unix socket, on which the writer can try a batch as one non-blocking system call.
template <class T>
struct is_plain_socket : std::false_type {};
template <class Protocol, class Executor>
struct is_plain_socket<asio::basic_stream_socket<Protocol, Executor>> : std::true_type {};
template <class T>
struct is_unix_socket : std::false_type {};
template <class Executor>
struct is_unix_socket<asio::basic_stream_socket<asio::local::stream_protocol, Executor>> : std::true_type {};

// Drops the first `n` bytes of a gather list.
inline void consume_front(std::vector<asio::const_buffer>& buffers, std::size_t n) {
  std::size_t whole = 0;
  while (whole < buffers.size() && n >= buffers[whole].size()) n -= buffers[whole++].size();
  buffers.erase(buffers.begin(), buffers.begin() + static_cast<std::ptrdiff_t>(whole));
  if (!buffers.empty()) buffers.front() += n;
}

// The session core plus the transport it owns, with the read and write loops for that transport.
template <class AsyncStream>
class session_over final : public session_core {
 public:
  session_over(AsyncStream&& transport, role r, const config& cfg)
      : session_core(transport.get_executor(), r, cfg), transport_(std::move(transport)) {}

  AsyncStream& transport() { return transport_; }

 protected:
  void start_io() override {
    auto self = std::static_pointer_cast<session_over>(shared_from_this());
    auto on_exit = [self](std::exception_ptr e) {
      if (e) self->close(make_error_code(errc::protocol_error));
    };
    asio::co_spawn(get_executor(), read_loop(self), on_exit);
    asio::co_spawn(get_executor(), write_loop(self), on_exit);
  }
  void close_transport() override {
    // The duplicate first: its epoll registration goes with an explicit removal, and while it is
    // open the socket's own registration outlives the socket's close.
    if constexpr (is_unix_socket<AsyncStream>::value) {
      std::error_code ec;
      if (write_waiter_) write_waiter_->close(ec);  // a pending wait ends with operation_aborted
    }
    detail::close_transport(transport_);
  }
  bool write_directly() override {
    if constexpr (is_plain_socket<AsyncStream>::value) {
      if (!direct_rest_.empty() || !transport_.non_blocking()) return false;  // the writer is not set up yet
      if (!prepare_batch(direct_rest_)) return true;
      if (!send_now(direct_rest_)) return false;
      writes_flow();
      direct_rest_.clear();
      return true;
    } else {
      return false;
    }
  }

 private:
  static asio::awaitable<void> read_loop(std::shared_ptr<session_over> self) {
    constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
    // Not zeroed: a session that never sees a burst never touches (commits) most of its pages.
    const std::size_t size = self->cfg().read_buffer_size;
    const auto buf = std::make_unique_for_overwrite<std::byte[]>(size);
    std::size_t begin = 0, end = 0;
    while (!self->reading_stopped()) {
      auto [ec, n] = co_await self->transport_.async_read_some(asio::buffer(buf.get() + end, size - end),
                                                               use_tuple);
      if (ec) {
        self->on_read_error(ec);
        co_return;
      }
      end += n;
      begin += self->on_input({buf.get() + begin, end - begin});
      try {
        self->run_inline_completions();
      } catch (...) {  // a handler's exception leaves io_context::run(), as from a posted handler
        asio::post(self->get_executor(), [e = std::current_exception()] { std::rethrow_exception(e); });
      }
      if (begin == end) {
        begin = end = 0;
      } else if (size - end < header_size) {  // only a partial header is ever left over
        std::memmove(buf.get(), buf.get() + begin, end - begin);
        end -= begin;
        begin = 0;
      }
    }
  }

  static asio::awaitable<void> write_loop(std::shared_ptr<session_over> self) {
    constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
    constexpr auto whole_batch = [](const std::error_code& ec, std::size_t) -> std::size_t {
      return ec ? 0 : std::numeric_limits<std::size_t>::max();
    };
    std::vector<asio::const_buffer> batch;
    batch.reserve(64);
    if constexpr (is_plain_socket<AsyncStream>::value) {
      std::error_code ec;
      self->transport_.non_blocking(true, ec);  // for the first attempt below
    }
    while (!self->is_closed()) {
      if (!self->direct_rest_.empty()) {
        batch.swap(self->direct_rest_);  // what write_directly() left: its batch is still open
        self->direct_rest_.clear();
      } else if (!self->prepare_batch(batch)) {
        co_await self->wait_for_work();
        continue;
      } else if constexpr (is_plain_socket<AsyncStream>::value) {
        // First as one system call: when the socket takes the whole batch (it usually does), its
        // completion costs no turn of the event loop, which at low load is an epoll_wait of its own
        // (issue 6: latency at a fixed rate). The rest, if any, goes the asynchronous way.
        if (self->send_now(batch)) {
          self->writes_flow();
          continue;
        }
      }
      if constexpr (is_unix_socket<AsyncStream>::value) {
        if (co_await self->write_rest_when_writable(batch)) continue;
      }
      // Hand the whole batch to each write_some: asio's default transfer_all() would cap every
      // system call at 64 KiB, cutting a 1 MiB batch into 16 writes.
      auto [ec, n] = co_await asio::async_write(self->transport_, batch, whole_batch, use_tuple);
      self->batch_done(ec);
    }
  }

  // A batch as one non-blocking system call: true when it is done with (all written, or the write
  // failed; batch_done() has run), false with what the socket did not take left in `batch`.
  bool send_now(std::vector<asio::const_buffer>& batch) {
    std::error_code ec;
    const std::size_t n = transport_.write_some(batch, ec);
    if (ec == asio::error::would_block) ec.clear();
    if (ec || n == asio::buffer_size(batch)) {
      batch_done(ec);
      return true;
    }
    consume_front(batch, n);
    return false;
  }

  // What a Unix socket did not take: sent as it makes room, with the waiting done on a duplicate of
  // its descriptor. Why not asio::async_write on the socket itself: Asio adds EPOLLOUT to a
  // descriptor's epoll registration the first time a write waits and never takes it off, and a
  // Unix socket signals writability each time its peer reads (TCP only after a write found it
  // full). One burst would then wake this process at every read the peer makes for the rest of
  // the session: an extra wakeup and context switch per request on either side (measured on the
  // service behind the master's same-host socket, issue 6). The duplicate is registered while
  // writes wait and dropped (writes_flow) once a batch goes out whole again. False, with the batch
  // untouched, when no duplicate can be made (out of descriptors): the caller then writes it the
  // usual way rather than failing the session over a wakeup.
  asio::awaitable<bool> write_rest_when_writable(std::vector<asio::const_buffer>& batch) {
    constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
    for (;;) {
      if (!write_waiter_) {
        const int fd = ::fcntl(transport_.native_handle(), F_DUPFD_CLOEXEC, 0);
        if (fd < 0) co_return false;
        std::error_code ec;
        write_waiter_.emplace(get_executor()).assign(fd, ec);
        if (ec) {
          ::close(fd);  // not taken over by a failed assign
          write_waiter_.reset();
          co_return false;
        }
      }
      auto [ec] = co_await write_waiter_->async_wait(asio::posix::stream_descriptor::wait_write, use_tuple);
      if (!ec && is_closed()) ec = asio::error::operation_aborted;
      if (ec) {
        batch_done(ec);
        co_return true;
      }
      if (send_now(batch)) co_return true;
    }
  }
  // A batch went out whole at its first attempt: writes no longer wait, so the duplicate goes.
  void writes_flow() {
    if constexpr (is_unix_socket<AsyncStream>::value) write_waiter_.reset();
  }

  AsyncStream transport_;
  // For Unix sockets (see write_rest_when_writable); never engaged for other transports.
  std::optional<asio::posix::stream_descriptor> write_waiter_;
};

}  // namespace detail

class session {
 public:
  using executor_type = asio::any_io_executor;
  using clock = std::chrono::steady_clock;

  session() = default;
  // Starts a session over `transport`. Throws std::system_error(errc::invalid_config) for a config
  // that does not validate (a programming error, not a network outcome).
  template <class AsyncStream>
  session(AsyncStream&& transport, role r, const config& cfg = {}) : session(std::move(transport), r, cfg, {}) {}
  // With a shared ring both sides agreed on (shared_ring.hpp): we write it when `ring.sending`,
  // else we read it.
  struct ring_use {
    std::shared_ptr<shared_ring> ring;
    bool sending = false;
  };
  template <class AsyncStream>
  session(AsyncStream&& transport, role r, const config& cfg, ring_use ring) {
    const char* what = nullptr;
    if (auto ec = cfg.validate(&what)) throw std::system_error(ec, what);
    core_ = std::make_shared<detail::session_over<std::decay_t<AsyncStream>>>(std::move(transport), r, cfg);
    if (ring.ring) core_->use_shared_ring(std::move(ring.ring), ring.sending);
    core_->start();
  }
  session(session&&) noexcept = default;
  session& operator=(session&& other) noexcept {
    if (this != &other) {
      close();
      core_ = std::move(other.core_);
    }
    return *this;
  }
  ~session() { close(); }

  executor_type get_executor() const { return core_->get_executor(); }
  bool is_open() const { return core_ && !core_->is_closed(); }
  // Why the session ended (errc::session_closed for an orderly end); empty while open.
  std::error_code close_reason() const { return core_ && core_->is_closed() ? core_->close_reason() : std::error_code{}; }
  bool remote_going_away() const { return core_ && core_->remote_going_away(); }
  bool local_going_away() const { return core_ && core_->local_going_away(); }
  // Streams open in this session, counting accepted-but-unread backlog and lingering ones.
  std::size_t stream_count() const { return core_ ? core_->stream_count() : 0; }
  // The latest measured round trip (zero until the first ping reply).
  clock::duration rtt() const { return core_ ? core_->rtt() : clock::duration{}; }
  role session_role() const { return core_->session_role(); }
  // Payload bytes that went through the shared ring (0 without one).
  std::uint64_t ring_payload_bytes() const { return core_ ? core_->ring_payload_bytes() : 0; }

  // Opens a stream. Its SYN goes out with its first data, or alone if there is none yet.
  stream open(std::error_code& ec) {
    if (!core_) {
      ec = errc::session_closed;
      return {};
    }
    auto* s = core_->open(ec);
    return s ? stream(core_, s) : stream{};
  }
  stream open() {
    std::error_code ec;
    auto s = open(ec);
    if (ec) throw std::system_error(ec, "yamux open");
    return s;
  }

  // Waits for a stream opened by the peer.
  template <class AcceptToken = asio::default_completion_token_t<executor_type>>
  auto async_accept(AcceptToken&& token = AcceptToken()) {
    return asio::async_initiate<AcceptToken, void(std::error_code, stream)>(
        [this](auto handler) {
          core_->add_accept_op(
              detail::make_pending_op<std::error_code, stream>(std::move(handler), core_->get_executor(), core_.get()));
        },
        token);
  }

  // Sends a ping and completes with the measured round trip.
  template <class PingToken = asio::default_completion_token_t<executor_type>>
  auto async_ping(PingToken&& token = PingToken()) {
    return asio::async_initiate<PingToken, void(std::error_code, clock::duration)>(
        [this](auto handler) {
          core_->add_ping_op(detail::make_pending_op<std::error_code, clock::duration>(
              std::move(handler), core_->get_executor(), core_.get()));
        },
        token);
  }

  // Completes when the session has ended, with the reason.
  template <class WaitToken = asio::default_completion_token_t<executor_type>>
  auto async_wait_closed(WaitToken&& token = WaitToken()) {
    return async_wait_for(&detail::session_core::add_close_op, std::forward<WaitToken>(token));
  }

  // Completes when no stream is left (stream_count() == 0; at once when none is open), or with the
  // session's reason when it ends first. A drain waits on this after go_away().
  template <class WaitToken = asio::default_completion_token_t<executor_type>>
  auto async_wait_idle(WaitToken&& token = WaitToken()) {
    return async_wait_for(&detail::session_core::add_idle_op, std::forward<WaitToken>(token));
  }

  // GoAway(normal): the peer may open no more streams; open ones run to their end. Streams the peer
  // opened before it could see the GoAway are still accepted (a ping sent right after it tells
  // when the peer has seen it); later ones are refused with RST.
  void go_away() {
    if (core_) core_->go_away(go_away_code::normal);
  }
  // Ends the session at once; streams and pending operations fail with errc::session_closed.
  void close() {
    if (core_) core_->close({});
  }

 private:
  // A wait that the core completes with an error_code, registered by `add`.
  template <class WaitToken>
  auto async_wait_for(void (detail::session_core::*add)(detail::pending_op<std::error_code>*), WaitToken&& token) {
    return asio::async_initiate<WaitToken, void(std::error_code)>(
        [this, add](auto handler) {
          ((*core_).*add)(
              detail::make_pending_op<std::error_code>(std::move(handler), core_->get_executor(), core_.get()));
        },
        token);
  }

  std::shared_ptr<detail::session_core> core_;
};

}  // namespace socketmaster::yamux
