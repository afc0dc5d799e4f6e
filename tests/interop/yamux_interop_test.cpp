// Interop with the reference implementation: our yamux session against hashicorp/yamux (Debian's 2019
// snapshot, through go/yamux_peer) over loopback TCP, in both directions: "C++ client, Go server"
// drives the Go peer's `serve` scenario; "Go client, C++ server" runs a Go driver scenario against
// our command_server. Each case names the behaviour it proves; the Go peer's exit status and last
// line are part of every case's assertions.
//
// hashicorp/yamux of 2019 returns EOF from Read right after its own Close() when nothing is
// buffered; nothing here relies on a Go stream reading after it closed.
#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "command_server.hpp"
#include "data_gen.hpp"
#include "go_peer.hpp"
#include "holdable_socket.hpp"
#include "protocol/session.hpp"
#include "tests/support/run_coroutine.hpp"

using namespace socketmaster;
using namespace socketmaster::interop;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;
using asio::ip::tcp;

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::uint64_t mib = 1 << 20;

template <class Body>
void run(Body body, std::chrono::seconds limit = go_peer::run_limit) {
  test::run_coroutine(std::move(body), limit);
}

void expect_ok(const go_result& go, const std::string& last_line) {
  CHECK(go.status == test::exit_status{0, 0});
  CHECK(go.last_line == last_line);
}

std::string hex8(std::uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

std::uint32_t crc_of_gen(std::uint32_t seed, std::uint64_t n) {
  data_gen gen(seed);
  crc32 crc;
  std::vector<std::byte> buf(mib);
  for (std::uint64_t done = 0; done < n;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), n - done));
    gen.fill({buf.data(), k});
    crc.update({buf.data(), k});
    done += k;
  }
  return crc.value();
}

// --- C++ client, Go server -----------------------------------------------------------------------

// Runs `drive(session)` as the yamux client of `yamux_peer -scenario serve -strict` (plus
// `go_args`), then closes the session, which ends the peer; returns what the peer said.
template <class Drive>
go_result with_go_server(std::vector<std::string> go_args, yamux::config cfg, Drive drive) {
  std::vector<std::string> args{"-role", "server", "-listen", "127.0.0.1:0", "-scenario", "serve", "-strict"};
  args.insert(args.end(), go_args.begin(), go_args.end());
  go_peer go(std::move(args));
  const auto endpoint = go.listening_endpoint();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    tcp::socket socket(io);
    co_await socket.async_connect(endpoint, asio::use_awaitable);
    socket.set_option(tcp::no_delay(true));
    yamux::session session(std::move(socket), yamux::role::client, cfg);
    co_await drive(session);
    session.close();
  });
  return go.finish();
}

// Reads a reply until EOF (replies are short); the error if the stream ends otherwise.
asio::awaitable<std::pair<std::string, std::error_code>> read_reply(yamux::stream& s) {
  std::string text;
  std::array<char, 256> buf;
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
    text.append(buf.data(), n);
    if (ec == asio::error::eof) co_return std::pair{text, std::error_code()};
    if (ec) co_return std::pair{text, ec};
  }
}

// Writes n bytes of gen(seed) in `chunk`-sized writes and returns their CRC.
asio::awaitable<std::pair<std::uint32_t, std::error_code>> write_gen(yamux::stream& s, std::uint32_t seed,
                                                                    std::uint64_t n, std::size_t chunk) {
  data_gen gen(seed);
  crc32 crc;
  std::vector<std::byte> buf(chunk);
  for (std::uint64_t done = 0; done < n;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), n - done));
    gen.fill({buf.data(), k});
    crc.update({buf.data(), k});
    auto [ec, w] = co_await asio::async_write(s, asio::buffer(buf.data(), k), use_tuple);
    if (ec) co_return std::pair{crc.value(), ec};
    done += k;
  }
  co_return std::pair{crc.value(), std::error_code()};
}

