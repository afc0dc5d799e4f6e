// The HTTP/1 framer without sockets: event sequences, exact consumption, verbatim bodies, the
// smuggling shapes it must refuse, limits, responses, serialisation and the forwarding headers.
#include "server/http_codec.hpp"

#include <ostream>  // before doctest: it prints values through operator<<
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

// Event lists print as "a | b | c" in failure messages.
template <>
struct doctest::StringMaker<std::vector<std::string>> {
  static doctest::String convert(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& e : v) out += (out.empty() ? "" : " | ") + e;
    return out.c_str();
  }
};

using namespace socketmaster::server;
using kind = parse_result::kind;

namespace {

std::span<const char> bytes(std::string_view s) { return {s.data(), s.size()}; }
std::string text(std::span<const char> s) { return {s.data(), s.size()}; }

// What a connection sees when `wire` arrives in pieces of `piece` bytes (0: all at once): every
// event is recorded, consecutive body events are merged, and unconsumed bytes are fed again. Stops
// at upgrade or error; `rest` is then everything that was not consumed.
struct transcript {
  std::vector<std::string> events;
  std::vector<request_head> heads;
  std::vector<response_head> response_heads;
  std::string rest;
  bool need_more_consumed_all = true;
};

template <class Parser>
transcript drive(Parser& parser, std::string_view wire, std::size_t piece = 0) {
  transcript t;
  std::string buffer;
  std::size_t next = 0;
  auto record = [&](std::string e) {
    if (e.rfind("body:", 0) == 0 && !t.events.empty() && t.events.back().rfind("body:", 0) == 0) {
      t.events.back() += e.substr(5);
    } else {
      t.events.push_back(std::move(e));
    }
  };
  for (int guard = 0; guard < 100000; ++guard) {
    const auto r = parser.feed(bytes(buffer));
    const std::string body = text(r.body);  // a view into `buffer`: copy before erasing
    buffer.erase(0, r.consumed);
    switch (r.what) {
      case kind::need_more: {
        if (!buffer.empty()) t.need_more_consumed_all = false;
        if (next >= wire.size()) return t;
        const std::size_t n = piece == 0 ? wire.size() - next : std::min(piece, wire.size() - next);
        buffer.append(wire.substr(next, n));
        next += n;
        break;
      }
      case kind::head:
        if constexpr (std::is_same_v<Parser, request_parser>) {
          t.heads.push_back(parser.head());
          record("head:" + parser.head().method + " " + parser.head().target);
        } else {
          t.response_heads.push_back(parser.head());
          record("head:" + std::to_string(parser.head().status));
        }
        break;
      case kind::body:
        record("body:" + body);
        break;
      case kind::message_end:
        record("end");
        break;
      case kind::upgrade:
        record("upgrade");
        t.rest = buffer + std::string(wire.substr(next));
        return t;
      case kind::error:
        record("error:" + std::to_string(r.status));
        t.rest = buffer + std::string(wire.substr(next));
        return t;
    }
  }
  FAIL("the parser made no progress");
  return t;
}

// Events with the body bytes just before an error dropped: how much of a broken body was already
// handed out depends on how it arrived, and the caller abandons the message anyway.
std::vector<std::string> settled(std::vector<std::string> events) {
  if (events.size() >= 2 && events.back().rfind("error:", 0) == 0 && events[events.size() - 2].rfind("body:", 0) == 0)
    events.erase(events.end() - 2);
  return events;
}

transcript parse_requests(std::string_view wire, std::size_t piece = 0, http_limits limits = {}) {
  request_parser p(limits);
  return drive(p, wire, piece);
}

int request_error(std::string_view wire, http_limits limits = {}) {
  const auto t = parse_requests(wire, 0, limits);
  if (t.events.empty() || t.events.back().rfind("error:", 0) != 0) return 0;
  return std::stoi(t.events.back().substr(6));
}

bool same_head(const request_head& a, const request_head& b) {
  if (a.headers.size() != b.headers.size()) return false;
  for (std::size_t i = 0; i < a.headers.size(); ++i) {
    if (a.headers[i].name != b.headers[i].name || a.headers[i].value != b.headers[i].value) return false;
  }
  return a.method == b.method && a.target == b.target && a.path == b.path && a.version_major == b.version_major &&
         a.version_minor == b.version_minor && a.host == b.host && a.keep_alive == b.keep_alive &&
         a.upgrade == b.upgrade && a.expect_continue == b.expect_continue && a.chunked == b.chunked &&
         a.content_length == b.content_length;
}

const std::string_view get_a = "GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
const std::string_view get_b = "GET /b HTTP/1.1\r\nhost: other.example\r\n\r\n";
const std::string_view post_length = "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
// llhttp 8.1 refuses an extension after one with a value ("5;a=b;c=d"), so the valued one is last.
const std::string_view chunked_body = "5;flag;name=value\r\nhello\r\n6\r\n world\r\n0;last\r\nChecksum: abc\r\nX-T: 1\r\n\r\n";

}  // namespace

