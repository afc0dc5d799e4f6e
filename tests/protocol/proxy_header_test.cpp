// The PROXY protocol v2 header without sockets: exact bytes for TCP4/TCP6, round trips, LOCAL,
// AF_UNSPEC/AF_UNIX, TLV skipping, incremental input and malformed headers.
#include "protocol/proxy_header.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

using namespace socketmaster;
using kind = proxy_parse_result::kind;
using asio::ip::make_address;
using asio::ip::tcp;

namespace {

const std::vector<int> signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(std::byte(b));
  return out;
}

// A header with the given version/command and family/protocol bytes and body.
std::vector<std::byte> header(int version_command, int family_protocol, const std::vector<std::byte>& body) {
  std::vector<std::byte> out;
  for (int b : signature) out.push_back(std::byte(b));
  out.push_back(std::byte(version_command));
  out.push_back(std::byte(family_protocol));
  out.push_back(std::byte(body.size() >> 8));
  out.push_back(std::byte(body.size()));
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// Appends a TLV to a complete header and fixes its length field.
void add_tlv(std::vector<std::byte>& h, int type, const std::vector<std::byte>& value) {
  h.push_back(std::byte(type));
  h.push_back(std::byte(value.size() >> 8));
  h.push_back(std::byte(value.size()));
  h.insert(h.end(), value.begin(), value.end());
  const auto length = h.size() - proxy_v2_fixed_bytes;
  h[14] = std::byte(length >> 8);
  h[15] = std::byte(length);
}

const tcp::endpoint client4{make_address("192.0.2.1"), 51000};
const tcp::endpoint listener4{make_address("198.51.100.7"), 443};
const tcp::endpoint client6{make_address("2001:db8::1"), 40000};
const tcp::endpoint listener6{make_address("2001:db8::ff"), 8443};

proxy_info parsed(const std::vector<std::byte>& h, std::size_t want_bytes) {
  const auto r = parse_proxy_v2(h);
  INFO(r.error);
  REQUIRE(r.what == kind::complete);
  CHECK(r.header_bytes == want_bytes);
  return r.info;
}

}  // namespace

TEST_CASE("a TCP4 header has the spec's exact bytes") {
  const auto h = encode_proxy_v2(client4, listener4);
  const auto want = bytes({0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,  //
                           0x21, 0x11, 0x00, 0x0C,                                                    //
                           192, 0, 2, 1, 198, 51, 100, 7, 0xC7, 0x38, 0x01, 0xBB});
  CHECK(h == want);
}

TEST_CASE("a TCP4 header round-trips") {
  const auto info = parsed(encode_proxy_v2(client4, listener4), 28);
  CHECK_FALSE(info.local);
  CHECK(info.source == client4);
  CHECK(info.destination == listener4);
}

TEST_CASE("a TCP6 header round-trips") {
  const auto h = encode_proxy_v2(client6, listener6);
  REQUIRE(h.size() == 52);
  CHECK(h[12] == std::byte{0x21});
  CHECK(h[13] == std::byte{0x21});
  const auto info = parsed(h, 52);
  CHECK_FALSE(info.local);
  CHECK(info.source == client6);
  CHECK(info.destination == listener6);
}

TEST_CASE("mixed families are sent as TCP6 with the IPv4 side mapped") {
  const auto info = parsed(encode_proxy_v2(client4, listener6), 52);
  CHECK(info.source.address() == make_address("::ffff:192.0.2.1"));
  CHECK(info.source.port() == client4.port());
  CHECK(info.destination == listener6);
  CHECK(parsed(encode_proxy_v2(client6, listener4), 52).destination.address() ==
        make_address("::ffff:198.51.100.7"));
}

TEST_CASE("the stream's payload after the header is not part of it") {
  auto h = encode_proxy_v2(client4, listener4);
  const auto size = h.size();
  for (char c : std::string("GET / HTTP/1.1\r\n")) h.push_back(std::byte(c));
  parsed(h, size);
}

TEST_CASE("a LOCAL header carries no addresses") {
  const auto h = encode_proxy_v2_local();
  CHECK(h.size() == 16);
  CHECK(h[12] == std::byte{0x20});
  CHECK(parsed(h, 16).local);
}

TEST_CASE("a LOCAL header's address block and TLVs are skipped unread") {
  auto h = header(0x20, 0x11, std::vector<std::byte>(12, std::byte{0xEE}));
  add_tlv(h, 0x04, bytes({0, 0, 0}));
  CHECK(parsed(h, h.size()).local);
}

