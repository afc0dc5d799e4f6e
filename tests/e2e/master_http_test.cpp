// HTTP through the master, end to end: the issue's walk-through, routing specificity and label
// boundaries, keep-alive rerouting, pipelining, bodies (Content-Length, chunked, 100-continue),
// smuggling shapes, head limits and deadlines, X-Forwarded-* and WebSocket. The services are the
// independent Go peer (hashicorp/yamux + net/http) and our hello example; the clients are curl,
// python3 websockets and raw sockets.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "tests/e2e/e2e_support.hpp"

using namespace socketmaster::e2e;

namespace {

std::string url(std::uint16_t port, std::string_view path) {
  return "http://127.0.0.1:" + std::to_string(port) + std::string(path);
}

// The Go peer's default answer: "<text>\npath: <path>\nclient: <addr>\nxff: <X-Forwarded-For>\n".
std::string first_line(std::string_view body) { return std::string(body.substr(0, body.find('\n'))); }

std::string get(std::string_view path, std::string_view host = "x.test") {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n";
}

// Two Go services on one port, /a ("From A") and /b ("From B").
struct two_services {
  master_process master;
  go_service a{master, {"-port", "0", "-path", "/a", "-text", "From A"}};
  registration ra = a.accepted();
  go_service b{master, {"-port", std::to_string(ra.port), "-path", "/b", "-text", "From B"}};
  registration rb = b.accepted();
  std::uint16_t port() const { return ra.port; }
};

}  // namespace

TEST_CASE("walk-through: two services on one port answer From A and From B; an unrouted path is 404 at once") {
  two_services s;
  CHECK(s.rb.bound == s.ra.bound);

  auto a = curl({url(s.port(), "/a")});
  CHECK(a.status == 200);
  CHECK(a.body.starts_with("From A\npath: /a\n"));
  auto b = curl({url(s.port(), "/b/deeper?q=1")});
  CHECK(b.status == 200);
  CHECK(b.body.starts_with("From B\npath: /b/deeper\n"));

  const auto start = std::chrono::steady_clock::now();
  auto c = curl({url(s.port(), "/c")});
  CHECK(c.status == 404);
  CHECK(std::chrono::steady_clock::now() - start < 2s);  // the old Go socketmaster waited 30 s
}

TEST_CASE("our SDK's hello example and the Go peer serve side by side on one port") {
  two_services s;
  hello_service h(s.master, {"--port", std::to_string(s.port()), "--path", "/h", "--text", "From hello"});
  CHECK(port_of(h.bound()) == s.port());
  CHECK(curl({url(s.port(), "/h/x")}).body.starts_with("From hello\npath: /h/x\n"));
  CHECK(first_line(curl({url(s.port(), "/a")}).body) == "From A");
}

TEST_CASE("routing: longest domain suffix at a label boundary wins, then longest path prefix at a segment boundary") {
  master_process m;
  go_service ex(m, {"-port", "0", "-domain", "example.com", "-text", "EX"});
  const auto port = ex.accepted().port;
  const auto p = std::to_string(port);
  go_service api(m, {"-port", p, "-domain", "api.example.com", "-text", "API"});
  go_service deep(m, {"-port", p, "-domain", "example.com", "-path", "/a/deep", "-text", "DEEP"});
  go_service any_a(m, {"-port", p, "-path", "/a", "-text", "ANY-A"});
  api.accepted();
  deep.accepted();
  any_a.accepted();

  struct probe {
    const char* host;
    const char* path;
    const char* want;  // first line of the answer, or "404"
  };
  const probe probes[] = {
      {"example.com", "/x", "EX"},
      {"api.example.com", "/x", "API"},
      {"x.api.example.com", "/x", "API"},
      {"API.Example.COM:8080", "/x", "API"},  // case and port do not matter
      {"example.com.", "/x", "EX"},           // nor a trailing dot
      {"badexample.com", "/x", "404"},        // not at a label boundary
      {"badexample.com", "/a/1", "ANY-A"},
      {"example.com", "/a/deep", "DEEP"},
      {"example.com", "/a/deep/z", "DEEP"},
      {"example.com", "/a/deeper", "EX"},  // a prefix matches whole segments only
      {"example.com", "/a/x", "EX"},       // the longer domain beats the longer path
      {"api.example.com", "/a/deep", "API"},
      {"other.test", "/a", "ANY-A"},
      {"other.test", "/ab", "404"},
  };
  for (const auto& pr : probes) {
    CAPTURE(pr.host);
    CAPTURE(pr.path);
    auto r = curl({"-H", std::string("Host: ") + pr.host, url(port, pr.path)});
    if (std::string_view(pr.want) == "404")
      CHECK(r.status == 404);
    else
      CHECK(first_line(r.body) == pr.want);
  }
}