TEST_CASE("a simple GET gives its head, then message_end") {
  request_parser p;
  auto r = p.feed(bytes(get_a));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == get_a.size());
  const auto& h = p.head();
  CHECK(h.method == "GET");
  CHECK(h.target == "/a?x=1");
  CHECK(h.path == "/a");
  CHECK(h.version_major == 1);
  CHECK(h.version_minor == 1);
  CHECK(h.host == "example.com");
  REQUIRE(h.headers.size() == 2);
  CHECK(h.headers[0].name == "Host");
  CHECK(h.headers[1].name == "User-Agent");
  CHECK(h.headers[1].value == "t");
  CHECK(h.keep_alive);
  CHECK_FALSE(h.upgrade);
  CHECK_FALSE(h.chunked);
  CHECK_FALSE(h.content_length);
  CHECK_FALSE(h.expect_continue);
  r = p.feed({});
  CHECK(r.what == kind::message_end);
  CHECK(r.consumed == 0);
  r = p.feed({});
  CHECK(r.what == kind::need_more);
  CHECK(r.consumed == 0);
}

TEST_CASE("a partial head is consumed and need_more asked for") {
  request_parser p;
  const auto first = get_a.substr(0, 20);
  auto r = p.feed(bytes(first));
  CHECK(r.what == kind::need_more);
  CHECK(r.consumed == first.size());
  r = p.feed(bytes(get_a.substr(20)));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == get_a.size() - 20);
  CHECK(p.head().host == "example.com");
}

TEST_CASE("two pipelined requests in one buffer: exact consumption, the second intact") {
  const std::string wire = std::string(get_a) + std::string(get_b);
  request_parser p;
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == get_a.size());
  CHECK(p.head().target == "/a?x=1");
  std::string_view rest = std::string_view(wire).substr(r.consumed);
  r = p.feed(bytes(rest));
  CHECK(r.what == kind::message_end);
  CHECK(r.consumed == 0);
  r = p.feed(bytes(rest));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == get_b.size());
  CHECK(p.head().target == "/b");
  CHECK(p.head().host == "other.example");
  CHECK(p.head().headers.size() == 1);
  r = p.feed({});
  CHECK(r.what == kind::message_end);
}

TEST_CASE("pipelined requests with bodies keep every byte") {
  const std::string wire = std::string(post_length) + "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
                           std::string(chunked_body) + std::string(get_b);
  const auto t = parse_requests(wire);
  const std::vector<std::string> want = {"head:POST /up", "body:hello", "end", "head:POST /c",
                                         "body:" + std::string(chunked_body), "end", "head:GET /b", "end"};
  CHECK(t.events == want);
  CHECK(t.need_more_consumed_all);
}

TEST_CASE("feeding in any piece size gives the same events") {
  const std::vector<std::string> wires = {
      std::string(get_a) + std::string(get_b),
      std::string(post_length) + std::string(get_a),
      "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(chunked_body) + std::string(get_b),
      "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
      "GET / HTTP/1.1\nHost: h\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
      "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
      "FOO / HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n" + std::string(300, 'a') + ": b\r\n\r\n",
  };
  for (const auto& wire : wires) {
    CAPTURE(wire);
    http_limits limits;
    limits.max_head_bytes = 256;
    const auto whole = parse_requests(wire, 0, limits);
    for (std::size_t piece : {1, 2, 3, 7, 64}) {
      CAPTURE(piece);
      const auto split = parse_requests(wire, piece, limits);
      CHECK(settled(split.events) == settled(whole.events));
      if (whole.events.back() == "upgrade") CHECK(split.rest == whole.rest);  // after an error it is moot
      CHECK(split.need_more_consumed_all);
      REQUIRE(split.heads.size() == whole.heads.size());
      for (std::size_t i = 0; i < split.heads.size(); ++i) CHECK(same_head(split.heads[i], whole.heads[i]));
    }
  }
}

TEST_CASE("a Content-Length body comes out verbatim and nothing after it is taken") {
  const std::string wire = std::string(post_length) + "GET";
  request_parser p;
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  CHECK(p.head().content_length == 5u);
  std::string_view rest = std::string_view(wire).substr(r.consumed);
  r = p.feed(bytes(rest));
  REQUIRE(r.what == kind::body);
  CHECK(text(r.body) == "hello");
  CHECK(r.consumed == 5);
  rest = rest.substr(r.consumed);
  CHECK(rest == "GET");
  r = p.feed(bytes(rest));
  CHECK(r.what == kind::message_end);
  CHECK(r.consumed == 0);
}

