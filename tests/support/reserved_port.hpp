// A loopback TCP port that stays ours for as long as this object lives: bound, not listening.
// - Connections to it are refused (the kernel answers a SYN with a reset): a backend or a master
//   that is not there.
// - No automatic choice lands on it: neither a bind to port 0 nor a connect's source port.
// - A program given its number can still listen on it when it binds with SO_REUSEADDR, as the
//   master and Asio's acceptors do (Linux lets a reusable bind share the port with a bound socket
//   that does not listen): a fixed port that a restarted master takes again.
//
// Why not bind port 0 and close at once: the kernel hands the freed port to the next bind to port
// 0, which in an end-to-end test is often the master's public listener. A sidecar whose "refusing"
// backend had become its own public port then proxied to itself, each connection opening the next,
// until the master ran out of descriptors (connect_test, CI of 2026-11-25).
#pragma once

#include <cstdint>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

namespace socketmaster::test {

class reserved_port {
 public:
  explicit reserved_port(asio::io_context& io) : acceptor_(io) {
    acceptor_.open(asio::ip::tcp::v4());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind({asio::ip::address_v4::loopback(), 0});
  }

  asio::ip::tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }
  std::uint16_t port() const { return endpoint().port(); }

  // The port starts taking connections here: for a test whose peer comes up late. It was never
  // free in between, so it is still the number the test handed out.
  asio::ip::tcp::acceptor listen() && {
    acceptor_.listen();
    return std::move(acceptor_);
  }

 private:
  asio::ip::tcp::acceptor acceptor_;
};

}  // namespace socketmaster::test