// Reads exactly n bytes, checking them against gen(seed); an empty string when all matched.
// `after_read` runs after every read (to watch the stream while data flows).
template <class AfterRead>
asio::awaitable<std::string> read_verify(yamux::stream& s, std::uint32_t seed, std::uint64_t n, std::size_t chunk,
                                         crc32& crc, AfterRead after_read) {
  data_gen gen(seed);
  std::vector<std::byte> buf(chunk), want(chunk);
  for (std::uint64_t done = 0; done < n;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), n - done));
    auto [ec, r] = co_await s.async_read_some(asio::buffer(buf.data(), k), use_tuple);
    if (r > 0) {
      gen.fill({want.data(), r});
      if (std::memcmp(buf.data(), want.data(), r) != 0) {
        const auto at = std::mismatch(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(r), want.begin()).first;
        co_return "data mismatch at offset " + std::to_string(done + static_cast<std::uint64_t>(at - buf.begin()));
      }
      crc.update({buf.data(), r});
      done += r;
      after_read();
    }
    if (ec && done < n)
      co_return "read after " + std::to_string(done) + " of " + std::to_string(n) + " bytes: " + ec.message();
  }
  co_return std::string();
}

// Keeps fewer than `limit` of our streams waiting to be accepted. hashicorp's own OpenStream waits
// like this (at most AcceptBacklog unacknowledged SYNs) because a hashicorp server answers a SYN
// beyond its accept backlog with RST; our open() does not wait, so a driver that opens hundreds of
// streams at once paces itself. A stream counts as accepted once data comes back on it.
class open_gate {
 public:
  open_gate(asio::any_io_executor ex, int limit) : free_(limit), wake_(ex, asio::steady_timer::time_point::max()) {}
  asio::awaitable<void> enter() {
    while (free_ == 0) co_await wake_.async_wait(use_tuple);
    --free_;
  }
  void leave() {
    ++free_;
    wake_.cancel_one();
  }

 private:
  int free_;
  asio::steady_timer wake_;
};

// Sends ECHO n + n bytes of gen(seed) while reading the echo back; checks bytes, CRC and the FIN.
asio::awaitable<std::string> echo_stream(yamux::session& session, open_gate& gate, std::uint32_t seed,
                                         std::uint64_t n) {
  co_await gate.enter();
  bool in_gate = true;
  auto leave_gate = [&] {
    if (std::exchange(in_gate, false)) gate.leave();
  };
  std::error_code ec;
  auto s = session.open(ec);
  if (ec) {
    leave_gate();
    co_return "open: " + ec.message();
  }
  const std::string line = "ECHO " + std::to_string(n) + "\n";
  std::uint32_t sent_crc = 0;
  crc32 got_crc;
  // Either side failing resets the stream, so that the other does not wait for the peer forever.
  auto writer = [&]() -> asio::awaitable<std::string> {
    auto [lec, lw] = co_await asio::async_write(s, asio::buffer(line), use_tuple);
    std::error_code wec = lec;
    if (!wec) std::tie(sent_crc, wec) = co_await write_gen(s, seed, n, 16 * 1024);
    if (wec) s.reset();
    co_return wec ? "writing: " + wec.message() : std::string();
  };
  auto reader = [&]() -> asio::awaitable<std::string> {
    auto failure = co_await read_verify(s, seed, n, 16 * 1024, got_crc, leave_gate);
    if (failure.empty()) {
      auto [rest, rec] = co_await read_reply(s);
      if (rec || !rest.empty()) failure = "expected EOF, got " + std::to_string(rest.size()) + " bytes, " + rec.message();
    }
    if (!failure.empty()) s.reset();
    co_return failure;
  };
  auto [wfail, rfail] = co_await (writer() && reader());
  leave_gate();
  const std::string id = "stream " + std::to_string(s.id()) + ": ";
  if (!wfail.empty()) co_return id + wfail;
  if (!rfail.empty()) co_return id + rfail;
  if (sent_crc != got_crc.value()) co_return id + "crc sent " + hex8(sent_crc) + ", echoed " + hex8(got_crc.value());
  co_return std::string();
}

