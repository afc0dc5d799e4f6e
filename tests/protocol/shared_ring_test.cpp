// The shared ring: placement, the reader's checks of the memory it is handed, and yamux sessions
// that move payload through it (and fall back to the socket when it is full), over a real socket
// pair; a peer that abuses RingData frames is ended like any other protocol violation.
#include "protocol/shared_ring.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <cstring>
#include <vector>

#include "protocol/session.hpp"
#include "tests/support/run_coroutine.hpp"
#include "tests/support/stream_helpers.hpp"

using namespace socketmaster;
using namespace socketmaster::yamux;
using namespace asio::experimental::awaitable_operators;
using socket_type = asio::local::stream_protocol::socket;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

using test::pattern;

std::shared_ptr<shared_ring> new_ring(std::size_t capacity) {
  std::error_code ec;
  auto ring = shared_ring::create(capacity, ec);
  REQUIRE_MESSAGE(ring, ec.message());
  return ring;
}

// The reader's view of `writer`'s memory, as the master gets it: a duplicate of the descriptor.
std::shared_ptr<shared_ring> reader_of(const shared_ring& writer) {
  std::string why;
  auto ring = shared_ring::attach(::fcntl(writer.fd(), F_DUPFD_CLOEXEC, 0), 1 << 30, why);
  REQUIRE_MESSAGE(ring, why);
  return ring;
}

std::string refusal(int fd, std::size_t max_capacity = 1 << 30) {
  std::string why;
  auto ring = shared_ring::attach(fd, max_capacity, why);
  CHECK_FALSE(ring);
  CHECK(::fcntl(fd, F_GETFD) == -1);  // taken over and closed
  return why;
}

using test::socket_pair;

using test::read_until;

using test::read_all;

asio::awaitable<stream> accept_ok(session& service) {
  auto [ec, s] = co_await service.async_accept(use_tuple);
  REQUIRE_FALSE(ec);
  co_return std::move(s);
}

// Takes at most `step` bytes of each offer and keeps them: half of the payload goes the sink's way,
// the rest through the stream's buffer, as with a client socket that is often full.
struct stingy_sink final : payload_sink {
  std::size_t step = 0;
  std::vector<std::byte>* out = nullptr;
  std::size_t take(std::span<const std::span<const std::byte>> offered) override {
    std::size_t taken = 0;
    for (const auto& p : offered) {
      const std::size_t k = std::min(step - taken, p.size());
      out->insert(out->end(), p.begin(), p.begin() + static_cast<std::ptrdiff_t>(k));
      taken += k;
      if (taken == step) break;
    }
    return taken;
  }
};

}  // namespace

TEST_CASE("a span never wraps: one that would is placed at the start of the next lap") {
  CHECK(ring_place(0, 100, 1000) == 0);
  CHECK(ring_place(900, 100, 1000) == 900);
  CHECK(ring_place(901, 100, 1000) == 1000);
  CHECK(ring_place(2950, 100, 1000) == 3000);
  CHECK(ring_place(3000, 1000, 1000) == 3000);
  CHECK(ring_place(3001, 1000, 1000) == 4000);
}

TEST_CASE("the writer reuses only what the reader has released, and both place spans alike") {
  auto writer = new_ring(shared_ring::min_capacity);
  auto reader = reader_of(*writer);
  const std::size_t cap = writer->capacity();
  CHECK(reader->capacity() == cap);
  const auto a = pattern(cap / 2, 1), b = pattern(cap / 4, 2), c = pattern(cap / 2, 3);
  std::byte* p = writer->reserve(a.size());
  REQUIRE(p);
  std::memcpy(p, a.data(), a.size());
  p = writer->reserve(b.size());
  REQUIRE(p);
  std::memcpy(p, b.data(), b.size());
  // Three quarters in use: half of the ring does not fit, at the end nor (unreleased) at the start.
  CHECK(writer->reserve(c.size()) == nullptr);
  auto got = reader->take(a.size());
  CHECK(std::equal(got.begin(), got.end(), a.begin(), a.end()));
  CHECK(writer->reserve(c.size()) == nullptr);  // taken, not yet released
  reader->release();
  // The last quarter is too short for c: it goes to the start of the next lap, over a's old place.
  p = writer->reserve(c.size());
  REQUIRE(p);
  std::memcpy(p, c.data(), c.size());
  got = reader->take(b.size());
  CHECK(std::equal(got.begin(), got.end(), b.begin(), b.end()));
  got = reader->take(c.size());
  CHECK(std::equal(got.begin(), got.end(), c.begin(), c.end()));
  CHECK(writer->reserve(1) == nullptr);  // skipped tail, c: nothing released since b
  reader->release();
  CHECK(writer->reserve(cap) != nullptr);  // all of it free again
}