TEST_CASE("PROXY with AF_UNSPEC or AF_UNIX falls back to the connection's endpoints") {
  CHECK(parsed(header(0x21, 0x00, {}), 16).local);
  CHECK(parsed(header(0x21, 0x31, std::vector<std::byte>(216)), 16 + 216).local);
  // UDP over IPv4: addresses of a datagram flow are no TCP endpoint.
  CHECK(parsed(header(0x21, 0x12, std::vector<std::byte>(12)), 28).local);
}

TEST_CASE("TLVs after the addresses are skipped") {
  auto h = encode_proxy_v2(client4, listener4);
  add_tlv(h, 0x01, bytes({'h', '2'}));               // ALPN
  add_tlv(h, 0x04, std::vector<std::byte>(300));     // NOOP padding
  add_tlv(h, 0x20, {});                              // SSL, empty
  const auto info = parsed(h, 28 + 5 + 303 + 3);
  CHECK(info.source == client4);
  CHECK(info.destination == listener4);
}

TEST_CASE("a malformed TLV is refused") {
  SUBCASE("value runs past the header") {
    auto h = encode_proxy_v2(client4, listener4);
    add_tlv(h, 0x01, bytes({'h', '2'}));
    h[h.size() - 3] = std::byte{0x09};  // TLV length 9, only 2 bytes follow
    CHECK(parse_proxy_v2(h).what == kind::error);
  }
  SUBCASE("header ends inside a TLV header") {
    auto h = header(0x21, 0x11, std::vector<std::byte>(12 + 2));
    CHECK(parse_proxy_v2(h).what == kind::error);
  }
}

TEST_CASE("a header split anywhere asks for more until it is whole") {
  auto h = encode_proxy_v2(client6, listener6);
  add_tlv(h, 0x01, bytes({'x'}));
  for (std::size_t n = 0; n < h.size(); ++n) {
    const auto r = parse_proxy_v2(std::span(h).first(n));
    REQUIRE(r.what == kind::need_more);
    CHECK(r.header_bytes == (n < 16 ? 16 : h.size()));
  }
  parsed(h, h.size());
}

TEST_CASE("a stream without the signature is refused at the first wrong byte") {
  const std::string http = "GET / HTTP/1.1\r\n\r\n";
  std::vector<std::byte> b;
  for (char c : http) b.push_back(std::byte(c));
  CHECK(parse_proxy_v2(std::span(b).first(1)).what == kind::error);
  // The v1 text form differs at byte 0 as well; a mismatch deep in the signature is found too.
  auto h = encode_proxy_v2(client4, listener4);
  h[10] = std::byte{'X'};
  CHECK(parse_proxy_v2(std::span(h).first(10)).what == kind::need_more);
  CHECK(parse_proxy_v2(std::span(h).first(11)).what == kind::error);
}

TEST_CASE("bad version, command, family or protocol is refused") {
  CHECK(parse_proxy_v2(header(0x11, 0x11, std::vector<std::byte>(12))).what == kind::error);  // version 1
  CHECK(parse_proxy_v2(header(0x22, 0x11, std::vector<std::byte>(12))).what == kind::error);  // command 2
  CHECK(parse_proxy_v2(header(0x21, 0x41, std::vector<std::byte>(12))).what == kind::error);  // family 4
  CHECK(parse_proxy_v2(header(0x21, 0x13, std::vector<std::byte>(12))).what == kind::error);  // protocol 3
}

TEST_CASE("an address block shorter than its family needs is refused") {
  const auto r = parse_proxy_v2(header(0x21, 0x11, std::vector<std::byte>(4)));
  CHECK(r.what == kind::error);
  CHECK(r.error.find("too short") != std::string::npos);
  CHECK(parse_proxy_v2(header(0x21, 0x21, std::vector<std::byte>(12))).what == kind::error);
}

TEST_CASE("an over-long header is refused from its fixed part alone") {
  auto h = header(0x21, 0x11, {});
  h[14] = std::byte{0x10};  // 4097 bytes announced
  h[15] = std::byte{0x01};
  const auto r = parse_proxy_v2(h);
  CHECK(r.what == kind::error);
  CHECK(r.error.find("4096") != std::string::npos);
  h[15] = std::byte{0x00};  // exactly the cap: waits for it
  CHECK(parse_proxy_v2(h).what == kind::need_more);
}
