// parse_host_port: the one reading of "host:port" behind every address flag and option. What it
// accepts (IPv4, bracketed IPv6, localhost, ports 0..65535) and refuses (no port, a port past 16
// bits or not decimal, a host name, IPv6 without brackets), and host_port_text reading back.
#include "protocol/host_port.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace socketmaster;

TEST_CASE("parse_host_port reads IPv4, bracketed IPv6 and localhost with a port from 0 to 65535") {
  const auto v4 = parse_host_port("127.0.0.1:9999");
  REQUIRE(v4);
  CHECK(v4->address() == asio::ip::make_address("127.0.0.1"));
  CHECK(v4->port() == 9999);
  const auto v6 = parse_host_port("[::1]:65535");
  REQUIRE(v6);
  CHECK(v6->address() == asio::ip::make_address("::1"));
  CHECK(v6->port() == 65535);
  const auto local = parse_host_port("localhost:0");
  REQUIRE(local);
  CHECK(local->address().is_loopback());  // what the control port's loopback check relies on
  CHECK(local->address().is_v4());
  CHECK(local->port() == 0);
  CHECK(parse_host_port("0.0.0.0:80"));
  CHECK(parse_host_port("[::]:80"));
}

TEST_CASE("parse_host_port refuses what would have thrown, wrapped or meant something else") {
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:abc", "127.0.0.1:70000", "127.0.0.1:65536",
                          "127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:80 ", "127.0.0.1:99999999999",
                          "example.com:80", ":80", "::1:80", "[::1:80", "[::1]", "[::1]:", "[127.0.0.1]x:80",
                          "300.0.0.1:80", ""}) {
    CAPTURE(std::string(bad));
    CHECK_FALSE(parse_host_port(bad));
  }
}

TEST_CASE("host_port_text writes what parse_host_port reads") {
  for (const char* text : {"127.0.0.1:80", "[::1]:8443", "0.0.0.0:0", "[fe80::1]:1"}) {
    CAPTURE(std::string(text));
    const auto ep = parse_host_port(text);
    REQUIRE(ep);
    CHECK(host_port_text(*ep) == text);
  }
  CHECK(names_unix_path("./ctl.sock"));
  CHECK_FALSE(names_unix_path("ctl.sock"));
}

TEST_CASE("reaches_listener: the sidecar's check that its backend is not its own public port") {
  const auto ep = [](const char* text) { return *parse_host_port(text); };
  // The same address and port; an IPv4 peer as a dual-stack socket writes it.
  CHECK(reaches_listener(ep("127.0.0.1:8080"), ep("127.0.0.1:8080")));
  CHECK(reaches_listener(ep("[::ffff:127.0.0.1]:8080"), ep("127.0.0.1:8080")));
  CHECK(reaches_listener(ep("[::1]:8080"), ep("[::1]:8080")));
  // A wildcard listener takes the loopback of its family; the master's IPv6 wildcard takes both.
  CHECK(reaches_listener(ep("127.0.0.1:8080"), ep("0.0.0.0:8080")));
  CHECK(reaches_listener(ep("127.0.0.2:8080"), ep("0.0.0.0:8080")));
  CHECK(reaches_listener(ep("127.0.0.1:8080"), ep("[::]:8080")));
  CHECK(reaches_listener(ep("[::1]:8080"), ep("[::]:8080")));
  CHECK_FALSE(reaches_listener(ep("[::1]:8080"), ep("0.0.0.0:8080")));
  // Connecting to the wildcard address is connecting to this host's loopback.
  CHECK(reaches_listener(ep("0.0.0.0:8080"), ep("127.0.0.1:8080")));
  CHECK(reaches_listener(ep("0.0.0.0:8080"), ep("0.0.0.0:8080")));
  // Anything else is somewhere else: another port, another loopback address, another family.
  CHECK_FALSE(reaches_listener(ep("127.0.0.1:8081"), ep("127.0.0.1:8080")));
  CHECK_FALSE(reaches_listener(ep("127.0.0.1:8080"), ep("127.0.0.2:8080")));
  CHECK_FALSE(reaches_listener(ep("127.0.0.1:8080"), ep("[::1]:8080")));
  CHECK_FALSE(reaches_listener(ep("192.0.2.1:8080"), ep("127.0.0.1:8080")));
}

TEST_CASE("reaches_listener: this host's other addresses reach its wildcard listeners, not its loopback ones") {
  const auto ep = [](const char* text) { return *parse_host_port(text); };
  const std::vector<asio::ip::address> this_host{asio::ip::make_address("192.0.2.7"), asio::ip::make_address("2001:db8::7")};
  CHECK(reaches_listener(ep("192.0.2.7:8080"), ep("0.0.0.0:8080"), this_host));
  CHECK(reaches_listener(ep("192.0.2.7:8080"), ep("[::]:8080"), this_host));
  CHECK(reaches_listener(ep("[2001:db8::7]:8080"), ep("[::]:8080"), this_host));
  CHECK_FALSE(reaches_listener(ep("192.0.2.7:8080"), ep("0.0.0.0:8080")));  // not known to be this host
  CHECK_FALSE(reaches_listener(ep("192.0.2.8:8080"), ep("0.0.0.0:8080"), this_host));
  CHECK_FALSE(reaches_listener(ep("192.0.2.7:8080"), ep("127.0.0.1:8080"), this_host));
  CHECK_FALSE(reaches_listener(ep("192.0.2.7:8081"), ep("0.0.0.0:8080"), this_host));
}

TEST_CASE("interface_addresses lists this host's, loopback among them") {
  const auto all = interface_addresses();
  CHECK(std::find(all.begin(), all.end(), asio::ip::make_address("127.0.0.1")) != all.end());
}
