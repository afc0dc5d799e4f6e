// A yamux stream: one multiplexed byte stream of a session. It models Asio's AsyncReadStream and
// AsyncWriteStream, so asio::async_read/async_write and asio::ssl::stream<yamux::stream> work on it.
//
// Like a socket it is move-only and allows one pending read and one pending write at a time.
// Concurrency: use it only from its session's executor. Destroying or close()-ing it shuts our send
// side down (FIN) and frees the stream id once the peer has finished too; reset() aborts it (RST).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <system_error>
#include <span>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/buffer.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include "detail/session_core.hpp"

namespace socketmaster::yamux {

class stream {
 public:
  using executor_type = asio::any_io_executor;
  using lowest_layer_type = stream;

  stream() = default;
  stream(std::shared_ptr<detail::session_core> core, detail::stream_state* state)
      : core_(std::move(core)), state_(state) {}
  stream(stream&& other) noexcept : core_(std::move(other.core_)), state_(std::exchange(other.state_, nullptr)) {}
  stream& operator=(stream&& other) noexcept {
    if (this != &other) {
      close();
      core_ = std::move(other.core_);
      state_ = std::exchange(other.state_, nullptr);
    }
    return *this;
  }
  ~stream() { close(); }

  executor_type get_executor() const { return core_->get_executor(); }
  lowest_layer_type& lowest_layer() { return *this; }
  const lowest_layer_type& lowest_layer() const { return *this; }

  bool is_open() const { return state_ != nullptr; }
  std::uint32_t id() const { return state_ ? state_->id : 0; }
  // The receive window we currently advertise for this stream (auto-tuning grows it).
  std::uint32_t receive_window() const { return state_ ? state_->recv_window_size : 0; }
  // Bytes received and not yet read.
  std::size_t available() const { return state_ ? state_->recv_buf.size() : 0; }
  // Whether the peer of this stream's session has sent GoAway. Still answered once the session
  // has ended (the stream shares the session's core), when the pool may have forgotten the member.
  bool remote_going_away() const { return core_ && core_->remote_going_away(); }

  // Takes bytes that have arrived and not been read yet, at once, without waiting: 0 when there are
  // none or a read is pending (EOF and errors show on the next async_read_some). For a header
  // that normally comes in the stream's first frame: no event-loop turn, no timer.
  std::size_t read_buffered(asio::mutable_buffer b) { return state_ ? core_->read_buffered(*state_, b) : 0; }
  // The bytes read_buffered() would take, where they lie: fills up to out.size() pieces (16 at
  // most, a sendmsg's worth), oldest first, and returns how many (0 when there are none or a read
  // is pending). Valid until the stream is next used or the session next reads; consume_buffered(n)
  // then removes the first n as a read would. For sending them on without a copy (the master's bulk
  // bodies, issue 6).
  std::size_t buffered_data(std::span<asio::const_buffer> out) const {
    if (!state_ || state_->read_op) return 0;
    std::array<std::span<const std::byte>, 16> parts;
    const std::size_t count = state_->recv_buf.contents(std::span(parts).first(std::min(out.size(), parts.size())));
    for (std::size_t i = 0; i < count; ++i) out[i] = asio::buffer(parts[i].data(), parts[i].size());
    return count;
  }
  std::size_t consume_buffered(std::size_t n) { return state_ ? core_->consume_buffered(*state_, n) : 0; }
  // Offers payload to `sink` as it arrives, in place, ahead of reads (payload_sink.hpp); nullptr
  // withdraws the offer, and so does the sink taking less than offered. The sink must outlive it.
  void offer_payload_to(payload_sink* sink) {
    if (state_) state_->sink = sink;
  }
  // The same bytes read_buffered() would take, left where they are.
  std::size_t peek_buffered(asio::mutable_buffer b) const {
    return state_ ? state_->recv_buf.peek({static_cast<std::byte*>(b.data()), b.size()}) : 0;
  }

  template <class MutableBufferSequence, class ReadToken = asio::default_completion_token_t<executor_type>>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token = ReadToken()) {
    return asio::async_initiate<ReadToken, void(std::error_code, std::size_t)>(
        [this](auto handler, const MutableBufferSequence& bufs) {
          if (!state_) return post_error(std::move(handler));
          auto& s = *state_;
          s.read_buf_count = 0;
          for (auto it = asio::buffer_sequence_begin(bufs), end = asio::buffer_sequence_end(bufs);
               it != end && s.read_buf_count < detail::max_op_buffers; ++it) {
            asio::mutable_buffer b(*it);
            if (b.size() > 0) s.read_bufs[s.read_buf_count++] = b;
          }
          core_->read_some(s, detail::make_pending_op<std::error_code, std::size_t>(
                                  std::move(handler), core_->get_executor(), core_.get(), s.id));
        },
        token, buffers);
  }

