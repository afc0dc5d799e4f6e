// Routing rules without sockets: label-boundary domains, segment-boundary paths, specificity.
#include "server/route_table.hpp"

#include <ostream>  // before doctest: it prints values through operator<<
#include <doctest/doctest.h>

using namespace socketmaster::server;

TEST_CASE("hosts are normalised: case, port, trailing dot, IPv6 brackets") {
  CHECK(normalize_host("Example.COM:8080") == "example.com");
  CHECK(normalize_host("example.com.") == "example.com");
  CHECK(normalize_host("[::1]:80") == "::1");
  CHECK(normalize_host("[::1]") == "::1");
  CHECK(normalize_host("::1") == "::1");
  CHECK(normalize_domain_suffix(".Example.com") == "example.com");
}

TEST_CASE("a domain suffix matches at a label boundary only") {
  CHECK(domain_matches("example.com", "example.com"));
  CHECK(domain_matches("api.example.com", "example.com"));
  CHECK(domain_matches("a.b.example.com", "example.com"));
  CHECK_FALSE(domain_matches("badexample.com", "example.com"));
  CHECK_FALSE(domain_matches("example.com.evil.net", "example.com"));
  CHECK_FALSE(domain_matches("com", "example.com"));
  CHECK(domain_matches("anything", ""));
}

TEST_CASE("a path prefix matches at a segment boundary") {
  CHECK(path_matches("/a", "/a"));
  CHECK(path_matches("/a/", "/a"));
  CHECK(path_matches("/a/b/c", "/a"));
  CHECK(path_matches("/a?x=1", "/a"));
  CHECK_FALSE(path_matches("/ab", "/a"));
  CHECK_FALSE(path_matches("/", "/a"));
  CHECK(path_matches("/api/v1", "/api/"));
  CHECK_FALSE(path_matches("/api", "/api/"));
  CHECK(path_matches("/whatever", ""));
}

TEST_CASE("the most specific route wins: longest domain, then longest path") {
  route_table t;
  t.add({"", ""}, 1);
  t.add({"example.com", ""}, 2);
  t.add({"api.example.com", ""}, 3);
  t.add({"example.com", "/static"}, 4);
  t.add({"", "/a"}, 5);
  CHECK(t.match("other.org", "/") == 1u);
  CHECK(t.match("other.org", "/a/x") == 5u);
  CHECK(t.match("example.com", "/") == 2u);
  CHECK(t.match("www.example.com", "/static/app.js") == 4u);
  CHECK(t.match("api.example.com", "/static/app.js") == 3u);
  CHECK(t.match("API.Example.com:443", "/") == 3u);
  CHECK(t.match("badexample.com", "/a") == 5u);
  t.remove(1);
  CHECK_FALSE(t.match("other.org", "/").has_value());
  CHECK(t.find_exact({"example.com", "/static"}) == 4u);
  CHECK_FALSE(t.find_exact({"example.com", "/stat"}).has_value());
}

TEST_CASE("no route matches: nothing is returned") {
  route_table t;
  t.add({"example.com", "/a"}, 1);
  CHECK_FALSE(t.match("example.com", "/b").has_value());
  CHECK_FALSE(t.match("example.org", "/a").has_value());
}
