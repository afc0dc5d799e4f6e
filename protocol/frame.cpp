// Encoding and incremental decoding of yamux frames; see frame.hpp.
#include "frame.hpp"

#include <algorithm>

#include "errors.hpp"

namespace socketmaster::yamux {

namespace {
void put16(std::byte* p, std::uint16_t v) {
  p[0] = std::byte(v >> 8);
  p[1] = std::byte(v);
}
void put32(std::byte* p, std::uint32_t v) {
  p[0] = std::byte(v >> 24);
  p[1] = std::byte(v >> 16);
  p[2] = std::byte(v >> 8);
  p[3] = std::byte(v);
}
std::uint16_t get16(const std::byte* p) {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(p[0]) << 8) | std::to_integer<unsigned>(p[1]));
}
std::uint32_t get32(const std::byte* p) {
  return (std::to_integer<std::uint32_t>(p[0]) << 24) | (std::to_integer<std::uint32_t>(p[1]) << 16) |
         (std::to_integer<std::uint32_t>(p[2]) << 8) | std::to_integer<std::uint32_t>(p[3]);
}
}  // namespace

void encode_into(const frame_header& h, std::span<std::byte, header_size> out) {
  out[0] = std::byte(h.version);
  out[1] = std::byte(static_cast<std::uint8_t>(h.type));
  put16(&out[2], h.flags);
  put32(&out[4], h.stream_id);
  put32(&out[8], h.length);
}

header_bytes encode(const frame_header& h) {
  header_bytes out;
  encode_into(h, out);
  return out;
}

frame_header decode(std::span<const std::byte, header_size> in) {
  frame_header h;
  h.version = std::to_integer<std::uint8_t>(in[0]);
  h.type = static_cast<frame_type>(std::to_integer<std::uint8_t>(in[1]));
  h.flags = get16(&in[2]);
  h.stream_id = get32(&in[4]);
  h.length = get32(&in[8]);
  return h;
}

frame_reader::event frame_reader::next(std::span<const std::byte> in, std::size_t& consumed) {
  consumed = 0;
  event ev;
  if (failed_) {
    ev.what = kind::error;
    ev.error = make_error_code(errc::protocol_error);
    return ev;
  }
  if (payload_remaining_ > 0) {
    if (in.empty()) return ev;
    const std::size_t n = std::min<std::size_t>(payload_remaining_, in.size());
    payload_remaining_ -= static_cast<std::uint32_t>(n);
    consumed = n;
    ev.what = kind::payload;
    ev.header = current_;
    ev.data = in.first(n);
    return ev;
  }
  if (in.size() < header_size) return ev;
  const frame_header h = decode(in.first<header_size>());
  if (h.version != protocol_version) {
    failed_ = true;
    ev.what = kind::error;
    ev.error = make_error_code(errc::invalid_version);
    return ev;
  }
  if (static_cast<std::uint8_t>(h.type) > static_cast<std::uint8_t>(frame_type::go_away) &&
      !(ring_frames_ && h.type == frame_type::ring_data)) {
    failed_ = true;
    ev.what = kind::error;
    ev.error = make_error_code(errc::invalid_frame_type);
    return ev;
  }
  consumed = header_size;
  current_ = h;
  payload_remaining_ = h.type == frame_type::data ? h.length : 0;
  ev.what = kind::header;
  ev.header = h;
  return ev;
}

}  // namespace socketmaster::yamux