// Runs `count` tasks concurrently (spawned: too many for &&) and returns their failures.
template <class MakeTask>
asio::awaitable<std::vector<std::string>> run_all(int count, MakeTask make_task) {
  const auto ex = co_await asio::this_coro::executor;
  std::vector<std::string> failures;
  int running = count;
  asio::steady_timer all_done(ex, asio::steady_timer::time_point::max());
  for (int i = 0; i < count; ++i)
    asio::co_spawn(ex, make_task(i), [&](std::exception_ptr e, std::string failure) {
      if (e) failure = "exception";
      if (!failure.empty()) failures.push_back(std::move(failure));
      if (--running == 0) all_done.cancel();
    });
  while (running > 0) co_await all_done.async_wait(use_tuple);
  co_return failures;
}

// --- Go client, C++ server -----------------------------------------------------------------------

struct go_client_run {
  go_result go;
  serve_stats server;
};

// Listens on an ephemeral loopback port, starts `yamux_peer -role client` (plus `go_args`) against
// it and serves its session with the command server until the peer ends it.
go_client_run with_go_client(std::vector<std::string> go_args, command_server_options options = {},
                             yamux::config cfg = {}) {
  std::optional<go_peer> go;
  serve_stats stats;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    std::vector<std::string> args{"-role", "client", "-connect",
                                  "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port())};
    args.insert(args.end(), go_args.begin(), go_args.end());
    go.emplace(std::move(args));
    auto socket = co_await acceptor.async_accept(asio::use_awaitable);
    socket.set_option(tcp::no_delay(true));
    yamux::session session(std::move(socket), yamux::role::server, cfg);
    stats = co_await serve_commands(session, options);
  });
  return {go->finish(), stats};
}

std::string first_of(const std::vector<std::string>& failures) {
  return failures.empty() ? std::string() : std::to_string(failures.size()) + " failed, first: " + failures.front();
}

void expect_served(const serve_stats& s, std::size_t streams) {
  CHECK(s.served == streams);
  CHECK_MESSAGE(s.failed == 0, s.first_failure);
}

// The elapsed time of a case, for the log.
struct stopwatch {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};

}  // namespace

// --- The shared definitions ----------------------------------------------------------------------

TEST_CASE("the C++ generator and CRC-32 reproduce the Go peer's reference vectors") {
  struct vector {
    std::uint32_t seed;
    std::uint8_t head0, head1;
    std::uint32_t crc;  // of the first MiB
  };
  for (auto v : {vector{0, 0x21, 0x20, 0x09fa8f7c}, vector{1, 0x72, 0x27, 0x988d8657},
                 vector{2, 0x22, 0xae, 0xfdc02c2d}, vector{4294967295u, 0xf1, 0x64, 0xfc42ab08}}) {
    std::vector<std::byte> buf(mib);
    data_gen(v.seed).fill(buf);
    CHECK(std::to_integer<std::uint8_t>(buf[0]) == v.head0);
    CHECK(std::to_integer<std::uint8_t>(buf[1]) == v.head1);
    crc32 crc;
    crc.update(buf);
    CHECK(crc.value() == v.crc);
    // Odd-sized fills continue the same sequence.
    data_gen pieces(v.seed);
    std::vector<std::byte> again(buf.size());
    for (std::size_t i = 0, k = 1; i < again.size(); i += k, k = k % 13 + 1)
      pieces.fill({again.data() + i, std::min(k, again.size() - i)});
    CHECK(again == buf);
  }
}

TEST_CASE("the C++ generator and CRC-32 agree with the Go peer's for an odd length") {
  go_peer go({"-scenario", "gen", "-seed", "7", "-bytes", "1000003"});
  std::vector<std::byte> head(16);
  data_gen(7).fill(head);
  std::string hex;
  for (auto b : head) hex += hex8(std::to_integer<std::uint32_t>(b)).substr(6);
  const auto r = go.finish();
  CHECK(r.status == test::exit_status{0, 0});
  REQUIRE(r.lines.size() == 2);
  CHECK(r.last_line == "OK");
  CHECK(r.lines[0] == "GEN seed=7 head=" + hex + " bytes=1000003 crc=" + hex8(crc_of_gen(7, 1000003)));
}

