// upstream_listener against real loopback sockets: what a handler receives from accept.
#include "server/upstream_listener.hpp"

#include <doctest/doctest.h>

#include <optional>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>

using namespace socketmaster;
using asio::ip::tcp;

TEST_CASE("accepted connections come with TCP_NODELAY and the peer's address") {
  asio::io_context io;
  std::error_code ec;
  auto listener = server::upstream_listener::bind(io.get_executor(), "127.0.0.1", 0, logger::null(), ec);
  REQUIRE_MESSAGE(listener, ec.message());
  const auto port = listener->local_endpoint().port();
  REQUIRE(port != 0);

  std::vector<std::pair<bool, tcp::endpoint>> accepted;  // (no_delay, peer) per connection
  listener->start([&](tcp::socket sock, const tcp::endpoint& peer) {
    tcp::no_delay nd;
    sock.get_option(nd);
    accepted.emplace_back(nd.value(), peer);
    if (accepted.size() == 2) io.stop();
  });

  tcp::socket a(io), b(io);
  a.connect({asio::ip::make_address("127.0.0.1"), port});
  b.connect({asio::ip::make_address("127.0.0.1"), port});
  io.run_for(std::chrono::seconds(10));
  REQUIRE(accepted.size() == 2);
  CHECK(accepted[0].first);
  CHECK(accepted[1].first);
  CHECK(accepted[0].second == a.local_endpoint());
  CHECK(accepted[1].second == b.local_endpoint());
}
