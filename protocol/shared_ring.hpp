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
#include <memory>
#include <span>
#include <string>
#include <system_error>

namespace socketmaster::yamux {

// Where a span of n bytes starts when the previous one ended at position `pos` (positions count
// bytes since the ring was created, never wrapping): a span never wraps around the ring's end, one
// that would is placed at the start of the next lap.
std::uint64_t ring_place(std::uint64_t pos, std::size_t n, std::size_t capacity);

class shared_ring {
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
  // Reader: the next n bytes, placed as the writer placed them. n must be at most capacity().
  std::span<const std::byte> take(std::size_t n);
  // Reader: the writer may reuse everything taken so far.
  void release();

 private:
  shared_ring(int fd, std::byte* base, std::size_t capacity);
  std::uint64_t& published();  // the reader's position, in the control page

  int fd_;
  std::byte* base_;  // the mapping: control page, then the ring
  std::size_t capacity_;
  std::uint64_t position_ = 0;  // the writer's or the reader's own position
};

}  // namespace socketmaster::yamux
