// A growable ring of bytes: a stream's receive buffer. It allocates only when bytes must wait for
// the reader and gives its storage up when drained, so an idle stream holds no buffer at all (a
// first-size block goes to a small per-thread cache for the next ring).
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <span>

namespace socketmaster::yamux::detail {

class byte_ring {
 public:
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::size_t capacity() const { return capacity_; }

  void append(std::span<const std::byte> bytes);
  // Copies up to out.size() bytes out and removes them; returns how many.
  std::size_t read(std::span<std::byte> out);
  // Copies up to out.size() bytes out and leaves them; returns how many.
  std::size_t peek(std::span<std::byte> out) const;
  // The bytes in place, oldest first: two spans when they wrap around the end (else the second is
  // empty). Valid until the next append, drop or clear.
  std::array<std::span<const std::byte>, 2> contents() const;
  // Removes the first min(n, size()) bytes.
  void drop(std::size_t n);
  void clear();

 private:
  void grow(std::size_t needed);

  std::unique_ptr<std::byte[]> data_;
  std::size_t capacity_ = 0;  // a power of two, or 0
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace socketmaster::yamux::detail
