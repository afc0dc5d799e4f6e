// The handshake codec without sockets: round trips of every field, message_size() over partial and
// multi-segment tables, hostile inputs (garbage, truncation, pointer tricks, oversize) and interop
// with the reference `capnp` tool, which is what clients in other languages (and the Go peer) use.
#include "protocol/handshake.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/errors.hpp"

using namespace socketmaster;
using kind = message_size_result::kind;

namespace {

void put_le32(std::vector<std::byte>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(std::byte(v >> (8 * i)));
}

void put_le64(std::vector<std::byte>& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(std::byte(v >> (8 * i)));
}

// A segment table announcing segments of the given sizes in words (no body).
std::vector<std::byte> table(std::initializer_list<std::uint32_t> sizes) {
  std::vector<std::byte> out;
  put_le32(out, static_cast<std::uint32_t>(sizes.size() - 1));
  for (auto s : sizes) put_le32(out, s);
  if (out.size() % 8 != 0) put_le32(out, 0);
  return out;
}

// Hand-made single-segment messages, for inputs an honest encoder never produces.
std::uint64_t struct_pointer(std::int32_t offset, std::uint16_t data_words, std::uint16_t pointers) {
  return std::uint64_t{static_cast<std::uint32_t>(offset) << 2} | std::uint64_t{data_words} << 32 |
         std::uint64_t{pointers} << 48;
}

std::uint64_t text_pointer(std::int32_t offset, std::uint32_t bytes_with_nul) {
  constexpr std::uint64_t byte_elements = 2;
  return 1 | std::uint64_t{static_cast<std::uint32_t>(offset) << 2} | byte_elements << 32 |
         std::uint64_t{bytes_with_nul} << 35;
}

std::vector<std::byte> message(const std::vector<std::uint64_t>& words) {
  auto out = table({static_cast<std::uint32_t>(words.size())});
  for (auto w : words) put_le64(out, w);
  return out;
}

// Runs the capnp tool (found at configure time) with `input` on stdin; returns its stdout.
std::vector<std::byte> run_capnp(const std::string& args, std::string_view input) {
  auto path = (std::filesystem::temp_directory_path() / "handshake_test_XXXXXX").string();
  const int fd = ::mkstemp(path.data());
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, input.data(), input.size()) == static_cast<ssize_t>(input.size()));
  ::close(fd);
  const std::string command = std::string(SOCKETMASTER_CAPNP_EXECUTABLE) + " " + args + " < " + path;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::vector<std::byte> out;
  std::byte buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.insert(out.end(), buf, buf + n);
  const int status = ::pclose(pipe);
  std::filesystem::remove(path);
  INFO("command: ", command);
  REQUIRE(status == 0);
  return out;
}

std::vector<std::byte> capnp_encode(std::string_view type, std::string_view text, std::string_view options = "") {
  return run_capnp("encode " + std::string(options) + " " + SOCKETMASTER_SCHEMA_PATH + " " + std::string(type), text);
}

std::string capnp_decode(std::string_view type, const std::vector<std::byte>& binary) {
  const auto out = run_capnp("decode --short " + std::string(SOCKETMASTER_SCHEMA_PATH) + " " + std::string(type),
                             std::string_view(reinterpret_cast<const char*>(binary.data()), binary.size()));
  return std::string(reinterpret_cast<const char*>(out.data()), out.size());
}

handshake_request full_request() {
  handshake_request r;
  r.version = 1;
  r.token = "s3cret";
  r.socket.address = "127.0.0.1";
  r.socket.port = 8443;
  r.socket.http = http_route{"example.com", "/api"};
  r.socket.tls = tls_certificate{"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                                 "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n"};
  r.socket.proxy_protocol = true;
  r.shared_ring = true;
  return r;
}

handshake_request decoded_request(const std::vector<std::byte>& b) {
  handshake_request out;
  const auto r = decode_request(b, out);
  INFO(r.detail);
  REQUIRE(r.ok());
  return out;
}

decode_result request_error(const std::vector<std::byte>& b) {
  handshake_request out;
  auto r = decode_request(b, out);
  CHECK_FALSE(r.ok());
  CHECK_FALSE(r.detail.empty());
  return r;
}

}  // namespace