TEST_CASE("a body split over reads ends with message_end on an empty feed") {
  request_parser p;
  const std::string_view head = post_length.substr(0, post_length.size() - 5);
  REQUIRE(p.feed(bytes(head)).what == kind::head);
  auto r = p.feed(bytes("he"));
  CHECK(r.what == kind::body);
  CHECK(text(r.body) == "he");
  r = p.feed({});
  CHECK(r.what == kind::need_more);
  r = p.feed(bytes("llo"));
  CHECK(r.what == kind::body);
  CHECK(text(r.body) == "llo");
  r = p.feed({});
  CHECK(r.what == kind::message_end);
}

TEST_CASE("a chunked body with extensions and trailers is forwarded verbatim") {
  const std::string head = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string wire = head + std::string(chunked_body) + "NEXT";
  request_parser p;
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == head.size());
  CHECK(p.head().chunked);
  CHECK_FALSE(p.head().content_length);
  std::string_view rest = std::string_view(wire).substr(r.consumed);
  r = p.feed(bytes(rest));
  REQUIRE(r.what == kind::body);
  CHECK(text(r.body) == chunked_body);
  rest = rest.substr(r.consumed);
  CHECK(rest == "NEXT");
  CHECK(p.feed(bytes(rest)).what == kind::message_end);
}

TEST_CASE("Expect: 100-continue is reported") {
  request_parser p;
  REQUIRE(p.feed(bytes("PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")).what ==
          kind::head);
  CHECK(p.head().expect_continue);
}

