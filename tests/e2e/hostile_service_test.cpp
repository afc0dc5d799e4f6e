// Hostile services (issue 5, section 3): a service registered over a real handshake that then speaks
// raw yamux frames made with protocol/frame.hpp. Protocol violations (a bad version, a window
// overrun, a duplicate SYN, frames for streams that never existed) end that session with
// GoAway(protocol error) and its clients get 502 while another service on the same port is
// unaffected; a service that stops reading back-pressures its streams (an upload stalls after one
// window instead of being buffered by the master); a flood of stream resets gives 502s and leaves the
// session up; a service that accepts nothing is cut off after --yamux-open-timeout-ms, its clients get
// 502, and a SYN flood from a service is refused beyond the accept backlog. The master's VmRSS is
// read from /proc before and under each attack; growth is asserted under a stated bound.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "protocol/frame.hpp"
#include "protocol/handshake.hpp"
#include "tests/e2e/e2e_support.hpp"

using namespace socketmaster::e2e;
namespace yamux = socketmaster::yamux;
using clock_type = std::chrono::steady_clock;

namespace {



struct frame {
  yamux::frame_header header;
  std::string payload;  // Data frames only
};

// A service that registers with a real handshake and then speaks yamux by hand (it is the yamux
// server: the master opens odd stream ids towards it).
class raw_service {
 public:
  raw_service(const master_process& m, std::uint16_t port, std::string path) : conn_(port_of(m.control())) {
    socketmaster::handshake_request request;
    request.socket.port = port;
    request.socket.http = socketmaster::http_route{"", std::move(path)};
    const auto bytes = socketmaster::encode(request);
    conn_.send({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
    std::string answer = conn_.read_exact(8);
    for (;;) {
      const auto size = socketmaster::message_size(
          {reinterpret_cast<const std::byte*>(answer.data()), answer.size()}, socketmaster::max_handshake_bytes);
      REQUIRE(size.what != socketmaster::message_size_result::kind::error);
      const std::size_t want = size.what == socketmaster::message_size_result::kind::complete ? size.total_bytes
                                                                                               : size.need_at_least;
      if (answer.size() >= want) break;
      answer += conn_.read_exact(want - answer.size());
    }
    socketmaster::handshake_response response;
    REQUIRE(socketmaster::decode_response({reinterpret_cast<const std::byte*>(answer.data()), answer.size()}, response).ok());
    auto* accepted = std::get_if<socketmaster::handshake_accepted>(&response);
    REQUIRE(accepted);
    id_ = accepted->registration_id;
    port_ = port_of(accepted->bound_address);
  }

  std::uint64_t id() const { return id_; }
  std::uint16_t port() const { return port_; }
  tcp_client& connection() { return conn_; }

  void send(const yamux::frame_header& h, std::string_view payload = {}) {
    const auto bytes = yamux::encode(h);
    conn_.send(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()) + std::string(payload));
  }
  // The next frame; pings are answered on the way (a live peer), unless told otherwise.
  frame next(duration timeout = default_wait, bool answer_pings = true) {
    for (;;) {
      frame f;
      const auto head = conn_.read_exact(yamux::header_size, timeout);
      f.header = yamux::decode(std::span<const std::byte, yamux::header_size>(
          reinterpret_cast<const std::byte*>(head.data()), yamux::header_size));
      if (f.header.type == yamux::frame_type::data && f.header.length > 0) f.payload = conn_.read_exact(f.header.length, timeout);
      if (answer_pings && f.header.type == yamux::frame_type::ping && f.header.has(yamux::flags::syn)) {
        send({0, yamux::frame_type::ping, yamux::flags::ack, 0, f.header.length});
        continue;
      }
      return f;
    }
  }
  // The next frame that opens a stream (SYN): the master routing a request to us.
  frame next_syn(duration timeout = default_wait) {
    for (;;) {
      auto f = next(timeout);
      if (f.header.has(yamux::flags::syn)) return f;
    }
  }
  // Reads to the end of the connection; the GoAway code seen on the way, if any.
  std::optional<yamux::go_away_code> go_away_then_eof(duration timeout = default_wait) {
    std::optional<yamux::go_away_code> code;
    try {
      for (;;) {
        auto f = next(timeout, false);
        if (f.header.type == yamux::frame_type::go_away) code = static_cast<yamux::go_away_code>(f.header.length);
      }
    } catch (const std::runtime_error& e) {
      // read_exact throws at EOF ("EOF after ..."); a timeout also throws and is a failure here.
      if (std::string_view(e.what()).find("EOF") == std::string_view::npos) throw;
    }
    return code;
  }

 private:
  tcp_client conn_;
  std::uint64_t id_ = 0;
  std::uint16_t port_ = 0;
};

// A client whose request is routed to the raw service; answered later (or not).
std::unique_ptr<tcp_client> request_to(std::uint16_t port, const std::string& path) {
  auto c = std::make_unique<tcp_client>(port);
  c->send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
  return c;
}

struct violation {
  const char* name;
  // Sends the violation, given the id of the stream the master just opened to us.
  void (*commit)(raw_service& s, std::uint32_t stream);
};

}  // namespace

TEST_CASE("yamux violations end the session with GoAway(protocol error); its clients get 502; others are unaffected") {
  master_process m;
  go_service good(m, {"-port", "0", "-path", "/ok", "-text", "good"});
  const auto port = good.accepted().port;
  using yamux::flags::ack;
  using yamux::flags::syn;
  using yamux::frame_type;
  const violation violations[] = {
      {"a frame with version 1",
       [](raw_service& s, std::uint32_t id) { s.send({1, frame_type::window_update, ack, id, 0}); }},
      {"more data than the window (256 KiB + 1 byte announced)",
       [](raw_service& s, std::uint32_t id) {
         s.send({0, frame_type::data, ack, id, 256 * 1024 + 1}, std::string(1000, 'w'));
       }},
      {"a SYN with the master's (odd) stream id parity",
       [](raw_service& s, std::uint32_t id) { s.send({0, frame_type::window_update, syn, id + 2, 0}); }},
      {"data for a stream id the master never opened",
       [](raw_service& s, std::uint32_t id) { s.send({0, frame_type::data, 0, id + 1000, 5}, "hello"); }},
      {"a window update for a service stream id never opened",
       [](raw_service& s, std::uint32_t) { s.send({0, frame_type::window_update, 0, 4242, 100}); }},
      {"an unknown frame type", [](raw_service& s, std::uint32_t) { s.send({0, frame_type(7), 0, 0, 0}); }},
  };
  const auto rss_before = rss_kib(m.pid());
  for (const auto& v : violations) {
    CAPTURE(v.name);
    raw_service hostile(m, static_cast<std::uint16_t>(port), "/raw");
    auto client = request_to(port, "/raw/x");
    const auto opened = hostile.next_syn();
    CHECK(opened.header.stream_id % 2 == 1);
    const auto mark = m.mark();
    v.commit(hostile, opened.header.stream_id);
    CHECK(hostile.go_away_then_eof(5s) == yamux::go_away_code::protocol_error);
    CHECK(client->read_to_eof(5s).starts_with("HTTP/1.1 502 "));
    m.wait_for_log("registration " + std::to_string(hostile.id()) + " ended", mark, 5s);
    CHECK(ms(timed_get(port, "/ok")) < 1000);
  }
  MESSAGE("RSS " << rss_before << " -> " << rss_kib(m.pid()) << " KiB after " << std::size(violations)
                 << " violating services");
  CHECK(m.logged("ended: the peer sent a frame for a stream that was never opened"));
  CHECK(m.logged("ended: yamux frame with an unsupported version"));
  CHECK(m.logged("ended: the peer sent more data than the receive window allows"));
}

TEST_CASE("a service that stops reading: an upload to it stalls after one window; the master buffers nothing more") {
  master_process m;
  go_service good(m, {"-port", "0", "-path", "/ok"});
  const auto port = good.accepted().port;
  raw_service sink(m, port, "/sink");
  const auto rss_before = rss_kib(m.pid());

  // A 64 MB upload, sent without blocking for as long as the master takes it.
  constexpr std::size_t body_bytes = 64'000'000;
  tcp_client uploader(port);
  uploader.send("POST /sink/up HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body_bytes) + "\r\n\r\n");
  const auto opened = sink.next_syn();
  const auto id = opened.header.stream_id;
  // Accept the stream, then read the socket but never grant more window.
  sink.send({0, yamux::frame_type::window_update, yamux::flags::ack, id, 0});
  std::size_t received = opened.payload.size();
  std::thread pusher([&] {
    // The client side of the upload, on its own thread: it blocks once the master stops taking bytes.
    try {
      const std::string chunk(1 << 20, 'u');
      for (std::size_t sent = 0; sent < body_bytes; sent += chunk.size()) uploader.send(chunk);
    } catch (const std::exception&) {
      // The connection ends when the test does.
    }
  });
  // However the test ends (a failed wait throws), the pusher is cut off and joined: a joinable
  // std::thread going out of scope would terminate the whole test program.
  struct stop_pusher {
    tcp_client& client;
    std::thread& thread;
    ~stop_pusher() {
      try {
        client.shutdown_write();  // wakes a blocked send with EPIPE
      } catch (const std::exception&) {
        // already gone: the master closed the connection after the reset (ENOTCONN)
      }
      thread.join();
    }
  } stop{uploader, pusher};
  // Exactly one window's worth arrives (256 KiB), then nothing: the master honours the window.
  while (received < 256 * 1024) {
    const auto f = sink.next(10s);
    if (f.header.type == yamux::frame_type::data && f.header.stream_id == id) received += f.payload.size();
  }
  CHECK(received == 256 * 1024);
  std::vector<long long> latencies;
  for (int i = 0; i < 20; ++i) latencies.push_back(ms(timed_get(port, "/ok")));
  bool more = false;
  try {
    const auto f = sink.next(500ms);
    more = f.header.type == yamux::frame_type::data;
  } catch (const std::runtime_error&) {
    // nothing within 500 ms: stalled, as it should be
  }
  CHECK_FALSE(more);
  const auto rss_stalled = rss_kib(m.pid());
  for (int i = 0; i < 20; ++i) latencies.push_back(ms(timed_get(port, "/ok")));
  const auto rss_later = rss_kib(m.pid());
  MESSAGE("a stalled 64 MB upload: " << received << " bytes reached the service; RSS " << rss_before << " -> "
                                     << rss_stalled << " -> " << rss_later << " KiB; GETs meanwhile (ms): " << join(latencies));
  for (auto l : latencies) CHECK(l < 1000);
  CHECK(rss_later - rss_before < 8 * 1024 * rss_slack());
  // End it: the service resets the stream, the uploader's connection is cut and its thread ends
  // (stop_pusher joins it).
  sink.send({0, yamux::frame_type::window_update, yamux::flags::rst, id, 0});
}

TEST_CASE("a flood of stream resets: every client gets 502, the session stays up, memory stays flat") {
  raise_fd_limit();
  master_process m;
  go_service good(m, {"-port", "0", "-path", "/ok"});
  const auto port = good.accepted().port;
  raw_service resetter(m, port, "/reset");
  const auto rss_before = rss_kib(m.pid());
  constexpr int rounds = 10, per_round = 100;
  std::size_t got_502 = 0;
  std::vector<long long> latencies;
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::unique_ptr<tcp_client>> clients;
    for (int i = 0; i < per_round; ++i) clients.push_back(request_to(port, "/reset/" + std::to_string(i)));
    for (int i = 0; i < per_round; ++i) {
      const auto f = resetter.next_syn();
      // RST the stream, then once more for good measure (a late RST for a stream just ended).
      resetter.send({0, yamux::frame_type::window_update, yamux::flags::rst, f.header.stream_id, 0});
      resetter.send({0, yamux::frame_type::window_update, yamux::flags::rst, f.header.stream_id, 0});
    }
    for (auto& c : clients)
      if (c->read_to_eof(5s).starts_with("HTTP/1.1 502 ")) ++got_502;
    latencies.push_back(ms(timed_get(port, "/ok")));
  }
  const auto rss_after = rss_kib(m.pid());
  MESSAGE((rounds * per_round) << " streams reset by the service: " << got_502 << " got 502; RSS " << rss_before
                             << " -> " << rss_after << " KiB");
  CHECK(got_502 == rounds * per_round);
  for (auto l : latencies) CHECK(l < 1000);
  CHECK(rss_after - rss_before < 16 * 1024 * rss_slack());
  // The session is still up: the resetter still gets (and can answer) streams.
  auto client = request_to(port, "/reset/last");
  const auto f = resetter.next_syn();
  resetter.send({0, yamux::frame_type::window_update, yamux::flags::ack, f.header.stream_id, 0});
  const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
  resetter.send({0, yamux::frame_type::data, yamux::flags::fin, f.header.stream_id, static_cast<std::uint32_t>(answer.size())},
                answer);
  CHECK(client->read_response(5s).ends_with("\r\n\r\nok"));
}

TEST_CASE("a service that accepts nothing: opens are paced, its session ends after --yamux-open-timeout-ms and "
          "its clients get 502; streams a service opens are all refused, their data not kept") {
  raise_fd_limit();
  master_process m({"--yamux-open-timeout-ms", "1500"});
  go_service good(m, {"-port", "0", "-path", "/ok"});
  const auto port = good.accepted().port;
  raw_service deaf(m, port, "/deaf");
  const auto rss_before = rss_kib(m.pid());

  // 300 clients: the master announces 256 streams (hashicorp's backlog) and holds the rest back.
  std::vector<std::unique_ptr<tcp_client>> clients;
  const auto start = clock_type::now();
  for (int i = 0; i < 300; ++i) clients.push_back(request_to(port, "/deaf/" + std::to_string(i)));
  std::size_t syns = 0;
  std::optional<yamux::go_away_code> code;
  while (syns < 256) {
    const auto f = deaf.next(10s);
    if (f.header.has(yamux::flags::syn)) ++syns;
  }
  CHECK(ms(timed_get(port, "/ok")) < 1000);
  const auto rss_waiting = rss_kib(m.pid());
  // No further SYN: the other 44 wait for an answer that never comes. Then the session ends
  // (GoAway(normal)) once the oldest SYN has waited 1.5 s, and every client gets 502.
  try {
    for (;;) {
      const auto f = deaf.next(5s);
      if (f.header.has(yamux::flags::syn)) ++syns;
      if (f.header.type == yamux::frame_type::go_away) code = static_cast<yamux::go_away_code>(f.header.length);
    }
  } catch (const std::runtime_error& e) {
    CHECK(std::string_view(e.what()).find("EOF") != std::string_view::npos);
  }
  CHECK(syns == 256);
  CHECK(code == yamux::go_away_code::normal);
  std::size_t got_502 = 0;
  for (auto& c : clients)
    if (c->read_to_eof(10s).starts_with("HTTP/1.1 502 ")) ++got_502;
  const auto took = ms(clock_type::now() - start);
  MESSAGE("300 clients of a service accepting nothing: " << syns << " SYNs announced, " << got_502
                                                         << " got 502 after " << took << " ms; RSS " << rss_before
                                                         << " -> " << rss_waiting << " KiB while waiting");
  CHECK(got_502 == 300);
  CHECK(took < 8000);
  CHECK(rss_waiting - rss_before < 16 * 1024 * rss_slack());
  CHECK(m.logged("registration " + std::to_string(deaf.id()) + " ended: the peer did not acknowledge a new stream in time"));

  // The other direction: a service opening 1,000 streams, each with data, gets RST for every one
  // (the master accepts no streams: none waits in a backlog with its data), and its session stays up.
  raw_service opener(m, port, "/opener");
  const auto rss_opening = rss_kib(m.pid());
  for (std::uint32_t i = 0; i < 1000; ++i)
    opener.send({0, yamux::frame_type::data, yamux::flags::syn, 2 + 2 * i, 64 * 1024}, std::string(64 * 1024, 'd'));
  std::size_t refused = 0;
  while (refused < 1000) {
    const auto f = opener.next(10s);
    if (f.header.has(yamux::flags::rst)) ++refused;
  }
  CHECK(refused == 1000);
  MESSAGE("1,000 streams opened by a service with 64 KiB each: master RSS " << rss_opening << " -> "
                                                                            << rss_kib(m.pid()) << " KiB");
  CHECK(rss_kib(m.pid()) < rss_opening + 8 * 1024 * rss_slack());  // 256 held would be 16 MiB
  auto client = request_to(port, "/opener/still");
  CHECK(opener.next_syn().header.stream_id % 2 == 1);
  CHECK(ms(timed_get(port, "/ok")) < 1000);
}