TEST_CASE("a request with every field set round-trips") {
  const auto in = full_request();
  CHECK(decoded_request(encode(in)) == in);
}

TEST_CASE("a minimal request round-trips with http and tls unset") {
  handshake_request in;
  in.socket.port = 0;
  const auto out = decoded_request(encode(in));
  CHECK(out == in);
  CHECK(out.version == handshake_version);
  CHECK_FALSE(out.socket.http.has_value());
  CHECK_FALSE(out.socket.tls.has_value());
  CHECK_FALSE(out.socket.proxy_protocol);
}

TEST_CASE("an http route with empty fields is still an http route") {
  handshake_request in;
  in.socket.http = http_route{};
  in.socket.tls = tls_certificate{};
  const auto out = decoded_request(encode(in));
  REQUIRE(out.socket.http.has_value());
  CHECK(out.socket.http->domain_suffix.empty());
  CHECK(out.socket.tls.has_value());
}

TEST_CASE("every port and the proxy flag survive the round trip") {
  for (std::uint32_t port : {0u, 1u, 80u, 65535u}) {
    handshake_request in;
    in.socket.port = static_cast<std::uint16_t>(port);
    in.socket.proxy_protocol = port % 2 == 1;
    CHECK(decoded_request(encode(in)) == in);
  }
}

TEST_CASE("an accepted response round-trips, with and without the shared ring") {
  for (const bool ring : {false, true}) {
    const handshake_response in = handshake_accepted{0xFEDCBA9876543210, "[::]:8000", ring};
    handshake_response out;
    REQUIRE(decode_response(encode(in), out).ok());
    CHECK(out == in);
  }
}

TEST_CASE("a rejected response round-trips with every code") {
  for (int c = 0; c <= static_cast<int>(rejection_code::internal); ++c) {
    const handshake_response in = handshake_rejected{static_cast<rejection_code>(c), "try another port"};
    handshake_response out;
    REQUIRE(decode_response(encode(in), out).ok());
    CHECK(out == in);
  }
}

TEST_CASE("rejection codes are named as in the schema") {
  CHECK(std::string(to_string(rejection_code::bad_request)) == "badRequest");
  CHECK(std::string(to_string(rejection_code::unsupported_version)) == "unsupportedVersion");
  CHECK(std::string(to_string(rejection_code::bad_certificate)) == "badCertificate");
  CHECK(std::string(to_string(static_cast<rejection_code>(42))) == "unknown");
}

TEST_CASE("an encoded message is one unpacked segment with a table") {
  const auto b = encode(full_request());
  REQUIRE(b.size() >= 16);
  CHECK(b.size() % 8 == 0);
  CHECK(b[0] == std::byte{0});  // one segment
  const auto words = std::uint32_t(b[4]) | std::uint32_t(b[5]) << 8 | std::uint32_t(b[6]) << 16;
  CHECK(8 + words * 8 == b.size());
}

TEST_CASE("message_size asks for more byte by byte, then knows the exact size") {
  const auto b = encode(full_request());
  for (std::size_t n = 0; n < b.size(); ++n) {
    const auto r = message_size(std::span(b).first(n), max_handshake_bytes);
    if (n < 4) {
      CHECK(r.what == kind::need_more);
      CHECK(r.need_at_least == 4);
    } else if (n < 8) {
      CHECK(r.what == kind::need_more);
      CHECK(r.need_at_least == 8);
    } else {
      REQUIRE(r.what == kind::complete);
      CHECK(r.total_bytes == b.size());
    }
  }
}

