// The yamux session and its streams over a real socket pair: every state transition, flow control,
// cancellation and the peer-violation paths (driven by a raw socket speaking frames by hand).
#include "protocol/session.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <vector>

#include "tests/support/run_coroutine.hpp"
#include "tests/support/stream_helpers.hpp"

using namespace socketmaster;
using namespace socketmaster::yamux;
using namespace asio::experimental::awaitable_operators;
using socket_type = asio::local::stream_protocol::socket;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

template <class Body>
void run(Body body, std::chrono::seconds limit = 20s) {
  test::run_coroutine(std::move(body), limit);
}

using test::socket_pair;

struct session_pair {
  session client;
  session server;
};

// Tests whose lambdas use the sessions name them as references to the pair's members: clang 14
// cannot capture structured bindings.
session_pair make_sessions(asio::io_context& io, config client_cfg = {}, config server_cfg = {}) {
  auto [a, b] = socket_pair(io);
  return {session(std::move(a), role::client, client_cfg), session(std::move(b), role::server, server_cfg)};
}

using test::pattern;

using test::read_all;

// The next stream `server` accepts (the test stops if the accept fails): a named stream, for tests
// whose lambdas use it (clang 14 cannot capture structured bindings).
asio::awaitable<stream> accept_ok(session& server) {
  auto [ec, s] = co_await server.async_accept(use_tuple);
  REQUIRE_FALSE(ec);
  co_return std::move(s);
}

// Opens a stream on `opener`, writes "ok", and returns the stream `acceptor` accepted with it,
// the two bytes checked: the session still carries new streams.
asio::awaitable<stream> ok_through(session& opener, session& acceptor) {
  auto c = opener.open();
  co_await asio::async_write(c, asio::buffer("ok", 2), asio::use_awaitable);
  auto s = co_await accept_ok(acceptor);
  std::array<char, 2> two;
  co_await asio::async_read(s, asio::buffer(two), asio::use_awaitable);
  CHECK(std::string(two.data(), 2) == "ok");
  co_return std::move(s);
}

using test::read_frame;

asio::awaitable<void> write_frame(socket_type& raw, frame_header h, std::span<const std::byte> payload = {}) {
  const auto hb = encode(h);
  std::array<asio::const_buffer, 2> bufs{asio::buffer(hb), asio::buffer(payload.data(), payload.size())};
  co_await asio::async_write(raw, bufs, asio::use_awaitable);
}

using test::read_until;

}  // namespace

TEST_CASE("a stream carries 4 MiB each way and ends with FIN both ways") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sessions = make_sessions(io);
    session &client = sessions.client, &server = sessions.server;
    const auto up = pattern(4 << 20, 1), down = pattern(4 << 20, 2);
    auto c = client.open();
    auto server_side = [&]() -> asio::awaitable<void> {
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      auto [got, rec] = co_await read_all(s);
      CHECK(rec == asio::error::eof);
      CHECK(got == up);
      co_await asio::async_write(s, asio::buffer(down), asio::use_awaitable);
      s.shutdown_send();
    };
    auto client_side = [&]() -> asio::awaitable<void> {
      co_await asio::async_write(c, asio::buffer(up), asio::use_awaitable);
      c.shutdown_send();
      auto [got, ec] = co_await read_all(c);
      CHECK(ec == asio::error::eof);
      CHECK(got == down);
    };
    co_await (server_side() && client_side());
    CHECK(client.stream_count() == 1);  // the handle is still held
    c.close();
    CHECK(client.stream_count() == 0);
  });
}

TEST_CASE("half-close: the side that got FIN keeps writing until it closes") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    auto c = client.open();
    const std::string hello = "hello";
    co_await asio::async_write(c, asio::buffer(hello), asio::use_awaitable);
    c.shutdown_send();
    c.shutdown_send();  // FIN exactly once
    auto s = co_await accept_ok(server);
    auto [got, rec] = co_await read_all(s);
    CHECK(rec == asio::error::eof);
    CHECK(got.size() == 5);
    // A second read after EOF still says EOF.
    std::array<char, 4> b;
    auto [ec2, n2] = co_await s.async_read_some(asio::buffer(b), use_tuple);
    CHECK(ec2 == asio::error::eof);
    CHECK(n2 == 0);
    const std::string reply(300'000, 'r');  // more than one window: needs the client's updates
    auto replier = [&]() -> asio::awaitable<void> {
      co_await asio::async_write(s, asio::buffer(reply), asio::use_awaitable);
      s.shutdown_send();
    };
    auto [back, cec] = co_await (read_all(c) && replier());
    CHECK(cec == asio::error::eof);
    CHECK(back.size() == reply.size());
    // Writing after our own shutdown is refused.
    auto [wec, wn] = co_await c.async_write_some(asio::buffer(hello), use_tuple);
    CHECK(wec == errc::stream_closed);
    CHECK(wn == 0);
  });
}

TEST_CASE("reset: the peer's pending read fails with stream_reset, and new writes too") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    auto c = client.open();
    co_await asio::async_write(c, asio::buffer("x", 1), asio::use_awaitable);
    auto s = co_await accept_ok(server);
    std::array<char, 1> one;
    co_await asio::async_read(s, asio::buffer(one), asio::use_awaitable);
    auto reader = [&]() -> asio::awaitable<std::error_code> {
      std::array<char, 16> b;
      auto [rec, n] = co_await s.async_read_some(asio::buffer(b), use_tuple);
      co_return rec;
    };
    auto resetter = [&]() -> asio::awaitable<void> {
      c.reset();
      co_return;
    };
    auto rec = co_await (reader() && resetter());
    CHECK(rec == errc::stream_reset);
    auto [wec, wn] = co_await s.async_write_some(asio::buffer("y", 1), use_tuple);
    CHECK(wec == errc::stream_reset);
    auto [cec, cn] = co_await c.async_write_some(asio::buffer("y", 1), use_tuple);
    CHECK(cec == errc::stream_reset);
  });
}

TEST_CASE("a stream reset before its SYN left costs the peer nothing: no RST for an unknown id, and its open slot is freed") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    config one_open;
    one_open.max_unacknowledged_opens = 1;  // the reset stream holds the only slot until it gives it back
    auto [client, server] = make_sessions(io, one_open);
    auto doomed = client.open();
    doomed.reset();  // same turn: the writer has not run, the SYN is still queued
    auto s = co_await ok_through(client, server);
    CHECK(s.id() == 3);  // id 1 was never announced
    // A round trip later both sessions are still up (an RST for id 1 made the server fail the
    // session with a protocol error, and every stream of it with the session).
    auto [pec, rtt] = co_await client.async_ping(use_tuple);
    CHECK_FALSE(pec);
    CHECK(client.is_open());
    CHECK(server.is_open());
  });
}

TEST_CASE("a pending read is cancelled by a timer race and by cancel()") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    auto c = client.open();
    std::array<char, 16> b;
    asio::steady_timer t(io, 20ms);
    auto result = co_await (c.async_read_some(asio::buffer(b), use_tuple) || t.async_wait(use_tuple));
    REQUIRE(result.index() == 1);  // the timer won; the read was cancelled through its slot
    // The stream is still usable: a second read can be started and cancelled explicitly.
    auto reader = [&]() -> asio::awaitable<std::error_code> {
      auto [ec, n] = co_await c.async_read_some(asio::buffer(b), use_tuple);
      co_return ec;
    };
    auto canceller = [&]() -> asio::awaitable<void> {
      c.cancel();
      co_return;
    };
    auto ec = co_await (reader() && canceller());
    CHECK(ec == asio::error::operation_aborted);
    // And data still flows afterwards.
    co_await asio::async_write(c, asio::buffer("ok", 2), asio::use_awaitable);
    auto [aec, s] = co_await server.async_accept(use_tuple);
    REQUIRE_FALSE(aec);
    std::array<char, 2> two;
    co_await asio::async_read(s, asio::buffer(two), asio::use_awaitable);
    CHECK(std::string(two.data(), 2) == "ok");
  });
}

TEST_CASE("an accept can be cancelled") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    asio::steady_timer t(io, 10ms);
    auto result = co_await (server.async_accept(use_tuple) || t.async_wait(use_tuple));
    CHECK(result.index() == 1);
  });
}

TEST_CASE("a side with no accept backlog (the master's) refuses every stream the peer opens, data and all") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    config never_accepts;
    never_accepts.accept_backlog = 0;
    auto [client, server] = make_sessions(io, never_accepts, {});
    // The server side opens, as a service that opens streams towards the master would.
    auto opened = server.open();
    const std::string window(256 * 1024, 'w');
    co_await asio::async_write(opened, asio::buffer(window), use_tuple);
    std::array<char, 1> one;
    auto [rec, rn] = co_await opened.async_read_some(asio::buffer(one), use_tuple);
    CHECK(rec == errc::stream_reset);  // refused at once (the write may have gone before the RST came)
    // The session goes on both ways: streams the client side opens still work.
    co_await ok_through(client, server);
    CHECK(client.is_open());
  });
}