// --- Many streams --------------------------------------------------------------------------------

TEST_CASE("C++ client, Go server: 1,000 concurrent streams each echo 1 MiB intact") {
  constexpr int streams = 1000;
  stopwatch t;
  const auto go = with_go_server({}, {}, [&](yamux::session& session) -> asio::awaitable<void> {
    open_gate gate(co_await asio::this_coro::executor, 128);
    const auto failures = co_await run_all(streams, [&](int i) {
      return echo_stream(session, gate, 1 + static_cast<std::uint32_t>(i), mib);
    });
    CHECK_MESSAGE(failures.empty(), first_of(failures));
  });
  expect_ok(go, "OK served=1000");
  MESSAGE("1000 x 1 MiB echoed by Go in " << t.seconds() << " s");
}

TEST_CASE("Go client, C++ server: 1,000 concurrent streams each echo 1 MiB intact") {
  yamux::config cfg;
  stopwatch t;
  const auto r =
      with_go_client({"-scenario", "echo", "-streams", "1000", "-bytes", "1048576", "-seed", "1"}, {}, cfg);
  expect_ok(r.go, "OK streams=1000 bytes=1048576");
  expect_served(r.server, 1000);
  MESSAGE("1000 x 1 MiB echoed by C++ in " << t.seconds() << " s");
}

// --- 256 MiB on one stream -----------------------------------------------------------------------

TEST_CASE("C++ client, Go server: 256 MiB sent on one stream arrive with the right CRC (SINK)") {
  constexpr std::uint64_t n = 256 * mib;
  stopwatch t;
  const auto go = with_go_server({}, {}, [&](yamux::session& session) -> asio::awaitable<void> {
    auto s = session.open();
    co_await asio::async_write(s, asio::buffer("SINK " + std::to_string(n) + "\n"), asio::use_awaitable);
    auto [crc, wec] = co_await write_gen(s, 11, n, 256 * 1024);
    REQUIRE_FALSE(wec);
    auto [reply, rec] = co_await read_reply(s);
    CHECK_FALSE(rec);
    CHECK(reply == hex8(crc) + " " + std::to_string(n) + "\n");
  });
  expect_ok(go, "OK served=1");
  MESSAGE("256 MiB C++ -> Go in " << t.seconds() << " s");
}

TEST_CASE("C++ client, Go server: 256 MiB received on one stream are intact and grow our receive window past 256 KiB (SEND)") {
  constexpr std::uint64_t n = 256 * mib;
  const yamux::config cfg;
  std::uint32_t largest_window = 0;
  stopwatch t;
  const auto go = with_go_server({}, cfg, [&](yamux::session& session) -> asio::awaitable<void> {
    auto s = session.open();
    co_await asio::async_write(s, asio::buffer("SEND " + std::to_string(n) + " 12\n"), asio::use_awaitable);
    crc32 crc;
    const auto failure = co_await read_verify(s, 12, n, mib, crc,
                                              [&] { largest_window = std::max(largest_window, s.receive_window()); });
    CHECK_MESSAGE(failure.empty(), failure);
    auto [rest, rec] = co_await read_reply(s);
    CHECK_FALSE(rec);
    CHECK(rest.empty());
    CHECK(crc.value() == crc_of_gen(12, n));
  });
  expect_ok(go, "OK served=1");
  // Auto-tuning: reading as fast as Go sends, we outgrow the protocol's fixed initial window.
  CHECK(largest_window > yamux::initial_stream_window);
  CHECK(largest_window <= cfg.max_stream_window);
  MESSAGE("256 MiB Go -> C++ in " << t.seconds() << " s, receive window grew to " << largest_window);
}

TEST_CASE("Go client, C++ server: 256 MiB sent by Go on one stream arrive with the right CRC (sink)") {
  stopwatch t;
  const auto r = with_go_client({"-scenario", "sink", "-bytes", "268435456", "-seed", "21"});
  expect_ok(r.go, "OK crc=" + hex8(crc_of_gen(21, 256 * mib)) + " bytes=268435456");
  expect_served(r.server, 1);
  MESSAGE("256 MiB Go -> C++ in " << t.seconds() << " s");
}

