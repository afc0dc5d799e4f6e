// A loopback TCP port that refuses connections and that no other socket can take while this
// object lives: bound, not listening (the kernel answers a SYN there with a reset).
//
// Why not bind port 0 and close at once: the kernel hands the freed port to the next bind to port
// 0, which in an end-to-end test is often the master's public listener. A sidecar whose "refusing"
// backend had become its own public port then proxied to itself, each connection opening the next,
// until the master ran out of descriptors (connect_test, CI of 2026-11-25). A bound socket without
// SO_REUSEADDR keeps the port out of both automatic choices: bind to port 0 and a connect's source port.
#pragma once

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

namespace socketmaster::test {

class refusing_port {
 public:
  explicit refusing_port(asio::io_context& io) : acceptor_(io) {
    acceptor_.open(asio::ip::tcp::v4());
    acceptor_.bind({asio::ip::address_v4::loopback(), 0});
  }

  asio::ip::tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }

  // The same port starts taking connections: for a test whose peer comes up late. The port was
  // never free in between, so it is still the one the test handed out.
  asio::ip::tcp::acceptor listen() && {
    acceptor_.listen();
    return std::move(acceptor_);
  }

 private:
  asio::ip::tcp::acceptor acceptor_;
};

}  // namespace socketmaster::test
