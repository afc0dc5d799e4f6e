// A descriptor sent with a Unix socket's bytes (SCM_RIGHTS): how a service hands the master its
// shared ring (shared_ring.hpp) with the handshake. Both calls are non-blocking single attempts on a
// non-blocking socket; the caller waits for readiness itself and moves the rest of its bytes the
// usual way.
#pragma once

#include <cstddef>
#include <span>
#include <system_error>

namespace socketmaster {

// A descriptor that closes itself.
class owned_fd {
 public:
  owned_fd() = default;
  explicit owned_fd(int fd) : fd_(fd) {}
  owned_fd(owned_fd&& o) noexcept : fd_(o.release()) {}
  owned_fd& operator=(owned_fd&& o) noexcept;
  ~owned_fd() { reset(); }
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset();
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Sends a prefix of `data` (at least one byte, or an error) with `fd` attached to it.
std::size_t send_with_fd(int socket, std::span<const std::byte> data, int fd, std::error_code& ec);

// Receives up to data.size() bytes; a descriptor that came with them lands in `fd` (a later one
// than the first, or several at once, are closed: we expect one). 0 bytes and no error: the peer
// closed; would_block when nothing has arrived yet.
std::size_t receive_with_fd(int socket, std::span<std::byte> data, owned_fd& fd, std::error_code& ec);

}  // namespace socketmaster