TEST_CASE("Go client, C++ server: 256 MiB sent by C++ on one stream arrive intact (send)") {
  stopwatch t;
  const auto r = with_go_client({"-scenario", "send", "-bytes", "268435456", "-seed", "22"});
  expect_ok(r.go, "OK crc=" + hex8(crc_of_gen(22, 256 * mib)) + " bytes=268435456");
  expect_served(r.server, 1);
  MESSAGE("256 MiB C++ -> Go in " << t.seconds() << " s");
}

// --- Half-close ----------------------------------------------------------------------------------

TEST_CASE("C++ client, Go server: after our FIN Go reads to EOF, and its reply and FIN still reach us") {
  const auto go = with_go_server({}, {}, [&](yamux::session& session) -> asio::awaitable<void> {
    auto s = session.open();
    co_await asio::async_write(s, asio::buffer(std::string("HALFCLOSE\n")), asio::use_awaitable);
    // More than one window: Go's window updates must keep flowing to us up to our FIN.
    auto [crc, wec] = co_await write_gen(s, 5, mib, 64 * 1024);
    REQUIRE_FALSE(wec);
    s.shutdown_send();
    auto [reply, rec] = co_await read_reply(s);
    CHECK_FALSE(rec);
    CHECK(reply == "BYE 1048576\n");
  });
  expect_ok(go, "OK served=1");
}

TEST_CASE("Go client, C++ server: after Go's FIN we read to EOF, and our reply and FIN still reach Go") {
  const auto r = with_go_client({"-scenario", "halfclose", "-bytes", "1048576"});
  expect_ok(r.go, "OK halfclose bytes=1048576");
  expect_served(r.server, 1);
}

// --- RST -----------------------------------------------------------------------------------------

TEST_CASE("Go client, C++ server: our RST fails Go's write that waits for window, after exactly one window") {
  // Go's hold driver writes until our 256 KiB window is used up; we reset the stream instead of
  // holding it, and Go's blocked Write returns ErrConnectionReset (the driver reports it and fails).
  const auto r = with_go_client({"-scenario", "hold", "-window", "262144"}, {.reset_full_holds = true, .reset_send_after = std::nullopt});
  CHECK(r.go.status == test::exit_status{1, 0});
  CHECK(r.go.last_line == "FAIL HOLD: write after 262144 bytes: connection reset");
  expect_served(r.server, 1);
  CHECK(r.server.held_bytes == 262144);
}

TEST_CASE("Go client, C++ server: our RST in the middle of a transfer fails Go's read") {
  // We send 1 MiB of the 4 MiB asked for, then reset; Go reads intact data, then ErrConnectionReset.
  const auto r = with_go_client({"-scenario", "send", "-bytes", "4194304", "-seed", "3"},
                                {.reset_full_holds = false, .reset_send_after = mib});
  CHECK(r.go.status == test::exit_status{1, 0});
  CHECK(r.go.last_line.starts_with("FAIL SEND stream 1: read after "));
  CHECK(r.go.last_line.ends_with(" of 4194304 bytes: connection reset"));
  expect_served(r.server, 1);
}