TEST_CASE("a stream we let go of that the peer never finishes is reset after stream_close_timeout") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    config quick_close;
    quick_close.stream_close_timeout = 300ms;
    auto [client, server] = make_sessions(io, quick_close);
    // ok_through lets go of the client's end of each stream when it returns (FIN).
    const auto released = std::chrono::steady_clock::now();
    auto lingering = co_await ok_through(client, server);  // the server side never finishes this one
    auto done = co_await ok_through(client, server);
    done.shutdown_send();  // this one it does: the client's entry goes at once
    auto [iec] = co_await client.async_wait_idle(use_tuple);
    CHECK_FALSE(iec);
    const auto took = std::chrono::steady_clock::now() - released;
    CHECK(took >= 300ms);  // the lingering stream went by the timeout, not before
    CHECK(took < 5s);
    std::array<char, 4> b;
    auto [eof, n] = co_await lingering.async_read_some(asio::buffer(b), use_tuple);
    CHECK(eof == asio::error::eof);  // the FIN came first
    auto [wec, wn] = co_await lingering.async_write_some(asio::buffer("late", 4), use_tuple);
    CHECK(wec == errc::stream_reset);  // then the RST
    CHECK(client.is_open());
  });
}

TEST_CASE("backlog overflow is answered with RST") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    config small;
    small.accept_backlog = 2;
    auto [client, server] = make_sessions(io, {}, small);
    std::vector<stream> opened;
    for (int i = 0; i < 3; ++i) {
      opened.push_back(client.open());
      co_await asio::async_write(opened.back(), asio::buffer("x", 1), asio::use_awaitable);
    }
    std::array<char, 1> b;
    auto [ec, n] = co_await opened[2].async_read_some(asio::buffer(b), use_tuple);
    CHECK(ec == errc::stream_reset);
    // The first two wait in the backlog and are served normally.
    for (int i = 0; i < 2; ++i) {
      auto [aec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(aec);
      co_await asio::async_read(s, asio::buffer(b), asio::use_awaitable);
      CHECK(b[0] == 'x');
    }
  });
}

TEST_CASE("opens beyond the unacknowledged limit wait for ACKs instead of overflowing the peer's backlog") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    config opener, acceptor;
    opener.max_unacknowledged_opens = 2;
    acceptor.accept_backlog = 2;
    auto [client, server] = make_sessions(io, opener, acceptor);
    std::vector<stream> opened;
    for (int i = 0; i < 6; ++i) {
      opened.push_back(client.open());
      // Writes on a stream whose SYN is held back complete once it may go out.
      asio::co_spawn(io, asio::async_write(opened.back(), asio::buffer("x", 1), asio::use_awaitable), asio::detached);
    }
    // The acceptor takes one stream per round trip; a backlog of 2 would have refused 4 of them.
    std::vector<stream> accepted;
    for (int i = 0; i < 6; ++i) {
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      std::array<char, 1> b;
      auto [rec, n] = co_await asio::async_read(s, asio::buffer(b), use_tuple);
      CHECK_FALSE(rec);
      CHECK(b[0] == 'x');
      accepted.push_back(std::move(s));
      co_await client.async_ping(asio::use_awaitable);
    }
    for (auto& s : opened) {
      std::array<char, 1> b;
      asio::steady_timer t(io, 50ms);
      // None was reset: a read just waits (and is cancelled by the timer).
      auto r = co_await (s.async_read_some(asio::buffer(b), use_tuple) || t.async_wait(use_tuple));
      CHECK(r.index() == 1);
    }
  });
}

TEST_CASE("a sender stops at the receiver's window and resumes when it reads") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sessions = make_sessions(io);
    session &client = sessions.client, &server = sessions.server;
    const auto data = pattern(1 << 20);
    auto c = client.open();
    bool write_done = false;
    auto writer = [&]() -> asio::awaitable<void> {
      co_await asio::async_write(c, asio::buffer(data), asio::use_awaitable);
      write_done = true;
    };
    auto reader = [&]() -> asio::awaitable<void> {
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      // A ping round trip from the server: the client's window is exhausted, so nothing it could
      // still send is queued behind its reply.
      while (s.available() < initial_stream_window) co_await server.async_ping(asio::use_awaitable);
      co_await server.async_ping(asio::use_awaitable);
      CHECK(s.available() == initial_stream_window);
      CHECK_FALSE(write_done);
      std::vector<std::byte> got(data.size());
      co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
      CHECK(got == data);
    };
    co_await (writer() && reader());
    CHECK(write_done);
  });
}

TEST_CASE("a fast reader's receive window grows past 256 KiB, within the configured maximum") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    config cfg;
    cfg.max_stream_window = 1 << 20;
    auto sessions = make_sessions(io, cfg, cfg);
    session &client = sessions.client, &server = sessions.server;
    const auto data = pattern(64 << 20);
    auto c = client.open();
    std::uint32_t largest = 0;
    auto writer = [&]() -> asio::awaitable<void> {
      co_await asio::async_write(c, asio::buffer(data), asio::use_awaitable);
    };
    auto reader = [&]() -> asio::awaitable<void> {
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      std::vector<std::byte> buf(1 << 20);
      std::size_t total = 0;
      while (total < data.size()) {
        auto [rec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
        REQUIRE_FALSE(rec);
        total += n;
        largest = std::max(largest, s.receive_window());
      }
    };
    co_await (writer() && reader());
    CHECK(largest > initial_stream_window);
    CHECK(largest <= cfg.max_stream_window);
  });
}

TEST_CASE("window tuning takes the round trip as at least window_tuning_min_rtt: a reader pausing 300 us per "
          "128 KiB grows its window, one pausing 20 ms does not") {
  // In one process a ping's round trip is some microseconds; with it, a 300 us pause between reads
  // would count as a slow reader, as the master's pauses between a service's window updates did.
  // The fast case takes a floor of 50 ms so that a slow (sanitized, loaded) build keeps up with it.
  const auto largest_window = [](std::chrono::microseconds floor, std::chrono::microseconds pause, std::size_t bytes) {
    std::uint32_t largest = 0;
    run([&](asio::io_context& io) -> asio::awaitable<void> {
      config cfg;
      cfg.window_tuning_min_rtt = floor;
      auto sessions = make_sessions(io, cfg, cfg);
      session &client = sessions.client, &server = sessions.server;
      co_await client.async_ping(asio::use_awaitable);  // a measured round trip, as in a real session
      const auto data = pattern(bytes);
      auto c = client.open();
      auto writer = [&]() -> asio::awaitable<void> {
        co_await asio::async_write(c, asio::buffer(data), asio::use_awaitable);
      };
      auto reader = [&]() -> asio::awaitable<void> {
        auto s = co_await accept_ok(server);
        std::vector<std::byte> buf(128 * 1024), got;
        asio::steady_timer pace(io);
        while (got.size() < data.size()) {
          auto [ec, n] = co_await asio::async_read(s, asio::buffer(buf), use_tuple);
          REQUIRE_FALSE(ec);
          got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
          largest = std::max(largest, s.receive_window());
          pace.expires_after(pause);
          co_await pace.async_wait(use_tuple);
        }
        CHECK(got == data);
      };
      co_await (writer() && reader());
    });
    return largest;
  };
  // The window starts full (the writer is quicker than the first read), so its first half is taken
  // at once whatever the pace: one doubling. Beyond it only the reader that keeps up grows it.
  CHECK(largest_window(50ms, 300us, 4 << 20) > 2 * initial_stream_window);
  CHECK(largest_window(1ms, 20ms, 2 << 20) <= 2 * initial_stream_window);
}

TEST_CASE("ping measures a round trip") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    auto rtt = co_await client.async_ping(asio::use_awaitable);
    CHECK(rtt > 0ns);
    CHECK(rtt < 5s);
    CHECK(client.rtt() == rtt);
  });
}

TEST_CASE("go-away drains: open streams finish, new ones are refused") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    auto c = client.open();
    co_await asio::async_write(c, asio::buffer("a", 1), asio::use_awaitable);
    auto [ec, s] = co_await server.async_accept(use_tuple);
    REQUIRE_FALSE(ec);
    server.go_away();
    // The GoAway is queued before the ping reply, so once the ping returns the client knows.
    co_await client.async_ping(asio::use_awaitable);
    CHECK(client.remote_going_away());
    std::error_code oec;
    auto refused = client.open(oec);
    CHECK(oec == errc::remote_go_away);
    CHECK_FALSE(refused.is_open());
    // The open stream still works both ways.
    co_await asio::async_write(s, asio::buffer("b", 1), asio::use_awaitable);
    std::array<char, 1> b;
    co_await asio::async_read(c, asio::buffer(b), asio::use_awaitable);
    CHECK(b[0] == 'b');
    CHECK(client.is_open());
    CHECK(server.is_open());
  });
}