TEST_CASE("keep-alive follows the version and Connection") {
  auto head_of = [](std::string_view wire) {
    request_parser p;
    REQUIRE(p.feed(bytes(wire)).what == kind::head);
    return p.head();
  };
  CHECK(head_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
  CHECK_FALSE(head_of("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
  CHECK_FALSE(head_of("GET / HTTP/1.0\r\n\r\n").keep_alive);
  CHECK(head_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
  CHECK(head_of("GET / HTTP/1.0\r\n\r\n").host.empty());
}

TEST_CASE("an Upgrade request ends with upgrade and leaves the tunnel bytes alone") {
  const std::string head = "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  const std::string wire = head + "\x81\x05hello";
  request_parser p;
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == head.size());
  CHECK(p.head().upgrade);
  const std::string_view rest = std::string_view(wire).substr(r.consumed);
  r = p.feed(bytes(rest));
  CHECK(r.what == kind::upgrade);
  CHECK(r.consumed == 0);
  r = p.feed(bytes(rest));  // sticky
  CHECK(r.what == kind::upgrade);
  CHECK(r.consumed == 0);
}

TEST_CASE("after a declined Upgrade, resume_after_declined_upgrade parses what follows as the next request") {
  const std::string head = "GET /a HTTP/1.1\r\nHost: h\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n";
  const std::string next = "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok";
  const std::string wire = head + next;
  request_parser p;
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  std::string_view rest = std::string_view(wire).substr(r.consumed);
  REQUIRE(p.feed(bytes(rest)).what == kind::upgrade);
  p.resume_after_declined_upgrade();
  const auto t = drive(p, rest);
  const std::vector<std::string> want = {"head:POST /b", "body:ok", "end"};
  CHECK(t.events == want);
}

TEST_CASE("an Upgrade request with a body gives the body first") {
  const auto t =
      parse_requests("POST / HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\nabTUNNEL");
  const std::vector<std::string> want = {"head:POST /", "body:ab", "upgrade"};
  CHECK(t.events == want);
  CHECK(t.rest == "TUNNEL");
}

TEST_CASE("CONNECT is an upgrade with an authority-form target") {
  const auto t = parse_requests("CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\nRAW");
  const std::vector<std::string> want = {"head:CONNECT db.internal:5432", "upgrade"};
  CHECK(t.events == want);
  CHECK(t.rest == "RAW");
  REQUIRE(t.heads.size() == 1);
  CHECK(t.heads[0].upgrade);
  CHECK(t.heads[0].host == "db.internal:5432");
  CHECK(t.heads[0].path.empty());
  CHECK(request_error("CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
}

TEST_CASE("an absolute-form target gives host and path") {
  request_parser p;
  REQUIRE(p.feed(bytes("GET http://Example.com:8080/p/q?z HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")).what ==
          kind::head);
  CHECK(p.head().host == "Example.com:8080");
  CHECK(p.head().path == "/p/q");
  CHECK(p.head().target == "http://Example.com:8080/p/q?z");

  request_parser bare;
  REQUIRE(bare.feed(bytes("GET https://h.example?q HTTP/1.0\r\n\r\n")).what == kind::head);
  CHECK(bare.head().host == "h.example");
  CHECK(bare.head().path == "/");

  request_parser star;
  REQUIRE(star.feed(bytes("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")).what == kind::head);
  CHECK(star.head().path == "*");
}

TEST_CASE("request smuggling shapes and malformed requests are refused with 400") {
  const std::vector<std::string> head_cases = {
      // Content-Length vs Transfer-Encoding
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
      // several Content-Length headers (differing, equal, or as a list), bad values
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
      // Transfer-Encoding whose final coding is not chunked, or chunked twice
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
      // HTTP/1.0 with Transfer-Encoding
      "POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      // whitespace before the colon
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 3\r\n\r\nabc",
      // obs-fold, including one that hides a header
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n Content-Length: 5\r\n\r\nhello",
      "GET / HTTP/1.1\r\n Host: h\r\n\r\n",
      // bare LF / bare CR line endings
      "GET / HTTP/1.1\nHost: h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n\n",
      "GET / HTTP/1.1\rHost: h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n\rXGET / HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
      // control characters in values, empty names, bad names
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX(y): 1\r\n\r\n",
      // not HTTP at all
      std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),
      // Host: missing on 1.1, twice, malformed, or not matching an absolute-form target
      "GET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a:80:90\r\n\r\n",
      "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
      "GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
      // request line shapes llhttp alone accepts
      "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET / RTSP/1.0\r\nHost: h\r\n\r\n",
      "GET /\r\n\r\n",
      "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET a HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET / HTTP/1.2\r\nHost: h\r\n\r\n",
  };
  // Refused before any head is reported: the router never forwards anything of these.
  for (const auto& wire : head_cases) {
    CAPTURE(wire);
    for (std::size_t piece : {0, 1, 5}) {
      CAPTURE(piece);
      CHECK(parse_requests(wire, piece).events == std::vector<std::string>{"error:400"});
    }
  }
  const std::vector<std::string> body_cases = {
      // invalid chunk framing
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n\r\n",
      // a trailer section ending in a bare LF, or folded
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n x\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: a\x01\r\n\r\n",
  };
  // Refused when the body gets there, after the head.
  for (const auto& wire : body_cases) {
    CAPTURE(wire);
    for (std::size_t piece : {0, 1, 5}) {
      CAPTURE(piece);
      const auto t = parse_requests(wire, piece);
      REQUIRE(t.events.size() >= 2);
      CHECK(t.events.front() == "head:POST /");
      CHECK(t.events.back() == "error:400");
    }
  }
}

TEST_CASE("an error is sticky and reports a sentence") {
  request_parser p;
  auto r = p.feed(bytes("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"));
  REQUIRE(r.what == kind::error);
  CHECK(r.status == 400);
  CHECK_FALSE(r.reason.empty());
  r = p.feed(bytes(get_a));
  CHECK(r.what == kind::error);
  CHECK(r.status == 400);
  CHECK(r.consumed == 0);
}

TEST_CASE("unknown methods are 501, other HTTP versions 505") {
  CHECK(request_error("FOO / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
  CHECK(request_error("DESCRIBE / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
  CHECK(request_error("GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505);
  CHECK(request_error("GET / HTTP/0.9\r\nHost: h\r\n\r\n") == 505);
  CHECK(request_error("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == 505);
}

TEST_CASE("a head larger than max_head_bytes is 431, exactly at the limit it passes") {
  http_limits limits;
  limits.max_head_bytes = 256;
  const std::string start = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
  const std::string end = "\r\n\r\n";
  const std::string fits = start + std::string(256 - start.size() - end.size(), 'v') + end;
  REQUIRE(fits.size() == 256);
  CHECK(parse_requests(fits, 0, limits).events == std::vector<std::string>{"head:GET /", "end"});
  const std::string over = start + std::string(257 - start.size() - end.size(), 'v') + end;
  CHECK(request_error(over, limits) == 431);
  CHECK(parse_requests(over, 1, limits).events.back() == "error:431");
  // An endless head is refused without being read to its end.
  request_parser p(limits);
  const std::string endless = start + std::string(100000, 'v');
  const auto r = p.feed(bytes(endless));
  CHECK(r.what == kind::error);
  CHECK(r.status == 431);
  // Default limit: 64 KiB.
  CHECK(request_error(start + std::string(70000, 'v') + end) == 431);
}

TEST_CASE("more than max_headers header fields is 431") {
  http_limits limits;
  limits.max_headers = 5;
  std::string wire = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 4; ++i) wire += "X-" + std::to_string(i) + ": v\r\n";
  CHECK(parse_requests(wire + "\r\n", 0, limits).events == std::vector<std::string>{"head:GET /", "end"});
  CHECK(request_error(wire + "One-Too-Many: v\r\n\r\n", limits) == 431);
  std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 100; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  CHECK(request_error(many + "\r\n") == 431);
}

TEST_CASE("the trailer section is bounded like a head") {
  http_limits limits;
  limits.max_head_bytes = 256;
  const std::string wire = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: " +
                           std::string(300, 'x') + "\r\n\r\n";
  CHECK(request_error(wire, limits) == 431);
}

TEST_CASE("chunk extensions are bounded") {
  http_limits limits;
  limits.max_chunk_extension_bytes = 16;
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  CHECK(parse_requests(head + "1;a=bcd\r\nx\r\n0\r\n\r\n", 0, limits).events.back() == "end");
  CHECK(request_error(head + "1;a=" + std::string(40, 'b') + "\r\nx\r\n0\r\n\r\n", limits) == 400);
  // Quoted values pass; an extension after a valued one is a known llhttp 8.1 refusal (fails safe).
  CHECK(parse_requests(head + "1;a=\"b c\"\r\nx\r\n0\r\n\r\n").events.back() == "end");
  CHECK(request_error(head + "1;a=b;c=d\r\nx\r\n0\r\n\r\n") == 400);
}

TEST_CASE("max_body_bytes refuses large bodies with 413") {
  http_limits limits;
  limits.max_body_bytes = 4;
  CHECK(request_error(post_length, limits) == 413);
  CHECK(parse_requests("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd", 0, limits).events.back() == "end");
  const std::string chunked = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
  const auto t = parse_requests(chunked, 0, limits);
  CHECK(t.events.back() == "error:413");
}

TEST_CASE("a request after Connection: close is not parsed") {
  const auto t = parse_requests("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + std::string(get_b));
  REQUIRE(t.events.size() == 3);
  CHECK(t.events[1] == "end");
  CHECK(t.events[2] == "error:400");
  CHECK_FALSE(t.heads[0].keep_alive);
}

TEST_CASE("a parser can be moved between events") {
  request_parser p;
  REQUIRE(p.feed(bytes(post_length.substr(0, post_length.size() - 5))).what == kind::head);
  request_parser q(std::move(p));
  auto r = q.feed(bytes("hello"));
  CHECK(r.what == kind::body);
  CHECK(q.feed({}).what == kind::message_end);
  CHECK(q.feed(bytes(get_b)).what == kind::head);
  CHECK(q.head().target == "/b");
}

TEST_CASE("serialising a parsed head and parsing it again gives the same head") {
  const std::vector<std::string> wires = {
      std::string(get_a),
      "POST /x?y HTTP/1.0\r\nhost: H.example:81\r\nContent-Length: 3\r\nX-Empty:\r\nX-Trail: v  \r\n\r\n",
      "PUT /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
      "GET http://a.example/p HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
      "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
      "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
      "M-SEARCH /ssdp HTTP/1.1\r\nHost: h\r\n\r\n",
  };
  for (const auto& wire : wires) {
    CAPTURE(wire);
    request_parser p;
    REQUIRE(p.feed(bytes(wire)).what == kind::head);
    const std::string again = serialize_request_head(p.head());
    request_parser q;
    const auto r = q.feed(bytes(again));
    REQUIRE(r.what == kind::head);
    CHECK(r.consumed == again.size());
    CHECK(same_head(p.head(), q.head()));
  }
  request_parser p;
  REQUIRE(p.feed(bytes(get_a)).what == kind::head);
  CHECK(serialize_request_head(p.head()) == get_a);
}

TEST_CASE("serialize_forwarded_request_head appends to X-Forwarded-For and overrides spoofed proto and host") {
  request_parser p;
  REQUIRE(p.feed(bytes("GET / HTTP/1.1\r\nHost: app.example\r\nx-forwarded-for: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n"
                       "X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\nX-Forwarded-Host: evil.example\r\nAccept: */*\r\n\r\n"))
              .what == kind::head);
  CHECK(serialize_forwarded_request_head(p.head(), "203.0.113.9", false) ==
        "GET / HTTP/1.1\r\nHost: app.example\r\nAccept: */*\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 203.0.113.9\r\n"
        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.example\r\n\r\n");

  // An empty X-Forwarded-For adds nothing to the chain.
  request_parser empty;
  REQUIRE(empty.feed(bytes("POST /x?y HTTP/1.0\r\nX-Forwarded-For:\r\nContent-Length: 0\r\n\r\n")).what == kind::head);
  CHECK(serialize_forwarded_request_head(empty.head(), "2001:db8::1", true) ==
        "POST /x?y HTTP/1.0\r\nContent-Length: 0\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: https\r\n"
        "X-Forwarded-Host: \r\n\r\n");
}

TEST_CASE("serialize_forwarded_request_head: absolute form becomes origin form with its authority as Host; HTTP/1.0 loses Expect") {
  const auto forwarded = [](std::string_view wire) {
    request_parser p;
    REQUIRE(p.feed(bytes(wire)).what == kind::head);
    return serialize_forwarded_request_head(p.head(), "192.0.2.1", false);
  };
  CHECK(forwarded("GET http://App.example:8080/p/q?x=1 HTTP/1.1\r\nHost: app.example:8080\r\nAccept: */*\r\n\r\n") ==
        "GET /p/q?x=1 HTTP/1.1\r\nHost: App.example:8080\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.1\r\n"
        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: App.example:8080\r\n\r\n");
  CHECK(forwarded("GET http://a.example HTTP/1.0\r\n\r\n").starts_with("GET / HTTP/1.0\r\nHost: a.example\r\nX-Forwarded-For"));
  CHECK(forwarded("GET https://a.example?x HTTP/1.1\r\nHost: a.example\r\n\r\n").starts_with("GET /?x HTTP/1.1\r\nHost: a.example\r\nX-"));
  // HTTP/1.0's Expect is dropped (it must be ignored, and its 100 Continue not sent to such a client).
  CHECK(forwarded("POST /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n") ==
        "POST /u HTTP/1.0\r\nContent-Length: 1\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n"
        "X-Forwarded-Host: \r\n\r\n");
  CHECK(forwarded("POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .find("Expect: 100-continue\r\n") != std::string::npos);
  // The other forms go as they came.
  CHECK(forwarded("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").starts_with("OPTIONS * HTTP/1.1\r\nHost: a\r\n"));
  CHECK(forwarded("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n").starts_with("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n"));
}

TEST_CASE("reset() gives a parser that failed or stopped mid-message a new parser's state") {
  request_parser requests({1024, 8});
  REQUIRE(requests.feed(bytes("GET / HTTP/1.1\r\nHost: a\r\nX-Bad\r\n\r\n")).what == kind::error);
  requests.reset();
  auto r = requests.feed(bytes(get_b));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == get_b.size());
  CHECK(requests.head().host == "other.example");
  CHECK(requests.head().headers.size() == 1);
  // Limits survive a reset: a head over 1024 bytes is still refused.
  requests.reset();
  const std::string big = std::string("GET / HTTP/1.1\r\nHost: a\r\nX: ").append(1100, 'x').append("\r\n\r\n");
  const auto refused = requests.feed(bytes(big));
  CHECK(refused.what == kind::error);
  CHECK(refused.status == 431);

  response_parser responses;
  responses.expect("GET");
  REQUIRE(responses.feed(bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal")).what == kind::head);
  responses.reset();
  responses.expect("HEAD");
  auto h = responses.feed(bytes("HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"));
  REQUIRE(h.what == kind::head);
  CHECK(responses.head().status == 204);
  CHECK(responses.head().headers.size() == 1);
}

TEST_CASE("a parser reused for many messages gives each its own headers") {
  request_parser p;
  std::string wire;
  for (int i = 0; i < 40; ++i) {
    wire.append("GET /").append(std::to_string(i)).append(" HTTP/1.1\r\nHost: h\r\n");
    for (int k = 0; k < i % 20; ++k) wire.append("X-").append(std::to_string(k)).append(": ").append(20 + i, 'v').append("\r\n");
    wire += "\r\n";
  }
  std::span<const char> in(wire.data(), wire.size());
  for (int i = 0; i < 40; ++i) {
    auto r = p.feed(in);
    REQUIRE(r.what == kind::head);
    CHECK(p.head().target == std::string("/").append(std::to_string(i)));
    REQUIRE(p.head().headers.size() == static_cast<std::size_t>(1 + i % 20));
    if (i % 20 > 0) CHECK(p.head().headers.back().value == std::string(20 + i, 'v'));
    in = in.subspan(r.consumed);
    const auto end = p.feed(in);
    REQUIRE(end.what == kind::message_end);
    in = in.subspan(end.consumed);
  }
}

// --- responses ---------------------------------------------------------------------------------

namespace {

transcript parse_responses(std::string_view method, std::string_view wire, std::size_t piece = 0) {
  response_parser p;
  p.expect(method);
  return drive(p, wire, piece);
}

}  // namespace

TEST_CASE("a response with Content-Length") {
  const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\n\r\nhelloHTTP";
  response_parser p;
  p.expect("GET");
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == wire.size() - 9);
  CHECK(p.head().status == 200);
  CHECK(p.head().reason == "OK");
  CHECK(p.head().keep_alive);
  CHECK(p.head().content_length == 5u);
  CHECK(p.head().headers.size() == 2);
  std::string_view rest = std::string_view(wire).substr(r.consumed);
  r = p.feed(bytes(rest));
  REQUIRE(r.what == kind::body);
  CHECK(text(r.body) == "hello");
  rest = rest.substr(r.consumed);
  CHECK(rest == "HTTP");
  CHECK(p.feed(bytes(rest)).what == kind::message_end);
}

TEST_CASE("body_bytes_left counts a Content-Length body down, and is 0 wherever bytes are not all body") {
  response_parser p;
  p.expect("GET");
  CHECK(p.body_bytes_left() == 0);  // a head
  std::string_view wire = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  CHECK(p.body_bytes_left() == 10);
  wire.remove_prefix(r.consumed);
  r = p.feed(bytes(wire.substr(0, 4)));
  REQUIRE(r.what == kind::body);
  CHECK(p.body_bytes_left() == 6);
  r = p.feed(bytes(wire.substr(4)));
  REQUIRE(r.what == kind::body);
  CHECK(text(r.body) == "456789");
  CHECK(p.body_bytes_left() == 0);
  CHECK(p.feed({}).what == kind::message_end);

  const auto left_after_head = [](std::string_view method, std::string_view head) {
    response_parser q;
    q.expect(method);
    REQUIRE(q.feed(bytes(head)).what == kind::head);
    return q.body_bytes_left();
  };
  CHECK(left_after_head("GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
  CHECK(left_after_head("GET", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n") == 0);  // until close
  CHECK(left_after_head("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n") == 0);
  CHECK(left_after_head("GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n") == 0);
  CHECK(left_after_head("GET", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n") == 7);
}

TEST_CASE("a chunked response, in any piece size") {
  const std::string wire = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(chunked_body);
  for (std::size_t piece : {0, 1, 4}) {
    const auto t = parse_responses("GET", wire, piece);
    CHECK(t.events == std::vector<std::string>{"head:200", "body:" + std::string(chunked_body), "end"});
    CHECK(t.response_heads.at(0).chunked);
  }
}

TEST_CASE("a response to HEAD has no body whatever it declares") {
  const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  const auto t = parse_responses("HEAD", wire);
  CHECK(t.events == std::vector<std::string>{"head:200", "end", "head:200", "end"});
  const auto chunked = parse_responses("HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  CHECK(chunked.events == std::vector<std::string>{"head:200", "end"});
}

TEST_CASE("204 and 304 have no body") {
  CHECK(parse_responses("GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").events ==
        std::vector<std::string>{"head:204", "end"});
  const auto t = parse_responses("GET", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
  CHECK(t.events == std::vector<std::string>{"head:304", "end", "head:200", "body:z", "end"});
}

TEST_CASE("100 Continue is a message of its own, followed by the real response") {
  const std::string wire = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  response_parser p;
  p.expect("POST");
  auto r = p.feed(bytes(wire));
  REQUIRE(r.what == kind::head);
  CHECK(r.consumed == 25);
  CHECK(p.head().status == 100);
  std::string_view rest = std::string_view(wire).substr(r.consumed);
  r = p.feed(bytes(rest));
  CHECK(r.what == kind::message_end);
  CHECK(r.consumed == 0);
  CHECK(p.head().status == 100);  // still readable at message_end
  const auto t = drive(p, rest);
  CHECK(t.events == std::vector<std::string>{"head:201", "body:ok", "end"});
  const auto hints = parse_responses("GET", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(hints.events == std::vector<std::string>{"head:103", "end", "head:200", "end"});
  // An HTTP/1.0 interim answer is not keep-alive, and still the final one follows it (a Go
  // service answering an HTTP/1.0 request with 103 Early Hints); also split byte by byte.
  const std::string v10 = "HTTP/1.0 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
  for (const std::size_t piece : {0, 1, 7}) {
    CAPTURE(piece);
    CHECK(parse_responses("GET", v10, piece).events ==
          std::vector<std::string>{"head:103", "end", "head:200", "body:ok", "end"});
  }
}

TEST_CASE("101 Switching Protocols ends in upgrade, tunnel bytes untouched") {
  const std::string wire = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi";
  for (std::size_t piece : {0, 1, 3}) {
    const auto t = parse_responses("GET", wire, piece);
    CHECK(t.events == std::vector<std::string>{"head:101", "upgrade"});
    CHECK(t.rest == "\x81\x02hi");
    CHECK(t.response_heads.at(0).upgrade);
    CHECK_FALSE(t.response_heads.at(0).keep_alive);
  }
  // Without the Upgrade/Connection headers a 101 still switches.
  CHECK(parse_responses("GET", "HTTP/1.1 101 Switching Protocols\r\n\r\nX").rest == "X");
  // A 2xx to CONNECT opens a tunnel, a 4xx does not.
  CHECK(parse_responses("CONNECT", "HTTP/1.1 200 Connection Established\r\n\r\nRAW").events ==
        std::vector<std::string>{"head:200", "upgrade"});
  CHECK(parse_responses("CONNECT", "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").events ==
        std::vector<std::string>{"head:403", "end"});
}

TEST_CASE("a response without length ends when the backend closes: finish()") {
  response_parser p;
  p.expect("GET");
  REQUIRE(p.feed(bytes("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")).what == kind::head);
  CHECK_FALSE(p.head().keep_alive);
  auto r = p.feed(bytes("part one, "));
  CHECK(r.what == kind::body);
  r = p.feed(bytes("part two"));
  CHECK(r.what == kind::body);
  CHECK(text(r.body) == "part two");
  CHECK(p.feed({}).what == kind::need_more);
  r = p.finish();
  CHECK(r.what == kind::message_end);
  CHECK(p.feed(bytes("more")).what == kind::error);

  response_parser te;  // a Transfer-Encoding other than chunked also reads until close
  te.expect("GET");
  REQUIRE(te.feed(bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz")).what == kind::head);
  CHECK(te.feed(bytes("zz")).what == kind::body);
  CHECK(te.finish().what == kind::message_end);
}

TEST_CASE("finish() in the middle of a response is an error") {
  response_parser p;
  p.expect("GET");
  REQUIRE(p.feed(bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")).what == kind::head);
  CHECK(p.feed(bytes("abc")).what == kind::body);
  auto r = p.finish();
  CHECK(r.what == kind::error);
  CHECK(r.status == 502);

  response_parser none;
  r = none.finish();
  CHECK(r.what == kind::error);
  CHECK(r.status == 502);

  response_parser partial;
  CHECK(partial.feed(bytes("HTTP/1.1 200 O")).what == kind::need_more);
  CHECK(partial.finish().status == 502);

  response_parser chunked;
  REQUIRE(chunked.feed(bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")).what == kind::head);
  CHECK(chunked.feed(bytes("5\r\nab")).what == kind::body);
  CHECK(chunked.finish().what == kind::error);

  // A body-less response whose end was not yet reported still ends cleanly.
  response_parser empty;
  REQUIRE(empty.feed(bytes("HTTP/1.1 204 No Content\r\n\r\n")).what == kind::head);
  CHECK(empty.finish().what == kind::message_end);
}

TEST_CASE("an HTTP/1.0 response without keep-alive closes the connection") {
  response_parser p;
  REQUIRE(p.feed(bytes("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")).what == kind::head);
  CHECK_FALSE(p.head().keep_alive);
  response_parser q;
  REQUIRE(q.feed(bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).what == kind::head);
  CHECK_FALSE(q.head().keep_alive);
}

TEST_CASE("malformed responses are 502") {
  const std::vector<std::string> cases = {
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
      "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
      "HTTP/2.0 200 OK\r\n\r\n",
      "RTSP/1.0 200 OK\r\n\r\n",
      "HTTP/1.1 999 Nope\r\n\r\n",
      "HTTP/1.1 200 O\x01K\r\n\r\n",
      "HTTP/1.1  200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
      "garbage",
  };
  for (const auto& wire : cases) {
    CAPTURE(wire);
    const auto t = parse_responses("GET", wire);
    REQUIRE_FALSE(t.events.empty());
    CHECK(t.events.back() == "error:502");
  }
}

TEST_CASE("serialize_response_head writes the status line and replaces headers from extra") {
  response_parser p;
  REQUIRE(p.feed(bytes("HTTP/1.1 404 Not Found\r\nServer: x\r\nContent-Length: 0\r\n\r\n")).what == kind::head);
  const http_header extra[] = {{"server", "socketmaster"}};
  CHECK(serialize_response_head(p.head(), extra) ==
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nserver: socketmaster\r\n\r\n");
}

TEST_CASE("make_error_response is a complete, closing, plain-text response") {
  for (int status : {400, 404, 408, 413, 431, 501, 502, 503, 505}) {
    CAPTURE(status);
    const std::string wire = make_error_response(status, "the reason\r\nInjected: yes");
    response_parser p;
    p.expect("GET");
    const auto t = drive(p, wire);
    REQUIRE(t.events.size() == 3);
    CHECK(t.events[0] == "head:" + std::to_string(status));
    CHECK(t.events[1] == "body:the reason  Injected: yes\n");
    CHECK(t.events[2] == "end");
    const auto& h = t.response_heads.at(0);
    CHECK(h.reason == reason_phrase(status));
    CHECK_FALSE(h.keep_alive);
    REQUIRE(h.headers.size() == 3);
    CHECK(h.headers[0].name == "Content-Type");
    CHECK(h.headers[0].value == "text/plain");
  }
  CHECK(make_error_response(431, "").find("Request Header Fields Too Large\n") != std::string::npos);
  CHECK(make_error_response(502, "x").rfind("HTTP/1.1 502 Bad Gateway\r\n", 0) == 0);
}

TEST_CASE("http_limits validation") {
  CHECK_FALSE(http_limits{}.validate());
  const char* what = nullptr;
  http_limits bad;
  bad.max_headers = 0;
  CHECK(bad.validate(&what));
  CHECK(std::string_view(what).find("max_headers") != std::string_view::npos);
  bad = {};
  bad.max_head_bytes = 10;
  CHECK(bad.validate());
}
