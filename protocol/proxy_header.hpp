// The PROXY protocol v2 header (haproxy's proxy-protocol.txt, section 2.2) that a stream to a
// service starts with when its socket definition asks for one: it tells the service who the public
// client was, since the service itself only ever sees yamux streams. Sans-I/O: both functions work on
// bytes in memory, are pure and are safe from any thread.
#pragma once

#include <asio/ip/tcp.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace socketmaster {

// The 12-byte signature, version/command, family/protocol and 16-bit length.
inline constexpr std::size_t proxy_v2_fixed_bytes = 16;
// The most address and TLV bytes parse_proxy_v2() accepts after the fixed part. The spec allows up
// to 65535; real senders stay far below this, and a cap bounds what a reader has to buffer.
inline constexpr std::size_t max_proxy_v2_payload_bytes = 4096;

// A PROXY command for a TCP connection from `source` (the public client) to `destination` (the
// address it connected to), with no TLVs. Two IPv4 endpoints give a TCP4 header, two IPv6 endpoints
// a TCP6 header; a mixed pair is sent as TCP6 with the IPv4 endpoint written as its IPv4-mapped IPv6
// address (::ffff:a.b.c.d), so no information is lost and the header stays a single family.
std::vector<std::byte> encode_proxy_v2(const asio::ip::tcp::endpoint& source,
                                       const asio::ip::tcp::endpoint& destination);

// A LOCAL command (no address block): the connection was made by the proxy itself, e.g. a health
// check, and the receiver should use the real connection's endpoints.
std::vector<std::byte> encode_proxy_v2_local();

struct proxy_info {
  asio::ip::tcp::endpoint source, destination;
  // No client addresses are carried: a LOCAL command, or a PROXY command whose family/protocol is
  // not TCP over IPv4/IPv6 (AF_UNSPEC, AF_UNIX, or UDP). `source` and `destination` are then
  // default-constructed and the receiver should use the connection's own endpoints.
  bool local = false;
};

// Parses the header at the start of `prefix`.
//  need_more: the header is incomplete; `header_bytes` is how many bytes (in all) the next call
//             needs to make progress. The header is at least that long, so reading up to that total
//             never consumes the stream's payload.
//  complete:  the header is `header_bytes` long (the payload starts right after it); `info` is set.
//             TLVs are checked for framing and otherwise skipped.
//  error:     not a PROXY v2 header, or a malformed one; `error` says why. A wrong signature is
//             reported as soon as the first differing byte arrives.
struct proxy_parse_result {
  enum class kind { need_more, complete, error } what = kind::need_more;
  std::size_t header_bytes = 0;
  proxy_info info;
  std::string error;
};
proxy_parse_result parse_proxy_v2(std::span<const std::byte> prefix);

}  // namespace socketmaster