TEST_CASE("a stream still tells that its peer sent GoAway after the session has ended, and not when the peer just vanished") {
  // The master's HTTP router decides from this whether a request its stream closed without an
  // answer may go out again, possibly after the draining service's session is gone.
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    auto c = client.open();
    co_await asio::async_write(c, asio::buffer("a", 1), asio::use_awaitable);
    auto [ec, s] = co_await server.async_accept(use_tuple);
    REQUIRE_FALSE(ec);
    CHECK_FALSE(c.remote_going_away());
    server.go_away();
    co_await client.async_ping(asio::use_awaitable);
    CHECK(c.remote_going_away());
    s.close();
    server.close();
    co_await client.async_wait_closed(use_tuple);
    CHECK_FALSE(client.is_open());
    CHECK(c.remote_going_away());
  });
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, a] = socket_pair(io);
    session client(std::move(a), role::client);
    auto c = client.open();
    co_await asio::async_write(c, asio::buffer("a", 1), asio::use_awaitable);
    co_await read_frame(raw);  // its SYN
    raw.close();
    co_await client.async_wait_closed(use_tuple);
    CHECK_FALSE(c.remote_going_away());
  });
}

TEST_CASE("after our go-away a SYN that crossed it is accepted; once the peer answered the ping after it, RST") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    session server(std::move(b), role::server);
    server.go_away();
    // The raw client opens stream 1 before reading anything: its SYN crosses our GoAway.
    co_await write_frame(raw, {0, frame_type::data, flags::syn, 1, 5}, std::as_bytes(std::span("hello", 5)));
    auto [ec, s] = co_await server.async_accept(use_tuple);
    REQUIRE_FALSE(ec);
    std::array<char, 5> got;
    co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
    CHECK(std::string(got.data(), 5) == "hello");
    // Now it reads the GoAway and the ping that follows it, and answers the ping.
    co_await read_until(raw, frame_type::go_away);
    auto ping = co_await read_until(raw, frame_type::ping);
    CHECK(ping.has(flags::syn));
    co_await write_frame(raw, {0, frame_type::ping, flags::ack, 0, ping.length});
    // A SYN after that is refused.
    co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 3, 0});
    auto h = co_await read_until(raw, frame_type::window_update);
    while (h.stream_id != 3) h = co_await read_until(raw, frame_type::window_update);
    CHECK(h.has(flags::rst));
    CHECK(server.is_open());
  });
}

// Our answer to a ping must not overtake a SYN queued before the ping arrived: a peer that sent
// GoAway and then a ping refuses every SYN that reaches it after our answer (see the go-away test
// above). A raw peer with small socket buffers keeps a batch of stream A's data in flight, so that
// B's SYN and the answer to the peer's ping wait for the same next batch.
namespace {

enum class b_opens {
  bare_syn,         // B only opened: a bare SYN in the control queue
  syn_on_data,      // B opened and written to once A's batch is in flight: the SYN rides its Data frame
  syn_in_data_queue // B written to before the first batch, which ended (max_batch_bytes) before B's
                    // Data frame: its SYN waits in the data queue alone
};

// `count` streams like B (more than one batch holds: the answer waits for the batch after their SYNs).
void check_syn_before_ping_answer(b_opens how, std::size_t count = 1) {
  run([how, count](asio::io_context& io) -> asio::awaitable<void> {
    auto sockets = socket_pair(io);
    socket_type& raw = sockets.second;
    for (socket_type* s : {&sockets.first, &sockets.second}) {
      s->set_option(asio::socket_base::send_buffer_size(4096));
      s->set_option(asio::socket_base::receive_buffer_size(4096));
    }
    // The writes' handlers may outlive this frame (they complete when the session closes).
    auto big = std::make_shared<std::vector<std::byte>>(1 << 20);
    auto hello = std::make_shared<std::array<char, 5>>(std::array<char, 5>{'h', 'e', 'l', 'l', 'o'});
    auto ignore = [big, hello](std::error_code, std::size_t) {};
    config cfg;
    cfg.enable_keepalive = false;
    cfg.max_unacknowledged_opens = count + 1;
    if (how == b_opens::syn_in_data_queue) cfg.max_batch_bytes = 64 * 1024;  // one frame of A
    session client(std::move(sockets.first), role::client, cfg);
    // All of this is queued before the writer prepares its first batch (nothing is awaited yet).
    auto a = client.open();
    a.async_write_some(asio::buffer(*big), ignore);
    std::vector<stream> bs(count);
    auto open_bs = [&] {
      for (auto& b : bs) {
        b = client.open();
        if (how != b_opens::bare_syn) b.async_write_some(asio::buffer(*hello), ignore);
      }
    };
    if (how == b_opens::syn_in_data_queue) open_bs();
    // Headers only, up to A's first Data header: the rest of that batch cannot fit into the socket
    // buffers, so our writer is stuck in it until the raw peer reads again.
    frame_header first;
    for (;;) {
      header_bytes hb;
      co_await asio::async_read(raw, asio::buffer(hb), asio::use_awaitable);
      first = decode(hb);
      if (first.type == frame_type::data) break;
    }
    REQUIRE(first.stream_id == a.id());
    if (how != b_opens::syn_in_data_queue) open_bs();
    co_await write_frame(raw, {0, frame_type::ping, flags::syn, 0, 4242});
    co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 2, 0});
    // Accepted: the ping before this SYN was read, and its answer queued.
    auto [aec, from_peer] = co_await client.async_accept(use_tuple);
    REQUIRE_FALSE(aec);
    CHECK(from_peer.id() == 2);
    // Now read everything: the SYNs must come before the answer, once each.
    std::vector<std::byte> rest(first.length);
    co_await asio::async_read(raw, asio::buffer(rest), asio::use_awaitable);
    std::vector<std::uint32_t> syns_before_answer;
    for (;;) {
      auto h = co_await read_frame(raw);
      REQUIRE(h.version == protocol_version);
      if (h.has(flags::syn) && h.type != frame_type::ping) syns_before_answer.push_back(h.stream_id);
      if (h.type == frame_type::ping && h.has(flags::ack) && h.length == 4242) break;
    }
    std::vector<std::uint32_t> expected;
    for (const auto& b : bs) expected.push_back(b.id());
    CHECK(syns_before_answer == expected);
    client.close();
    std::vector<std::byte> sink(1 << 16);
    for (;;) {
      auto [ec, n] = co_await raw.async_read_some(asio::buffer(sink), use_tuple);
      if (ec) break;
    }
    co_await client.async_wait_closed(use_tuple);
  });
}

}  // namespace

TEST_CASE("a SYN queued before the peer's ping goes out before our answer to it") {
  SUBCASE("bare SYN") { check_syn_before_ping_answer(b_opens::bare_syn); }
  SUBCASE("SYN riding the stream's first Data frame") { check_syn_before_ping_answer(b_opens::syn_on_data); }
  SUBCASE("SYN left in the data queue by a full batch") { check_syn_before_ping_answer(b_opens::syn_in_data_queue); }
  SUBCASE("more SYNs than one batch holds") { check_syn_before_ping_answer(b_opens::bare_syn, 300); }
  SUBCASE("more SYNs riding Data frames than one batch holds") { check_syn_before_ping_answer(b_opens::syn_on_data, 300); }
}

TEST_CASE("closing the session fails pending operations and later ones") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sessions = make_sessions(io);
    session &client = sessions.client, &server = sessions.server;
    auto c = client.open();
    auto reader = [&]() -> asio::awaitable<std::error_code> {
      std::array<char, 8> b;
      auto [ec, n] = co_await c.async_read_some(asio::buffer(b), use_tuple);
      co_return ec;
    };
    auto kill_and_wait = [&]() -> asio::awaitable<std::error_code> {
      client.close();
      auto [ec] = co_await server.async_wait_closed(use_tuple);
      co_return ec;
    };
    auto [rec, sec] = co_await (reader() && kill_and_wait());
    CHECK(rec == errc::session_closed);
    CHECK(sec == errc::session_closed);
    std::error_code oec;
    client.open(oec);
    CHECK(oec == errc::session_closed);
    auto [aec, s] = co_await server.async_accept(use_tuple);
    CHECK(aec == errc::session_closed);
  });
}

namespace {
// Reads the 4 bytes `c` sent to `s`, closes both send sides and lets go of the server's handle (a
// stream stays in the table while a handle holds it).
asio::awaitable<int> read_then_close_both(stream& s, stream& c) {
  std::array<char, 4> got;
  co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
  s.shutdown_send();
  c.shutdown_send();
  s = stream{};
  co_return 0;
}
asio::awaitable<int> close_session(session& x) {
  x.close();
  co_return 0;
}
}  // namespace

