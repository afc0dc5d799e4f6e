// upstream_listener against real loopback sockets: what a handler receives from accept.
#include "server/upstream_listener.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>

#include <optional>
#include <string>
#include <vector>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/write.hpp>

using namespace socketmaster;
using asio::ip::tcp;

TEST_CASE("accepted connections come with TCP_NODELAY and the peer's address") {
  asio::io_context io;
  std::error_code ec;
  auto listener = server::upstream_listener::bind(io.get_executor(), "127.0.0.1", 0, false, logger::null(), ec);
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

TEST_CASE("a burst beyond one turn's accepts is taken in full; sockets are non-blocking and close-on-exec, "
          "and a descriptor number reused after a close serves asynchronous reads") {
  asio::io_context io;
  std::error_code ec;
  auto listener = server::upstream_listener::bind(io.get_executor(), "127.0.0.1", 0, false, logger::null(), ec);
  REQUIRE_MESSAGE(listener, ec.message());
  const tcp::endpoint target{asio::ip::make_address("127.0.0.1"), listener->local_endpoint().port()};

  constexpr std::size_t burst = 80;  // more than the listener takes in one turn
  std::vector<tcp::socket> accepted;
  std::size_t stop_at = burst;
  listener->start([&](tcp::socket sock, const tcp::endpoint&) {
    accepted.push_back(std::move(sock));
    if (accepted.size() == stop_at) io.stop();
  });
  std::vector<tcp::socket> clients;
  for (std::size_t i = 0; i < burst; ++i) clients.emplace_back(io).connect(target);  // all in the backlog
  io.run_for(std::chrono::seconds(10));
  REQUIRE(accepted.size() == burst);
  for (auto& s : accepted) {
    const int fd = s.native_handle();
    CHECK((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  }

  // Closed without an explicit epoll_ctl(DEL): the kernel drops the registration with the last
  // reference, so the next socket given the same number is watched afresh.
  auto& late = clients.emplace_back(io);
  late.open(tcp::v4());  // before the close, so that the number freed goes to the accepted socket
  const int closed_fd = accepted.front().native_handle();
  accepted.front().close();
  stop_at = burst + 1;
  late.connect(target);
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(accepted.size() == burst + 1);
  CHECK(accepted.back().native_handle() == closed_fd);  // the lowest free number, as POSIX requires

  char got[8] = {};
  std::size_t n = 0;
  accepted.back().async_read_some(asio::buffer(got), [&](std::error_code e, std::size_t k) {
    ec = e;
    n = k;
  });
  asio::write(late, asio::buffer("ping", 4));
  io.restart();
  io.run_for(std::chrono::seconds(10));
  CHECK_MESSAGE(!ec, ec.message());
  CHECK(std::string(got, n) == "ping");
}

TEST_CASE("where the client speaks first, a connection is handed over with its first bytes; a silent one after "
          "about a second, not never") {
  asio::io_context io;
  std::error_code ec;
  auto listener = server::upstream_listener::bind(io.get_executor(), "127.0.0.1", 0, true, logger::null(), ec);
  REQUIRE_MESSAGE(listener, ec.message());
  const tcp::endpoint target{asio::ip::make_address("127.0.0.1"), listener->local_endpoint().port()};

  struct handed_over {
    tcp::endpoint peer;
    std::size_t readable;
    std::chrono::steady_clock::time_point at;
  };
  std::vector<handed_over> accepted;
  std::vector<tcp::socket> keep;
  listener->start([&](tcp::socket sock, const tcp::endpoint& peer) {
    accepted.push_back({peer, sock.available(), std::chrono::steady_clock::now()});
    keep.push_back(std::move(sock));
    io.stop();
  });

  const auto start = std::chrono::steady_clock::now();
  tcp::socket silent(io), speaking(io);
  silent.connect(target);
  speaking.connect(target);
  // Both handshakes are complete on the client's side; the listener must not have either yet.
  io.run_for(std::chrono::milliseconds(300));
  CHECK(accepted.empty());

  asio::write(speaking, asio::buffer(std::string("GET")));
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(accepted.size() == 1);
  CHECK(accepted[0].peer == speaking.local_endpoint());
  CHECK(accepted[0].readable == 3);  // the bytes came with it

  // The silent client is not held for ever: the kernel hands it over once its SYN-ACK was sent
  // again (1 s), and the header timeout takes it from there.
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(accepted.size() == 2);
  CHECK(accepted[1].peer == silent.local_endpoint());
  CHECK(accepted[1].readable == 0);
  CHECK(accepted[1].at - start >= std::chrono::milliseconds(500));
}
