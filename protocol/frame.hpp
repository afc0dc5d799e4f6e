// The yamux frame header as a plain value type, and a sans-I/O reader that splits a byte stream into
// headers and payload chunks. Nothing here touches a socket, so it is unit-tested and fuzzed directly.
// Wire format (hashicorp/yamux spec.md): version(1) type(1) flags(2) stream id(4) length(4), big endian.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

namespace socketmaster::yamux {

inline constexpr std::uint8_t protocol_version = 0;
inline constexpr std::size_t header_size = 12;
// Every stream starts with this receive window in each direction (spec.md, "Flow Control").
inline constexpr std::uint32_t initial_stream_window = 256 * 1024;

// ring_data is ours, not yamux's: a Data frame whose payload lies in the session's shared ring
// (shared_ring.hpp) instead of following the header. Only a session that negotiated a ring in the
// handshake sends or accepts it; hashicorp/yamux peers never see it.
enum class frame_type : std::uint8_t { data = 0, window_update = 1, ping = 2, go_away = 3, ring_data = 0x80 };

namespace flags {
inline constexpr std::uint16_t syn = 1;
inline constexpr std::uint16_t ack = 2;
inline constexpr std::uint16_t fin = 4;
inline constexpr std::uint16_t rst = 8;
}  // namespace flags

// The code carried in the length field of a GoAway frame.
enum class go_away_code : std::uint32_t { normal = 0, protocol_error = 1, internal_error = 2 };

static_assert(static_cast<int>(frame_type::data) == 0 && static_cast<int>(frame_type::window_update) == 1 &&
              static_cast<int>(frame_type::ping) == 2 && static_cast<int>(frame_type::go_away) == 3);
static_assert(flags::syn == 0x1 && flags::ack == 0x2 && flags::fin == 0x4 && flags::rst == 0x8);
static_assert(header_size == 1 + 1 + 2 + 4 + 4);

struct frame_header {
  std::uint8_t version = protocol_version;
  frame_type type = frame_type::data;
  std::uint16_t flags = 0;
  std::uint32_t stream_id = 0;
  // Payload length for Data and RingData, window delta for WindowUpdate, opaque value for Ping, code for GoAway.
  std::uint32_t length = 0;

  bool has(std::uint16_t f) const { return (flags & f) == f; }
  friend bool operator==(const frame_header&, const frame_header&) = default;
};

using header_bytes = std::array<std::byte, header_size>;

header_bytes encode(const frame_header& h);
void encode_into(const frame_header& h, std::span<std::byte, header_size> out);
// Decodes the first 12 bytes without validating version or type; `in` must hold at least 12 bytes.
frame_header decode(std::span<const std::byte, header_size> in);

// Splits incoming bytes into frames. Data payloads are returned in chunks as they arrive, so a reader
// never has to buffer a whole frame: memory stays bounded by the caller's read buffer.
class frame_reader {
 public:
  enum class kind {
    need_more,  // not enough bytes for the next header; call again with more
    header,     // `header` is valid; for Data, `header.length` payload bytes follow as payload events
    payload,    // `data` is the next part of the current Data frame's payload for `header.stream_id`
    error       // `error` says why; the stream of bytes cannot be trusted any more
  };
  struct event {
    kind what = kind::need_more;
    frame_header header{};
    std::span<const std::byte> data{};
    std::error_code error{};
  };

  // Consumes a prefix of `in` (reported in `consumed`) and returns what it found.
  event next(std::span<const std::byte> in, std::size_t& consumed);

  // Accept RingData frames (a header with no payload on the transport); else they are an error.
  void accept_ring_frames() { ring_frames_ = true; }

  // Payload bytes of the current Data frame that have not been returned yet.
  std::uint32_t payload_remaining() const { return payload_remaining_; }

 private:
  frame_header current_{};
  std::uint32_t payload_remaining_ = 0;
  bool failed_ = false;
  bool ring_frames_ = false;
};

}  // namespace socketmaster::yamux