TEST_CASE("C++ client, Go server: a stream we open after Go sent GoAway is refused with RST: stream_reset") {
  // Ordering without sleeps: we hold back what Go sends, ask Go to go away, see its GoAway arrive
  // (so Go refuses new streams), open a stream while our session does not know yet, then release.
  std::vector<std::string> args{"-role", "server", "-listen", "127.0.0.1:0", "-scenario", "serve", "-strict"};
  go_peer go(std::move(args));
  const auto endpoint = go.listening_endpoint();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    tcp::socket socket(io);
    co_await socket.async_connect(endpoint, asio::use_awaitable);
    socket.set_option(tcp::no_delay(true));
    holdable_socket transport(std::move(socket));
    yamux::config cfg;
    cfg.enable_keepalive = false;  // while held, only what the test provokes may arrive
    yamux::session session(transport.make_view(), yamux::role::client, cfg);

    auto a = session.open();
    co_await asio::async_write(a, asio::buffer(std::string("PING\n")), asio::use_awaitable);
    auto [pong, pec] = co_await read_reply(a);  // Go's ACK and reply arrived: nothing else is in flight
    REQUIRE_FALSE(pec);
    REQUIRE(pong.starts_with("PONG "));

    transport.hold();
    auto g = session.open();
    co_await asio::async_write(g, asio::buffer(std::string("GOAWAY\n")), asio::use_awaitable);
    // The held bytes start at a frame boundary (nothing was in flight); wait for Go's GoAway frame.
    bool go_away_seen = false;
    while (!go_away_seen) {
      yamux::frame_reader frames;
      std::size_t offset = 0, used = 0;
      for (;;) {
        const auto ev = frames.next(transport.held().subspan(offset), used);
        offset += used;
        REQUIRE(ev.what != yamux::frame_reader::kind::error);
        if (ev.what == yamux::frame_reader::kind::need_more) break;
        if (ev.what == yamux::frame_reader::kind::header && ev.header.type == yamux::frame_type::go_away) {
          CHECK(ev.header.length == static_cast<std::uint32_t>(yamux::go_away_code::normal));
          go_away_seen = true;
        }
      }
      if (!go_away_seen) co_await transport.async_wait_held();
    }
    CHECK_FALSE(session.remote_going_away());
    std::error_code ec;
    auto late = session.open(ec);
    REQUIRE_FALSE(ec);
    // Its SYN rides on this data; the write completing means Go has it to refuse.
    co_await asio::async_write(late, asio::buffer(std::string("PING\n")), asio::use_awaitable);
    transport.release();

    auto [ok, gec] = co_await read_reply(g);
    CHECK_FALSE(gec);
    CHECK(ok == "OK\n");
    CHECK(session.remote_going_away());
    std::array<char, 16> b;
    auto [lec, ln] = co_await late.async_read_some(asio::buffer(b), use_tuple);
    CHECK(lec == errc::stream_reset);
    CHECK(ln == 0);
    auto [wec, wn] = co_await late.async_write_some(asio::buffer(b), use_tuple);
    CHECK(wec == errc::stream_reset);
    session.close();
  });
  expect_ok(go.finish(), "OK served=2");  // the PING and GOAWAY streams; the refused one never was
}

TEST_CASE("C++ client, Go server: a burst of 2,048 opens is paced by ACKs, none refused") {
  // At most max_unacknowledged_opens (256, Go's backlog) of our SYNs are unanswered at a time; Go
  // ACKs as its application accepts, so its backlog never overflows.
  constexpr int streams = 2048;
  int echoed = 0;
  const auto go = with_go_server({}, {}, [&](yamux::session& session) -> asio::awaitable<void> {
    std::vector<yamux::stream> opened;
    for (int i = 0; i < streams; ++i) opened.push_back(session.open());
    const auto failures = co_await run_all(streams, [&](int i) -> asio::awaitable<std::string> {
      auto& s = opened[static_cast<std::size_t>(i)];
      auto [wec, wn] = co_await asio::async_write(s, asio::buffer(std::string("ECHO 1\nx")), use_tuple);
      auto [reply, rec] = co_await read_reply(s);
      if (!wec && !rec && reply == "x") {
        ++echoed;
        co_return std::string();
      }
      co_return "stream " + std::to_string(s.id()) + ": write " + wec.message() + ", read " + rec.message() +
                ", got \"" + reply + "\"";
    });
    CHECK_MESSAGE(failures.empty(), first_of(failures));
  });
  CHECK(echoed == streams);
  expect_ok(go, "OK served=" + std::to_string(streams));
}

