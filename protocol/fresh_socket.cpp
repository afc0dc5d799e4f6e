#include "fresh_socket.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <type_traits>

namespace socketmaster {
namespace {

// What Asio knows of a socket lives in its implementation's state bits, reachable only from a class
// derived from the socket: a pointer to the protected member, formed here, reads them on any socket.
struct state_bits : asio::ip::tcp::socket {
  static void mark(asio::ip::tcp::socket& s) {
    auto& state = (s.*(&state_bits::impl_)).get_implementation().state_;
    using bits = std::remove_reference_t<decltype(state)>;
    state = static_cast<bits>((state | asio::detail::socket_ops::internal_non_blocking) &
                              ~asio::detail::socket_ops::possible_dup);
  }
};

std::error_code last_error() { return {errno, asio::error::get_system_category()}; }

}  // namespace

void mark_fresh(asio::ip::tcp::socket& s) { state_bits::mark(s); }

connect_progress start_connect(asio::ip::tcp::socket& s, const asio::ip::tcp::endpoint& to, bool no_delay,
                               std::error_code& ec) {
  ec.clear();
  const int fd = ::socket(to.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    ec = last_error();
    return connect_progress::failed;
  }
  s.assign(to.protocol(), fd, ec);
  if (ec) {
    ::close(fd);  // not taken over by a failed assign
    return connect_progress::failed;
  }
  mark_fresh(s);
  if (no_delay) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // a failure costs latency, not data
  }
  if (::connect(fd, to.data(), static_cast<socklen_t>(to.size())) == 0) return connect_progress::connected;
  if (errno != EINPROGRESS) {
    ec = last_error();
    return connect_progress::failed;
  }
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, 0) != 1) return connect_progress::in_progress;
  ec = finish_connect(s);
  return ec ? connect_progress::failed : connect_progress::connected;
}

std::error_code finish_connect(asio::ip::tcp::socket& s) {
  int error = 0;
  socklen_t len = sizeof error;
  if (::getsockopt(s.native_handle(), SOL_SOCKET, SO_ERROR, &error, &len) != 0) return last_error();
  return error ? std::error_code(error, asio::error::get_system_category()) : std::error_code();
}

}  // namespace socketmaster
