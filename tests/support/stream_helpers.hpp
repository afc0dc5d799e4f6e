// What tests of yamux sessions share: a connected Unix socket pair, a reproducible byte pattern (so
// reordered or repeated bytes are caught, which a constant fill would not), and reading a stream to
// its end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/use_awaitable.hpp>

namespace socketmaster::test {

inline std::pair<asio::local::stream_protocol::socket, asio::local::stream_protocol::socket> socket_pair(
    asio::io_context& io) {
  asio::local::stream_protocol::socket a(io), b(io);
  asio::local::connect_pair(a, b);
  return {std::move(a), std::move(b)};
}

inline std::vector<std::byte> pattern(std::size_t n, unsigned seed = 1) {
  std::vector<std::byte> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = std::byte(x);
  }
  return v;
}

// Reads until an error (EOF expected); returns what was read and that error.
template <class Stream>
asio::awaitable<std::pair<std::vector<std::byte>, std::error_code>> read_all(Stream& s) {
  std::vector<std::byte> out;
  std::vector<std::byte> buf(70000);
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), asio::experimental::as_tuple(asio::use_awaitable));
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
    if (ec) co_return std::pair{std::move(out), ec};
  }
}

}  // namespace socketmaster::test
