// See byte_ring.hpp.
#include "byte_ring.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace socketmaster::yamux::detail {

namespace {

constexpr std::size_t first_capacity = 4096;

// Most rings hold a few bytes for a moment (a request that arrived before its reader asked) and
// are drained at once; the blocks of such rings are kept here, a few per thread, for the next
// ring instead of a new[] and a delete[] per stream (issue 6).
struct spare_blocks {
  static constexpr std::size_t max = 16;
  std::array<std::unique_ptr<std::byte[]>, max> blocks;
  std::size_t count = 0;
};
thread_local spare_blocks spares;

}  // namespace

void byte_ring::grow(std::size_t needed) {
  std::size_t cap = capacity_ ? capacity_ : first_capacity;
  while (cap < needed) cap *= 2;
  auto fresh = cap == first_capacity && spares.count > 0 ? std::move(spares.blocks[--spares.count])
                                                           : std::make_unique_for_overwrite<std::byte[]>(cap);
  const std::size_t copied = read(std::span<std::byte>(fresh.get(), size_));
  data_ = std::move(fresh);
  capacity_ = cap;
  head_ = 0;
  size_ = copied;
}

void byte_ring::append(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  if (size_ + bytes.size() > capacity_) grow(size_ + bytes.size());
  const std::size_t tail = (head_ + size_) & (capacity_ - 1);
  const std::size_t first = std::min(bytes.size(), capacity_ - tail);
  std::memcpy(data_.get() + tail, bytes.data(), first);
  std::memcpy(data_.get(), bytes.data() + first, bytes.size() - first);
  size_ += bytes.size();
}

std::size_t byte_ring::peek(std::span<std::byte> out) const {
  const std::size_t n = std::min(out.size(), size_);
  if (n == 0) return 0;
  const std::size_t first = std::min(n, capacity_ - head_);
  std::memcpy(out.data(), data_.get() + head_, first);
  std::memcpy(out.data() + first, data_.get(), n - first);
  return n;
}

std::size_t byte_ring::read(std::span<std::byte> out) {
  const std::size_t n = peek(out);
  drop(n);
  return n;
}

std::array<std::span<const std::byte>, 2> byte_ring::contents() const {
  if (size_ == 0) return {};
  const std::size_t first = std::min(size_, capacity_ - head_);
  return {std::span<const std::byte>(data_.get() + head_, first), std::span<const std::byte>(data_.get(), size_ - first)};
}

void byte_ring::drop(std::size_t n) {
  n = std::min(n, size_);
  if (n == 0) return;
  head_ = (head_ + n) & (capacity_ - 1);
  size_ -= n;
  if (size_ == 0) clear();
}

void byte_ring::clear() {
  if (capacity_ == first_capacity && spares.count < spare_blocks::max)
    spares.blocks[spares.count++] = std::move(data_);
  data_.reset();
  capacity_ = 0;
  head_ = 0;
  size_ = 0;
}

}  // namespace socketmaster::yamux::detail