TEST_CASE("C++ client, Go server: SYNs beyond Go's accept backlog are refused with RST: stream_reset") {
  // With our pacing switched off, 2,048 bare SYNs in one burst to a Go application that starts
  // accepting only after a second (-accept-lag): its 256-stream accept backlog overflows however
  // fast each side runs (under TSan our side is slow enough for an eager Go accept loop to keep
  // up). Every stream then either echoes a byte (accepted) or fails with stream_reset (refused).
  constexpr int streams = 2048;
  int refused = 0, echoed = 0;
  yamux::config unpaced;
  unpaced.max_unacknowledged_opens = streams;
  const auto go = with_go_server({"-accept-lag", "1s"}, unpaced, [&](yamux::session& session) -> asio::awaitable<void> {
    std::vector<yamux::stream> opened;
    for (int i = 0; i < streams; ++i) opened.push_back(session.open());
    const auto failures = co_await run_all(streams, [&](int i) -> asio::awaitable<std::string> {
      auto& s = opened[static_cast<std::size_t>(i)];
      auto [wec, wn] = co_await asio::async_write(s, asio::buffer(std::string("ECHO 1\nx")), use_tuple);
      auto [reply, rec] = co_await read_reply(s);
      if (!wec && !rec && reply == "x") {
        ++echoed;
        co_return std::string();
      }
      if ((!wec || wec == errc::stream_reset) && rec == errc::stream_reset && reply.empty()) {
        ++refused;
        co_return std::string();
      }
      co_return "stream " + std::to_string(s.id()) + ": write " + wec.message() + ", read " + rec.message() +
                ", got \"" + reply + "\"";
    });
    CHECK_MESSAGE(failures.empty(), first_of(failures));
  });
  MESSAGE(refused << " of " << streams << " SYNs refused by Go's accept backlog");
  CHECK(refused > 0);
  CHECK(refused + echoed == streams);
  expect_ok(go, "OK served=" + std::to_string(echoed));
}

// --- Ping ----------------------------------------------------------------------------------------

