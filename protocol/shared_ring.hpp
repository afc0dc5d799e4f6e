// A one-way ring of payload bytes in shared memory, from a service to the master on the same host
// (issue 6: 1 GiB through the master). Over the same-host Unix socket every body byte was copied
// into the socket by the service and out of it by the master; with the ring the service copies it
// into the ring and the master sends it to the client from there, so the master's receive copy
// and the socket buffers' churn go (tests/bench/README.md, "Session 18": the relay's CPU per GiB
// down by a third in a model of the hop).
//
// The writer (the service) creates the memory as a memfd sealed against shrinking, so the reader
// can map it without a truncation under its mapping ever faulting it, and hands it over with the
// handshake (SCM_RIGHTS). A Data frame of the extension type frame_type::ring_data then carries no
// payload on the socket: its length says how many bytes the next span of the ring holds. Both sides
// place spans by the same rule (ring_place), so no offset travels and a writer can name no bytes
// outside the ring. The reader hands the span on as it would a span of its read buffer and, once
// the frames of one transport read are handled, publishes how far it has read; the writer reuses
// only what lies behind that. A writer that finds too little room sends an ordinary Data frame, so
// neither side ever waits for the other.
//
// What the reader trusts: nothing of the ring's contents (a writer that rewrites a span after
// announcing it only garbles its own payload), only the size it checked when it mapped the memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>

#include "detail/byte_ring.hpp"

namespace socketmaster::yamux {

// Where a span of n bytes starts when the previous one ended at position `pos` (positions count
// bytes since the ring was created, never wrapping): a span never wraps around the ring's end, one
// that would is placed at the start of the next lap.
std::uint64_t ring_place(std::uint64_t pos, std::size_t n, std::size_t capacity);

class shared_ring final : public detail::span_owner {
 public:
  // The first page holds the reader's published position; the ring's bytes follow it.
  static constexpr std::size_t control_bytes = 4096;
  static constexpr std::size_t min_capacity = 64 * 1024;
  // Data frames shorter than this go on the socket as usual: a short answer gains nothing from the
  // ring, and the latency path stays as it was.
  static constexpr std::size_t min_payload = 16 * 1024;

  // The writer's side: a fresh sealed memfd holding `capacity` bytes of ring (a multiple of 4096,
  // at least min_capacity).
  static std::shared_ptr<shared_ring> create(std::size_t capacity, std::error_code& ec);
  // The reader's side: takes over `fd` (closed on failure) and maps it, if it is a memfd sealed
  // against shrinking whose ring holds min_capacity to max_capacity bytes; else returns null and
  // `why` says what is wrong, in words for a log line.
  static std::shared_ptr<shared_ring> attach(int fd, std::size_t max_capacity, std::string& why);

  ~shared_ring();
  shared_ring(const shared_ring&) = delete;
  shared_ring& operator=(const shared_ring&) = delete;

  int fd() const { return fd_; }
  std::size_t capacity() const { return capacity_; }

  // Writer: the place for the next n bytes (n <= capacity), or null when the reader has not yet
  // released enough of the ring; the bytes count as sent once the caller has filled them.
  std::byte* reserve(std::size_t n);
  // Writer: when the reader has released everything, gives the ring's pages back to the system
  // (they are committed again as payload next passes); true if it did. Without this a service
  // would keep the whole ring resident after its first bulk body.
  bool trim();
  // Reader: the next n bytes, placed as the writer placed them. n must be at most capacity().
  std::span<const std::byte> take(std::size_t n);
  // Reader: the writer may reuse everything taken so far, except spans still held.
  void release();
  // Reader: keeps `span` (from take(), since the last release()) from being released until
  // unhold(token) with the returned token: a stream buffer waiting for a slow client refers to the
  // ring instead of copying. Holding delays the reuse of everything taken after it as well.
  std::uint64_t hold(std::span<const std::byte> span);
  void unhold(std::uint64_t token) override;
  bool contains(const std::byte* p) const { return p >= base_ + control_bytes && p < base_ + control_bytes + capacity_; }
  // Reader: bytes from the oldest span held to the read position (0 when none is held).
  std::size_t held_bytes() const { return held_.empty() ? 0 : static_cast<std::size_t>(position_ - held_.front().start); }
  // Reader: the token of the oldest span held, if any.
  std::optional<std::uint64_t> oldest_hold() const {
    return held_.empty() ? std::nullopt : std::optional<std::uint64_t>(held_.front().start);
  }

 private:
  shared_ring(int fd, std::byte* base, std::size_t capacity);
  std::uint64_t& published();  // the reader's position, in the control page

  int fd_;
  std::byte* base_;  // the mapping: control page, then the ring
  std::size_t capacity_;
  std::uint64_t position_ = 0;  // the writer's or the reader's own position
  // Reader: the position at the last release(); an unhold() between two never publishes more, as
  // spans taken since may still be on their way to a client.
  std::uint64_t settled_ = 0;
  struct held_span {
    std::uint64_t start;
    bool done;
  };
  std::deque<held_span> held_;  // in take order
  void publish();
};

}  // namespace socketmaster::yamux
