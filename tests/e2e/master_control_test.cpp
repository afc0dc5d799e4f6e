// The control port, end to end: every rejection code the master can produce, each with a sentence,
// with the master still serving afterwards; the same-host socket (taken by our SDK's hello, refused
// when another process holds its name); and the admin endpoint's /metrics and /routes following
// registrations, pools, grace and the queue. Services are the Go peer (its request made by
// `capnp encode`) and raw sockets; a rejection a raw socket receives is decoded by `capnp decode`.
// `internal` is answered to a handshake that completes while the master drains or exits.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "protocol/handshake.hpp"
#include "tests/e2e/e2e_support.hpp"
#include "tests/support/reserved_port.hpp"

using namespace socketmaster::e2e;

namespace {

// What a raw client gets back for `bytes` on the control port, decoded by the capnp tool.
std::string handshake_answer(const master_process& m, const temp_dir& dir, std::string_view bytes) {
  tcp_client c(port_of(m.control()));
  if (!bytes.empty()) c.send(bytes);
  write_file(dir.file("response.bin"), c.read_to_eof());
  return run({"/bin/sh", "-c", "exec capnp decode --short \"$0\" HandshakeResponse < \"$1\"", schema_path(),
              dir.file("response.bin")})
      .out;
}

std::string metric(const std::string& metrics, const std::string& name) {
  const auto at = metrics.find("\n" + name + " ");
  if (at == std::string::npos) return "(missing)";
  const auto start = at + name.size() + 2;
  return metrics.substr(start, metrics.find('\n', start) - start);
}

// The Prometheus text format wants every sample of a family in one group.
bool families_are_contiguous(const std::string& metrics) {
  std::vector<std::string> seen;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.front() == '#') continue;
    const auto name = line.substr(0, line.find_first_of("{ "));
    if (!seen.empty() && seen.back() == name) continue;
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      MESSAGE("metric family split: " << name);
      return false;
    }
    seen.push_back(name);
  }
  return true;
}

}  // namespace