TEST_CASE("async_wait_idle completes when the last stream is gone, at once when none is, and with the close reason") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sessions = make_sessions(io);
    session &client = sessions.client, &server = sessions.server;
    auto [iec0] = co_await client.async_wait_idle(use_tuple);  // nothing open yet
    CHECK_FALSE(iec0);
    stream c = client.open();
    co_await asio::async_write(c, asio::buffer("ping", 4), asio::use_awaitable);
    auto accepted = co_await server.async_accept(use_tuple);
    REQUIRE_FALSE(std::get<0>(accepted));
    stream s = std::move(std::get<1>(accepted));
    CHECK(server.stream_count() == 1);
    // The server's stream is gone once both FINs have crossed; the wait is pending until then.
    auto [iec, r1] = co_await (server.async_wait_idle(use_tuple) && read_then_close_both(s, c));
    CHECK_FALSE(iec);
    CHECK(server.stream_count() == 0);
    // A wait still pending when the session ends completes with the session's reason.
    stream c2 = client.open();
    co_await asio::async_write(c2, asio::buffer("x", 1), asio::use_awaitable);
    auto [cec, r2] = co_await (client.async_wait_idle(use_tuple) && close_session(client));
    CHECK(cec == errc::session_closed);
    CHECK(r1 + r2 == 0);
  });
}

TEST_CASE("an unanswered keepalive ends the session") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [a, raw] = socket_pair(io);
    config cfg;
    cfg.keepalive_interval = 50ms;
    cfg.write_timeout = 100ms;
    session client(std::move(a), role::client, cfg);
    auto [ec] = co_await client.async_wait_closed(use_tuple);
    CHECK(ec == errc::keepalive_timeout);
  });
}

TEST_CASE("a writer that cannot write within the write timeout ends the session") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [a, raw] = socket_pair(io);
    config cfg;
    cfg.enable_keepalive = false;
    cfg.write_timeout = 100ms;
    cfg.max_stream_window = cfg.initial_stream_window;
    session client(std::move(a), role::client, cfg);
    // The raw peer never reads: grant a huge window by hand so the client can fill the socket buffer.
    auto c = client.open();
    co_await write_frame(raw, {0, frame_type::window_update, flags::ack, c.id(), 64u << 20});
    std::vector<std::byte> big(32 << 20);
    auto [wec, n] = co_await asio::async_write(c, asio::buffer(big), use_tuple);
    CHECK(wec == errc::write_timeout);
    CHECK(client.close_reason() == errc::write_timeout);
  });
}

TEST_CASE("a stream the peer never acknowledges ends the session after stream_open_timeout") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [a, raw] = socket_pair(io);
    config cfg;
    cfg.enable_keepalive = false;
    cfg.stream_open_timeout = 100ms;
    session client(std::move(a), role::client, cfg);
    auto c = client.open();
    const auto start = std::chrono::steady_clock::now();
    auto g = co_await read_until(raw, frame_type::go_away);
    CHECK(g.length == static_cast<std::uint32_t>(go_away_code::normal));
    auto [ec] = co_await client.async_wait_closed(use_tuple);
    CHECK(ec == errc::stream_open_timeout);
    CHECK(std::chrono::steady_clock::now() - start >= 100ms);
  });
}

TEST_CASE("late frames for streams that have ended are discarded; the session goes on") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    session server(std::move(b), role::server);
    const auto payload = pattern(1000);
    // Streams 77 and 79 opened, accepted and reset by the server: their ids are gone for good.
    for (std::uint32_t id : {77u, 79u}) {
      co_await write_frame(raw, {0, frame_type::window_update, flags::syn, id, 0});
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      s.reset();
    }
    co_await write_frame(raw, {0, frame_type::data, 0, 77, 1000}, payload);
    co_await write_frame(raw, {0, frame_type::window_update, 0, 79, 5000});
    co_await write_frame(raw, {0, frame_type::ping, flags::syn, 0, 4242});
    auto h = co_await read_until(raw, frame_type::ping);
    while (h.length != 4242) h = co_await read_until(raw, frame_type::ping);
    CHECK(h.has(flags::ack));
    CHECK(server.is_open());
  });
}

TEST_CASE("a Data frame carrying SYN and payload opens the stream; it is ACKed when accepted") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    config cfg;
    cfg.ack_with_first_frame = false;  // as hashicorp/yamux: the ACK goes when the stream is taken
    session server(std::move(b), role::server, cfg);
    co_await write_frame(raw, {0, frame_type::data, flags::syn, 1, 5}, std::as_bytes(std::span("hello", 5)));
    co_await write_frame(raw, {0, frame_type::ping, flags::syn, 0, 4242});
    // Everything the server sent before answering our ping: no ACK yet, nobody accepted.
    for (;;) {
      auto h = co_await read_frame(raw);
      CHECK_FALSE((h.stream_id == 1 && h.has(flags::ack)));
      if (h.type == frame_type::ping && h.length == 4242) break;
    }
    auto [ec, s] = co_await server.async_accept(use_tuple);
    REQUIRE_FALSE(ec);
    auto h = co_await read_until(raw, frame_type::window_update);
    CHECK(h.stream_id == 1);
    CHECK(h.has(flags::ack));
    std::array<char, 5> got;
    co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
    CHECK(std::string(got.data(), 5) == "hello");
  });
}

TEST_CASE("at low load a stream write goes out in the caller's turn; right behind it, the writer gathers") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [a, raw] = socket_pair(io);
    session client(std::move(a), role::client);
    // The session's first frame is its round-trip ping; once it is here the writer has nothing
    // left to do and waits.
    const auto ping = co_await read_frame(raw);
    REQUIRE(ping.type == frame_type::ping);
    auto s1 = client.open();
    const std::array<char, 100> data{};
    int completed = 0;
    const auto on_write = [&](std::error_code ec, std::size_t n) {
      CHECK_FALSE(ec);
      CHECK(n == data.size());
      ++completed;
    };
    const auto started = std::chrono::steady_clock::now();
    s1.async_write_some(asio::buffer(data), on_write);
    // Written before this coroutine gave up its turn: one Data frame carrying the SYN.
    CHECK(raw.available() == header_size + data.size());
    auto s2 = client.open();
    s2.async_write_some(asio::buffer(data), on_write);
    if (std::chrono::steady_clock::now() - started < yamux::detail::direct_write_gap)
      CHECK(raw.available() == header_size + data.size());  // the second waits for the writer's turn
    while (completed < 2) co_await asio::post(io, asio::use_awaitable);
    CHECK(raw.available() == 2 * (header_size + data.size()));
    std::vector<std::byte> payload;
    const auto h1 = co_await read_frame(raw, &payload);
    CHECK(h1.stream_id == s1.id());
    CHECK(h1.has(flags::syn));
    CHECK(payload.size() == data.size());
    const auto h2 = co_await read_frame(raw);
    CHECK(h2.stream_id == s2.id());
  });
}

namespace {

// This process's epoll registrations: registered descriptor -> event mask (/proc/self/fdinfo).
std::map<int, unsigned> epoll_registrations() {
  std::map<int, unsigned> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec).string() != "anon_inode:[eventpoll]") continue;
    std::ifstream info("/proc/self/fdinfo/" + e.path().filename().string());
    for (std::string line; std::getline(info, line);) {
      int tfd = -1;
      unsigned events = 0;
      if (std::sscanf(line.c_str(), "tfd: %d events: %x", &tfd, &events) == 2) out[tfd] = events;
    }
  }
  return out;
}

// A client session over a Unix socket pair whose send buffer fills before a 256 KiB stream window
// does, its writer idle (the first ping read by the raw peer), and the epoll registrations then,
// where the socket's own has no EPOLLOUT.
struct idle_unix_writer {
  socket_type raw;
  int fd;
  session client;
  std::map<int, unsigned> before;
};
asio::awaitable<idle_unix_writer> idle_unix_writer_on(asio::io_context& io) {
  auto [a, raw] = socket_pair(io);
  a.set_option(asio::socket_base::send_buffer_size(64 * 1024));
  const int fd = a.native_handle();
  session client(std::move(a), role::client);
  REQUIRE((co_await read_frame(raw)).type == frame_type::ping);
  auto before = epoll_registrations();
  REQUIRE(before.count(fd) == 1);
  CHECK((before.at(fd) & EPOLLOUT) == 0);  // nothing ever waited to write
  co_return idle_unix_writer{std::move(raw), fd, std::move(client), std::move(before)};
}