  // The caller's bytes are not copied: they go to the transport straight from `buffers`, which must
  // stay valid until the handler runs (as for a socket).
  template <class ConstBufferSequence, class WriteToken = asio::default_completion_token_t<executor_type>>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token = WriteToken()) {
    return asio::async_initiate<WriteToken, void(std::error_code, std::size_t)>(
        [this](auto handler, const ConstBufferSequence& bufs) { this->start_write(bufs, std::move(handler), false); }, token,
        buffers);
  }

  // Writes all of `buffers`, then shuts the send side down: asio::async_write followed by
  // shutdown_send(), except that the FIN leaves in the same system call as the last bytes, so a
  // service that answers and closes costs its peer one read less per stream. Completes with the
  // bytes written; after an error no FIN is sent (close() or reset() decide what follows).
  template <class ConstBufferSequence, class WriteToken = asio::default_completion_token_t<executor_type>>
  auto async_write_last(const ConstBufferSequence& buffers, WriteToken&& token = WriteToken()) {
    return asio::async_compose<WriteToken, void(std::error_code, std::size_t)>(
        write_last_op{this, {asio::buffer_sequence_begin(buffers), asio::buffer_sequence_end(buffers)}}, token, *this);
  }

  // Half-close: sends FIN once, after the data already written. Reading goes on until the peer's FIN.
  void shutdown_send() {
    if (state_) core_->shutdown_send(*state_);
  }
  // Aborts the stream in both directions (RST); pending operations fail with errc::stream_reset.
  void reset() {
    if (state_) core_->reset(*state_);
  }
  // Completes pending operations with asio::error::operation_aborted.
  void cancel() {
    if (state_) core_->cancel(*state_);
  }
  // Lets go of the stream: FIN if not sent yet; the id is freed when the peer finishes as well.
  void close() {
    if (!state_) return;
    auto* s = std::exchange(state_, nullptr);
    core_->release(*s);
    core_.reset();
  }
  void close(std::error_code& ec) {
    ec.clear();
    close();
  }

 private:
  template <class ConstBufferSequence, class Handler>
  void start_write(const ConstBufferSequence& bufs, Handler&& handler, bool last) {
    if (!state_) return post_error(std::forward<Handler>(handler));
    auto& s = *state_;
    s.write_buf_count = 0;
    s.write_total = 0;
    s.write_offset = 0;
    auto it = asio::buffer_sequence_begin(bufs);
    const auto end = asio::buffer_sequence_end(bufs);
    for (; it != end && s.write_buf_count < detail::max_op_buffers; ++it) {
      asio::const_buffer b(*it);
      if (b.size() == 0) continue;
      s.write_bufs[s.write_buf_count++] = b;
      s.write_total += b.size();
    }
    // The FIN may follow only when this operation carries everything that is left. Decided before
    // the handler moves: async_write_last's handler owns the buffer list `bufs` refers to.
    while (it != end && asio::const_buffer(*it).size() == 0) ++it;
    const bool fin = last && it == end;
    core_->write_some(s,
                      detail::make_pending_op<std::error_code, std::size_t>(std::forward<Handler>(handler),
                                                                            core_->get_executor(), core_.get(), s.id),
                      fin);
  }

  // async_write_last: write_some until every byte is out; the last of them carries the FIN.
  struct write_last_op {
    stream* self;
    std::vector<asio::const_buffer> rest;
    std::size_t written = 0;
    bool started = false;

    template <class Self>
    void operator()(Self& op, std::error_code ec = {}, std::size_t n = 0) {
      if (started) {
        written += n;
        while (n > 0 && !rest.empty()) {
          const std::size_t k = std::min(n, rest.front().size());
          rest.front() += k;
          n -= k;
          if (rest.front().size() == 0) rest.erase(rest.begin());
        }
        std::erase_if(rest, [](const asio::const_buffer& b) { return b.size() == 0; });
        if (ec || rest.empty()) return op.complete(ec, written);
      }
      started = true;
      self->start_write(rest, std::move(op), true);
    }
  };

  template <class Handler>
  void post_error(Handler&& handler) {
    auto ex = asio::get_associated_executor(handler);
    asio::post(ex, [h = std::forward<Handler>(handler)]() mutable {
      std::move(h)(std::error_code(asio::error::bad_descriptor), std::size_t{0});
    });
  }

  std::shared_ptr<detail::session_core> core_;
  detail::stream_state* state_ = nullptr;
};

}  // namespace socketmaster::yamux