TEST_CASE("every rejection code the master can produce comes with a sentence, and the master serves on") {
  temp_dir dir;
  master_process m({"--handshake-timeout-ms", "300"});

  // badRequest: not a Cap'n Proto message at all, or nothing within the handshake deadline.
  const auto garbage = handshake_answer(m, dir, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(garbage.find("(rejected = (code = badRequest, message = \"") != std::string::npos);
  // A segment table announcing one segment of 200,000 words: 1.6 MB, over the 1 MiB bound.
  const auto huge = handshake_answer(m, dir, std::string("\x00\x00\x00\x00\x40\x0d\x03\x00", 8));
  CHECK(huge.find("code = badRequest") != std::string::npos);
  const auto silent = handshake_answer(m, dir, "");
  CHECK(silent.find("code = badRequest") != std::string::npos);
  CHECK(silent.find("did not arrive within 300 ms") != std::string::npos);
  // badRequest: a well-formed request asking for something invalid.
  go_service bad_path(m, {"-port", "0", "-path", "no-slash"});
  CHECK(bad_path.rejected().starts_with("badRequest the path prefix"));
  CHECK(bad_path.wait()->code == 2);
  go_service bad_address(m, {"-port", "0", "-address", "not-an-ip"});
  CHECK(bad_address.rejected().starts_with("badRequest "));

  go_service future(m, {"-port", "0", "-proto-version", "2"});
  CHECK(future.rejected().starts_with("unsupportedVersion "));

  // bindFailed: another process (this test) holds the port.
  tcp_listener held;
  go_service bind_fails(m, {"-address", "127.0.0.1", "-port", std::to_string(held.port())});
  CHECK(bind_fails.rejected().starts_with("bindFailed "));

  // conflict: raw TCP and HTTP on one port, either way round; a specific address on a port that is
  // served on all of them.
  go_service http(m, {"-port", "0"});
  const auto http_port = std::to_string(http.accepted().port);
  go_service tcp_on_http(m, {"-port", http_port, "-tcp", "-mode", "echo"});
  CHECK(tcp_on_http.rejected().starts_with("conflict "));
  go_service tcp(m, {"-port", "0", "-tcp", "-mode", "echo"});
  const auto tcp_port = std::to_string(tcp.accepted().port);
  go_service http_on_tcp(m, {"-port", tcp_port});
  CHECK(http_on_tcp.rejected().starts_with("conflict "));
  go_service narrower(m, {"-address", "127.0.0.1", "-port", http_port, "-path", "/n"});
  CHECK(narrower.rejected().starts_with("conflict "));
  go_service specific(m, {"-address", "127.0.0.1", "-port", "0"});
  const auto specific_port = std::to_string(specific.accepted().port);
  go_service wider(m, {"-port", specific_port, "-path", "/w"});
  CHECK(wider.rejected().starts_with("conflict "));

  // Still alive and serving (a rejection once crashed it).
  go_service fine(m, {"-port", http_port, "-path", "/fine", "-text", "fine"});
  fine.accepted();
  CHECK(curl({"http://127.0.0.1:" + http_port + "/fine"}).body.starts_with("fine\n"));

  const auto metrics = admin_get(m, "/metrics");
  CHECK(metric(metrics, "socketmaster_rejections_total{code=\"badRequest\"}") == "5");
  CHECK(metric(metrics, "socketmaster_rejections_total{code=\"unsupportedVersion\"}") == "1");
  CHECK(metric(metrics, "socketmaster_rejections_total{code=\"bindFailed\"}") == "1");
  CHECK(metric(metrics, "socketmaster_rejections_total{code=\"conflict\"}") == "4");
}

TEST_CASE("internal: a handshake that completes while the master drains is refused, and no listener opens for it") {
  temp_dir dir;
  // One handshake at a time: the master notes each time it reaches that limit, so a note after
  // our client connects says it accepted ours.
  master_process m({"--max-pending-handshakes", "1", "--drain-timeout", "30"});
  go_service s(m, {"-port", "0", "-text", "S"});
  const auto r = s.accepted();
  m.wait_for_log("handshakes in progress, the limit");  // the service's handshake's note
  auto mark = m.mark();
  // A request under way, its body still to come: the drain waits for it until the client leaves.
  std::optional<tcp_client> holder(std::in_place, r.port);
  holder->send("POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n");
  m.wait_for_log("to registration " + std::to_string(r.id), mark);

  tcp_client late(port_of(m.control()));
  m.wait_for_log("handshakes in progress, the limit", mark);
  m.terminate();
  m.wait_for_log("stopped accepting", mark);
  socketmaster::handshake_request request;
  request.socket.address = "127.0.0.1";
  request.socket.port = 0;
  const auto bytes = socketmaster::encode(request);
  late.send({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
  write_file(dir.file("response.bin"), late.read_to_eof());
  const auto answer = run({"/bin/sh", "-c", "exec capnp decode --short \"$0\" HandshakeResponse < \"$1\"",
                           schema_path(), dir.file("response.bin")})
                          .out;
  CHECK(answer.find("(rejected = (code = internal, message = \"the master is shutting down; register with its "
                    "successor\"))") != std::string::npos);
  CHECK_FALSE(m.logged("opened (tcp)", mark));  // it used to be accepted, with a listener, mid-drain

  holder.reset();  // the last connection ends: the drain is over
  const auto status = m.wait_exit();
  REQUIRE(status);
  CHECK(status->success());
}

TEST_CASE("unauthorized: with --token-file, a missing or wrong token is refused and the right one accepted") {
  temp_dir dir;
  write_file(dir.file("token"), "s3cret-token\n");
  master_process m({"--token-file", dir.file("token")});

  go_service none(m, {"-port", "0"});
  CHECK(none.rejected().starts_with("unauthorized "));
  go_service wrong(m, {"-port", "0", "-token", "s3cret-tokem"});
  CHECK(wrong.rejected() == "unauthorized the token is wrong");
  go_service right(m, {"-port", "0", "-token", "s3cret-token", "-text", "authorized"});
  const auto port = right.accepted().port;
  CHECK(curl({"http://127.0.0.1:" + std::to_string(port) + "/"}).body.starts_with("authorized\n"));
  CHECK_FALSE(m.logged("s3cret"));  // never a secret in the log
}

TEST_CASE("a token file that holds no token stops the master at start instead of leaving it open to all") {
  temp_dir dir;
  write_file(dir.file("empty"), "\n");
  write_file(dir.file("blank"), "  \r\nsecond line\n");
  for (const auto* name : {"empty", "blank", "missing"}) {
    CAPTURE(name);
    const auto r = run({master_binary(), "--control", "127.0.0.1:0", "--token-file", dir.file(name)});
    CHECK(r.status.code == 105);  // CLI11's validation error, at once: no "control port listening" line
    CHECK(r.out.empty());
  }
}

TEST_CASE("a $SOCKETMASTER_TOKEN longer than a handshake can carry stops the master, as such a token file does") {
  // A handshake carries at most max_token_bytes of token: with a longer one no service could ever
  // register (each was refused with badRequest), yet the master started as if all were well.
  const std::string token(socketmaster::max_token_bytes + 1, 't');
  const auto r = run({"/bin/sh", "-c", "SOCKETMASTER_TOKEN=\"$1\" exec \"$0\" --control 127.0.0.1:0 2>&1", master_binary(), token},
                     5s);
  CHECK(r.status.code == 105);  // CLI11's validation error, at once
  CHECK(r.out.find("SOCKETMASTER_TOKEN is longer than " + std::to_string(socketmaster::max_token_bytes) + " bytes") !=
        std::string::npos);
  CHECK(r.out.find("control ") == std::string::npos);
  CHECK(r.out.find(token) == std::string::npos);  // never a secret in the log
}

TEST_CASE("an address flag that is not host:port stops the master with a message, not an abort or a wrapped port") {
  for (const auto& flags : std::vector<std::vector<std::string>>{{"--control", "127.0.0.1:abc"},
                                                                   {"--control", "127.0.0.1:70000"},
                                                                   {"--control", "ctl.sock"},
                                                                   {"--control", "127.0.0.1:0", "--admin", "127.0.0.1:xyz"},
                                                                   {"--control", "127.0.0.1:0", "--admin", "::1:80"}}) {
    CAPTURE(flags.back());
    std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", master_binary()};  // stderr too
    argv.insert(argv.end(), flags.begin(), flags.end());
    const auto r = run(argv);
    CHECK(r.status.code == 105);  // CLI11's validation error (the abort was 134; 70000 bound port 4464)
    CHECK(r.out.find("expected host:port") != std::string::npos);
    CHECK(r.out.find("control ") == std::string::npos);  // never got as far as listening
  }
}

TEST_CASE("a size or count flag given a negative number stops the master instead of lifting the limit") {
  // CLI11 reads "-1" into a std::size_t as its largest value: --max-header-bytes -1 used to start a
  // master with no limit on request heads at all.
  for (const std::string flag : {"--max-handshake-bytes", "--max-header-bytes", "--max-headers", "--unix-send-buffer"}) {
    CAPTURE(flag);
    const auto r = run({"/bin/sh", "-c", "exec \"$0\" --control 127.0.0.1:0 \"$1\" -1 2>&1", master_binary(), flag}, 5s);
    CHECK(r.status.code == 105);  // CLI11's validation error, at once
    CHECK(r.out.find("expected a whole number") != std::string::npos);
    CHECK(r.out.find("control ") == std::string::npos);  // never got as far as listening
  }
}

TEST_CASE("a timeout flag too large for the clock stops the master instead of timing everything out at once") {
  // 1e13 ms is about 317 years: now() + that overflows a nanosecond clock into the past, and the
  // master refused every service's handshake at once ("did not arrive within 10000000000000 ms").
  for (const std::string flag : {"--handshake-timeout-ms", "--header-timeout-ms", "--client-write-timeout-ms",
                                 "--body-timeout-ms", "--service-write-timeout-ms"}) {
    CAPTURE(flag);
    const auto r =
        run({"/bin/sh", "-c", "exec \"$0\" --control 127.0.0.1:0 \"$1\" 10000000000000 2>&1", master_binary(), flag}, 5s);
    CHECK(r.status.code == 1);
    CHECK(r.out.find("must be at most 1e12 ms") != std::string::npos);
    CHECK(r.out.find("control ") == std::string::npos);  // never got as far as listening
  }
}

TEST_CASE("without a token the master refuses a control address that is not loopback; $SOCKETMASTER_TOKEN is a token") {
  // 192.0.2.1 (TEST-NET-1) is on no interface here: with a token the master gets as far as bind()
  // and fails there, so no test binds or reaches anything beyond loopback.
  const std::string master = master_binary();
  const auto refused = run({"/bin/sh", "-c", "exec \"$0\" --control 192.0.2.1:0 2>&1", master});
  CHECK(refused.status.code == 1);
  CHECK(refused.out.find("the control address 192.0.2.1:0 is not loopback and no token is set; set a token or pass "
                         "--allow-insecure-control") != std::string::npos);
  const auto with_token =
      run({"/bin/sh", "-c", "SOCKETMASTER_TOKEN=from-the-environment exec \"$0\" --control 192.0.2.1:0 2>&1", master});
  CHECK(with_token.status.code == 1);
  CHECK(with_token.out.find("not loopback") == std::string::npos);
  CHECK(with_token.out.find("cannot listen on the control address 192.0.2.1:0") != std::string::npos);
  CHECK(with_token.out.find("from-the-environment") == std::string::npos);  // never a secret in the log
  const auto insecure = run({"/bin/sh", "-c", "exec \"$0\" --control 192.0.2.1:0 --allow-insecure-control 2>&1", master});
  CHECK(insecure.out.find("cannot listen on the control address 192.0.2.1:0") != std::string::npos);
}

TEST_CASE("the control port can be a Unix socket: our SDK's hello registers through it") {
  temp_dir dir;
  const auto path = dir.file("control.sock");
  master_process m({"--control", path});
  CHECK(m.control() == path);
  hello_service h(m, {"--port", "0", "--text", "over unix"});
  CHECK(curl({"http://127.0.0.1:" + std::to_string(port_of(h.bound())) + "/u"}).body.starts_with("over unix\npath: /u\n"));
}

TEST_CASE("admin: /metrics and /routes follow registrations, pools, grace and the queue") {
  master_process m;
  go_service a1(m, {"-port", "0", "-path", "/a", "-text", "A1"});
  const auto r1 = a1.accepted();
  const auto p = std::to_string(r1.port);
  go_service a2(m, {"-port", p, "-path", "/a", "-text", "A2"});
  const auto r2 = a2.accepted();
  go_service b(m, {"-port", p, "-path", "/b", "-text", "B1"});
  const auto rb = b.accepted();

  const auto listener = "[::]:" + p;
  auto routes = admin_get(m, "/routes");
  CHECK(routes.find("\"listener\":\"" + listener + "\",\"kind\":\"http\",\"tls\":false,\"domain_suffix\":\"\",\"path_prefix\":\"/a\"") !=
        std::string::npos);
  CHECK(routes.find("\"members\":[{\"registration\":" + std::to_string(r1.id) + ",\"open_streams\":0,\"draining\":false},{" +
                    "\"registration\":" + std::to_string(r2.id)) != std::string::npos);
  CHECK(routes.find("\"path_prefix\":\"/b\",\"in_grace\":false,\"queued\":0,\"members\":[{\"registration\":" +
                    std::to_string(rb.id)) != std::string::npos);
  auto metrics = admin_get(m, "/metrics");
  const auto where = [&](const char* route) { return "{listener=\"" + listener + "\",route=\"" + route + "\"}"; };
  CHECK(metric(metrics, "socketmaster_registrations_total") == "3");
  CHECK(metric(metrics, "socketmaster_routes") == "2");
  CHECK(metric(metrics, "socketmaster_pool_members" + where("*/a")) == "2");
  CHECK(metric(metrics, "socketmaster_pool_members" + where("*/b")) == "1");
  CHECK(families_are_contiguous(metrics));
  // A scraper's parameters are ignored (it was a 404).
  CHECK(metric(admin_get(m, "/metrics?name[]=socketmaster_routes"), "socketmaster_routes") == "2");

  CHECK(curl({"-o", "/dev/null", "http://127.0.0.1:" + p + "/a/bytes/100000"}).status == 200);
  CHECK(curl({"http://127.0.0.1:" + p + "/nowhere"}).status == 404);
  metrics = admin_get(m, "/metrics");
  CHECK(std::stoull(metric(metrics, "socketmaster_relayed_bytes_total{direction=\"to_clients\"}")) > 100'000);
  CHECK(std::stoull(metric(metrics, "socketmaster_relayed_bytes_total{direction=\"to_services\"}")) > 0);
  CHECK(metric(metrics, "socketmaster_http_responses_total{class=\"2xx\"}") == "1");
  CHECK(metric(metrics, "socketmaster_http_responses_total{class=\"4xx\"}") == "1");

  // /b's only service goes: grace, then a request waits in its queue.
  auto mark = m.mark();
  b.kill();
  m.wait_for_log("registration " + std::to_string(rb.id) + " ended", mark);
  mark = m.mark();
  background_run waiting(curl_argv({"http://127.0.0.1:" + p + "/b/waiting"}));
  m.wait_for_log("waits in the queue", mark);
  routes = admin_get(m, "/routes");
  CHECK(routes.find("\"path_prefix\":\"/b\",\"in_grace\":true,\"queued\":1,\"members\":[]") != std::string::npos);
  metrics = admin_get(m, "/metrics");
  CHECK(metric(metrics, "socketmaster_pool_members" + where("*/b")) == "0");
  CHECK(metric(metrics, "socketmaster_route_in_grace" + where("*/b")) == "1");
  CHECK(metric(metrics, "socketmaster_queued_connections" + where("*/b")) == "1");
  CHECK(metric(metrics, "socketmaster_queued_total") == "1");

  go_service b2(m, {"-port", p, "-path", "/b", "-text", "B2"});
  b2.accepted();
  const auto answered = parse_curl(waiting.finish().out);
  REQUIRE(answered.size() == 1);
  CHECK(answered[0].body.starts_with("B2\npath: /b/waiting\n"));
  metrics = admin_get(m, "/metrics");
  CHECK(metric(metrics, "socketmaster_route_in_grace" + where("*/b")) == "0");
  CHECK(metric(metrics, "socketmaster_queued_connections" + where("*/b")) == "0");
}

TEST_CASE("admin: HEAD is GET without the body; other methods get 405 with Allow") {
  master_process m;
  // curl -I, as a health checker would: the headers of GET /routes, no body.
  const auto head = run({"curl", "-sS", "--max-time", "10", "-I", "http://" + m.admin() + "/routes"});
  CHECK(head.status.code == 0);
  CHECK(head.out.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(head.out.find("Content-Type: application/json\r\n") != std::string::npos);
  const auto routes = admin_get(m, "/routes");
  CHECK(head.out.find("Content-Length: " + std::to_string(routes.size()) + "\r\n") != std::string::npos);
  // Nothing follows the head on the wire (curl -I would not show a body it was sent).
  tcp_client raw(port_of(m.admin()));
  raw.send("HEAD /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
  const auto answer = raw.read_to_eof();
  CHECK(answer.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(answer.ends_with("\r\n\r\n"));
  CHECK(answer.find("Content-Length: 0\r\n") == std::string::npos);

  const auto post = run({"curl", "-sS", "--max-time", "10", "-i", "-X", "POST", "http://" + m.admin() + "/metrics"});
  CHECK(post.out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
  CHECK(post.out.find("Allow: GET, HEAD\r\n") != std::string::npos);
}

TEST_CASE("admin: registrations with an empty path and with \"/\" on one port are one route, one series in /metrics") {
  // They were two routes that both printed as route="*/": a duplicated series, of which Prometheus
  // keeps one sample, so one pool's members vanished from the graphs. Now they are one pool.
  master_process m;
  go_service any(m, {"-port", "0", "-text", "any"});
  const auto p = std::to_string(any.accepted().port);
  go_service slash(m, {"-port", p, "-path", "/", "-text", "slash"});
  slash.accepted();
  const auto metrics = admin_get(m, "/metrics");
  std::vector<std::string> series;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line.front() != '#') series.push_back(line.substr(0, line.rfind(' ')));
  const auto members = std::count_if(series.begin(), series.end(),
                                     [](const std::string& s) { return s.starts_with("socketmaster_pool_members{"); });
  CHECK(members == 1);
  CHECK(metric(metrics, "socketmaster_pool_members{listener=\"[::]:" + p + "\",route=\"*/\"}") == "2");
  std::sort(series.begin(), series.end());
  const auto duplicate = std::adjacent_find(series.begin(), series.end());
  CHECK((duplicate == series.end() ? std::string("none") : *duplicate) == "none");
}

// Not in sanitized builds: UBSan checks a virtual call by probing memory through a pipe, which a
// master out of descriptors cannot open, so it reports a false "invalid vptr" and stops the master.
#ifdef SOCKETMASTER_SANITIZED
constexpr bool sanitized_build = true;
#else
constexpr bool sanitized_build = false;
#endif

TEST_CASE("admin: an accept that fails for want of file descriptors does not end the admin server" *
          doctest::skip(sanitized_build)) {
  master_process m;
  go_service echo(m, {"-port", "0", "-tcp", "-mode", "echo"});
  const auto port = echo.accepted().port;
  CHECK(admin_get(m, "/routes").starts_with("[{"));

  // Room for two more descriptors in the master: raw TCP clients take them, the rest wait in the
  // backlog while the public listener reports EMFILE.
  std::size_t open_fds = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(m.pid()) + "/fd"))
    ++open_fds;
  rlimit before{};
  REQUIRE(::prlimit(m.pid(), RLIMIT_NOFILE, nullptr, &before) == 0);
  rlimit tight = before;
  tight.rlim_cur = open_fds + 2;
  REQUIRE(::prlimit(m.pid(), RLIMIT_NOFILE, &tight, nullptr) == 0);
  const auto shortage = m.mark();
  auto mark = shortage;
  std::vector<std::unique_ptr<tcp_client>> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(std::make_unique<tcp_client>(port));
  CHECK(m.wait_for_log("listener accept failed: ", mark).find("(retrying every 50 ms; repeats are logged once per 10 s)") !=
        std::string::npos);
  // Its retries go on every 50 ms, as debug lines: three of them, one after another.
  for (int i = 0; i < 3; ++i) {
    m.wait_for_log("listener accept failed again: ", mark);
    mark = m.mark();
  }

  // The admin server's accept fails the same way; it used to end its accept loop there, leaving
  // the port listening with nobody taking connections: every later scrape hung.
  mark = m.mark();
  tcp_client scrape(port_of(m.admin()));
  scrape.send("GET /routes HTTP/1.1\r\nHost: admin\r\n\r\n");
  m.wait_for_log("admin server: accept failed", mark);
  REQUIRE(::prlimit(m.pid(), RLIMIT_NOFILE, &before, nullptr) == 0);
  CHECK(scrape.read_response().starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(admin_get(m, "/routes").starts_with("[{"));
  // One warning for the whole shortage (there was one per retry), and a line when it is over.
  const auto lines = m.lines(shortage);
  CHECK(std::count_if(lines.begin(), lines.end(), [](const std::string& l) {
          return l.find("listener accept failed: ") != std::string::npos;
        }) == 1);
  CHECK(m.wait_for_log("listener accepting again after ", shortage).find(" failed accepts") != std::string::npos);
}

TEST_CASE("a loopback control port also takes services on its same-host socket; --no-same-host-socket keeps them on TCP") {
  {
    master_process m;
    hello_service h(m, {"--port", "0", "--text", "same host"});
    CHECK(m.wait_for_log("registration 1 from ").find("from same-host:") != std::string::npos);
    CHECK(m.logged("and, for services on this host, @socketmaster/control/" + m.control()));
    CHECK(curl({"http://127.0.0.1:" + std::to_string(port_of(h.bound())) + "/s"}).body.starts_with("same host\npath: /s\n"));
  }
  {
    master_process m({"--no-same-host-socket"});
    hello_service h(m, {"--port", "0", "--text", "over tcp"});
    CHECK(m.wait_for_log("registration 1 from ").find("from 127.0.0.1:") != std::string::npos);
    CHECK_FALSE(m.logged("for services on this host"));
    CHECK(curl({"http://127.0.0.1:" + std::to_string(port_of(h.bound())) + "/t"}).body.starts_with("over tcp\npath: /t\n"));
  }
}

// The send buffer (sk_sndbuf, `tb` in `ss -m`) of each established Unix socket `pid` holds, by `ss`.
std::vector<long> unix_send_buffers(pid_t pid) {
  const auto r = run({"ss", "-xmpH", "state", "established"});
  REQUIRE(r.status.code == 0);
  std::vector<long> out;
  std::istringstream lines(r.out);
  const std::string owner = "pid=" + std::to_string(pid) + ",";
  for (std::string line; std::getline(lines, line);) {
    const auto tb = line.find(",tb");
    if (line.find(owner) != std::string::npos && tb != std::string::npos) out.push_back(std::stol(line.substr(tb + 3)));
  }
  return out;
}

long proc_sys(const std::string& path) {
  std::ifstream f(path);
  long v = -1;
  f >> v;
  return v;
}

TEST_CASE("Unix control connections carry the send buffer each side asks for (--unix-send-buffer, "
          "options::unix_send_buffer), as the kernel grants it") {
  // The kernel doubles what it is asked for and caps the request at net.core.wmem_max.
  const long wmem_max = proc_sys("/proc/sys/net/core/wmem_max");
  const long wmem_default = proc_sys("/proc/sys/net/core/wmem_default");
  REQUIRE(wmem_max > 0);
  REQUIRE(wmem_default > 0);
  const auto granted = [&](long asked) { return 2 * std::min(asked, wmem_max); };
  {
    master_process m({"--unix-send-buffer", "524288"});
    hello_service h(m, {"--port", "0"});
    m.wait_for_log("registration 1 from same-host:");
    CHECK(unix_send_buffers(m.pid()) == std::vector<long>{granted(524288)});
    CHECK(unix_send_buffers(h.pid()) == std::vector<long>{granted(1 << 20)});  // the SDK's default
  }
  {
    master_process m({"--unix-send-buffer", "0"});  // the kernel's own default
    hello_service h(m, {"--port", "0"});
    m.wait_for_log("registration 1 from same-host:");
    CHECK(unix_send_buffers(m.pid()) == std::vector<long>{wmem_default});
  }
  const auto r = run({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", master_binary(), "--control", "127.0.0.1:0",
                      "--unix-send-buffer", "2147483648"});
  CHECK(r.status.code != 0);
  CHECK_MESSAGE(r.out.find("the Unix send buffer must be at most 1 GiB") != std::string::npos, r.out);
}

TEST_CASE("a master whose same-host socket name another process holds refuses to start and names it") {
  // A loopback port of ours (the master binds it alongside), and the same-host name for it taken first.
  asio::io_context io;
  const socketmaster::test::reserved_port port(io);
  const std::string control = "127.0.0.1:" + std::to_string(port.port());

  const std::string name = socketmaster::same_host_socket_name(control);
  const int squatter = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(squatter >= 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  REQUIRE(name.size() <= sizeof un.sun_path);
  std::memcpy(un.sun_path, name.data(), name.size());
  const auto un_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  REQUIRE(::bind(squatter, reinterpret_cast<sockaddr*>(&un), un_len) == 0);
  REQUIRE(::listen(squatter, 1) == 0);

  const auto r = run({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", master_binary(), "--control", control});
  ::close(squatter);
  CHECK(r.status.signal == 0);  // it ended by itself, not at the run's time limit
  CHECK(r.status.code != 0);
  CHECK_MESSAGE(r.out.find("same-host socket @" + name.substr(1)) != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find("in use") != std::string::npos, r.out);
}
