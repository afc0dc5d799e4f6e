// The deterministic data generator and the CRC-32 shared with the Go peer (go/yamux_peer/gen.go):
// both sides produce and check the same bytes without sending a reference copy.
//
//   state = seed * 2654435761 + 1 (mod 2^32), 1 if that is 0;
//   per 4-byte block: state ^= state << 13; state ^= state >> 17; state ^= state << 5; emit state
//   little-endian. n bytes of gen(seed) are the first n bytes of that sequence.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace socketmaster::interop {

class data_gen {
 public:
  explicit data_gen(std::uint32_t seed);

  // Writes the next out.size() bytes of the sequence; it continues across calls of any size.
  void fill(std::span<std::byte> out);

 private:
  std::uint32_t next();

  std::uint32_t state_;
  std::array<std::byte, 4> block_{};
  std::size_t block_used_ = 4;  // bytes of block_ already handed out
};

// CRC-32/IEEE (zlib's and Go's hash/crc32.ChecksumIEEE), slicing by 8: fast enough to check
// gigabytes in a test run.
class crc32 {
 public:
  void update(std::span<const std::byte> data);
  std::uint32_t value() const { return ~state_; }

 private:
  std::uint32_t state_ = 0xffffffffu;
};

}  // namespace socketmaster::interop
