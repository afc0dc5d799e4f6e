// What tests of yamux sessions share: a connected Unix socket pair, a reproducible byte pattern (so
// reordered or repeated bytes are caught, which a constant fill would not), reading a stream to its
// end, and reading frames as a raw peer.
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
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>

#include "protocol/frame.hpp"

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

// One frame from a raw peer's socket; a Data frame's payload goes to `payload` (or is skipped).
template <class Socket>
asio::awaitable<yamux::frame_header> read_frame(Socket& raw, std::vector<std::byte>* payload = nullptr) {
  yamux::header_bytes hb;
  co_await asio::async_read(raw, asio::buffer(hb), asio::use_awaitable);
  const auto h = yamux::decode(hb);
  if (h.type == yamux::frame_type::data && h.length > 0) {
    std::vector<std::byte> p(h.length);
    co_await asio::async_read(raw, asio::buffer(p), asio::use_awaitable);
    if (payload) *payload = std::move(p);
  }
  co_return h;
}

// Reads frames from a raw peer until one of `type` arrives (answering nothing).
template <class Socket>
asio::awaitable<yamux::frame_header> read_until(Socket& raw, yamux::frame_type type) {
  for (;;) {
    auto h = co_await read_frame(raw);
    if (h.type == type) co_return h;
  }
}

}  // namespace socketmaster::test
