// Raw TCP through the master, end to end, with the Go service peer in echo mode: every byte comes
// back, half-close travels both ways (FIN for FIN, never a full close on the first EOF), a pool of
// two members shares the connections, and PROXY v2 tells a service the real client address.
#include <doctest/doctest.h>

#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <vector>
#include <string>
#include <string_view>
#include <system_error>

#include "tests/e2e/e2e_support.hpp"

using namespace socketmaster::e2e;

namespace {

// Bytes that show any loss, duplication or reordering.
std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + i / 251) & 0xff);
  return s;
}

// registration id -> open streams, from /routes.
std::map<std::uint64_t, int> open_streams(const master_process& m) {
  const auto json = admin_get(m, "/routes");
  std::map<std::uint64_t, int> out;
  // A plain scan rather than std::regex: g++ 12 with ASan at -O2 warns inside <regex> (a false
  // maybe-uninitialized), and warnings are errors in CI.
  static constexpr std::string_view reg_key = "\"registration\":";
  static constexpr std::string_view open_key = ",\"open_streams\":";
  for (auto at = json.find(reg_key); at != std::string::npos; at = json.find(reg_key, at)) {
    at += reg_key.size();
    std::size_t used = 0;
    const auto id = std::stoull(json.substr(at), &used);
    at += used;
    if (json.compare(at, open_key.size(), open_key) != 0) continue;
    at += open_key.size();
    out[id] = std::stoi(json.substr(at));
  }
  return out;
}

// Closed without a byte of answer: EOF, or a reset (the master closed with our bytes unread).
bool closed_without_answer(tcp_client& c) {
  try {
    return c.read_to_eof().empty();
  } catch (const std::system_error& e) {
    return e.code() == std::errc::connection_reset;
  }
}

}  // namespace

TEST_CASE("raw TCP: every byte is echoed, and half-close travels both ways (FIN for FIN)") {
  master_process m;
  go_service echo(m, {"-port", "0", "-tcp", "-mode", "echo"});
  const auto port = echo.accepted().port;

  // Several MB, far beyond the yamux windows and socket buffers: most of the echo comes back after
  // our FIN, so the master must have kept the other direction open.
  const auto payload = pattern(6'000'000);
  tcp_client big(port);
  const auto back = big.exchange_then_half_close(payload);
  CHECK(back.size() == payload.size());
  const bool same = back == payload;
  CHECK(same);

  // The smallest case: FIN straight after the bytes, and still the echo, then the service's FIN.
  tcp_client small(port);
  small.send("ping");
  small.shutdown_write();
  CHECK(small.read_to_eof() == "ping");
}

TEST_CASE("raw TCP: a pool of two members shares connections, the least loaded first") {
  master_process m;
  go_service e1(m, {"-port", "0", "-tcp", "-mode", "echo"});
  const auto r1 = e1.accepted();
  go_service e2(m, {"-port", std::to_string(r1.port), "-tcp", "-mode", "echo"});
  const auto r2 = e2.accepted();

  std::vector<std::unique_ptr<tcp_client>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<tcp_client>(r1.port));
    const std::string msg = "client " + std::to_string(i);
    clients.back()->send(msg);
    CHECK(clients.back()->read_exact(msg.size()) == msg);  // its stream is open
  }
  const auto streams = open_streams(m);
  CHECK(streams.at(r1.id) == 2);
  CHECK(streams.at(r2.id) == 2);

  for (auto& c : clients) {
    c->shutdown_write();
    CHECK(c->read_to_eof().empty());
  }
}

TEST_CASE("PROXY v2: a registration that asks for it sees the real client address") {
  master_process m;
  go_service http(m, {"-port", "0", "-proxy-protocol", "-text", "proxied"});
  const auto port = http.accepted().port;
  tcp_client c(port);
  c.send("GET /who HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n");
  const auto answer = c.read_to_eof();
  CHECK(answer.find("\r\n\r\nproxied\npath: /who\n") != std::string::npos);
  CHECK(answer.find("\nclient: 127.0.0.1:" + std::to_string(c.local_port()) + "\n") != std::string::npos);

  // Raw TCP too: the service strips the header, the echo is exactly our bytes.
  go_service echo(m, {"-port", "0", "-tcp", "-mode", "echo", "-proxy-protocol"});
  tcp_client e(echo.accepted().port);
  CHECK(e.exchange_then_half_close("after the header") == "after the header");
}

TEST_CASE("raw TCP: a connection made during grace waits for the replacement; bytes sent meanwhile arrive") {
  master_process m({"--grace", "30"});
  go_service first(m, {"-port", "0", "-tcp", "-mode", "echo"});
  const auto r = first.accepted();
  kill_registered(m, first, r);

  auto mark = m.mark();
  tcp_client c(r.port);
  c.send("sent while nobody serves the port");
  m.wait_for_log("waits in the queue", mark);
  go_service second(m, {"-port", std::to_string(r.port), "-tcp", "-mode", "echo"});
  second.accepted();
  CHECK(c.exchange_then_half_close(", and after") == "sent while nobody serves the port, and after");
}

TEST_CASE("raw TCP: a connection closed by its client while it waits leaves the queue; the route still serves") {
  master_process m({"--grace", "30", "--queue-limit", "1"});
  go_service first(m, {"-port", "0", "-tcp", "-mode", "echo"});
  const auto r = first.accepted();
  kill_registered(m, first, r);

  auto mark = m.mark();
  std::optional<tcp_client> gone(std::in_place, r.port);
  m.wait_for_log("waits in the queue", mark);
  gone.reset();
  m.wait_for_log("the client left while queued", mark);

  mark = m.mark();
  tcp_client c(r.port);  // takes the one place in the queue
  m.wait_for_log("waits in the queue", mark);
  go_service second(m, {"-port", std::to_string(r.port), "-tcp", "-mode", "echo"});
  second.accepted();
  CHECK(c.exchange_then_half_close("still served") == "still served");
}

TEST_CASE("raw TCP: when the grace period ends, a waiting connection is closed and the port refuses connections") {
  master_process m({"--grace", "1"});
  go_service only(m, {"-port", "0", "-tcp", "-mode", "echo"});
  const auto r = only.accepted();
  auto mark = m.mark();
  only.kill();
  m.wait_for_log("registration " + std::to_string(r.id) + " ended", mark);
  tcp_client c(r.port);
  c.send("anyone?");
  CHECK(closed_without_answer(c));  // once the grace period is over
  m.wait_for_log("listener [::]:" + std::to_string(r.port) + " closed", mark);
  CHECK(tcp_client::connect_error(r.port) == ECONNREFUSED);
}
