// data_gen and crc32; see data_gen.hpp.
#include "data_gen.hpp"


namespace socketmaster::interop {

data_gen::data_gen(std::uint32_t seed) : state_(seed * 2654435761u + 1u) {
  if (state_ == 0) state_ = 1;
}

std::uint32_t data_gen::next() {
  std::uint32_t s = state_;
  s ^= s << 13;
  s ^= s >> 17;
  s ^= s << 5;
  state_ = s;
  return s;
}

namespace {
void put_le32(std::byte* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
std::uint32_t get_le32(const std::byte* p) {
  return std::to_integer<std::uint32_t>(p[0]) | std::to_integer<std::uint32_t>(p[1]) << 8 |
         std::to_integer<std::uint32_t>(p[2]) << 16 | std::to_integer<std::uint32_t>(p[3]) << 24;
}
}  // namespace

void data_gen::fill(std::span<std::byte> out) {
  std::size_t i = 0;
  while (block_used_ < 4 && i < out.size()) out[i++] = block_[block_used_++];
  for (; i + 4 <= out.size(); i += 4) put_le32(out.data() + i, next());
  if (i < out.size()) {
    put_le32(block_.data(), next());
    block_used_ = 0;
    while (i < out.size()) out[i++] = block_[block_used_++];
  }
}

namespace {
using crc_tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr crc_tables make_tables() {
  crc_tables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (std::size_t k = 1; k < 8; ++k)
    for (std::size_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  return t;
}

constexpr crc_tables tables = make_tables();
}  // namespace

void crc32::update(std::span<const std::byte> data) {
  const std::byte* p = data.data();
  std::size_t n = data.size();
  std::uint32_t c = state_;
  for (; n >= 8; p += 8, n -= 8) {
    const std::uint32_t lo = get_le32(p) ^ c;
    const std::uint32_t hi = get_le32(p + 4);
    c = tables[7][lo & 0xff] ^ tables[6][(lo >> 8) & 0xff] ^ tables[5][(lo >> 16) & 0xff] ^ tables[4][lo >> 24] ^
        tables[3][hi & 0xff] ^ tables[2][(hi >> 8) & 0xff] ^ tables[1][(hi >> 16) & 0xff] ^ tables[0][hi >> 24];
  }
  for (; n > 0; ++p, --n) c = tables[0][(c ^ std::to_integer<std::uint32_t>(*p)) & 0xff] ^ (c >> 8);
  state_ = c;
}

}  // namespace socketmaster::interop