TEST_CASE("a pool: two equally specific registrations take new connections in turn") {
  master_process m;
  go_service one(m, {"-port", "0", "-path", "/p", "-text", "ONE"});
  const auto port = one.accepted().port;
  go_service two(m, {"-port", std::to_string(port), "-path", "/p", "-text", "TWO"});
  two.accepted();
  // Each curl is a new connection. Whether or not the previous one's stream is gone yet, the
  // member with the fewest open streams, ties in turn, is the other one each time.
  std::string order;
  for (int i = 0; i < 6; ++i) {
    const auto r = curl({url(port, "/p")});
    REQUIRE(r.status == 200);
    order += r.body.starts_with("ONE") ? '1' : r.body.starts_with("TWO") ? '2' : '?';
  }
  CHECK((order == "121212" || order == "212121"));
}

TEST_CASE("a pool: a path prefix of '/' is the same route as none (both match every path), so the two take turns") {
  master_process m;
  go_service one(m, {"-port", "0", "-text", "ONE"});
  const auto port = one.accepted().port;
  go_service two(m, {"-port", std::to_string(port), "-path", "/", "-text", "TWO"});
  two.accepted();
  std::string order;  // with two routes, "/" (the longer prefix) took every request
  for (int i = 0; i < 4; ++i) {
    const auto r = curl({url(port, "/x")});
    REQUIRE(r.status == 200);
    order += r.body.starts_with("ONE") ? '1' : r.body.starts_with("TWO") ? '2' : '?';
  }
  CHECK((order == "1212" || order == "2121"));
}

TEST_CASE("keep-alive: one client connection alternating /a and /b has each request routed on its own") {
  two_services s;
  const auto out = run(curl_argv({url(s.port(), "/a/1"), url(s.port(), "/b/2"), url(s.port(), "/a/3"), url(s.port(), "/b/4")}));
  REQUIRE(out.status.success());
  const auto responses = parse_curl(out.out);
  REQUIRE(responses.size() == 4);
  int connects = 0;
  for (const auto& r : responses) connects += r.connects;
  CHECK(connects == 1);  // curl reused its one connection for all four
  CHECK(responses[0].body.starts_with("From A\npath: /a/1\n"));
  CHECK(responses[1].body.starts_with("From B\npath: /b/2\n"));
  CHECK(responses[2].body.starts_with("From A\npath: /a/3\n"));
  CHECK(responses[3].body.starts_with("From B\npath: /b/4\n"));

  // One stream per backend switch (four), and none per request while the backend stays the same:
  // three more requests to /a on one connection open exactly one more stream.
  const auto opened = [&] {
    const auto metrics = admin_get(s.master, "/metrics");
    const auto at = metrics.find("\nsocketmaster_streams_opened_total ");
    return std::stoi(metrics.substr(at + 35));
  };
  CHECK(opened() == 4);
  const auto same = run(curl_argv({url(s.port(), "/a/5"), url(s.port(), "/a/6"), url(s.port(), "/a/7")}));
  CHECK(parse_curl(same.out).size() == 3);
  CHECK(opened() == 5);
}

TEST_CASE("keep-alive: after the service closes a kept-alive stream, the client's next request gets a new one, not a 502") {
  two_services s;
  tcp_client c(s.port());
  c.send(get("/a/then-close"));  // answered as keep-alive, then the service closes its end
  CHECK(c.read_response().find("\r\n\r\nFrom A\npath: /a/then-close\n") != std::string::npos);
  c.send(get("/a/next"));
  const auto next = c.read_response();
  CHECK(next.starts_with("HTTP/1.1 200 "));
  CHECK(next.find("\r\n\r\nFrom A\npath: /a/next\n") != std::string::npos);
  // Pipelined behind such an answer, too.
  c.send(get("/a/then-close") + get("/b/after"));
  CHECK(c.read_response().find("path: /a/then-close") != std::string::npos);
  CHECK(c.read_response().find("From B\npath: /b/after\n") != std::string::npos);
  c.send(get("/b/then-close") + get("/b/again"));
  CHECK(c.read_response().find("path: /b/then-close") != std::string::npos);
  CHECK(c.read_response().find("From B\npath: /b/again\n") != std::string::npos);
}