// Starts writing all of `data` to `s`; `written` turns true once it was, without error.
void write_in_background(stream& s, const std::vector<std::byte>& data, bool& written) {
  asio::async_write(s, asio::buffer(data), [&data, &written](std::error_code ec, std::size_t n) {
    CHECK_FALSE(ec);
    CHECK(n == data.size());
    written = true;
  });
}

// The payloads of the Data frames a raw peer reads until `n` bytes have come, in order.
asio::awaitable<std::vector<std::byte>> read_payloads(socket_type& raw, std::size_t n) {
  std::vector<std::byte> got, payload;
  while (got.size() < n) {
    const auto h = co_await read_frame(raw, &payload);
    if (h.type == frame_type::data && h.length > 0) got.insert(got.end(), payload.begin(), payload.end());
  }
  co_return got;
}

}  // namespace

TEST_CASE("a Unix socket's writer waits for room on a duplicate descriptor, dropped once writes flow: the peer's "
          "reads do not go on waking it") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto w = co_await idle_unix_writer_on(io);
    auto& [raw, fd, client, before] = w;

    auto s = client.open();
    const auto data = pattern(200 * 1024);
    bool written = false;
    write_in_background(s, data, written);
    // The socket fills; the writer then waits for room on a second registration of it.
    std::map<int, unsigned> waiting;
    while ((waiting = epoll_registrations()).size() == before.size()) co_await asio::post(io, asio::use_awaitable);
    REQUIRE(waiting.size() == before.size() + 1);
    CHECK((waiting.at(fd) & EPOLLOUT) == 0);
    for (const auto& [tfd, events] : waiting)
      if (!before.count(tfd)) CHECK((events & EPOLLOUT) != 0);

    // The peer reads: the rest goes out, intact.
    CHECK(co_await read_payloads(raw, data.size()) == data);
    while (!written) co_await asio::post(io, asio::use_awaitable);

    // A write that goes out whole drops the second registration; the socket's own never had EPOLLOUT.
    const std::array<char, 100> small{};
    co_await asio::async_write(s, asio::buffer(small), asio::use_awaitable);
    const auto after = epoll_registrations();
    CHECK(after.size() == before.size());
    REQUIRE(after.count(fd) == 1);
    CHECK((after.at(fd) & EPOLLOUT) == 0);
    CHECK((co_await read_payloads(raw, small.size())).size() == small.size());
  });
}

namespace {
// The event mask the io_context's epoll instance holds for `target`, read through a descriptor opened
// beforehand (so it can be read while no descriptor is left): fdinfo is generated afresh at offset 0.
struct epoll_mask_reader {
  int info = -1;
  epoll_mask_reader() {
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      if (std::filesystem::read_symlink(e.path(), ec).string() != "anon_inode:[eventpoll]") continue;
      info = ::open(("/proc/self/fdinfo/" + e.path().filename().string()).c_str(), O_RDONLY | O_CLOEXEC);
      break;  // the test's one io_context
    }
    REQUIRE(info >= 0);
  }
  epoll_mask_reader(const epoll_mask_reader&) = delete;
  epoll_mask_reader& operator=(const epoll_mask_reader&) = delete;
  ~epoll_mask_reader() { ::close(info); }
  unsigned events_of(int target) const {
    std::array<char, 64 * 1024> text{};
    const ssize_t n = ::pread(info, text.data(), text.size() - 1, 0);
    REQUIRE(n > 0);
    for (const char* line = text.data(); line; line = std::strchr(line, '\n')) {
      if (*line == '\n') ++line;
      int tfd = -1;
      unsigned events = 0;
      if (std::sscanf(line, "tfd: %d events: %x", &tfd, &events) == 2 && tfd == target) return events;
    }
    return 0;
  }
};

// Takes every free descriptor (below a lowered soft limit) until destroyed, so that the next dup or
// open fails with EMFILE; gives them back and restores the limit even when a check throws.
struct descriptors_exhausted {
  rlimit saved{};
  std::vector<int> held;
  descriptors_exhausted() {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    int highest = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
      highest = std::max(highest, std::stoi(e.path().filename().string()));
    rlimit low = saved;
    low.rlim_cur = static_cast<rlim_t>(highest) + 16;  // a few to take, not a million
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) held.push_back(fd);
    CHECK(errno == EMFILE);  // not REQUIRE: a constructor that throws leaves its destructor unrun
  }
  descriptors_exhausted(const descriptors_exhausted&) = delete;
  descriptors_exhausted& operator=(const descriptors_exhausted&) = delete;
  ~descriptors_exhausted() {
    for (int fd : held) ::close(fd);
    ::setrlimit(RLIMIT_NOFILE, &saved);
  }
};
}  // namespace

TEST_CASE("a Unix socket's writer that cannot get a duplicate descriptor (none left) waits on the socket itself; "
          "nothing is lost and the session goes on") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto w = co_await idle_unix_writer_on(io);
    auto& [raw, fd, client, before] = w;

    auto s = client.open();
    const auto data = pattern(200 * 1024);
    bool written = false;
    std::vector<std::byte> got;
    const epoll_mask_reader masks;
    {
      descriptors_exhausted none_left;
      write_in_background(s, data, written);
      // The socket fills; with no duplicate to be had, the writer waits on the socket's own registration.
      while ((masks.events_of(fd) & EPOLLOUT) == 0) co_await asio::post(io, asio::use_awaitable);
      got = co_await read_payloads(raw, data.size());
      while (!written) co_await asio::post(io, asio::use_awaitable);
    }
    CHECK(got == data);
    CHECK(client.is_open());
    CHECK(epoll_registrations().size() == before.size());  // no duplicate left registered

    // With descriptors back, the stream still carries bytes.
    const std::array<char, 100> small{};
    co_await asio::async_write(s, asio::buffer(small), asio::use_awaitable);
    CHECK((co_await read_payloads(raw, small.size())).size() == small.size());
  });
}

TEST_CASE("closing a session whose Unix socket writer waits on the duplicate descriptor fails the write and "
          "closes both descriptors") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto w = co_await idle_unix_writer_on(io);
    auto& [raw, fd, client, before] = w;

    auto s = client.open();
    const auto data = pattern(200 * 1024);
    std::optional<std::error_code> result;
    asio::async_write(s, asio::buffer(data), [&](std::error_code ec, std::size_t) { result = ec; });
    std::map<int, unsigned> waiting;
    while ((waiting = epoll_registrations()).size() == before.size()) co_await asio::post(io, asio::use_awaitable);
    int duplicate = -1;
    for (const auto& [tfd, events] : waiting)
      if (!before.count(tfd)) duplicate = tfd;
    REQUIRE(duplicate >= 0);

    client.close();
    while (!result) co_await asio::post(io, asio::use_awaitable);
    CHECK(*result == errc::session_closed);
    const auto after = epoll_registrations();
    CHECK(after.count(fd) == 0);
    CHECK(after.count(duplicate) == 0);
    CHECK(after.size() == before.size() - 1);
    errno = 0;
    const int flags = ::fcntl(duplicate, F_GETFD);
    const int error = errno;
    CHECK(flags == -1);
    CHECK(error == EBADF);
  });
}

TEST_CASE("async_write_last: the FIN follows the last bytes in the same write, as a frame of its own") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [a, raw] = socket_pair(io);
    session client(std::move(a), role::client);
    const auto ping = co_await read_frame(raw);
    REQUIRE(ping.type == frame_type::ping);
    const std::array<char, 100> data{};
    int completed = 0;
    const auto on_write = [&](std::error_code ec, std::size_t n) {
      CHECK_FALSE(ec);
      CHECK(n == data.size());
      ++completed;
    };
    // At low load in the caller's turn (the direct write); right behind it, in the writer's batch.
    auto s1 = client.open();
    s1.async_write_last(asio::buffer(data), on_write);
    CHECK(raw.available() == 2 * header_size + data.size());
    auto s2 = client.open();
    s2.async_write_last(asio::buffer(data), on_write);
    while (completed < 2) co_await asio::post(io, asio::use_awaitable);
    for (auto* s : {&s1, &s2}) {
      std::vector<std::byte> payload;
      const auto d = co_await read_frame(raw, &payload);
      CHECK(d.type == frame_type::data);
      CHECK(d.stream_id == s->id());
      CHECK_FALSE(d.has(flags::fin));  // never on the Data frame: see emit_data_frame
      CHECK(payload.size() == data.size());
      const auto fin = co_await read_frame(raw);
      CHECK(fin.type == frame_type::window_update);
      CHECK(fin.stream_id == s->id());
      CHECK(fin.flags == flags::fin);
    }
    // The send side is shut: a later write fails as after shutdown_send().
    auto [ec, n] = co_await s1.async_write_some(asio::buffer(data), use_tuple);
    CHECK(ec == errc::stream_closed);
    // Nothing to write: just the FIN.
    auto s3 = client.open();
    auto [ec3, n3] = co_await s3.async_write_last(asio::const_buffer(), use_tuple);
    CHECK_FALSE(ec3);
    CHECK(n3 == 0);
    const auto bare = co_await read_frame(raw);
    CHECK(bare.stream_id == s3.id());
    CHECK(bare.has(flags::syn));
    CHECK(bare.has(flags::fin));
  });
}

