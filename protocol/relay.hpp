// Moving bytes between two streams of any kind (TCP socket, TLS stream, yamux stream) in both
// directions, half-close aware: EOF on one side becomes a send-shutdown (FIN) on the other, and the
// other direction goes on until its own EOF. An error in either direction aborts both.
#pragma once

#include <chrono>
#include <limits>
#include <memory>
#include <span>
#include <system_error>
#include <tuple>

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cstdint>

namespace socketmaster {

inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// A completion condition for asio::async_write that hands the stream everything left in each
// write_some, where the default stops at 64 KiB: a yamux stream batches all of it into one system
// call of frames, a socket takes what fits.
inline constexpr auto whole_writes = [](const std::error_code& ec, std::size_t) -> std::size_t {
  return ec ? 0 : std::numeric_limits<std::size_t>::max();
};

// Shut our sending side down, keep receiving: FIN on a socket, FIN frame on a yamux stream.
template <class Stream>
asio::awaitable<void> half_close(Stream& s) {
  if constexpr (requires { s.shutdown_send(); }) {
    s.shutdown_send();
  } else {
    std::error_code ec;
    s.lowest_layer().shutdown(asio::socket_base::shutdown_send, ec);
  }
  co_return;
}
// TLS has no half-close of its own: send close_notify (bounded wait for the peer's), then FIN.
template <class Next>
asio::awaitable<void> half_close(asio::ssl::stream<Next>& s) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer limit(s.get_executor(), std::chrono::seconds(5));
  co_await (s.async_shutdown(use_tuple) || limit.async_wait(use_tuple));
  std::error_code ec;
  s.lowest_layer().shutdown(asio::socket_base::shutdown_send, ec);
}

// Writes all of `buffers`, then half-closes `s`: on a yamux stream the FIN leaves in the same
// system call as the last bytes (stream::async_write_last); elsewhere async_write, then half_close.
template <class Stream, class ConstBufferSequence>
asio::awaitable<std::tuple<std::error_code, std::size_t>> write_last(Stream& s, const ConstBufferSequence& buffers) {
  if constexpr (requires { s.async_write_last(buffers, use_tuple); }) {
    co_return co_await s.async_write_last(buffers, use_tuple);
  } else {
    auto result = co_await asio::async_write(s, buffers, use_tuple);
    if (!std::get<0>(result)) co_await half_close(s);
    co_return result;
  }
}

// Tear down at once, so pending operations on the stream fail promptly: RST on a yamux stream,
// close on a socket.
template <class Stream>
void abort_stream(Stream& s) {
  if constexpr (requires { s.reset(); }) {
    s.reset();
  } else {
    std::error_code ec;
    s.lowest_layer().close(ec);
  }
}

// Copies `from` to `to` until EOF (then half-closes `to`) or an error (returned). Once a read
// fills `buf`, bytes are streaming faster than one buffer a turn: later reads go to a buffer of
// `bulk_size` (when larger), held until the end, so that a bulk transfer moves that much per read
// and write (issue 6: 16 KiB at a time cost the sidecar's 1 GiB transfer two system calls and two
// turns per 16 KiB) while a quiet connection keeps only the small one.
template <class From, class To>
asio::awaitable<std::error_code> pump(From& from, To& to, std::span<std::byte> buf, std::uint64_t& moved,
                                      std::size_t bulk_size = 0) {
  std::unique_ptr<std::byte[]> bulk;
  for (;;) {
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buf.data(), buf.size()), use_tuple);
    if (n > 0) {
      auto [wec, wn] = co_await asio::async_write(to, asio::buffer(buf.data(), n), whole_writes, use_tuple);
      moved += wn;
      if (wec) co_return wec;
      if (n == buf.size() && bulk_size > buf.size() && !bulk) {
        bulk = std::make_unique_for_overwrite<std::byte[]>(bulk_size);
        buf = {bulk.get(), bulk_size};
      }
    }
    if (ec == asio::error::eof) {
      co_await half_close(to);
      co_return std::error_code{};
    }
    if (ec) co_return ec;
  }
}

struct tunnel_result {
  std::uint64_t a_to_b = 0;
  std::uint64_t b_to_a = 0;
  std::error_code error;
};

// Both directions until both have ended. Buffers are allocated here, per direction: `buffer_size`
// each, and `bulk_size` for a direction whose reads fill that (pump).
template <class A, class B>
asio::awaitable<tunnel_result> tunnel(A& a, B& b, std::size_t buffer_size = 16 * 1024,
                                      std::size_t bulk_size = 256 * 1024) {
  using namespace asio::experimental::awaitable_operators;
  tunnel_result result;
  auto buffers = std::make_unique_for_overwrite<std::byte[]>(2 * buffer_size);
  auto direction = [&](auto& from, auto& to, std::span<std::byte> buf, std::uint64_t& moved) -> asio::awaitable<void> {
    if (auto ec = co_await pump(from, to, buf, moved, bulk_size)) {
      if (!result.error) result.error = ec;
      abort_stream(a);
      abort_stream(b);
    }
  };
  co_await (direction(a, b, {buffers.get(), buffer_size}, result.a_to_b) &&
            direction(b, a, {buffers.get() + buffer_size, buffer_size}, result.b_to_a));
  co_return result;
}

}  // namespace socketmaster