TEST_CASE("message_size ignores the yamux bytes that follow the message") {
  auto b = encode(full_request());
  const auto size = b.size();
  b.insert(b.end(), 100, std::byte{0xFF});
  const auto r = message_size(b, max_handshake_bytes);
  REQUIRE(r.what == kind::complete);
  CHECK(r.total_bytes == size);
}

TEST_CASE("message_size reads a multi-segment table with its padding") {
  // Three segments: 4 + 3 * 4 = 16 bytes of table, no padding; two: 12 bytes padded to 16; four:
  // 20 padded to 24. The size is known once the last segment size is there, before the padding.
  for (const auto& [t, table_bytes, total] :
       {std::tuple{table({1, 2, 3}), std::size_t{16}, std::size_t{16 + 48}},
        std::tuple{table({5, 1}), std::size_t{16}, std::size_t{16 + 48}},
        std::tuple{table({1, 1, 1, 1}), std::size_t{24}, std::size_t{24 + 32}}}) {
    CHECK(t.size() == table_bytes);
    const std::size_t sizes_known = 4 + 4 * (std::to_integer<std::size_t>(t[0]) + 1);
    for (std::size_t n = 0; n <= t.size(); ++n) {
      const auto r = message_size(std::span(t).first(n), max_handshake_bytes);
      if (n < 4) {
        CHECK(r.need_at_least == 4);
      } else if (n < sizes_known) {
        CHECK(r.what == kind::need_more);
        CHECK(r.need_at_least == table_bytes);
      } else {
        REQUIRE(r.what == kind::complete);
        CHECK(r.total_bytes == total);
      }
    }
  }
}

TEST_CASE("message_size refuses an oversized message before its body arrives") {
  SUBCASE("one huge segment, known from the first 8 bytes") {
    const auto t = table({(1u << 20) / 8});  // the table's 8 bytes push it just over 1 MiB
    const auto r = message_size(t, max_handshake_bytes);
    CHECK(r.what == kind::error);
    CHECK(r.error.find("at most 1048576") != std::string::npos);
  }
  SUBCASE("a later segment pushes it over, before the table is complete") {
    const auto t = table({1, 0xFFFFFFFF, 1});
    const auto r = message_size(std::span(t).first(12), max_handshake_bytes);
    CHECK(r.what == kind::error);
  }
  SUBCASE("the caller's limit applies, not a built-in one") {
    const auto b = encode(full_request());
    CHECK(message_size(b, b.size()).what == kind::complete);
    CHECK(message_size(b, b.size() - 8).what == kind::error);
  }
}

TEST_CASE("message_size refuses a silly segment count from the first word") {
  for (std::uint32_t count_minus_one : {511u, 1000u, 0xFFFFFFFFu}) {
    std::vector<std::byte> b;
    put_le32(b, count_minus_one);
    const auto r = message_size(b, max_handshake_bytes);
    CHECK(r.what == kind::error);
    CHECK(r.error.find("segments") != std::string::npos);
  }
  std::vector<std::byte> b;
  put_le32(b, 510);  // 511 segments: allowed, the table is still coming
  CHECK(message_size(b, max_handshake_bytes).what == kind::need_more);
}

TEST_CASE("decoding refuses truncated messages and trailing bytes") {
  const auto b = encode(full_request());
  for (std::size_t n = 0; n < b.size(); ++n) {
    handshake_request out;
    const auto r = decode_request(std::span(b).first(n), out);
    CHECK(r.error == errc::bad_handshake);
  }
  auto longer = b;
  longer.push_back(std::byte{0});
  CHECK(request_error(longer).error == errc::bad_handshake);
}

TEST_CASE("decoding refuses a message over the handshake limit as too large") {
  const auto t = table({(1u << 20) / 8});
  CHECK(request_error(t).error == errc::handshake_too_large);
}

