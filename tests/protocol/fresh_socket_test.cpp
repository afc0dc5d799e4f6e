// start_connect/finish_connect and mark_fresh over real loopback sockets: a socket they set up
// connects (at once or after a writability wait), is non-blocking and close-on-exec, carries bytes
// both ways through Asio's asynchronous operations, and has TCP_NODELAY when asked; a refused
// connect reports the refusal.
#include "protocol/fresh_socket.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <fcntl.h>

#include <array>
#include <chrono>
#include <string>

#include "tests/support/reserved_port.hpp"
#include "tests/support/run_coroutine.hpp"

using namespace socketmaster;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

template <class Body>
void run(Body body) {
  test::run_coroutine(std::move(body), 10s);
}

// Connects `s` to `to` the way the sidecar does: at once when the handshake is already done,
// otherwise after the socket turns writable.
asio::awaitable<std::error_code> connect(asio::ip::tcp::socket& s, const asio::ip::tcp::endpoint& to, bool no_delay) {
  std::error_code ec;
  switch (start_connect(s, to, no_delay, ec)) {
    case connect_progress::connected: co_return std::error_code{};
    case connect_progress::failed: co_return ec;
    case connect_progress::in_progress: break;
  }
  auto [wec] = co_await s.async_wait(asio::socket_base::wait_write, use_tuple);
  co_return wec ? wec : finish_connect(s);
}

asio::ip::address loopback(bool v6) {
  return v6 ? asio::ip::address(asio::ip::address_v6::loopback()) : asio::ip::address(asio::ip::address_v4::loopback());
}

}  // namespace

TEST_CASE("a socket start_connect sets up connects to a loopback listener and carries bytes both ways") {
  for (const bool v6 : {false, true}) {
    for (const bool no_delay : {false, true}) {
      CAPTURE(v6);
      CAPTURE(no_delay);
      run([&](asio::io_context& io) -> asio::awaitable<void> {
        std::error_code bec;
        asio::ip::tcp::acceptor acceptor(io);
        acceptor.open(v6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), bec);
        if (!bec) acceptor.bind({loopback(v6), 0}, bec);
        if (bec && v6) co_return;  // no IPv6 loopback on this machine: nothing to test
        REQUIRE_FALSE(bec);
        acceptor.listen();
        asio::ip::tcp::socket s(io);
        REQUIRE_FALSE(co_await connect(s, acceptor.local_endpoint(), no_delay));
        auto peer = co_await acceptor.async_accept(asio::use_awaitable);
        CHECK((::fcntl(s.native_handle(), F_GETFL) & O_NONBLOCK) != 0);
        CHECK((::fcntl(s.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
        asio::ip::tcp::no_delay option;
        s.get_option(option);
        CHECK(option.value() == no_delay);

        const std::string there = "to the listener", back = "and back";
        co_await asio::async_write(s, asio::buffer(there), asio::use_awaitable);
        std::string got(there.size(), '\0');
        co_await asio::async_read(peer, asio::buffer(got), asio::use_awaitable);
        CHECK(got == there);
        co_await asio::async_write(peer, asio::buffer(back), asio::use_awaitable);
        got.assign(back.size(), '\0');
        co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
        CHECK(got == back);
        peer.close();
        std::array<char, 4> more;
        auto [ec, n] = co_await s.async_read_some(asio::buffer(more), use_tuple);
        CHECK(ec == asio::error::eof);
      });
    }
  }
}

TEST_CASE("a refused connect reports connection_refused, whether at once or after the wait") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    const test::reserved_port nobody(io);
    asio::ip::tcp::socket s(io);
    CHECK(co_await connect(s, nobody.endpoint(), true) == asio::error::connection_refused);
  });
}