TEST_CASE("a held span is not reused until it is let go, and spans taken since the last release stay unpublished") {
  auto writer = new_ring(shared_ring::min_capacity);
  auto reader = reader_of(*writer);
  const std::size_t q = writer->capacity() / 4;
  REQUIRE(writer->reserve(q));
  REQUIRE(writer->reserve(q));
  const auto first = reader->take(q);
  const auto token = reader->hold(first.subspan(100));  // what a slow client left of it
  reader->take(q);
  reader->release();
  // Half is free at the end; the held first quarter keeps the writer from the lap's start.
  CHECK(reader->held_bytes() == 2 * q - 100);
  REQUIRE(writer->reserve(2 * q));
  CHECK(writer->reserve(q) == nullptr);
  // A third span taken (not yet released), and the hold let go meanwhile: the first half of the
  // ring becomes free, the third span (still on its way to a client) does not.
  reader->take(2 * q);
  reader->unhold(token);
  CHECK(reader->held_bytes() == 0);
  CHECK(writer->reserve(q) != nullptr);
  CHECK(writer->reserve(q) != nullptr);
  CHECK(writer->reserve(q) == nullptr);
  reader->release();
  CHECK(writer->reserve(q) != nullptr);
}

TEST_CASE("the writer gives an idle ring's pages back, and only when the reader has released everything") {
  auto writer = new_ring(1 << 20);
  auto reader = reader_of(*writer);
  const auto blocks = [&] {
    struct stat st {};
    REQUIRE(::fstat(writer->fd(), &st) == 0);
    return st.st_blocks * 512;  // bytes committed
  };
  const auto data = pattern(512 * 1024);
  std::memcpy(writer->reserve(data.size()), data.data(), data.size());
  CHECK(blocks() >= static_cast<long>(data.size()));
  CHECK_FALSE(writer->trim());  // the reader has not taken it yet
  const auto got = reader->take(data.size());
  CHECK(std::equal(got.begin(), got.end(), data.begin(), data.end()));
  reader->release();
  CHECK(writer->trim());
  CHECK(blocks() <= 8192);  // the control page at most
  // Written again, the pages come back with the new bytes.
  const auto more = pattern(100000, 2);
  std::memcpy(writer->reserve(more.size()), more.data(), more.size());
  const auto again = reader->take(more.size());
  CHECK(std::equal(again.begin(), again.end(), more.begin(), more.end()));
}

TEST_CASE("the reader refuses memory a writer could shrink under it, and memory of the wrong size") {
  SUBCASE("not a memfd") {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    ::close(p[1]);
    CHECK(refusal(p[0]).find("not a memfd") != std::string::npos);
  }
  SUBCASE("unsealed") {
    const int fd = ::memfd_create("test", MFD_CLOEXEC);  // no sealing allowed at all
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, shared_ring::control_bytes + shared_ring::min_capacity) == 0);
    CHECK(refusal(fd).find("F_SEAL_SHRINK") != std::string::npos);
  }
  SUBCASE("sealable but not sealed") {
    const int fd = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, shared_ring::control_bytes + shared_ring::min_capacity) == 0);
    CHECK(refusal(fd).find("F_SEAL_SHRINK") != std::string::npos);
  }
  SUBCASE("too small") {
    const int fd = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, shared_ring::control_bytes + 4096) == 0);
    REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
    CHECK(refusal(fd).find("at least") != std::string::npos);
  }
  SUBCASE("larger than the reader maps") {
    auto writer = new_ring(1 << 20);
    CHECK(refusal(::fcntl(writer->fd(), F_DUPFD_CLOEXEC, 0), 512 * 1024).find("larger than") != std::string::npos);
  }
  SUBCASE("sealed against writing: the reader cannot publish its position") {
    const int fd = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, shared_ring::control_bytes + shared_ring::min_capacity) == 0);
    REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE) == 0);
    CHECK(refusal(fd).find("cannot be mapped") != std::string::npos);
  }
  SUBCASE("writer sizes must be whole pages of at least the minimum") {
    std::error_code ec;
    CHECK_FALSE(shared_ring::create(shared_ring::min_capacity + 1, ec));
    CHECK(ec == std::errc::invalid_argument);
    CHECK_FALSE(shared_ring::create(4096, ec));
  }
}