TEST_CASE("decoding survives garbage without throwing") {
  std::uint64_t state = 0x9E3779B97F4A7C15;
  const auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const auto valid = encode(full_request());
  for (int i = 0; i < 2000; ++i) {
    // Half pure noise behind a plausible table, half a valid message with a few bytes flipped.
    std::vector<std::byte> b;
    if (i % 2 == 0) {
      const std::uint32_t words = next() % 64;
      b = table({words});
      for (std::uint32_t w = 0; w < words; ++w) put_le64(b, next());
    } else {
      b = valid;
      for (int k = 0; k < 3; ++k) b[8 + next() % (b.size() - 8)] = std::byte(next());
    }
    handshake_request req;
    handshake_response resp;
    const auto a = decode_request(b, req);
    const auto c = decode_response(b, resp);
    CHECK((a.ok() || a.error == errc::bad_handshake));
    CHECK((c.ok() || c.error == errc::bad_handshake));
  }
}

TEST_CASE("decoding reads from a buffer that is not word-aligned") {
  const auto b = encode(full_request());
  std::vector<std::byte> shifted(b.size() + 1);
  std::memcpy(shifted.data() + 1, b.data(), b.size());
  handshake_request out;
  REQUIRE(decode_request(std::span(shifted).subspan(1), out).ok());
  CHECK(out == full_request());
}

TEST_CASE("a request without a version or a socket is malformed") {
  auto no_version = full_request();
  no_version.version = 0;
  CHECK(request_error(encode(no_version)).detail.find("version") != std::string::npos);
  // version 1, token null, socket null
  const auto no_socket = message({struct_pointer(0, 1, 2), 1, 0, 0});
  CHECK(request_error(no_socket).detail.find("socket") != std::string::npos);
}

TEST_CASE("a newer version decodes: whether it is supported is the master's call") {
  auto in = full_request();
  in.version = 7;
  CHECK(decoded_request(encode(in)).version == 7);
}

TEST_CASE("over-long and NUL-carrying text fields are refused") {
  SUBCASE("token") {
    auto in = full_request();
    in.token.assign(max_token_bytes + 1, 'x');
    CHECK(request_error(encode(in)).detail.find("token") != std::string::npos);
    in.token.assign(max_token_bytes, 'x');
    CHECK(decoded_request(encode(in)) == in);
  }
  SUBCASE("address") {
    auto in = full_request();
    in.socket.address.assign(max_address_bytes + 1, 'a');
    CHECK(request_error(encode(in)).detail.find("socket.address") != std::string::npos);
  }
  SUBCASE("path prefix") {
    auto in = full_request();
    in.socket.http->path_prefix.assign(max_path_prefix_bytes + 1, '/');
    CHECK(request_error(encode(in)).detail.find("pathPrefix") != std::string::npos);
  }
  SUBCASE("private key") {
    auto in = full_request();
    in.socket.tls->private_key_pem.assign(max_pem_bytes + 1, 'k');
    CHECK(request_error(encode(in)).detail.find("privateKeyPem") != std::string::npos);
  }
  SUBCASE("NUL inside a token") {
    auto in = full_request();
    in.token = std::string("ab\0cd", 5);
    CHECK(request_error(encode(in)).detail.find("NUL") != std::string::npos);
  }
  SUBCASE("rejection message") {
    handshake_response out;
    const auto r = decode_response(encode(handshake_rejected{rejection_code::conflict,
                                                             std::string(max_message_text_bytes + 1, 'm')}),
                                   out);
    CHECK(r.error == errc::bad_handshake);
  }
}

TEST_CASE("an out-of-bounds pointer is a clean error") {
  // The socket pointer claims a struct 1000 words past the end of the segment.
  const auto b = message({struct_pointer(0, 1, 2), 1, 0, struct_pointer(1000, 1, 3)});
  CHECK(request_error(b).detail.find("Cap'n Proto") != std::string::npos);
}