TEST_CASE("async_write_last: more than the send window and more buffers than one operation takes; FIN after all") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sp = make_sessions(io);
    auto& client = sp.client;
    auto& server = sp.server;
    const auto data = pattern(1 << 20);
    // Six buffers of unequal sizes (one empty): an operation carries at most max_op_buffers.
    const std::array<std::size_t, 6> cuts{1, 300000, 300000, 300000, 300000, 1 << 20};
    std::vector<asio::const_buffer> parts;
    std::size_t from = 0;
    for (const std::size_t to : cuts) {
      parts.push_back(asio::buffer(data.data() + from, to - from));
      from = to;
    }
    auto c = client.open();
    auto writer = [&]() -> asio::awaitable<void> {
      auto [ec, n] = co_await c.async_write_last(parts, use_tuple);
      CHECK_FALSE(ec);
      CHECK(n == data.size());
    };
    auto reader = [&]() -> asio::awaitable<void> {
      auto s = co_await accept_ok(server);
      auto [got, ec] = co_await read_all(s);
      CHECK(ec == asio::error::eof);
      CHECK(got == data);
    };
    using namespace asio::experimental::awaitable_operators;
    co_await (writer() && reader());
  });
}

TEST_CASE("a read that arriving data completes runs its handler in the read loop's turn; one that starts complete is posted") {
  // Driven by hand, one handler at a time: run_one() runs the transport read's completion, in
  // which the read loop handles the frame and (now) our handler too.
  asio::io_context io;
  auto sockets = socket_pair(io);  // not a structured binding: the lambda below uses it (clang 14)
  auto& raw = sockets.first;
  session server(std::move(sockets.second), role::server);
  const auto send_frame = [&](const frame_header& h, std::string_view payload) {
    const auto hb = encode(h);
    asio::write(raw, std::array{asio::buffer(hb), asio::buffer(payload.data(), payload.size())});
  };
  send_frame({0, frame_type::data, flags::syn, 1, 5}, "hello");
  stream s;
  server.async_accept([&](std::error_code ec, stream accepted) {
    CHECK_FALSE(ec);
    s = std::move(accepted);
  });
  while (!s.is_open()) REQUIRE(io.run_one_for(5s) > 0);
  std::array<char, 16> buf;
  int reads = 0;
  const auto on_read = [&](std::error_code ec, std::size_t) {
    CHECK_FALSE(ec);
    ++reads;
  };
  // "hello" is buffered: the read completes in its initiation, so its handler is posted.
  s.async_read_some(asio::buffer(buf), on_read);
  CHECK(reads == 0);
  while (reads == 0) REQUIRE(io.run_one_for(5s) > 0);
  io.poll();  // whatever else is ready (the writer's ACK), so that only the next input is left
  s.async_read_some(asio::buffer(buf), on_read);
  io.poll();
  CHECK(reads == 1);
  send_frame({0, frame_type::data, 0, 1, 5}, "world");
  REQUIRE(io.run_one_for(5s) == 1);
  CHECK(reads == 2);
}

TEST_CASE("read_buffered takes what has arrived without waiting, and nothing when nothing has") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    session server(std::move(b), role::server);
    co_await write_frame(raw, {0, frame_type::data, flags::syn, 1, 5}, std::as_bytes(std::span("hello", 5)));
    auto s = co_await accept_ok(server);
    std::array<char, 3> part;
    CHECK(s.read_buffered(asio::buffer(part)) == 3);
    CHECK(std::string_view(part.data(), 3) == "hel");
    CHECK(s.read_buffered(asio::buffer(part)) == 2);
    CHECK(std::string_view(part.data(), 2) == "lo");
    CHECK(s.read_buffered(asio::buffer(part)) == 0);
    // Reading goes on as usual afterwards: the next frame, then EOF.
    co_await write_frame(raw, {0, frame_type::data, flags::fin, 1, 3}, std::as_bytes(std::span("abc", 3)));
    auto [got, ec] = co_await read_all(s);
    CHECK(ec == asio::error::eof);
    CHECK(got.size() == 3);
  });
}

namespace {

// Takes arriving payload up to a budget, keeping what it took.
struct budget_sink final : payload_sink {
  std::size_t budget = 0;
  std::size_t calls = 0;
  std::vector<std::byte> got;
  std::size_t pieces = 0;  // over all calls
  std::size_t take(std::span<const std::span<const std::byte>> offered) override {
    ++calls;
    std::size_t taken = 0;
    for (const auto& data : offered) {
      ++pieces;
      const std::size_t k = std::min(budget, data.size());
      got.insert(got.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(k));
      budget -= k;
      taken += k;
      if (k < data.size()) break;
    }
    return taken;
  }
};

// Once the session answers a ping the raw peer sends after some frames, it has handled them.
asio::awaitable<void> sync_with(socket_type& raw) {
  co_await write_frame(raw, {0, frame_type::ping, flags::syn, 0, 77});
  for (;;) {
    const auto h = co_await read_frame(raw);
    if (h.type == frame_type::ping && (h.flags & flags::ack) && h.length == 77) co_return;
  }
}

// Reads frames until window updates for stream `id` add up to `want` bytes.
asio::awaitable<void> credited(socket_type& raw, std::uint32_t id, std::size_t want) {
  std::size_t got = 0;
  while (got < want) {
    const auto h = co_await read_frame(raw);
    if (h.type == frame_type::window_update && h.stream_id == id) got += h.length;
  }
  CHECK(got == want);
}

std::vector<std::byte> slice(const std::vector<std::byte>& v, std::size_t from, std::size_t n) {
  return {v.begin() + static_cast<std::ptrdiff_t>(from), v.begin() + static_cast<std::ptrdiff_t>(from + n)};
}

}  // namespace

TEST_CASE("credit for bytes read, below half the window, goes back within a housekeeping tick: a slow reader is seen reading") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    config cfg;
    cfg.write_timeout = std::chrono::milliseconds(400);  // housekeeping every 100 ms
    session server(std::move(b), role::server, cfg);
    const auto data = pattern(3000);
    co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 1, 0});
    auto s = co_await accept_ok(server);
    co_await write_frame(raw, {0, frame_type::data, 0, 1, 3000}, data);
    std::vector<std::byte> buf(data.size());
    co_await asio::async_read(s, asio::buffer(buf), asio::use_awaitable);
    CHECK(buf == data);
    // 3,000 bytes of a 256 KiB window: far from the half that returns credit at once. It comes
    // back anyway (before, never, until 128 KiB had been read).
    const auto read_at = std::chrono::steady_clock::now();
    co_await credited(raw, 1, 3000);
    CHECK(std::chrono::steady_clock::now() - read_at < 5s);
  });
}

TEST_CASE("a payload sink gets arriving bytes first and in order; what it leaves is read, and ends the offer, as a read that returns bytes does") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    session server(std::move(b), role::server);
    const auto data = pattern(9000);
    co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 1, 0});
    auto s = co_await accept_ok(server);
    budget_sink sink;
    sink.budget = 1000;
    s.offer_payload_to(&sink);
    // 3,000 bytes arrive while a read waits: the sink takes its 1,000, the read gets the next 2,000.
    std::vector<std::byte> buf(70000);
    co_await write_frame(raw, {0, frame_type::data, 0, 1, 3000}, std::span(data).first(3000));
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
    CHECK_FALSE(ec);
    CHECK(sink.got == slice(data, 0, 1000));
    REQUIRE(n == 2000);
    CHECK(std::equal(buf.begin(), buf.begin() + 2000, data.begin() + 1000));
    // The sink took less than offered: it is not asked again, the next bytes wait for a read.
    sink.budget = 100000;
    co_await write_frame(raw, {0, frame_type::data, 0, 1, 500}, std::span(data).subspan(3000, 500));
    co_await sync_with(raw);
    CHECK(sink.calls == 1);
    CHECK(s.available() == 500);
    // Offered again while bytes wait: the sink still comes after them.
    s.offer_payload_to(&sink);
    co_await write_frame(raw, {0, frame_type::data, 0, 1, 500}, std::span(data).subspan(3500, 500));
    co_await sync_with(raw);
    CHECK(sink.calls == 1);
    CHECK(s.available() == 1000);
    std::tie(ec, n) = co_await s.async_read_some(asio::buffer(buf), use_tuple);
    REQUIRE(n == 1000);
    CHECK(std::equal(buf.begin(), buf.begin() + 1000, data.begin() + 3000));
    // That read came back with bytes: the offer ended with it, so the next bytes wait for a read.
    co_await write_frame(raw, {0, frame_type::data, 0, 1, 1000}, std::span(data).subspan(4000, 1000));
    co_await sync_with(raw);
    CHECK(sink.calls == 1);
    CHECK(s.available() == 1000);
    std::tie(ec, n) = co_await s.async_read_some(asio::buffer(buf), use_tuple);
    REQUIRE(n == 1000);
    CHECK(std::equal(buf.begin(), buf.begin() + 1000, data.begin() + 4000));
    // Offered again with nothing waiting: the sink takes the rest as it comes, then EOF is read.
    s.offer_payload_to(&sink);
    co_await write_frame(raw, {0, frame_type::data, flags::fin, 1, 4000}, std::span(data).subspan(5000, 4000));
    auto [rest, rec] = co_await read_all(s);
    CHECK(rec == asio::error::eof);
    CHECK(rest.empty());
    CHECK(sink.got.size() == 5000);
    CHECK(std::equal(sink.got.begin() + 1000, sink.got.end(), data.begin() + 5000));
    s.offer_payload_to(nullptr);
  });
}