namespace {

// A service-side session (the yamux server) writing into `ring`, and a master-side one (client)
// reading it, over a socket pair.
struct ring_sessions {
  session master;
  session service;
  std::shared_ptr<shared_ring> master_ring;
};

ring_sessions make_ring_sessions(asio::io_context& io, std::size_t capacity) {
  auto writer = new_ring(capacity);
  auto reader = reader_of(*writer);
  auto [a, b] = socket_pair(io);
  return {session(std::move(a), role::client, {}, {reader, false}),
          session(std::move(b), role::server, {}, {writer, true}), reader};
}

// The master opens a stream and sends a request; the service accepts it and reads the request.
asio::awaitable<std::pair<stream, stream>> exchange_opened(ring_sessions& pair) {
  auto m = pair.master.open();
  co_await asio::async_write(m, asio::buffer("GET", 3), asio::use_awaitable);
  auto s = co_await accept_ok(pair.service);
  std::array<char, 3> req;
  co_await asio::async_read(s, asio::buffer(req), asio::use_awaitable);
  co_return std::pair{std::move(m), std::move(s)};
}

// The service's answer: `data` a megabyte per write, as hello hands a stream a body, then FIN.
asio::awaitable<void> send_body(stream& s, const std::vector<std::byte>& data) {
  for (std::size_t at = 0; at < data.size(); at += 1 << 20)
    co_await asio::async_write(s, asio::buffer(data.data() + at, std::min<std::size_t>(1 << 20, data.size() - at)),
                               asio::use_awaitable);
  s.shutdown_send();
}

}  // namespace

TEST_CASE("bulk payload goes through the ring and arrives intact; short writes stay on the socket") {
  test::run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
    auto pair = make_ring_sessions(io, 8 << 20);
    auto& master = pair.master;
    auto& service = pair.service;
    const auto data = pattern(6 << 20);
    auto opened = co_await exchange_opened(pair);  // named: clang 14 cannot capture structured bindings
    auto& m = opened.first;
    auto& s = opened.second;
    // A short answer first: below shared_ring::min_payload, so on the socket.
    co_await asio::async_write(s, asio::buffer("HTTP", 4), asio::use_awaitable);
    std::array<char, 4> head;
    co_await asio::async_read(m, asio::buffer(head), asio::use_awaitable);
    CHECK(std::string(head.data(), 4) == "HTTP");
    CHECK(service.ring_payload_bytes() == 0);
    CHECK(master.ring_payload_bytes() == 0);
    auto [got, ec] = co_await (send_body(s, data) && read_all(m));
    CHECK(ec == asio::error::eof);
    CHECK(got == data);
    // The ring is large enough never to be full for long; most of the payload went through it.
    CHECK(service.ring_payload_bytes() == master.ring_payload_bytes());
    CHECK(master.ring_payload_bytes() > data.size() / 2);
  }, 30s);
}

TEST_CASE("with the ring full, frames go on the socket; a sink and a reader get it all in order") {
  test::run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
    // The smallest ring: 64 KiB, a frame's worth, so the writer keeps finding it full and mixes
    // RingData and Data frames of one stream, which must arrive in order.
    auto pair = make_ring_sessions(io, shared_ring::min_capacity);
    auto& master = pair.master;
    auto& service = pair.service;
    const auto data = pattern(4 << 20, 7);
    auto opened = co_await exchange_opened(pair);  // named: clang 14 cannot capture structured bindings
    auto& m = opened.first;
    auto& s = opened.second;
    std::vector<std::byte> got;
    stingy_sink sink;
    sink.step = 40000;
    sink.out = &got;
    auto receive = [&]() -> asio::awaitable<std::error_code> {
      std::vector<std::byte> buf(30000);
      for (;;) {
        m.offer_payload_to(&sink);  // renewed after each read, as the master's router does
        auto [ec, n] = co_await m.async_read_some(asio::buffer(buf), use_tuple);
        got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
        if (ec) co_return ec;
      }
    };
    const auto ec = co_await (send_body(s, data) && receive());
    CHECK(ec == asio::error::eof);
    CHECK(got.size() == data.size());
    CHECK(got == data);
    CHECK(master.ring_payload_bytes() == service.ring_payload_bytes());
    CHECK(master.ring_payload_bytes() > 0);
    CHECK(master.ring_payload_bytes() < data.size());  // full at times: some went on the socket
  }, 30s);
}