TEST_CASE("C++ client, Go server: pings are answered both ways") {
  const auto go = with_go_server({}, {}, [&](yamux::session& session) -> asio::awaitable<void> {
    const auto rtt = co_await session.async_ping(asio::use_awaitable);
    CHECK(rtt > 0ns);
    CHECK(rtt < 5s);
    // PING makes Go ping us and report its round trip.
    auto s = session.open();
    co_await asio::async_write(s, asio::buffer(std::string("PING\n")), asio::use_awaitable);
    auto [reply, rec] = co_await read_reply(s);
    CHECK_FALSE(rec);
    REQUIRE(reply.starts_with("PONG "));
    REQUIRE(reply.ends_with("\n"));
    const long long ns = std::stoll(reply.substr(5));
    CHECK(ns > 0);
    CHECK(ns < 5'000'000'000);
  });
  expect_ok(go, "OK served=1");
}

TEST_CASE("Go client, C++ server: Go's pings are answered") {
  const auto r = with_go_client({"-scenario", "ping"});
  CHECK(r.go.status == test::exit_status{0, 0});
  CHECK(r.go.last_line.starts_with("OK rtt="));
  expect_served(r.server, 0);
}

// --- GoAway --------------------------------------------------------------------------------------

TEST_CASE("C++ client, Go server: after Go's GoAway our open() fails with remote_go_away; open streams drain") {
  const auto go = with_go_server({}, {}, [&](yamux::session& session) -> asio::awaitable<void> {
    auto early = session.open();
    co_await asio::async_write(early, asio::buffer(std::string("ECHO 4\n")), asio::use_awaitable);
    auto g = session.open();
    co_await asio::async_write(g, asio::buffer(std::string("GOAWAY\n")), asio::use_awaitable);
    auto [ok, gec] = co_await read_reply(g);
    CHECK_FALSE(gec);
    CHECK(ok == "OK\n");
    // Go's GoAway went out before its reply, and before the answer to this ping.
    co_await session.async_ping(asio::use_awaitable);
    CHECK(session.remote_going_away());
    std::error_code ec;
    auto refused = session.open(ec);
    CHECK(ec == errc::remote_go_away);
    CHECK_FALSE(refused.is_open());
    // The stream opened before the GoAway still works both ways.
    co_await asio::async_write(early, asio::buffer(std::string("abcd")), asio::use_awaitable);
    auto [echo, eec] = co_await read_reply(early);
    CHECK_FALSE(eec);
    CHECK(echo == "abcd");
    CHECK(session.is_open());
  });
  expect_ok(go, "OK served=2");
}

TEST_CASE("Go client, C++ server: after our go_away() Go's new stream is refused") {
  const auto r = with_go_client({"-scenario", "goaway-check"});
  expect_ok(r.go, "OK goaway-refused");
  expect_served(r.server, 1);  // the refused stream never reaches accept
}

// --- Windows beyond 256 KiB ----------------------------------------------------------------------

TEST_CASE("C++ client, Go server: Go's 16 MiB window lets us send exactly 16 MiB unread, then we stall") {
  constexpr std::uint64_t window = 16 * mib;
  const auto go = with_go_server({"-window", std::to_string(window)}, {}, [&](yamux::session& session) -> asio::awaitable<void> {
    auto s = session.open();
    // HOLD: Go never reads past the command line, so all it lets us send is its window update's
    // worth (beyond the protocol's 256 KiB). The line counts against the window too.
    const std::string line = "HOLD\n";
    co_await asio::async_write(s, asio::buffer(line), asio::use_awaitable);
    auto [crc, wec] = co_await write_gen(s, 9, window - line.size(), 256 * 1024);
    REQUIRE_FALSE(wec);
    // One byte more waits for window: still waiting after a ping round trip, it is then cancelled.
    std::array<char, 1> one{'x'};
    auto result = co_await (s.async_write_some(asio::buffer(one), use_tuple) || session.async_ping(use_tuple));
    CHECK(result.index() == 1);
    s.reset();  // Go's HOLD ends on the reset
  });
  expect_ok(go, "OK served=1");
}

TEST_CASE("Go client, C++ server: the 1 MiB window we announce is exactly what Go may send unread") {
  // Go's hold driver writes unread until it stalls and checks it got exactly -window bytes out.
  yamux::config cfg;
  cfg.initial_stream_window = 1 << 20;
  const auto r = with_go_client({"-scenario", "hold", "-window", "1048576"}, {}, cfg);
  expect_ok(r.go, "OK hold window=1048576");
  expect_served(r.server, 1);
}

// --- The remaining commands ----------------------------------------------------------------------

TEST_CASE("Go client, C++ server: SLOW reads in 4 KiB pieces, and an unknown command is rejected") {
  SUBCASE("slow") {
    const auto r = with_go_client({"-scenario", "slow", "-bytes", "1048576", "-seed", "4"});
    expect_ok(r.go, "OK crc=" + hex8(crc_of_gen(4, mib)) + " bytes=1048576");
    expect_served(r.server, 1);
  }
  SUBCASE("unknown") {
    const auto r = with_go_client({"-scenario", "unknown"});
    expect_ok(r.go, "OK unknown-rejected");
    expect_served(r.server, 1);
  }
}

// --- Backpressure on opens ------------------------------------------------------------------------

TEST_CASE("Go client, C++ server: a Go client that opens more streams than we accepted is held back, not reset") {
  // hashicorp's OpenStream waits while AcceptBacklog (256) of its SYNs are unacknowledged. We ACK
  // a stream when the application accepts it (session_core.cpp, hand_over), as a hashicorp server
  // does, so a Go client never overflows our backlog: it waits until we accept.
  std::optional<go_peer> go;
  serve_stats stats;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    go.emplace(std::vector<std::string>{"-role", "client", "-connect",
                                        "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()),
                                        "-scenario", "echo", "-streams", "300", "-bytes", "1024"});
    auto socket = co_await acceptor.async_accept(asio::use_awaitable);
    yamux::session session(std::move(socket), yamux::role::server);
    // An application slow to accept: nothing until the backlog is full, then a few round trips more.
    while (session.stream_count() < 256) co_await session.async_ping(asio::use_awaitable);
    for (int i = 0; i < 100; ++i) co_await session.async_ping(asio::use_awaitable);
    stats = co_await serve_commands(session);
  });
  const auto r = go->finish();
  expect_ok(r, "OK streams=300 bytes=1024");
  expect_served(stats, 300);
}