TEST_CASE("a pointer cycle is a clean error") {
  // The socket pointer (word 3) points back at the request struct (word 1), and reading it as a
  // socket follows the same pointer again as its http route.
  const auto b = message({struct_pointer(0, 1, 2), 1, 0, struct_pointer(-3, 1, 2)});
  CHECK(request_error(b).error == errc::bad_handshake);
}

TEST_CASE("two fields sharing one large text exceed the traversal budget") {
  // Both PEM pointers name the same 10 KiB text: an amplification a reader must not pay for twice.
  constexpr std::uint32_t text_bytes = 10 * 1024;
  std::vector<std::uint64_t> w = {
      struct_pointer(0, 1, 2),   // 0: root -> request at 1
      1,                         // 1: version
      0,                         // 2: token: null
      struct_pointer(0, 1, 3),   // 3: socket -> 4
      0,                         // 4: port, proxyProtocol
      0,                         // 5: address: null
      0,                         // 6: http: null
      struct_pointer(0, 0, 2),   // 7: tls -> 8
      text_pointer(1, text_bytes),  // 8: certificateChainPem -> 10
      text_pointer(0, text_bytes),  // 9: privateKeyPem -> 10
  };
  w.resize(w.size() + text_bytes / 8, 0x4141414141414141);
  w.back() = 0x0041414141414141;  // the text's last byte is its NUL
  const auto shared = message(w);
  CHECK(request_error(shared).detail.find("traversal limit") != std::string::npos);

  // The same layout with the key pointer null decodes: the budget is only too small for tricks.
  w[9] = 0;
  const auto honest = decoded_request(message(w));
  REQUIRE(honest.socket.tls.has_value());
  CHECK(honest.socket.tls->certificate_chain_pem.size() == text_bytes - 1);
}

TEST_CASE("a response with an unknown union member is malformed") {
  auto b = encode(handshake_response{handshake_accepted{1, "x"}});
  // Word 1 (after the 8-byte table) is the root pointer; word 2 is the root's data: the union tag.
  b[16] = std::byte{9};
  handshake_response out;
  CHECK(decode_response(b, out).error == errc::bad_handshake);
}

TEST_CASE("a rejection code newer than this build reads as internal") {
  auto b = encode(handshake_response{handshake_rejected{rejection_code::conflict, "taken"}});
  // Words after the table: root pointer (0), response data (1), response pointer (2), then the
  // Rejected struct's data word (3), whose first u16 is the code.
  handshake_response out;
  const std::size_t code_at = 8 + 3 * 8;
  REQUIRE(b[code_at] == std::byte{static_cast<unsigned char>(rejection_code::conflict)});
  b[code_at] = std::byte{200};
  REQUIRE(decode_response(b, out).ok());
  CHECK(std::get<handshake_rejected>(out).code == rejection_code::internal);
  CHECK(std::get<handshake_rejected>(out).message == "taken");
}

TEST_CASE("a request encoded from text by the capnp tool decodes") {
  const auto b = capnp_encode("HandshakeRequest",
                              R"((version = 1, token = "", socket = (port = 8000, http = (pathPrefix = "/a"))))");
  const auto size = message_size(b, max_handshake_bytes);
  REQUIRE(size.what == kind::complete);
  CHECK(size.total_bytes == b.size());
  const auto r = decoded_request(b);
  CHECK(r.version == 1);
  CHECK(r.token.empty());
  CHECK(r.socket.address.empty());
  CHECK(r.socket.port == 8000);
  REQUIRE(r.socket.http.has_value());
  CHECK(r.socket.http->domain_suffix.empty());
  CHECK(r.socket.http->path_prefix == "/a");
  CHECK_FALSE(r.socket.tls.has_value());
  CHECK_FALSE(r.socket.proxy_protocol);
}

