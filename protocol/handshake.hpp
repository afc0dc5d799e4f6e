// The handshake that opens every control connection (schema: protocol/socketmaster.capnp), as plain
// C++ values, so neither the master nor the SDK touches Cap'n Proto builders or readers; this header
// includes no Cap'n Proto header.
//
// Sans-I/O, in three steps: a reader calls message_size() on the bytes it has until it knows how long
// the one message is, reads exactly that many bytes (the connection carries yamux right after it, so
// it must not read ahead), then decodes them from memory with decode_request() / decode_response().
// Everything here is a pure function of its arguments: safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

namespace socketmaster {

// The request version this code speaks (HandshakeRequest.version).
inline constexpr std::uint32_t handshake_version = 1;

// The largest handshake message decode_request() / decode_response() accept, and the ceiling
// callers normally pass to message_size().
inline constexpr std::size_t max_handshake_bytes = std::size_t{1} << 20;

// Cap'n Proto's reader refuses 512 segments or more; message_size() refuses them up front.
inline constexpr std::size_t max_handshake_segments = 511;

// Longest accepted text fields, in bytes. The decoders reject anything longer as malformed.
inline constexpr std::size_t max_token_bytes = 1024;
inline constexpr std::size_t max_address_bytes = 255;         // an IP literal (the master takes no host names)
inline constexpr std::size_t max_domain_suffix_bytes = 253;   // a DNS name
inline constexpr std::size_t max_path_prefix_bytes = 4096;
inline constexpr std::size_t max_pem_bytes = 256 * 1024;      // each of chain and key
inline constexpr std::size_t max_message_text_bytes = 4096;   // Rejected.message

struct http_route {
  std::string domain_suffix;  // empty = any host
  std::string path_prefix;    // empty = any path
  friend bool operator==(const http_route&, const http_route&) = default;
};

struct tls_certificate {
  std::string certificate_chain_pem;
  std::string private_key_pem;  // a secret: never log it
  friend bool operator==(const tls_certificate&, const tls_certificate&) = default;
};

struct socket_definition {
  std::string address;                 // empty = all interfaces
  std::uint16_t port = 0;              // 0 = the master picks a free port
  std::optional<http_route> http;      // unset = raw TCP
  std::optional<tls_certificate> tls;  // unset = the master does not terminate TLS
  bool proxy_protocol = false;         // every stream starts with a PROXY v2 header
  friend bool operator==(const socket_definition&, const socket_definition&) = default;
};

struct handshake_request {
  std::uint32_t version = handshake_version;
  std::string token;  // a secret: never log it
  socket_definition socket;
  bool shared_ring = false;  // a ring's memfd travels with the request (socketmaster.capnp)
  friend bool operator==(const handshake_request&, const handshake_request&) = default;
};

// Mirrors Rejected.Code, value for value.
enum class rejection_code {
  bad_request,
  unsupported_version,
  unauthorized,
  bind_failed,
  conflict,
  bad_certificate,
  internal,
};

// The schema's name for the code, e.g. "unsupportedVersion"; "unknown" for an out-of-range value.
const char* to_string(rejection_code code) noexcept;

struct handshake_accepted {
  std::uint64_t registration_id = 0;
  std::string bound_address;
  bool shared_ring = false;  // the master reads the service's ring
  friend bool operator==(const handshake_accepted&, const handshake_accepted&) = default;
};

struct handshake_rejected {
  rejection_code code = rejection_code::internal;
  std::string message;  // a sentence a person can act on
  friend bool operator==(const handshake_rejected&, const handshake_rejected&) = default;
};

using handshake_response = std::variant<handshake_accepted, handshake_rejected>;

// One whole message in the standard unpacked stream framing (segment table + segments).
std::vector<std::byte> encode(const handshake_request& request);
std::vector<std::byte> encode(const handshake_response& response);

// How long the message that starts at `prefix` is, from its segment table alone.
//  need_more: call again once `need_at_least` bytes (in all) are buffered; the message is at least
//             that long, so reading up to that total never reaches past it into the yamux bytes.
//  complete:  the message is exactly `total_bytes` long (<= max_message_bytes, a multiple of 8).
//             Known as soon as the last segment size is there; the body need not have arrived.
//  error:     the table is impossible, has more than max_handshake_segments segments, or announces
//             more than max_message_bytes; said as soon as the bytes that prove it are there, so an
//             oversized message is refused without waiting for its body. `error` says why.
struct message_size_result {
  enum class kind { need_more, complete, error } what = kind::need_more;
  std::size_t total_bytes = 0;
  std::size_t need_at_least = 0;
  std::string error;
};
message_size_result message_size(std::span<const std::byte> prefix, std::size_t max_message_bytes);

// The outcome of a decode: `error` is empty on success; otherwise errc::bad_handshake or
// errc::handshake_too_large, and `detail` is a sentence for a person (fit for Rejected.message).
struct decode_result {
  std::error_code error;
  std::string detail;
  bool ok() const noexcept { return !error; }
};

// Decode exactly one whole message (as measured by message_size(), at most max_handshake_bytes) into
// `out`. Never throws for any input; `out` is only written on success. Validation: version present
// (non-zero; whether it is supported is the master's decision), socket present, no text field
// longer than its max_*_bytes limit or containing a NUL byte. An unset `http` / `tls` decodes as
// std::nullopt. A rejection code newer than this build decodes as rejection_code::internal.
decode_result decode_request(std::span<const std::byte> whole_message, handshake_request& out);
decode_result decode_response(std::span<const std::byte> whole_message, handshake_response& out);

// The same-host socket: a master whose control port is a loopback TCP address also takes services
// on an abstract Unix socket (Linux; no file, scoped like loopback to the network namespace) named
// after that address, and the SDK tries it first for a loopback master address. The same handshake
// and yamux follow; only TCP is gone from the hop, which halves a bulk body's cost in the service
// (issue 6). `bound` is the control address as the master reports it: "127.0.0.1:9999",
// "[::1]:9999". The name starts with a NUL byte (the abstract namespace).
std::string same_host_socket_name(std::string_view bound);
// The shared token from a token file (--token-file of the master and the sidecar): its first line,
// without trailing spaces or CR. Throws std::runtime_error with a sentence to print when the file
// cannot be read or that line is empty: an empty token means "no token", and a master started with
// a token file it cannot use must not quietly accept every service instead.
std::string read_token_file(const std::string& path);
// The largest send buffer either side asks of the kernel for a Unix control connection.
inline constexpr std::size_t max_unix_send_buffer = std::size_t{1} << 30;

}  // namespace socketmaster