TEST_CASE("a payload sink is offered the frames of one transport read in one call; what it leaves is read in order, then the FIN") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    session server(std::move(b), role::server);
    const auto data = pattern(4500);
    co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 1, 0});
    auto s = co_await accept_ok(server);
    budget_sink sink;
    sink.budget = 2500;
    s.offer_payload_to(&sink);
    // Four frames of 1,000 bytes and a last of 500 with FIN, in one write (one segment, one read).
    std::vector<std::byte> wire;
    for (std::size_t at = 0; at < data.size(); at += 1000) {
      const std::size_t n = std::min<std::size_t>(1000, data.size() - at);
      const auto hb = encode({0, frame_type::data, static_cast<std::uint16_t>(at + n == data.size() ? flags::fin : 0),
                              1, static_cast<std::uint32_t>(n)});
      wire.insert(wire.end(), hb.begin(), hb.end());
      wire.insert(wire.end(), data.begin() + static_cast<std::ptrdiff_t>(at),
                  data.begin() + static_cast<std::ptrdiff_t>(at + n));
    }
    co_await asio::async_write(raw, asio::buffer(wire), asio::use_awaitable);
    auto [rest, ec] = co_await read_all(s);
    CHECK(ec == asio::error::eof);
    // One call for all five pieces; the sink stopped in the third, the reads got the rest.
    CHECK(sink.calls == 1);
    CHECK(sink.pieces == 3);
    CHECK(sink.got == slice(data, 0, 2500));
    CHECK(rest == slice(data, 2500, 2000));
    s.offer_payload_to(nullptr);
  });
}

TEST_CASE("bytes a payload sink takes, or that are used in place and consumed, open the window as reads do") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    config cfg;
    cfg.max_stream_window = initial_stream_window;  // no auto-tuning: the updates add up to what was taken
    session server(std::move(b), role::server, cfg);
    const auto data = pattern(initial_stream_window);
    co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 1, 0});
    auto s = co_await accept_ok(server);
    budget_sink sink;
    sink.budget = data.size();
    s.offer_payload_to(&sink);
    // The whole window, with no read ever made: only the sink's taking can earn the update.
    for (std::size_t at = 0; at < data.size(); at += 65536)
      co_await write_frame(raw, {0, frame_type::data, 0, 1, 65536}, std::span(data).subspan(at, 65536));
    co_await credited(raw, 1, data.size());
    CHECK(sink.got == data);
    s.offer_payload_to(nullptr);
    // The same with bytes left in the stream's buffer and used where they lie.
    for (std::size_t at = 0; at < data.size(); at += 65536)
      co_await write_frame(raw, {0, frame_type::data, 0, 1, 65536}, std::span(data).subspan(at, 65536));
    co_await sync_with(raw);
    REQUIRE(s.available() == data.size());
    std::vector<std::byte> seen;
    while (s.available() > 0) {
      std::array<asio::const_buffer, 4> parts;
      const std::size_t count = s.buffered_data(parts);
      REQUIRE(count >= 1);
      std::size_t k = 0;  // credit goes back per half window: consume 64 KiB at a time
      for (std::size_t i = 0; i < count && k < 65536; ++i) {
        const auto* p = static_cast<const std::byte*>(parts[i].data());
        const std::size_t m = std::min(parts[i].size(), 65536 - k);
        seen.insert(seen.end(), p, p + m);
        k += m;
      }
      CHECK(s.consume_buffered(k) == k);
    }
    CHECK(seen == data);
    co_await credited(raw, 1, data.size());
  });
}

TEST_CASE("an accepted stream's ACK rides on its first frame when the application answers at once") {
  for (const bool deferred : {true, false}) {
    CAPTURE(deferred);
    run([deferred](asio::io_context& io) -> asio::awaitable<void> {
      auto [raw, b] = socket_pair(io);
      config cfg;
      cfg.ack_with_first_frame = deferred;
      session server(std::move(b), role::server, cfg);
      co_await write_frame(raw, {0, frame_type::data, flags::syn, 1, 5}, std::as_bytes(std::span("hello", 5)));
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      std::array<char, 5> got;
      co_await asio::async_read(s, asio::buffer(got), asio::use_awaitable);
      co_await asio::async_write(s, asio::buffer("world", 5), asio::use_awaitable);
      // The first frame the server sends for stream 1 carries the ACK: the Data frame itself when
      // the ACK may wait (one frame fewer), a WindowUpdate of its own when it may not.
      auto h = co_await read_frame(raw);
      while (h.stream_id != 1) h = co_await read_frame(raw);
      CHECK(h.has(flags::ack));
      CHECK(h.type == (deferred ? frame_type::data : frame_type::window_update));
    });
  }
}

namespace {
// Waits for the first WindowUpdate (the ACK), then sends "hello" on stream 1.
asio::awaitable<frame_header> ack_then_hello(socket_type& raw) {
  auto h = co_await read_until(raw, frame_type::window_update);
  co_await write_frame(raw, {0, frame_type::data, 0, 1, 5}, std::as_bytes(std::span("hello", 5)));
  co_return h;
}
}  // namespace

TEST_CASE("a deferred ACK goes out when the reader has to wait, or at the latest on a housekeeping tick") {
  SUBCASE("the application reads and waits for more") {
    run([](asio::io_context& io) -> asio::awaitable<void> {
      auto [raw, b] = socket_pair(io);
      config cfg;
      cfg.write_timeout = std::chrono::hours(1);  // no housekeeping tick during the test
      cfg.keepalive_interval = std::chrono::hours(1);
      cfg.stream_open_timeout = std::chrono::hours(1);
      session server(std::move(b), role::server, cfg);
      co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 1, 0});
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      std::array<char, 5> got;
      // The read has nothing to take and waits; only then does the ACK go, and the data follows it.
      auto [n, h] = co_await (asio::async_read(s, asio::buffer(got), asio::use_awaitable) && ack_then_hello(raw));
      CHECK(h.stream_id == 1);
      CHECK(h.has(flags::ack));
      CHECK(std::string(got.data(), n) == "hello");
    });
  }
  SUBCASE("the application holds the stream and does nothing") {
    run([](asio::io_context& io) -> asio::awaitable<void> {
      auto [raw, b] = socket_pair(io);
      config cfg;
      cfg.write_timeout = std::chrono::milliseconds(200);  // a housekeeping tick every 50 ms
      session server(std::move(b), role::server, cfg);
      co_await write_frame(raw, {0, frame_type::window_update, flags::syn, 1, 0});
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      const auto accepted = std::chrono::steady_clock::now();
      auto h = co_await read_until(raw, frame_type::window_update);
      CHECK(h.stream_id == 1);
      CHECK(h.has(flags::ack));
      CHECK(std::chrono::steady_clock::now() - accepted < std::chrono::seconds(5));  // a tick, not a timeout
      CHECK(s.is_open());
    });
  }
}

namespace {
// Sends `bad` from a raw client peer and expects GoAway(protocol error) and the session to end with
// `expected`.
void expect_protocol_violation(std::vector<std::pair<frame_header, std::size_t>> frames, std::error_code expected) {
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    session server(std::move(b), role::server);
    for (auto& [h, payload_size] : frames) {
      std::vector<std::byte> payload(payload_size);
      co_await write_frame(raw, h, payload);
    }
    auto g = co_await read_until(raw, frame_type::go_away);
    CHECK(g.length == static_cast<std::uint32_t>(go_away_code::protocol_error));
    auto [ec] = co_await server.async_wait_closed(use_tuple);
    CHECK(ec == expected);
  });
}
}  // namespace