TEST_CASE("a multi-segment request from the capnp tool decodes") {
  const auto b = capnp_encode("HandshakeRequest",
                              R"((version = 1, token = "t", socket = (address = "::1", port = 9,
                                  http = (domainSuffix = "example.org", pathPrefix = "/x"),
                                  tls = (certificateChainPem = "C", privateKeyPem = "K"), proxyProtocol = true)))",
                              "--segment-size=1");
  REQUIRE(b.size() >= 4);
  CHECK(b[0] != std::byte{0});  // more than one segment
  const auto size = message_size(b, max_handshake_bytes);
  REQUIRE(size.what == kind::complete);
  CHECK(size.total_bytes == b.size());
  handshake_request want;
  want.token = "t";
  want.socket = {"::1", 9, http_route{"example.org", "/x"}, tls_certificate{"C", "K"}, true};
  CHECK(decoded_request(b) == want);
}

TEST_CASE("the capnp tool reads what we encode") {
  const auto request = capnp_decode("HandshakeRequest", encode(full_request()));
  CHECK(request.find("port = 8443") != std::string::npos);
  CHECK(request.find(R"(pathPrefix = "/api")") != std::string::npos);
  CHECK(request.find("proxyProtocol = true") != std::string::npos);
  CHECK(request.find("sharedRing = true") != std::string::npos);
  const auto accepted = capnp_decode("HandshakeResponse", encode(handshake_response{handshake_accepted{42, "0.0.0.0:1", true}}));
  CHECK(accepted.find("accepted = (registrationId = 42") != std::string::npos);
  CHECK(accepted.find("sharedRing = true") != std::string::npos);
  const auto rejected = capnp_decode(
      "HandshakeResponse", encode(handshake_response{handshake_rejected{rejection_code::bind_failed, "in use"}}));
  CHECK(rejected.find("code = bindFailed") != std::string::npos);
}

TEST_CASE("responses encoded from text by the capnp tool decode") {
  handshake_response out;
  REQUIRE(decode_response(capnp_encode("HandshakeResponse", R"((rejected = (code = unauthorized, message = "bad token")))"), out)
              .ok());
  CHECK(out == handshake_response{handshake_rejected{rejection_code::unauthorized, "bad token"}});
  REQUIRE(decode_response(capnp_encode("HandshakeResponse", "(accepted = (registrationId = 5))"), out).ok());
  CHECK(out == handshake_response{handshake_accepted{5, ""}});
  // An older master's answer has no sharedRing: the service sends no RingData frames.
  CHECK_FALSE(std::get<handshake_accepted>(out).shared_ring);
  REQUIRE(decode_response(capnp_encode("HandshakeResponse", "(accepted = (registrationId = 6, sharedRing = true))"), out).ok());
  CHECK(out == handshake_response{handshake_accepted{6, "", true}});
}

TEST_CASE("read_token_file: the first line without trailing spaces or CR; an empty, missing or oversized token is an error") {
  const auto dir = std::filesystem::temp_directory_path() / ("handshake_test." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
    return (dir / name).string();
  };
  CHECK(read_token_file(write("crlf", "s3cret \r\nnext line\n")) == "s3cret");
  CHECK(read_token_file(write("bare", "s3cret")) == "s3cret");
  CHECK(read_token_file(write("longest", std::string(max_token_bytes, 't'))).size() == max_token_bytes);
  CHECK_THROWS_WITH_AS(read_token_file(write("empty", "")), doctest::Contains("holds no token"), std::runtime_error);
  CHECK_THROWS_WITH_AS(read_token_file(write("newline", "\n")), doctest::Contains("holds no token"), std::runtime_error);
  CHECK_THROWS_WITH_AS(read_token_file(write("blank", " \r\n")), doctest::Contains("holds no token"), std::runtime_error);
  CHECK_THROWS_WITH_AS(read_token_file(write("long", std::string(max_token_bytes + 1, 't'))),
                       doctest::Contains("longer than 1024 bytes"), std::runtime_error);
  CHECK_THROWS_WITH_AS(read_token_file((dir / "missing").string()), doctest::Contains("cannot read"), std::runtime_error);
  std::filesystem::remove_all(dir);
}
