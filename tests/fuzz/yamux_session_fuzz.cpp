// libFuzzer target: raw bytes from a peer fed to a yamux session. The transport is an in-memory
// stream that hands the input to the session's read loop in chunks and swallows what it writes, so
// the real read loop, state machine and writer all run, with no socket. Accepted streams are echoed,
// so data, flow control and half-close paths are exercised as well. Half of the inputs (by the
// first byte) run a session that reads a shared ring, as the master does.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>

#include <fcntl.h>

#include <cstdint>
#include <span>
#include <string>

#include "protocol/session.hpp"

namespace {

using namespace socketmaster::yamux;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// An AsyncStream over a fixed input; reads return it in chunks sized by the input itself.
class replay_stream {
 public:
  using executor_type = asio::any_io_executor;
  using lowest_layer_type = replay_stream;

  replay_stream(executor_type ex, std::span<const std::uint8_t> in) : ex_(std::move(ex)), in_(in) {}
  executor_type get_executor() const { return ex_; }
  lowest_layer_type& lowest_layer() { return *this; }
  void close() { closed_ = true; }

  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, std::size_t)>(
        [this](auto handler, const Buffers& bufs) {
          std::error_code ec;
          std::size_t n = 0;
          if (closed_) {
            ec = asio::error::operation_aborted;
          } else if (pos_ >= in_.size()) {
            ec = asio::error::eof;
          } else {
            // Chunk sizes vary with the data so frames are split at every possible offset.
            const std::size_t want = 1 + (in_[pos_] % 64) * 7;
            n = asio::buffer_copy(bufs, asio::buffer(in_.data() + pos_, std::min(want, in_.size() - pos_)));
            pos_ += n;
          }
          asio::post(ex_, [h = std::move(handler), ec, n]() mutable { h(ec, n); });
        },
        token, buffers);
  }

  template <class Buffers, class Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, std::size_t)>(
        [this](auto handler, const Buffers& bufs) {
          const std::error_code ec = closed_ ? std::error_code(asio::error::operation_aborted) : std::error_code{};
          const std::size_t n = closed_ ? 0 : asio::buffer_size(bufs);
          asio::post(ex_, [h = std::move(handler), ec, n]() mutable { h(ec, n); });
        },
        token, buffers);
  }

 private:
  executor_type ex_;
  std::span<const std::uint8_t> in_;
  std::size_t pos_ = 0;
  bool closed_ = false;
};

asio::awaitable<void> echo(stream s) {
  std::array<std::byte, 1024> buf;
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
    if (n) {
      auto [wec, wn] = co_await asio::async_write(s, asio::buffer(buf.data(), n), use_tuple);
      if (wec) co_return;
    }
    if (ec) break;
  }
  s.shutdown_send();
}

asio::awaitable<void> accept_all(session& s, asio::io_context& io) {
  for (;;) {
    auto [ec, st] = co_await s.async_accept(use_tuple);
    if (ec) co_return;
    asio::co_spawn(io, echo(std::move(st)), asio::detached);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  asio::io_context io;
  config cfg;
  cfg.accept_backlog = 8;
  cfg.max_streams = 64;
  cfg.max_stream_window = 1 << 20;
  // The first byte picks the role, so both stream-id parities are exercised, and whether the
  // session reads a shared ring (as the master does from a same-host service), so RingData frames
  // are accepted and their spans handed to streams and held.
  const role r = (data[0] & 1) ? role::client : role::server;
  session::ring_use ring;
  if (data[0] & 2) {
    std::error_code rec;
    const auto writer = shared_ring::create(shared_ring::min_capacity, rec);
    std::string why;
    if (writer) ring = {shared_ring::attach(::fcntl(writer->fd(), F_DUPFD_CLOEXEC, 0), 1 << 20, why), false};
  }
  session s(replay_stream(io.get_executor(), {data + 1, size - 1}), r, cfg, ring);
  asio::co_spawn(io, accept_all(s, io), asio::detached);
  // Also open a stream of our own and write to it: its frames go to the swallowing transport.
  std::error_code ec;
  if (auto mine = s.open(ec); !ec) asio::co_spawn(io, echo(std::move(mine)), asio::detached);
  io.run();
  return 0;
}
