// PROXY protocol v2 encoding and parsing; see proxy_header.hpp.
#include "protocol/proxy_header.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

namespace socketmaster {

namespace {

constexpr std::array<std::uint8_t, 12> signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::uint8_t version_2 = 0x20;  // high nibble of byte 12
constexpr std::uint8_t command_local = 0x0;
constexpr std::uint8_t command_proxy = 0x1;
constexpr std::uint8_t family_unspec = 0x0;
constexpr std::uint8_t family_inet = 0x1;
constexpr std::uint8_t family_inet6 = 0x2;
constexpr std::uint8_t family_unix = 0x3;
constexpr std::uint8_t protocol_stream = 0x1;
constexpr std::uint8_t protocol_dgram = 0x2;
constexpr std::size_t inet_bytes = 12;   // 2 x 4-byte address, 2 x port
constexpr std::size_t inet6_bytes = 36;  // 2 x 16-byte address, 2 x port
constexpr std::size_t unix_bytes = 216;  // 2 x 108-byte path
constexpr std::size_t tlv_header_bytes = 3;

class writer {
 public:
  // Room for the largest header we encode (an IPv6 pair) up front: growing byte by byte cost five
  // allocations per proxied connection.
  writer() { out_.reserve(proxy_v2_fixed_bytes + inet6_bytes); }
  void u8(std::uint8_t v) { out_.push_back(std::byte{v}); }
  void u16(std::uint16_t v) {
    u8(static_cast<std::uint8_t>(v >> 8));
    u8(static_cast<std::uint8_t>(v));
  }
  template <std::size_t N>
  void raw(const std::array<unsigned char, N>& b) {
    for (auto c : b) u8(c);
  }
  std::vector<std::byte> take() { return std::move(out_); }