TEST_CASE("bytes a slow sink leaves wait in the ring, not copied, and arrive intact") {
  test::run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
    auto pair = make_ring_sessions(io, 8 << 20);
    const auto data = pattern(6 << 20, 9);
    auto opened = co_await exchange_opened(pair);  // named: clang 14 cannot capture structured bindings
    auto& m = opened.first;
    auto& s = opened.second;
    std::vector<std::byte> got;
    stingy_sink sink;
    // Both take a little of each 64 KiB frame, so most of it has to wait.
    sink.step = 3000;
    sink.out = &got;
    std::size_t held_in_place = 0;  // bytes found waiting in the ring rather than in a copy
    auto receive = [&]() -> asio::awaitable<std::error_code> {
      std::vector<std::byte> buf(2000);
      for (;;) {
        // What waits, in place (as the master's router sends it on), then a read.
        std::array<asio::const_buffer, 16> parts;
        const std::size_t count = m.buffered_data(parts);
        std::size_t n = 0;
        for (std::size_t i = 0; i < count; ++i) {
          const auto* p = static_cast<const std::byte*>(parts[i].data());
          got.insert(got.end(), p, p + parts[i].size());
          n += parts[i].size();
          if (pair.master_ring->contains(p)) held_in_place += parts[i].size();
        }
        m.consume_buffered(n);
        m.offer_payload_to(&sink);
        auto [ec, k] = co_await m.async_read_some(asio::buffer(buf), use_tuple);
        got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(k));
        if (ec) co_return ec;
      }
    };
    const auto ec = co_await (send_body(s, data) && receive());
    CHECK(ec == asio::error::eof);
    CHECK(got == data);
    CHECK(held_in_place > data.size() / 2);
  }, 30s);
}

namespace {

// A raw peer (the service's side of the socket) against a master-side session reading `ring`:
// whatever it sends, the session must end with GoAway(protocol error) and `expected`.
void expect_violation(std::shared_ptr<shared_ring> ring, std::vector<frame_header> frames, std::error_code expected) {
  test::run_coroutine([&](asio::io_context& io) -> asio::awaitable<void> {
    auto [a, raw] = socket_pair(io);
    session master(std::move(a), role::client, {}, {ring, false});
    auto m = master.open();
    co_await asio::async_write(m, asio::buffer("GET", 3), asio::use_awaitable);
    for (const auto& h : frames) {
      const auto hb = encode(h);
      co_await asio::async_write(raw, asio::buffer(hb), asio::use_awaitable);
    }
    const auto go_away = co_await read_until(raw, frame_type::go_away);
    CHECK(go_away.length == static_cast<std::uint32_t>(go_away_code::protocol_error));
    auto [ec] = co_await master.async_wait_closed(use_tuple);
    CHECK(ec == expected);
  }, 20s);
}

}  // namespace

TEST_CASE("RingData frames from a peer that has no ring, or naming more than the ring holds, end the session") {
  SUBCASE("no ring negotiated: an unknown frame type, as for any session") {
    expect_violation(nullptr, {{0, frame_type::window_update, flags::ack, 1, 0}, {0, frame_type::ring_data, 0, 1, 100}},
                     errc::invalid_frame_type);
  }
  SUBCASE("longer than the ring") {
    auto writer = new_ring(shared_ring::min_capacity);
    expect_violation(reader_of(*writer),
                     {{0, frame_type::window_update, flags::ack, 1, 0},
                      {0, frame_type::ring_data, 0, 1, static_cast<std::uint32_t>(shared_ring::min_capacity + 1)}},
                     errc::protocol_error);
  }
  SUBCASE("beyond the stream's window, as a Data frame would be") {
    auto writer = new_ring(1 << 20);
    expect_violation(reader_of(*writer),
                     {{0, frame_type::window_update, flags::ack, 1, 0},
                      {0, frame_type::ring_data, 0, 1, initial_stream_window + 1}},
                     errc::window_exceeded);
  }
}