TEST_CASE("pipelining: requests written in one go, bodies included, are all answered in order") {
  two_services s;
  tcp_client c(s.port());
  c.send(get("/a/1") +
         "POST /b/echo-body HTTP/1.1\r\nHost: x.test\r\nContent-Length: 11\r\n\r\nhello world" +
         "HEAD /a/bytes/100 HTTP/1.1\r\nHost: x.test\r\n\r\n" + get("/a/3") +
         "GET /b/4 HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n");
  const auto r1 = c.read_response();
  const auto r2 = c.read_response();
  const auto r3 = c.read_head();  // Content-Length: 100, and no body: it answers a HEAD
  const auto r4 = c.read_response();
  const auto r5 = c.read_response();
  CHECK(r1.find("\r\n\r\nFrom A\npath: /a/1\n") != std::string::npos);
  CHECK(r2.ends_with("\r\n\r\nhello world"));
  CHECK(content_length(r3) == 100);
  CHECK(r4.starts_with("HTTP/1.1 200 "));  // not 100 stray bytes of the HEAD answer's body
  CHECK(r4.find("\r\n\r\nFrom A\npath: /a/3\n") != std::string::npos);
  CHECK(r5.find("\r\n\r\nFrom B\npath: /b/4\n") != std::string::npos);
  CHECK(c.read_to_eof().empty());  // Connection: close ends it after the last answer
}

TEST_CASE("bodies: Content-Length, chunked and Expect: 100-continue arrive intact; a large response too") {
  two_services s;
  temp_dir dir;
  std::string payload;
  for (int i = 0; payload.size() < 3'000'000; ++i) payload += "line " + std::to_string(i) + " of the request body\n";
  write_file(dir.file("body"), payload);

  auto sized = curl({"--data-binary", "@" + dir.file("body"), "-H", "Expect: 100-continue", "-o", dir.file("echo1"),
                     url(s.port(), "/a/echo-body")});
  CHECK(sized.status == 200);
  CHECK(read_file(dir.file("echo1")) == payload);

  auto chunked = curl({"--data-binary", "@" + dir.file("body"), "-H", "Transfer-Encoding: chunked", "-o",
                       dir.file("echo2"), url(s.port(), "/b/echo-body")});
  CHECK(chunked.status == 200);
  CHECK(read_file(dir.file("echo2")) == payload);

  auto big = curl({"-o", dir.file("big"), url(s.port(), "/a/bytes/16000000")});
  CHECK(big.status == 200);
  CHECK(std::filesystem::file_size(dir.file("big")) == 16'000'000);
}

TEST_CASE("large response bodies reach a client that reads slowly intact, in order, and the connection goes on") {
  // The master sends a Content-Length body from where the yamux session received it while the
  // client keeps up, and from the stream's buffer once the client falls behind (--limit-rate makes
  // curl's socket fill); two such responses on one kept-alive connection.
  two_services s;
  temp_dir dir;
  std::string payload;
  for (int i = 0; payload.size() < 6'000'000; ++i) payload += "slow line " + std::to_string(i) + "\n";
  write_file(dir.file("body"), payload);
  const auto out = run(curl_argv({"--limit-rate", "40M", "--data-binary", "@" + dir.file("body"), "-o",
                                   dir.file("echo1"), url(s.port(), "/a/echo-body"), "-o", dir.file("echo2"),
                                   url(s.port(), "/a/echo-body")}));
  REQUIRE(out.status.success());
  const auto responses = parse_curl(out.out);
  REQUIRE(responses.size() == 2);
  CHECK(responses[0].status == 200);
  CHECK(responses[1].status == 200);
  CHECK(responses[0].connects + responses[1].connects == 1);
  CHECK(read_file(dir.file("echo1")) == payload);
  CHECK(read_file(dir.file("echo2")) == payload);
}