TEST_CASE("protocol violations end the session with GoAway(protocol error)") {
  SUBCASE("bad version") {
    expect_protocol_violation({{{1, frame_type::ping, flags::syn, 0, 1}, 0}}, errc::invalid_version);
  }
  SUBCASE("unknown type") {
    expect_protocol_violation({{{0, frame_type(9), 0, 0, 0}, 0}}, errc::invalid_frame_type);
  }
  SUBCASE("duplicate SYN") {
    expect_protocol_violation({{{0, frame_type::window_update, flags::syn, 1, 0}, 0},
                               {{0, frame_type::window_update, flags::syn, 1, 0}, 0}},
                              errc::duplicate_stream);
  }
  SUBCASE("window overrun") {
    expect_protocol_violation({{{0, frame_type::data, flags::syn, 1, 200'000}, 200'000},
                               {{0, frame_type::data, 0, 1, 100'000}, 100'000}},
                              errc::window_exceeded);
  }
  SUBCASE("data for a stream the peer never opened") {
    expect_protocol_violation({{{0, frame_type::data, 0, 77, 5}, 5}}, errc::unknown_stream);
  }
  SUBCASE("a window update for one of our ids not handed out yet") {
    expect_protocol_violation({{{0, frame_type::window_update, 0, 2, 100}, 0}}, errc::unknown_stream);
  }
  SUBCASE("SYN with the wrong parity") {
    expect_protocol_violation({{{0, frame_type::window_update, flags::syn, 2, 0}, 0}}, errc::protocol_error);
  }
}

TEST_CASE("a peer's GoAway(protocol error) ends our session with that reason") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [raw, b] = socket_pair(io);
    session server(std::move(b), role::server);
    co_await write_frame(raw, {0, frame_type::go_away, 0, 0, 1});
    auto [ec] = co_await server.async_wait_closed(use_tuple);
    CHECK(ec == errc::peer_protocol_error);
  });
}

TEST_CASE("destroying streams frees their ids on both sides") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto [client, server] = make_sessions(io);
    {
      auto c = client.open();
      co_await asio::async_write(c, asio::buffer("abc", 3), asio::use_awaitable);
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      CHECK(client.stream_count() == 1);
      CHECK(server.stream_count() == 1);
      // Both handles dropped with data unread: FIN each way, ids freed once both FINs crossed.
    }
    co_await client.async_ping(asio::use_awaitable);
    co_await server.async_ping(asio::use_awaitable);
    CHECK(client.stream_count() == 0);
    CHECK(server.stream_count() == 0);
    // A reset stream is freed too.
    {
      auto c = client.open();
      co_await asio::async_write(c, asio::buffer("abc", 3), asio::use_awaitable);
      auto [ec, s] = co_await server.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      c.reset();
    }
    co_await client.async_ping(asio::use_awaitable);
    co_await server.async_ping(asio::use_awaitable);
    CHECK(client.stream_count() == 0);
    CHECK(server.stream_count() == 0);
  });
}

TEST_CASE("streams that take the places of ended ones start afresh: no old bytes, flags or windows") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sessions = make_sessions(io);
    session &client = sessions.client, &server = sessions.server;
    const auto full = pattern(initial_stream_window, 3);
    // Ended streams that leave state behind: a window's worth unread, FIN seen, then RST.
    for (int i = 0; i < 3; ++i) {
      auto c = client.open();
      co_await asio::async_write(c, asio::buffer(full), asio::use_awaitable);
      c.shutdown_send();
      auto s = co_await accept_ok(server);
      while (s.available() < full.size()) co_await server.async_ping(asio::use_awaitable);
      co_await asio::async_write(s, asio::buffer(full), asio::use_awaitable);
      if (i == 2) s.reset();
    }
    co_await client.async_ping(asio::use_awaitable);
    co_await server.async_ping(asio::use_awaitable);
    REQUIRE(client.stream_count() == 0);
    REQUIRE(server.stream_count() == 0);
    // New streams, both ways, each with exactly its own bytes and a full window each way.
    for (int i = 0; i < 3; ++i) {
      auto c = client.open();
      const auto mine = pattern(initial_stream_window, 10 + static_cast<unsigned>(i));
      co_await asio::async_write(c, asio::buffer(mine), asio::use_awaitable);
      auto s = co_await accept_ok(server);
      co_await asio::async_write(s, asio::buffer(mine), asio::use_awaitable);  // the whole window, unread
      c.shutdown_send();
      s.shutdown_send();
      auto [up, up_ec] = co_await read_all(s);
      auto [down, down_ec] = co_await read_all(c);
      CHECK(up_ec == asio::error::eof);
      CHECK(down_ec == asio::error::eof);
      CHECK(up == mine);
      CHECK(down == mine);
    }
  });
}

TEST_CASE("1,000 concurrent streams each echo 64 KiB intact") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sessions = make_sessions(io);
    session &client = sessions.client, &server = sessions.server;
    constexpr int count = 1000;
    auto echo_server = [&]() -> asio::awaitable<void> {
      for (int i = 0; i < count; ++i) {
        auto [ec, s] = co_await server.async_accept(use_tuple);
        REQUIRE_FALSE(ec);
        asio::co_spawn(
            io,
            [s = std::move(s)]() mutable -> asio::awaitable<void> {
              std::vector<std::byte> buf(16384);
              for (;;) {
                auto [rec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
                if (n) co_await asio::async_write(s, asio::buffer(buf.data(), n), asio::use_awaitable);
                if (rec) break;
              }
              s.shutdown_send();
            },
            asio::detached);
      }
    };
    int ok = 0;
    auto one_client = [&](int i) -> asio::awaitable<void> {
      auto c = client.open();
      const auto data = pattern(65536, static_cast<unsigned>(i));
      auto w = [&]() -> asio::awaitable<void> {
        co_await asio::async_write(c, asio::buffer(data), asio::use_awaitable);
        c.shutdown_send();
      };
      auto r = [&]() -> asio::awaitable<std::vector<std::byte>> {
        auto [got, ec] = co_await read_all(c);
        co_return got;
      };
      auto got = co_await (w() && r());
      if (got == data) ++ok;
    };
    auto clients = [&]() -> asio::awaitable<void> {
      int finished = 0;
      asio::steady_timer all_done(io, asio::steady_timer::time_point::max());
      for (int i = 0; i < count; ++i)
        asio::co_spawn(io, one_client(i), [&](std::exception_ptr) {
          if (++finished == count) all_done.cancel();
        });
      co_await all_done.async_wait(use_tuple);
    };
    co_await (echo_server() && clients());
    CHECK(ok == count);
  });
}

TEST_CASE("a write in flight when the peer's RST arrives fails with stream_reset") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    auto sockets = socket_pair(io);
    socket_type& raw = sockets.second;  // not a structured binding: the lambda below uses it
    config cfg;
    cfg.enable_keepalive = false;
    session client(std::move(sockets.first), role::client, cfg);
    auto c = client.open();
    // A big window granted by hand: one 1 MiB batch is more than the socket buffer holds, and the
    // raw peer does not read, so the batch (and the write in it) stays in flight.
    co_await write_frame(raw, {0, frame_type::window_update, flags::ack, c.id(), 64u << 20});
    std::vector<std::byte> big(8 << 20);
    auto writer = [&]() -> asio::awaitable<std::error_code> {
      auto [ec, n] = co_await c.async_write_some(asio::buffer(big), use_tuple);
      client.close();  // ends the raw peer's draining below
      co_return ec;
    };
    auto peer = [&]() -> asio::awaitable<void> {
      // The first Data header (the SYN rides on it): the batch is in the socket now.
      co_await read_until(raw, frame_type::data);
      co_await write_frame(raw, {0, frame_type::window_update, flags::rst, c.id(), 0});
      std::vector<std::byte> sink(1 << 20);
      for (;;) {
        auto [ec, n] = co_await raw.async_read_some(asio::buffer(sink), use_tuple);
        if (ec) break;
      }
    };
    auto ec = co_await (writer() && peer());
    CHECK(ec == errc::stream_reset);
  });
}

TEST_CASE("config validation names the bad field") {
  config c;
  CHECK_FALSE(c.validate());
  c.max_streams = 0;
  const char* what = nullptr;
  CHECK(c.validate(&what) == errc::invalid_config);
  CHECK(std::string(what).find("max_streams") != std::string::npos);
  config w;
  w.initial_stream_window = 1000;
  CHECK(w.validate() == errc::invalid_config);
  config floor;
  floor.window_tuning_min_rtt = std::chrono::microseconds(-1);
  CHECK(floor.validate(&what) == errc::invalid_config);
  CHECK(std::string(what).find("window_tuning_min_rtt") != std::string::npos);
  asio::io_context io;
  auto [a, b] = socket_pair(io);
  CHECK_THROWS_AS(session(std::move(a), role::client, w), std::system_error);
}