TEST_CASE("a RingData frame's FIN takes effect after its payload; a frame for a stream already gone still moves the ring") {
  test::run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
    auto writer = new_ring(128 * 1024);
    auto [a, raw] = socket_pair(io);
    session master(std::move(a), role::client, {}, {reader_of(*writer), false});
    auto gone = master.open();  // stream 1
    auto m = master.open();     // stream 3
    co_await asio::async_write(gone, asio::buffer("GET", 3), asio::use_awaitable);
    co_await asio::async_write(m, asio::buffer("GET", 3), asio::use_awaitable);
    gone.reset();
    const auto first = pattern(40000, 3), second = pattern(40000, 4);
    std::memcpy(writer->reserve(first.size()), first.data(), first.size());
    std::memcpy(writer->reserve(second.size()), second.data(), second.size());
    // The first span for the reset stream (dropped), the second for stream 3 with FIN.
    for (const auto& h : {frame_header{0, frame_type::ring_data, flags::ack, 1, 40000},
                          frame_header{0, frame_type::ring_data, flags::ack | flags::fin, 3, 40000}}) {
      const auto hb = encode(h);
      co_await asio::async_write(raw, asio::buffer(hb), asio::use_awaitable);
    }
    auto [got, ec] = co_await read_all(m);
    CHECK(ec == asio::error::eof);
    CHECK(got == second);
    CHECK(master.ring_payload_bytes() == 80000);
  }, 20s);
}

TEST_CASE("a span held for a whole housekeeping tick (a reader that stopped) is copied in and let go; its bytes still arrive") {
  test::run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
    auto writer = new_ring(shared_ring::min_capacity);
    auto [a, raw] = socket_pair(io);
    config cfg;
    cfg.write_timeout = std::chrono::milliseconds(400);  // housekeeping every 100 ms
    session master(std::move(a), role::client, cfg, {reader_of(*writer), false});
    auto m = master.open();
    co_await asio::async_write(m, asio::buffer("GET", 3), asio::use_awaitable);
    const auto body = pattern(40000, 5);
    std::memcpy(writer->reserve(body.size()), body.data(), body.size());
    const auto h = encode(frame_header{0, frame_type::ring_data, flags::ack, 1, 40000});
    co_await asio::async_write(raw, asio::buffer(h), asio::use_awaitable);
    // Nobody reads stream 1: its 40,000 bytes wait in the ring, so a span that must go past them
    // (the rest of the lap, then 40,000 at its start) does not fit until they are let go.
    const auto started = std::chrono::steady_clock::now();
    asio::steady_timer step(io);
    while (!writer->reserve(40000)) {
      REQUIRE(std::chrono::steady_clock::now() - started < 5s);
      step.expires_after(10ms);
      co_await step.async_wait(asio::use_awaitable);
    }
    // Let go within two ticks or so, not at once: a reader merely lagging keeps its span in place.
    CHECK(std::chrono::steady_clock::now() - started >= 90ms);
    std::vector<std::byte> got(body.size());
    co_await asio::async_read(m, asio::buffer(got), asio::use_awaitable);
    CHECK(got == body);
  }, 20s);
}

TEST_CASE("short RingData payloads that must wait are copied, not held: tiny frames cannot multiply what a window costs") {
  test::run_coroutine([](asio::io_context& io) -> asio::awaitable<void> {
    auto writer = new_ring(shared_ring::min_capacity);
    auto [a, raw] = socket_pair(io);
    session master(std::move(a), role::client, {}, {reader_of(*writer), false});
    auto m = master.open();
    co_await asio::async_write(m, asio::buffer("GET", 3), asio::use_awaitable);
    const auto body = pattern(30000, 6);
    std::vector<std::byte> frames;
    for (std::size_t at = 0; at < body.size(); at += 10) {
      std::memcpy(writer->reserve(10), body.data() + at, 10);
      const auto h = encode(frame_header{0, frame_type::ring_data, at == 0 ? flags::ack : std::uint16_t{0}, 1, 10});
      frames.insert(frames.end(), h.begin(), h.end());
    }
    co_await asio::async_write(raw, asio::buffer(frames), asio::use_awaitable);
    // Nobody reads yet; once the frames are handled (a ping's answer says so), all of the ring is
    // free again: nothing was held.
    const auto ping = encode(frame_header{0, frame_type::ping, flags::syn, 0, 5});
    co_await asio::async_write(raw, asio::buffer(ping), asio::use_awaitable);
    while (!(co_await read_until(raw, frame_type::ping)).has(flags::ack)) {
    }
    CHECK(writer->reserve(writer->capacity()) != nullptr);
    std::vector<std::byte> got(body.size());
    co_await asio::async_read(m, asio::buffer(got), asio::use_awaitable);
    CHECK(got == body);
  }, 20s);
}
