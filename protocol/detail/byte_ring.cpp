// See byte_ring.hpp.
#include "byte_ring.hpp"

#include <algorithm>
#include <cstring>
#include <new>

namespace socketmaster::yamux::detail {

struct byte_ring::block {
  block* next;
  std::uint32_t size;   // bytes of storage after this header (for a held block: the span's size)
  std::uint32_t begin;  // the first unread byte
  std::uint32_t end;    // one past the last byte written
  bool held;            // the bytes are elsewhere: a held_span follows this header instead
  std::byte* bytes() { return reinterpret_cast<std::byte*>(this + 1); }
  struct held_span {
    const std::byte* data;
    span_owner* owner;
    std::uint64_t token;
  };
  held_span& span() { return *reinterpret_cast<held_span*>(this + 1); }
  const std::byte* data() { return held ? span().data : bytes(); }
};

namespace {

// Drained blocks kept for the next ring, per thread and size: most rings hold a few bytes for a
// moment and a bulk body that outruns its client cycles the same blocks, so neither pays an
// allocation (or, for fresh memory, page faults) per block. Bounded: 16 small blocks and 64 large
// ones (4 MiB) at most per thread; beyond that a drained block goes back to the allocator.
template <std::size_t Max>
struct spare_stack {
  static constexpr std::size_t max = Max;
  void* items[Max];
  std::size_t count;
};
struct spare_blocks {
  spare_stack<16> small;
  spare_stack<64> large;
  bool closed;  // the thread is exiting: the blocks were freed, free later ones at once
};
// Trivially destructible, so a ring destroyed late in a thread's exit can still consult it; the
// blocks themselves are freed by `free_spares_at_exit`, created with the first block kept.
thread_local spare_blocks spares;

template <class Stack>
void free_all(Stack& s) {
  while (s.count > 0) ::operator delete(s.items[--s.count]);
}

struct free_spares_at_exit {
  ~free_spares_at_exit() {
    free_all(spares.small);
    free_all(spares.large);
    spares.closed = true;
  }
};
thread_local free_spares_at_exit spares_owner;

template <class Stack>
void* take_spare(Stack& s) {
  return s.count > 0 ? s.items[--s.count] : nullptr;
}

template <class Stack>
bool keep_spare(Stack& s, void* p) {
  if (spares.closed || s.count == Stack::max) return false;
  [[maybe_unused]] const auto* owner = &spares_owner;  // constructs it: its destructor frees these
  s.items[s.count++] = p;
  return true;
}

}  // namespace

byte_ring::byte_ring(byte_ring&& other) noexcept
    : head_(other.head_), tail_(other.tail_), size_(other.size_), capacity_(other.capacity_),
      external_blocks_(other.external_blocks_) {
  other.head_ = other.tail_ = nullptr;
  other.size_ = other.capacity_ = other.external_blocks_ = 0;
}

byte_ring& byte_ring::operator=(byte_ring&& other) noexcept {
  if (this != &other) {
    clear();
    head_ = other.head_;
    tail_ = other.tail_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    external_blocks_ = other.external_blocks_;
    other.head_ = other.tail_ = nullptr;
    other.size_ = other.capacity_ = other.external_blocks_ = 0;
  }
  return *this;
}

void byte_ring::append(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    if (!tail_ || tail_->end == tail_->size) {
      const std::size_t size = head_ ? block_size : first_block_size;
      void* p = size == first_block_size ? take_spare(spares.small) : take_spare(spares.large);
      if (!p) p = ::operator new(sizeof(block) + size);
      block* b = ::new (p) block{nullptr, static_cast<std::uint32_t>(size), 0, 0, false};
      (tail_ ? tail_->next : head_) = b;
      tail_ = b;
      capacity_ += size;
    }
    const std::size_t n = std::min<std::size_t>(bytes.size(), tail_->size - tail_->end);
    std::memcpy(tail_->bytes() + tail_->end, bytes.data(), n);  // a held tail is full: never here
    tail_->end += static_cast<std::uint32_t>(n);
    size_ += n;
    bytes = bytes.subspan(n);
  }
}

void byte_ring::append_held(std::span<const std::byte> bytes, span_owner& owner, std::uint64_t token) {
  const auto n = static_cast<std::uint32_t>(bytes.size());
  block* b = ::new (::operator new(sizeof(block) + sizeof(block::held_span))) block{nullptr, n, 0, n, true};
  b->span() = {bytes.data(), &owner, token};
  (tail_ ? tail_->next : head_) = b;
  tail_ = b;
  size_ += n;
  ++external_blocks_;
}

void byte_ring::internalize() {
  if (external_blocks_ == 0) return;
  byte_ring copy;
  for (block* b = head_; b; b = b->next) copy.append({b->data() + b->begin, b->end - b->begin});
  *this = std::move(copy);  // clear() lets the held spans go
}

std::size_t byte_ring::peek(std::span<std::byte> out) const {
  std::size_t n = 0;
  for (block* b = head_; b && n < out.size(); b = b->next) {
    const std::size_t k = std::min<std::size_t>(out.size() - n, b->end - b->begin);
    std::memcpy(out.data() + n, b->data() + b->begin, k);
    n += k;
  }
  return n;
}

std::size_t byte_ring::read(std::span<std::byte> out) {
  const std::size_t n = peek(out);
  drop(n);
  return n;
}

std::size_t byte_ring::contents(std::span<std::span<const std::byte>> out) const {
  std::size_t count = 0;
  for (block* b = head_; b && count < out.size(); b = b->next)
    if (b->end > b->begin) out[count++] = std::span<const std::byte>(b->data() + b->begin, b->end - b->begin);
  return count;
}

void byte_ring::drop(std::size_t n) {
  while (n > 0 && head_) {
    const std::size_t k = std::min<std::size_t>(n, head_->end - head_->begin);
    head_->begin += static_cast<std::uint32_t>(k);
    size_ -= k;
    n -= k;
    if (head_->begin == head_->end) pop_front();
  }
}

void byte_ring::pop_front() {
  block* b = head_;
  head_ = b->next;
  if (!head_) tail_ = nullptr;
  if (b->held) {
    --external_blocks_;
    const auto span = b->span();
    ::operator delete(b);
    span.owner->unhold(span.token);
    return;
  }
  capacity_ -= b->size;
  const bool kept = b->size == first_block_size ? keep_spare(spares.small, b) : keep_spare(spares.large, b);
  if (!kept) ::operator delete(b);
}

void byte_ring::clear() {
  while (head_) pop_front();
  size_ = 0;
}

}  // namespace socketmaster::yamux::detail
