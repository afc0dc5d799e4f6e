// A stream's receive buffer: bytes that arrived before the reader asked for them, oldest first.
// It is a queue of blocks rather than one contiguous ring, so holding more never copies what it
// already holds (a contiguous ring doubled into fresh memory: when a client reads a bulk body more
// slowly than the service sends it, those copies and the page faults of the fresh memory took the
// master's CPU per GiB up to twice its usual figure, issue 6). It allocates only when bytes must
// wait and gives each block up as it is drained, so an idle stream holds no storage at all. Drained
// blocks go to a small per-thread cache for the next ring instead of back to the allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace socketmaster::yamux::detail {

// Owns memory a byte_ring refers to without copying it (the session's shared ring): told when the
// ring no longer needs a span it was handed.
class span_owner {
 public:
  virtual void unhold(std::uint64_t token) = 0;

 protected:
  ~span_owner() = default;
};

class byte_ring {
 public:
  // The first block of a ring holds this many bytes (most rings hold a request head for a moment),
  // every later one `block_size`.
  static constexpr std::size_t first_block_size = 4096;
  static constexpr std::size_t block_size = 64 * 1024;

  byte_ring() = default;
  byte_ring(byte_ring&& other) noexcept;
  byte_ring& operator=(byte_ring&& other) noexcept;
  byte_ring(const byte_ring&) = delete;
  byte_ring& operator=(const byte_ring&) = delete;
  ~byte_ring() { clear(); }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Bytes of storage held (the blocks' sizes, used or not).
  std::size_t capacity() const { return capacity_; }

  void append(std::span<const std::byte> bytes);
  // Queues `bytes` where they lie, without a copy: `owner` keeps them valid until the ring is done
  // with them (read, dropped, cleared or internalized), and then hears owner.unhold(token).
  void append_held(std::span<const std::byte> bytes, span_owner& owner, std::uint64_t token);
  // Whether some of the bytes are held elsewhere (append_held), and copying them in to let them go.
  bool holds_external() const { return external_blocks_ > 0; }
  void internalize();
  // Copies up to out.size() bytes out and removes them; returns how many.
  std::size_t read(std::span<std::byte> out);
  // Copies up to out.size() bytes out and leaves them; returns how many.
  std::size_t peek(std::span<std::byte> out) const;
  // The bytes in place, oldest first, one piece per block: fills up to out.size() pieces and
  // returns how many (0 when empty). Valid until the next append, drop, read or clear.
  std::size_t contents(std::span<std::span<const std::byte>> out) const;
  // Removes the first min(n, size()) bytes.
  void drop(std::size_t n);
  void clear();

 private:
  struct block;
  void pop_front();

  block* head_ = nullptr;
  block* tail_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  std::size_t external_blocks_ = 0;
};

}  // namespace socketmaster::yamux::detail
