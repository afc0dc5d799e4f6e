// A TCP socket for a yamux session whose incoming bytes a test can hold back from the session while
// still taking them off the wire and looking at them. It orders events across the two peers without
// sleeping: hold, make the peer send something, see it arrive in held(), act on the peer while our
// session has not seen it yet, then release.
//
// The test owns the holdable_socket and gives the session a view() of it (the session owns its
// transport, and the test still needs the controls), so the holdable_socket must outlive the session.
// Concurrency: its executor only; one read and one write at a time, as the session does.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/buffer.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace socketmaster::interop {

class holdable_socket {
 public:
  explicit holdable_socket(asio::ip::tcp::socket socket)
      : socket_(std::move(socket)), arrived_(socket_.get_executor(), asio::steady_timer::time_point::max()) {}
  holdable_socket(const holdable_socket&) = delete;
  holdable_socket& operator=(const holdable_socket&) = delete;

  // What the session reads and writes through: the AsyncStream operations session_over uses.
  class view {
   public:
    using executor_type = asio::ip::tcp::socket::executor_type;
    using lowest_layer_type = asio::ip::tcp::socket;

    explicit view(holdable_socket& s) : s_(&s) {}
    executor_type get_executor() { return s_->socket_.get_executor(); }
    // The session closes this to end its reads: an aborted read on a closed socket reaches it.
    lowest_layer_type& lowest_layer() { return s_->socket_; }

    template <class ConstBufferSequence, class WriteToken>
    auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
      return s_->socket_.async_write_some(buffers, std::forward<WriteToken>(token));
    }

    // Reads into the first buffer of the sequence: the session reads into one buffer.
    template <class MutableBufferSequence, class ReadToken>
    auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
      return asio::async_initiate<ReadToken, void(std::error_code, std::size_t)>(
          [s = s_](auto handler, asio::mutable_buffer out) {
            asio::co_spawn(s->socket_.get_executor(), s->read_some(out),
                           [h = std::move(handler)](std::exception_ptr e,
                                                    std::pair<std::error_code, std::size_t> r) mutable {
                             if (e) std::rethrow_exception(e);
                             std::move(h)(r.first, r.second);
                           });
          },
          token, asio::mutable_buffer(*asio::buffer_sequence_begin(buffers)));
    }

   private:
    holdable_socket* s_;
  };

  view make_view() { return view(*this); }

  // From now on, incoming bytes collect in held() instead of reaching the session.
  void hold() {
    holding_ = true;
    restart_read();  // the session's pending read restarts as a holding read
  }
  // Hands the held bytes, and then the live stream again, to the session.
  void release() {
    holding_ = false;
    restart_read();  // a holding read that waits for more bytes stops and delivers the held ones
  }
  std::span<const std::byte> held() const { return held_; }
  // Completes when more bytes have been held.
  asio::awaitable<void> async_wait_held() {
    co_await arrived_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }

 private:
  // Cancels the pending socket read only (socket.cancel() would abort the session's write too).
  void restart_read() { read_cancel_.emit(asio::cancellation_type::all); }

  asio::awaitable<std::pair<std::error_code, std::size_t>> read_some(asio::mutable_buffer out) {
    constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
    for (;;) {
      if (!holding_ && !held_.empty()) {
        const std::size_t n = std::min(out.size(), held_.size());
        std::copy_n(held_.begin(), n, static_cast<std::byte*>(out.data()));
        held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(n));
        co_return std::pair{std::error_code(), n};
      }
      const bool holding = holding_;
      std::array<std::byte, 16 * 1024> chunk;
      auto [ec, n] = co_await socket_.async_read_some(holding ? asio::buffer(chunk) : out,
                                                      asio::bind_cancellation_slot(read_cancel_.slot(), use_tuple));
      // hold() and release() cancel a pending read so that it looks at the mode again.
      const bool restarted = ec == asio::error::operation_aborted && socket_.is_open();
      if (!holding) {
        if (restarted && n == 0) continue;
        co_return std::pair{restarted ? std::error_code() : ec, n};
      }
      held_.insert(held_.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
      if (n > 0) arrived_.cancel();
      if (ec && !restarted) co_return std::pair{ec, std::size_t{0}};
    }
  }

  asio::ip::tcp::socket socket_;
  bool holding_ = false;
  std::vector<std::byte> held_;
  asio::steady_timer arrived_;
  asio::cancellation_signal read_cancel_;
};

}  // namespace socketmaster::interop