TEST_CASE("smuggling shapes get 400 and the connection closes; a good request before one is still answered") {
  two_services s;
  const std::pair<const char*, std::string> shapes[] = {
      {"Content-Length and Transfer-Encoding",
       "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"two different Content-Lengths", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
      {"Transfer-Encoding not ending in chunked", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"},
      {"chunked then identity", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"},
      {"Transfer-Encoding in HTTP/1.0", "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"obs-fold", "GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\n\r\n"},
      {"bare LF line endings", "GET /a HTTP/1.1\nHost: x\n\n"},
      {"whitespace before the colon", "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"},
      {"two Host headers", "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"},
  };
  for (const auto& shape : shapes) {
    const char* name = shape.first;
    CAPTURE(name);
    tcp_client c(s.port());
    c.send(shape.second);
    const auto answer = c.read_to_eof();
    CHECK(answer.starts_with("HTTP/1.1 400 "));
    CHECK(count(answer, "HTTP/1.1") == 1);
  }

  tcp_client c(s.port());
  c.send(get("/a/first") + std::string(shapes[0].second));
  CHECK(c.read_response().find("From A\npath: /a/first\n") != std::string::npos);
  CHECK(c.read_to_eof().starts_with("HTTP/1.1 400 "));
}

TEST_CASE("a malformed chunked body gets 400, not an empty reply; a chunk longer than its size too") {
  two_services s;
  for (const char* body : {"zz\r\nhello\r\n0\r\n\r\n", "5\r\nhello, world\r\n0\r\n\r\n",
                           "ffffffffffffffffff\r\nx\r\n"}) {
    CAPTURE(std::string(body));
    tcp_client c(s.port());
    c.send(std::string("POST /a/echo-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n") + body);
    const auto answer = c.read_to_eof();
    CHECK(answer.starts_with("HTTP/1.1 400 "));
    CHECK(count(answer, "HTTP/1.1") == 1);
  }
}

TEST_CASE("a request body that stops arriving gets 408 after --body-timeout-ms; the connection ends") {
  master_process m({"--body-timeout-ms", "1000"});
  go_service a(m, {"-port", "0", "-path", "/a", "-text", "From A"});
  const auto port = a.accepted().port;
  tcp_client c(port);
  const auto start = std::chrono::steady_clock::now();
  c.send("POST /a/echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + std::string(1000, 'b'));
  const auto answer = c.read_to_eof();  // it waited for ever before
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(answer.starts_with("HTTP/1.1 408 "));
  CHECK(answer.find("the request body stopped arriving for 1000 ms") != std::string::npos);
  CHECK(took >= 900ms);
  CHECK(took < 10s);
  // A body that keeps coming, however slowly, is not cut: each piece within the timeout.
  tcp_client slow(port);
  slow.send("POST /a/echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab");
  for (const char* piece : {"cd", "ef"}) {
    std::this_thread::sleep_for(300ms);  // the pace of the body under test, not synchronisation
    slow.send(piece);
  }
  CHECK(slow.read_response().ends_with("\r\n\r\nabcdef"));
}

TEST_CASE("a service that stops reading a request body gets its stream reset after --service-write-timeout-ms: 504") {
  master_process m({"--service-write-timeout-ms", "1000"});
  go_service a(m, {"-port", "0", "-path", "/a", "-text", "From A"});
  const auto port = a.accepted().port;
  // /slow sleeps without reading the body: the stream's window (256 KiB) and the service's own
  // buffers fill, and the master's write of the rest waits on the service.
  tcp_client c(port);
  const auto start = std::chrono::steady_clock::now();
  c.send("POST /a/slow?ms=30000 HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n" +
         std::string(1 << 20, 'b'));
  const auto answer = c.read_to_eof();  // it waited for the service's 30 s before
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(answer.starts_with("HTTP/1.1 504 "));
  CHECK(answer.find("the service took no bytes of the request body for 1000 ms") != std::string::npos);
  CHECK(took >= 900ms);
  CHECK(took < 10s);
  // A service that reads the body is not cut, however large the body: each piece has its own
  // deadline.
  tcp_client big(port);
  const std::string body(3 << 20, 'e');
  big.send("POST /a/echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body);
  const auto echoed = big.read_response();
  CHECK(echoed.starts_with("HTTP/1.1 200 "));
  CHECK(echoed.ends_with("\r\n\r\n" + body));
}

TEST_CASE("an answer with Connection: close before the request body ended ends the connection after it") {
  two_services s;
  tcp_client c(s.port());
  c.send("POST /a/early-close HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + std::string(4096, 'u'));
  const auto answer = c.read_to_eof();  // it stayed open for as long as the client kept quiet
  CHECK(answer.starts_with("HTTP/1.1 413 "));
  CHECK(count(answer, "HTTP/1.1") == 1);
  // The master reads and drops what the client still sends (a lingering close), so sending more
  // is not answered by a reset that could have destroyed the 413 before it was read.
  CHECK_NOTHROW(c.send(std::string(64 * 1024, 'u')));
}

TEST_CASE("a 103 Early Hints reaches an HTTP/1.1 client and not an HTTP/1.0 one, also when its head spans reads") {
  two_services s;
  const std::string pad(40000, 'p');  // longer than the master's 16 KiB reads from a stream
  for (const char* query : {"", "?pad=40000"}) {
    CAPTURE(std::string(query));
    const std::string target = std::string("/a/early-hints") + query;
    const bool padded = *query != '\0';

    tcp_client c11(s.port());
    c11.send("GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const auto both = c11.read_to_eof();
    CHECK(both.starts_with("HTTP/1.1 103 Early Hints\r\n"));
    CHECK(count(both, "HTTP/1.1 ") == 2);
    CHECK(both.find("\r\n\r\nHTTP/1.1 200 OK\r\n") != std::string::npos);
    CHECK(both.find("\r\n\r\nFrom A\npath: /a/early-hints\n") != std::string::npos);
    CHECK(count(both, "\r\nX-Pad: " + pad + "\r\n") == (padded ? 2 : 0));

    // RFC 9110 15.2: no 1xx for an HTTP/1.0 client (it was a 502: llhttp ended the response at
    // the HTTP/1.0 103); the final answer whole, its head verbatim.
    tcp_client c10(s.port());
    c10.send("GET " + target + " HTTP/1.0\r\nHost: x\r\n\r\n");
    const auto final_only = c10.read_to_eof();
    CHECK(final_only.starts_with("HTTP/1.0 200 OK\r\n"));  // Go answers in the request's version
    CHECK(count(final_only, "HTTP/1.") == 1);
    CHECK(final_only.find("\r\nLink: </style.css>; rel=preload; as=style\r\n") != std::string::npos);
    CHECK((final_only.find("\r\nX-Pad: " + pad + "\r\n") != std::string::npos) == padded);
    CHECK(final_only.find("\r\n\r\nFrom A\npath: /a/early-hints\n") != std::string::npos);
  }
}

TEST_CASE("a Connection: close answer and the master's FIN reach the client in one segment") {
  two_services s;
  tcp_client c(s.port());
  c.send("GET /a/one HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const auto answer = c.read_to_eof();
  CHECK(answer.starts_with("HTTP/1.1 200 "));
  CHECK(answer.find("\r\n\r\nFrom A\npath: /a/one\n") != std::string::npos);
  // The SYN-ACK, the ACK of the request, and the answer with the FIN; a FIN of its own after the
  // answer would be one more (the master used to send two segments; nginx does).
  const auto segments = c.segments_received();
  CAPTURE(segments.all);
  CAPTURE(segments.with_data);
  CHECK(segments.with_data == 1);
  CHECK(segments.all - segments.with_data <= 2);
}

TEST_CASE("an Upgrade the service declines leaves the connection speaking HTTP: the pipelined request is answered") {
  two_services s;
  tcp_client c(s.port());
  c.send("GET /a/first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n" + get("/b/second"));
  CHECK(c.read_response().find("From A\npath: /a/first\n") != std::string::npos);
  CHECK(c.read_response().find("From B\npath: /b/second\n") != std::string::npos);  // was an EOF
  c.send(get("/a/third"));
  CHECK(c.read_response().find("From A\npath: /a/third\n") != std::string::npos);
}

TEST_CASE("a declined CONNECT ends the connection: bytes after its head are never read as the next request") {
  master_process m;
  go_service any(m, {"-port", "0", "-text", "any"});  // every host and path; CONNECT gets 405
  tcp_client c(any.accepted().port);
  // Whatever follows a CONNECT head is the tunnel's (a body it declares is never forwarded), so
  // the bytes after it cannot be taken for a request once the service has said no.
  c.send("CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\n" + get("/after"));
  const auto answer = c.read_to_eof();
  CHECK(answer.starts_with("HTTP/1.1 405 "));
  CHECK(count(answer, "HTTP/1.1") == 1);  // /after was not served
}

TEST_CASE("an absolute-form request reaches the service in origin form, Host set from the target") {
  two_services s;
  tcp_client c(s.port());
  c.send("GET http://Example.test:8080/a/headers?q=1 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n");
  const auto answer = c.read_response();
  CHECK(answer.find("\nRequest-URI: /a/headers?q=1\n") != std::string::npos);
  CHECK(answer.find("\nHost: Example.test:8080\n") != std::string::npos);
  // HTTP/1.0 may leave Host out: the service gets one all the same.
  c.send("GET http://example.test/a/headers HTTP/1.0\r\n\r\n");
  const auto old = c.read_to_eof();
  CHECK(old.find("\nRequest-URI: /a/headers\n") != std::string::npos);
  CHECK(old.find("\nHost: example.test\n") != std::string::npos);
}

TEST_CASE("limits: an oversized head gets 431; a head not complete within --header-timeout-ms gets 408") {
  master_process m({"--header-timeout-ms", "300"});
  go_service a(m, {"-port", "0", "-path", "/a", "-text", "From A"});
  const auto port = a.accepted().port;

  {
    tcp_client c(port);
    c.send("GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70'000, 'b') + "\r\n\r\n");
    CHECK(c.read_to_eof().starts_with("HTTP/1.1 431 "));
  }
  {
    std::string many = "GET /a HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 101; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
    tcp_client c(port);
    c.send(many + "\r\n");
    CHECK(c.read_to_eof().starts_with("HTTP/1.1 431 "));
  }
  {
    tcp_client c(port);
    const auto start = std::chrono::steady_clock::now();
    c.send("GET /a HTTP/1.1\r\nHo");
    CHECK(c.read_to_eof().starts_with("HTTP/1.1 408 "));
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= 250ms);
    CHECK(took < 5s);
  }
  {
    // An idle kept-alive connection is closed at the same deadline, without an answer.
    tcp_client c(port);
    c.send(get("/a/once"));
    CHECK(c.read_response().find("path: /a/once") != std::string::npos);
    CHECK(c.read_to_eof().empty());
  }
}

TEST_CASE("X-Forwarded-For, -Proto and -Host reach the service; the client's own -Proto and -Host are replaced") {
  two_services s;
  auto plain = curl({url(s.port(), "/a")});
  CHECK(plain.body.find("\nxff: 127.0.0.1\n") != std::string::npos);  // the IPv4 address, not ::ffff:127.0.0.1

  auto r = curl({"-H", "Host: app.test:8080", "-H", "X-Forwarded-For: 203.0.113.7", "-H", "X-Forwarded-Proto: https",
                 "-H", "X-Forwarded-Host: evil.test", url(s.port(), "/a/headers")});
  CHECK(r.status == 200);
  CHECK(r.body.find("X-Forwarded-For: 203.0.113.7, 127.0.0.1\n") != std::string::npos);
  CHECK(r.body.find("X-Forwarded-Proto: http\n") != std::string::npos);
  CHECK(r.body.find("X-Forwarded-Host: app.test:8080\n") != std::string::npos);
  CHECK(count(r.body, "X-Forwarded-Proto:") == 1);
  CHECK(r.body.find("evil.test") == std::string::npos);
}

TEST_CASE("WebSocket: python websockets echoes through the master to the Go peer and to hello") {
  two_services s;
  hello_service h(s.master, {"--port", std::to_string(s.port()), "--path", "/h", "--text", "From hello"});
  CHECK(websocket_echo("ws://127.0.0.1:" + std::to_string(s.port()) + "/a/ws").out == "ECHO OK\n");
  CHECK(websocket_echo("ws://127.0.0.1:" + std::to_string(s.port()) + "/h/ws").out == "ECHO OK\n");
  // The port still serves plain requests afterwards.
  CHECK(first_line(curl({url(s.port(), "/b")}).body) == "From B");
}

TEST_CASE("IPv6: a registration on ::1 is served over IPv6, and the service sees the IPv6 client") {
  master_process m;
  go_service v6(m, {"-address", "::1", "-port", "0", "-text", "V6"});
  const auto r = v6.accepted();
  CHECK(r.bound.starts_with("[::1]:"));
  auto answer = curl({"-g", "http://[::1]:" + std::to_string(r.port) + "/six"});
  CHECK(answer.body.starts_with("V6\npath: /six\n"));
  CHECK(answer.body.find("\nxff: ::1\n") != std::string::npos);
}
