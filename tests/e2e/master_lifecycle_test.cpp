// Services and the master coming and going, end to end: a draining service (GoAway) gets no new
// streams while its in-flight request completes and a second instance takes over; a request that
// arrives while a route is in grace waits for the replacement (several reach it in the order they
// came), unless its client leaves first; grace expiry answers 503 and closes
// the listener; SIGTERM on the master drains it (idle keep-alive connections closed at once, a
// request under way answered, a route in grace served by a replacement whose handshake was under
// way) and it exits 0. Waits are on events the master
// logs or the service prints, never on the clock.
#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/e2e/e2e_support.hpp"

using namespace socketmaster::e2e;

namespace {

std::string url(std::uint16_t port, std::string_view path) {
  return "http://127.0.0.1:" + std::to_string(port) + std::string(path);
}

http_response only_response(background_run& r) {
  const auto out = r.finish();
  const auto responses = parse_curl(out.out);
  if (responses.size() != 1) throw std::runtime_error("curl: " + out.out);
  return responses.front();
}

std::string routed_to(const registration& r) { return "to registration " + std::to_string(r.id); }

// {"registration":N,"open_streams":N,"draining":B} from /routes.
std::string member_entry(const std::string& routes, const registration& r) {
  const auto at = routes.find("{\"registration\":" + std::to_string(r.id) + ",");
  if (at == std::string::npos) return "(no member " + std::to_string(r.id) + " in " + routes + ")";
  return routes.substr(at, routes.find('}', at) + 1 - at);
}

}  // namespace

TEST_CASE("drain: a service that sent GoAway gets no new stream, finishes its in-flight request, and a new instance takes over") {
  master_process m;
  go_service d1(m, {"-port", "0", "-text", "D1"});
  const auto r1 = d1.accepted();

  // A kept-alive client connection that has been served by D1, and a slow request in D1's handler
  // (its head has arrived; the body follows 2 s later).
  tcp_client kept(r1.port);
  kept.send("GET /k1 HTTP/1.1\r\nHost: x.test\r\n\r\n");
  CHECK(kept.read_response().find("\r\n\r\nD1\npath: /k1\n") != std::string::npos);
  const auto before_slow = m.mark();
  tcp_client slow(r1.port);
  slow.send("GET /slow?ms=2000&head=first HTTP/1.1\r\nHost: x.test\r\n\r\n");
  const auto slow_head = slow.read_head();
  CHECK(slow_head.starts_with("HTTP/1.1 200 "));
  m.wait_for_log(routed_to(r1), before_slow);  // so that mark() below comes after that line

  d1.terminate();
  REQUIRE(d1.next_line() == "GOAWAY");
  CHECK(member_entry(admin_get(m, "/routes"), r1).ends_with("\"draining\":true}"));

  // D1 is the only member and the least loaded one would be picked, yet the new request waits.
  const auto mark = m.mark();
  background_run fresh(curl_argv({url(r1.port, "/fresh")}));
  m.wait_for_log("waits in the queue", mark);
  CHECK_FALSE(m.logged(routed_to(r1), mark));

  go_service d2(m, {"-port", std::to_string(r1.port), "-text", "D2"});
  d2.accepted();
  CHECK(only_response(fresh).body.starts_with("D2\npath: /fresh\n"));
  // The next request on the kept-alive connection goes to the new instance too.
  kept.send("GET /k2 HTTP/1.1\r\nHost: x.test\r\n\r\n");
  CHECK(kept.read_response().find("\r\n\r\nD2\npath: /k2\n") != std::string::npos);

  CHECK(slow.read_exact(content_length(slow_head)).starts_with("D1\npath: /slow\n"));
  CHECK(d1.next_line() == "DRAINED");
  CHECK(d1.wait()->success());
}

TEST_CASE("grace: a request that arrives while the service is gone waits, and its replacement answers 200") {
  master_process m({"--grace", "30"});
  go_service g1(m, {"-port", "0", "-path", "/g", "-text", "G1"});
  const auto r1 = g1.accepted();
  CHECK(curl({url(r1.port, "/g")}).body.starts_with("G1\n"));

  kill_registered(m, g1, r1);
  auto mark = m.mark();
  background_run queued(curl_argv({url(r1.port, "/g/queued")}));
  m.wait_for_log("waits in the queue", mark);
  CHECK_FALSE(queued.ended());

  go_service g2(m, {"-port", std::to_string(r1.port), "-path", "/g", "-text", "G2"});
  CHECK(g2.accepted().port == r1.port);
  const auto answer = only_response(queued);
  CHECK(answer.status == 200);
  CHECK(answer.body.starts_with("G2\npath: /g/queued\n"));
}

