// See shared_ring.hpp.
#include "shared_ring.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>

namespace socketmaster::yamux {

std::uint64_t ring_place(std::uint64_t pos, std::size_t n, std::size_t capacity) {
  const std::uint64_t offset = pos % capacity;
  return offset + n > capacity ? pos + (capacity - offset) : pos;
}

namespace {

std::byte* map_ring(int fd, std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
}

}  // namespace

std::shared_ptr<shared_ring> shared_ring::create(std::size_t capacity, std::error_code& ec) {
  ec.clear();
  if (capacity < min_capacity || capacity % 4096 != 0) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return nullptr;
  }
  const int fd = ::memfd_create("socketmaster-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    ec = {errno, std::system_category()};
    return nullptr;
  }
  // Pages are committed as they are first written: an idle service's ring costs address space only.
  if (::ftruncate(fd, static_cast<off_t>(control_bytes + capacity)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    ec = {errno, std::system_category()};
    ::close(fd);
    return nullptr;
  }
  std::byte* base = map_ring(fd, control_bytes + capacity);
  if (!base) {
    ec = {errno, std::system_category()};
    ::close(fd);
    return nullptr;
  }
  return std::shared_ptr<shared_ring>(new shared_ring(fd, base, capacity));
}

std::shared_ptr<shared_ring> shared_ring::attach(int fd, std::size_t max_capacity, std::string& why) {
  const auto refuse = [&](std::string text) -> std::shared_ptr<shared_ring> {
    why = std::move(text);
    ::close(fd);
    return nullptr;
  };
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) return refuse("it is not a memfd that can be sealed");
  // Without this seal the writer could truncate the memory under our mapping, and our next read of
  // it would die of SIGBUS.
  if (!(seals & F_SEAL_SHRINK)) return refuse("it is not sealed against shrinking (F_SEAL_SHRINK)");
  struct stat st {};
  if (::fstat(fd, &st) != 0) return refuse(std::string("fstat failed: ") + std::strerror(errno));
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < control_bytes + min_capacity || size % 4096 != 0)
    return refuse("its size, " + std::to_string(size) + " bytes, is not 4 KiB of control and at least " +
                  std::to_string(min_capacity) + " bytes of ring in whole pages");
  const std::size_t capacity = size - control_bytes;
  if (capacity > max_capacity)
    return refuse("its ring of " + std::to_string(capacity) + " bytes is larger than the " +
                  std::to_string(max_capacity) + " this master maps (--max-shared-ring-bytes)");
  std::byte* base = map_ring(fd, size);
  if (!base) return refuse(std::string("it cannot be mapped for reading and writing: ") + std::strerror(errno));
  return std::shared_ptr<shared_ring>(new shared_ring(fd, base, capacity));
}

shared_ring::shared_ring(int fd, std::byte* base, std::size_t capacity) : fd_(fd), base_(base), capacity_(capacity) {}

shared_ring::~shared_ring() {
  ::munmap(base_, control_bytes + capacity_);
  ::close(fd_);
}

std::uint64_t& shared_ring::published() { return *reinterpret_cast<std::uint64_t*>(base_); }

std::byte* shared_ring::reserve(std::size_t n) {
  const std::uint64_t start = ring_place(position_, n, capacity_);
  // A reader never publishes beyond what was written; the clamp keeps a confused one from making us
  // overwrite bytes it has not taken yet.
  const std::uint64_t released = std::min(std::atomic_ref(published()).load(std::memory_order_acquire), position_);
  // Nothing in use: any placement fits. Else the span must end within a lap of the oldest byte in use.
  if (released != position_ && start + n - released > capacity_) return nullptr;
  position_ = start + n;
  return base_ + control_bytes + start % capacity_;
}

bool shared_ring::trim() {
  if (std::atomic_ref(published()).load(std::memory_order_acquire) != position_) return false;
  // Nothing is in use, so the reader reads none of these pages until we write them again; a hole
  // reads as zeros, never as a fault.
  return ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(control_bytes),
                     static_cast<off_t>(capacity_)) == 0;
}

std::span<const std::byte> shared_ring::take(std::size_t n) {
  const std::uint64_t start = ring_place(position_, n, capacity_);
  position_ = start + n;
  return {base_ + control_bytes + start % capacity_, n};
}

void shared_ring::release() {
  settled_ = position_;
  publish();
}

void shared_ring::publish() {
  const std::uint64_t upto = held_.empty() ? settled_ : std::min(settled_, held_.front().start);
  std::atomic_ref(published()).store(upto, std::memory_order_release);
}

std::uint64_t shared_ring::hold(std::span<const std::byte> span) {
  // The span is among those taken since the last release(), so within the last lap: its offset
  // names its position.
  const auto offset = static_cast<std::uint64_t>(span.data() - (base_ + control_bytes));
  std::uint64_t start = position_ - position_ % capacity_ + offset;
  if (start + span.size() > position_) start -= capacity_;
  // Held in take order: a later hold of an earlier span (a stream's remainder after another's) is
  // placed where it belongs.
  auto it = held_.end();
  while (it != held_.begin() && std::prev(it)->start > start) --it;
  held_.insert(it, {start, false});
  return start;
}

void shared_ring::unhold(std::uint64_t token) {
  for (auto& h : held_)
    if (h.start == token && !h.done) {
      h.done = true;
      break;
    }
  while (!held_.empty() && held_.front().done) held_.pop_front();
  publish();
}

}  // namespace socketmaster::yamux