 private:
  std::vector<std::byte> out_;
};

void write_fixed(writer& w, std::uint8_t command, std::uint8_t family_protocol, std::uint16_t length) {
  for (auto c : signature) w.u8(c);
  w.u8(version_2 | command);
  w.u8(family_protocol);
  w.u16(length);
}

asio::ip::address_v6 as_v6(const asio::ip::address& a) {
  return a.is_v6() ? a.to_v6() : asio::ip::make_address_v6(asio::ip::v4_mapped, a.to_v4());
}

std::uint8_t u8_at(std::span<const std::byte> b, std::size_t at) { return std::to_integer<std::uint8_t>(b[at]); }

std::uint16_t be16_at(std::span<const std::byte> b, std::size_t at) {
  return static_cast<std::uint16_t>(u8_at(b, at) << 8 | u8_at(b, at + 1));
}

template <std::size_t N>
std::array<unsigned char, N> bytes_at(std::span<const std::byte> b, std::size_t at) {
  std::array<unsigned char, N> out;
  std::memcpy(out.data(), b.data() + at, N);
  return out;
}

proxy_parse_result fail(std::string why) {
  proxy_parse_result r;
  r.what = proxy_parse_result::kind::error;
  r.error = std::move(why);
  return r;
}

}  // namespace

std::vector<std::byte> encode_proxy_v2(const asio::ip::tcp::endpoint& source,
                                       const asio::ip::tcp::endpoint& destination) {
  writer w;
  const auto src = source.address();
  const auto dst = destination.address();
  if (src.is_v4() && dst.is_v4()) {
    write_fixed(w, command_proxy, family_inet << 4 | protocol_stream, inet_bytes);
    w.raw(src.to_v4().to_bytes());
    w.raw(dst.to_v4().to_bytes());
  } else {
    write_fixed(w, command_proxy, family_inet6 << 4 | protocol_stream, inet6_bytes);
    w.raw(as_v6(src).to_bytes());
    w.raw(as_v6(dst).to_bytes());
  }
  w.u16(source.port());
  w.u16(destination.port());
  return w.take();
}

std::vector<std::byte> encode_proxy_v2_local() {
  writer w;
  write_fixed(w, command_local, family_unspec << 4, 0);
  return w.take();
}

proxy_parse_result parse_proxy_v2(std::span<const std::byte> prefix) {
  const std::size_t sig_have = std::min(prefix.size(), signature.size());
  if (sig_have > 0 && std::memcmp(prefix.data(), signature.data(), sig_have) != 0) {
    return fail("the stream does not start with the PROXY protocol v2 signature");
  }
  proxy_parse_result r;
  if (prefix.size() < proxy_v2_fixed_bytes) {
    r.header_bytes = proxy_v2_fixed_bytes;
    return r;
  }
  const std::uint8_t version_command = u8_at(prefix, 12);
  if ((version_command & 0xF0) != version_2) {
    return fail("PROXY header version " + std::to_string(version_command >> 4) + " is not 2");
  }
  const std::uint8_t command = version_command & 0x0F;
  if (command != command_local && command != command_proxy) {
    return fail("PROXY header has unknown command " + std::to_string(command));
  }
  const std::uint8_t family = u8_at(prefix, 13) >> 4;
  const std::uint8_t protocol = u8_at(prefix, 13) & 0x0F;
  const std::size_t length = be16_at(prefix, 14);
  if (length > max_proxy_v2_payload_bytes) {
    return fail("PROXY header announces " + std::to_string(length) + " bytes of addresses and TLVs; at most " +
                std::to_string(max_proxy_v2_payload_bytes) + " are accepted");
  }
  const std::size_t total = proxy_v2_fixed_bytes + length;
  if (prefix.size() < total) {
    r.header_bytes = total;
    return r;
  }
  r.header_bytes = total;
  if (command == command_local) {
    // The spec: the receiver uses the real endpoints and discards the rest of the block unread.
    r.what = proxy_parse_result::kind::complete;
    r.info.local = true;
    return r;
  }

  std::size_t address_bytes = 0;
  switch (family) {
    case family_unspec: address_bytes = 0; break;
    case family_inet: address_bytes = inet_bytes; break;
    case family_inet6: address_bytes = inet6_bytes; break;
    case family_unix: address_bytes = unix_bytes; break;
    default: return fail("PROXY header has unknown address family " + std::to_string(family));
  }
  if (protocol > protocol_dgram) return fail("PROXY header has unknown transport protocol " + std::to_string(protocol));
  if (length < address_bytes) {
    return fail("PROXY header is " + std::to_string(length) + " bytes long, too short for its " +
                std::to_string(address_bytes) + "-byte address block");
  }

  const auto body = prefix.subspan(proxy_v2_fixed_bytes, length);
  for (std::size_t at = address_bytes; at < body.size();) {
    if (body.size() - at < tlv_header_bytes) return fail("PROXY header ends inside a TLV header");
    const std::size_t tlv_length = be16_at(body, at + 1);
    if (body.size() - at - tlv_header_bytes < tlv_length) return fail("a PROXY header TLV runs past the header");
    at += tlv_header_bytes + tlv_length;
  }

  r.what = proxy_parse_result::kind::complete;
  if (protocol != protocol_stream || (family != family_inet && family != family_inet6)) {
    // Not TCP over IP: the header names no endpoint we could use; fall back to the connection's.
    r.info.local = true;
    return r;
  }
  if (family == family_inet) {
    r.info.source = {asio::ip::address_v4(bytes_at<4>(body, 0)), be16_at(body, 8)};
    r.info.destination = {asio::ip::address_v4(bytes_at<4>(body, 4)), be16_at(body, 10)};
  } else {
    r.info.source = {asio::ip::address_v6(bytes_at<16>(body, 0)), be16_at(body, 32)};
    r.info.destination = {asio::ip::address_v6(bytes_at<16>(body, 16)), be16_at(body, 34)};
  }
  return r;
}

}  // namespace socketmaster