TEST_CASE("grace: requests queued one after another reach the replacement in the order they arrived") {
  master_process m({"--grace", "30"});
  go_service g1(m, {"-port", "0", "-path", "/g", "-text", "G1"});
  const auto r1 = g1.accepted();
  kill_registered(m, g1, r1);

  // Each is in the queue before the next one is sent.
  std::vector<std::unique_ptr<background_run>> queued;
  for (int i = 0; i < 5; ++i) {
    const auto mark = m.mark();
    queued.push_back(std::make_unique<background_run>(curl_argv({url(r1.port, "/g/" + std::to_string(i) + "/accept-order")})));
    m.wait_for_log("waits in the queue (" + std::to_string(i + 1) + " waiting)", mark);
  }
  go_service g2(m, {"-port", std::to_string(r1.port), "-path", "/g", "-text", "G2"});
  g2.accepted();
  // The replacement numbers streams as it accepts them: the first queued came on its first.
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    const auto answer = only_response(*queued[i]);
    CHECK(answer.status == 200);
    CHECK(answer.body == "stream " + std::to_string(i + 1) + "\n");
  }
}

TEST_CASE("grace expiry: the waiting request gets 503, the listener closes, and connections are refused") {
  master_process m({"--grace", "1"});
  go_service g(m, {"-port", "0", "-text", "G"});
  const auto r = g.accepted();

  // A kept-alive connection from before, still open when the listener closes.
  tcp_client kept(r.port);
  kept.send("GET /before HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(kept.read_response().find("G\npath: /before\n") != std::string::npos);

  auto mark = m.mark();
  g.kill();
  m.wait_for_log("registration " + std::to_string(r.id) + " ended", mark);
  const auto expired = curl({url(r.port, "/late")});  // waits in the queue until the grace ends
  CHECK(expired.status == 503);
  m.wait_for_log("listener [::]:" + std::to_string(r.port) + " closed", mark);
  CHECK(tcp_client::connect_error(r.port) == ECONNREFUSED);
  CHECK(admin_get(m, "/routes") == "[]\n");
  // Its next request is answered too (it was an empty reply): 503, and the connection ends.
  kept.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto after = kept.read_to_eof();
  CHECK(after.starts_with("HTTP/1.1 503 "));
  CHECK(after.find("the service did not come back within its grace period") != std::string::npos);
}

TEST_CASE("a service that dies before answering gets its client a 502, not an empty reply") {
  master_process m;
  go_service s(m, {"-port", "0", "-text", "S"});
  const auto r = s.accepted();
  const auto mark = m.mark();
  background_run doomed(curl_argv({url(r.port, "/slow?ms=10000")}));
  m.wait_for_log(routed_to(r), mark);
  s.kill();
  const auto answer = only_response(doomed);
  CHECK(answer.status == 502);
  CHECK(answer.body == "the service failed before answering\n");
}

TEST_CASE("grace: when the route's queue is full (--queue-limit), a further request gets 503 at once") {
  master_process m({"--grace", "30", "--queue-limit", "1"});
  go_service g(m, {"-port", "0", "-text", "G"});
  const auto r = g.accepted();
  kill_registered(m, g, r);
  auto mark = m.mark();
  background_run first(curl_argv({url(r.port, "/first")}));
  m.wait_for_log("waits in the queue", mark);

  const auto start = std::chrono::steady_clock::now();
  const auto second = curl({url(r.port, "/second")});
  CHECK(second.status == 503);
  CHECK(std::chrono::steady_clock::now() - start < 2s);

  go_service back(m, {"-port", std::to_string(r.port), "-text", "back"});
  back.accepted();
  CHECK(only_response(first).body.starts_with("back\npath: /first\n"));
}

TEST_CASE("grace: a client that leaves while queued gives up its place, and its request never reaches a service") {
  master_process m({"--grace", "30", "--queue-limit", "1"});
  go_service g(m, {"-port", "0", "-text", "G"});
  const auto r = g.accepted();
  kill_registered(m, g, r);

  auto mark = m.mark();
  std::optional<tcp_client> impatient(std::in_place, r.port);
  impatient->send("GET /impatient HTTP/1.1\r\nHost: x\r\n\r\n");
  m.wait_for_log("waits in the queue", mark);
  impatient.reset();  // closes its connection
  m.wait_for_log("a queued connection's client left", mark);

  // The one place in the queue is free again (else: 503 at once), and the request that takes it is
  // the only one the replacement sees.
  mark = m.mark();
  background_run patient(curl_argv({url(r.port, "/patient")}));
  m.wait_for_log("waits in the queue", mark);
  go_service back(m, {"-port", std::to_string(r.port), "-text", "back"});
  back.accepted();
  const auto answer = only_response(patient);
  CHECK(answer.status == 200);
  CHECK(answer.body.starts_with("back\npath: /patient\n"));
  const auto metrics = admin_get(m, "/metrics");
  CHECK(metrics.find("\nsocketmaster_queue_abandoned_total 1\n") != std::string::npos);
  CHECK(metrics.find("\nsocketmaster_streams_opened_total 1\n") != std::string::npos);
}

TEST_CASE("SIGTERM on the master: it stops accepting, lets the in-flight request finish, and exits 0") {
  master_process m;
  go_service s(m, {"-port", "0", "-text", "S"});
  const auto r = s.accepted();
  auto mark = m.mark();
  background_run slow(curl_argv({url(r.port, "/slow?ms=1000")}));
  m.wait_for_log(routed_to(r), mark);

  m.terminate();
  m.wait_for_log("draining", mark);
  CHECK(tcp_client::connect_error(r.port) == ECONNREFUSED);
  CHECK(tcp_client::connect_error(port_of(m.control())) == ECONNREFUSED);
  // The admin server answers through the drain: the request under way, and the drain, are shown.
  const auto metrics = admin_get(m, "/metrics");
  CHECK(metrics.find("\nsocketmaster_draining 1\n") != std::string::npos);
  CHECK(metrics.find("\nsocketmaster_active_connections 1\n") != std::string::npos);

  const auto done = only_response(slow);
  CHECK(done.status == 200);
  CHECK(done.body.starts_with("S\npath: /slow\n"));
  const auto status = m.wait_exit();
  REQUIRE(status);
  CHECK(status->success());
  CHECK(m.logged("drained (0 connections cut)"));
  CHECK(s.next_line() == "CLOSED");  // the master ended the service's session on its way out
}

TEST_CASE("SIGTERM on the master: idle keep-alive connections are closed at once; one mid-request gets its answer, then is closed") {
  master_process m({"--drain-timeout", "20"});  // far longer than the test may take
  go_service s(m, {"-port", "0", "-text", "S"});
  const auto r = s.accepted();
  const auto get = [](std::string_view path) { return "GET " + std::string(path) + " HTTP/1.1\r\nHost: x\r\n\r\n"; };
  tcp_client idle(r.port);
  idle.send(get("/first"));
  CHECK(idle.read_response().starts_with("HTTP/1.1 200"));
  auto mark = m.mark();
  tcp_client busy(r.port);
  busy.send(get("/slow?ms=500"));
  m.wait_for_log(routed_to(r), mark);

  const auto start = std::chrono::steady_clock::now();
  m.terminate();
  // The idle one is closed without a byte (an idle keep-alive connection may be closed at any
  // time); the busy one gets its whole answer first. Neither waits for --header-timeout (10 s).
  CHECK(idle.read_to_eof(5s).empty());
  const auto rest = busy.read_to_eof(5s);
  CHECK(rest.starts_with("HTTP/1.1 200"));
  CHECK(rest.find("path: /slow") != std::string::npos);
  const auto status = m.wait_exit();
  REQUIRE(status);
  CHECK(status->success());
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(m.logged("drained (0 connections cut)"));
}

TEST_CASE("SIGTERM on the master: a request still open at --drain-timeout is cut with a 502, and the master exits 0") {
  master_process m({"--drain-timeout", "0.3"});
  go_service s(m, {"-port", "0", "-text", "S"});
  const auto r = s.accepted();
  const auto mark = m.mark();
  background_run stuck(curl_argv({url(r.port, "/slow?ms=20000")}));
  m.wait_for_log(routed_to(r), mark);

  const auto start = std::chrono::steady_clock::now();
  m.terminate();
  const auto status = m.wait_exit();
  REQUIRE(status);
  CHECK(status->success());
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(m.logged("drained (1 connections cut)"));
  // The master closed the service's session on its way out, so the open request failed before
  // any answer: the client is told so rather than left with a silently closed connection.
  CHECK(only_response(stuck).status == 502);
  CHECK(s.next_line() == "CLOSED");
}

TEST_CASE("SIGTERM on the master: a replacement whose handshake completes during the drain joins the route in grace and serves its queue") {
  // One handshake at a time: the master notes each time it reaches that limit, so a note after the
  // replacement connects says the master took its connection before the drain closed the port.
  master_process m({"--grace", "30", "--drain-timeout", "30", "--max-pending-handshakes", "1"});
  go_service g1(m, {"-port", "0", "-path", "/g", "-text", "G1"});
  const auto r1 = g1.accepted();
  m.wait_for_log("handshakes in progress, the limit");  // g1's own handshake's note
  kill_registered(m, g1, r1);
  auto mark = m.mark();
  background_run queued(curl_argv({url(r1.port, "/g/queued")}));
  m.wait_for_log("waits in the queue", mark);

  go_service g2(m, {"-port", std::to_string(r1.port), "-path", "/g", "-text", "G2", "-hold-handshake"});
  CHECK(g2.next_line() == "CONNECTED");
  m.wait_for_log("handshakes in progress, the limit", mark);
  m.terminate();
  m.wait_for_log("stopped accepting", mark);
  g2.resume();
  // It joins a route that exists, so it is taken (a new route or port would get `internal`), and
  // the request that waited through the drain is answered by it.
  CHECK(g2.accepted().port == r1.port);
  const auto answer = only_response(queued);
  CHECK(answer.status == 200);
  CHECK(answer.body.starts_with("G2\npath: /g/queued\n"));
  const auto status = m.wait_exit();
  REQUIRE(status);
  CHECK(status->success());
  CHECK(m.logged("drained (0 connections cut)"));
}
