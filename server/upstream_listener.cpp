// See upstream_listener.hpp.
#include "upstream_listener.hpp"
#include "accept_failures.hpp"

#include "protocol/fresh_socket.hpp"

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <unistd.h>

#include <cerrno>

#include <optional>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace socketmaster::server {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

#ifdef __linux__
constexpr bool accepts_inherit_no_delay = true;  // an accepted socket is a clone of the listening one
#else
constexpr bool accepts_inherit_no_delay = false;
#endif

// Connections taken in one turn before the loop lets other work run (the wait below re-arms at
// once while the backlog holds more).
constexpr int max_accepts_per_turn = 32;

// Errors that concern one connection, not the listener: Linux passes a connection's pending network
// error on as accept4()'s own, and accept(2) says to retry at once as for EAGAIN.
bool connection_gone(const std::error_code& ec) {
  if (ec.category() != asio::error::get_system_category()) return false;
  switch (ec.value()) {
    case EINTR: case ECONNABORTED: case EPROTO: case ENOPROTOOPT: case EHOSTDOWN: case ENONET:
    case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH: case ENETDOWN: case ETIMEDOUT:
      return true;
    default:
      return false;
  }
}

// accept4() on the non-blocking listening socket: a new non-blocking socket registered with the
// reactor, or would_block when the backlog is empty.
std::optional<asio::ip::tcp::socket> accept_now(asio::ip::tcp::acceptor& acc, asio::ip::tcp::endpoint& peer,
                                                std::error_code& ec) {
  ec.clear();
  peer = asio::ip::tcp::endpoint();
  socklen_t len = static_cast<socklen_t>(peer.capacity());
  const int fd = ::accept4(acc.native_handle(), peer.data(), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    ec = std::error_code(errno, asio::error::get_system_category());
    return std::nullopt;
  }
  peer.resize(len);
  asio::ip::tcp::socket sock(acc.get_executor());
  sock.assign(peer.protocol(), fd, ec);
  if (ec) {
    ::close(fd);
    return std::nullopt;
  }
  mark_fresh(sock);  // two system calls of about eleven per Connection: close request (issue 6)
  return sock;
}
}

struct upstream_listener::state {
  state(const asio::any_io_executor& ex, logger& l) : acceptor(ex), log(l) {}
  asio::ip::tcp::acceptor acceptor;
  logger& log;
  bool closed = false;
};

std::unique_ptr<upstream_listener> upstream_listener::bind(const asio::any_io_executor& ex, std::string_view address,
                                                           std::uint16_t port, bool client_speaks_first, logger& log,
                                                           std::error_code& ec) {
  auto st = std::make_shared<state>(ex, log);
  auto& acc = st->acceptor;
  asio::ip::tcp::endpoint ep;
  if (address.empty()) {
    ep = asio::ip::tcp::endpoint(asio::ip::address_v6::any(), port);
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(asio::ip::v6_only(false), ec);
    if (ec) {  // no IPv6 on this host
      ec.clear();
      acc = asio::ip::tcp::acceptor(ex);
      ep = asio::ip::tcp::endpoint(asio::ip::address_v4::any(), port);
      acc.open(ep.protocol(), ec);
    }
  } else {
    auto ip = asio::ip::make_address(std::string(address), ec);
    if (ec) return nullptr;
    ep = asio::ip::tcp::endpoint(ip, port);
    acc.open(ep.protocol(), ec);
  }
  if (ec) return nullptr;
  acc.set_option(asio::socket_base::reuse_address(true), ec);
  // Proxied answers must not wait for Nagle. Linux gives accepted sockets the listener's
  // TCP_NODELAY, which saves a setsockopt() per connection (see accepts_inherit_no_delay).
  if (!ec) acc.set_option(asio::ip::tcp::no_delay(true), ec);
  if (!ec) acc.bind(ep, ec);
  // Where the client speaks first (HTTP, TLS), the kernel hands a connection over with its first
  // bytes: the first read finds them instead of waiting a turn of the loop, and the handshake's
  // last ACK wakes nobody. Per Connection: close request a quarter of the master's CPU (issue 6). A
  // client that stays silent is handed over after one SYN-ACK retransmission (about 1 s), then
  // the header timeout runs as before.
  if (!ec && client_speaks_first) {
    const int seconds = 1;
    if (::setsockopt(acc.native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds) != 0)
      ec = std::error_code(errno, std::system_category());
  }
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) acc.non_blocking(true, ec);  // accept4() below must return EAGAIN, not wait
  if (ec) return nullptr;
  return std::unique_ptr<upstream_listener>(new upstream_listener(std::move(st)));
}

upstream_listener::upstream_listener(std::shared_ptr<state> s) : state_(std::move(s)) {}

upstream_listener::~upstream_listener() { close(); }

asio::ip::tcp::endpoint upstream_listener::local_endpoint() const {
  std::error_code ec;
  return state_->acceptor.local_endpoint(ec);
}

void upstream_listener::close() {
  state_->closed = true;
  std::error_code ec;
  state_->acceptor.close(ec);
}

void upstream_listener::start(accept_handler on_accept) {
  // Our own accept4() rather than async_accept: Asio's accept() gives a blocking socket it must
  // later make non-blocking, and one it treats as a possible dup (see mark_fresh).
  auto loop = [](std::shared_ptr<state> st, accept_handler handler) -> asio::awaitable<void> {
    asio::steady_timer backoff(st->acceptor.get_executor());
    accept_failures failures;
    auto breathe = [&](const std::error_code& ec) {
      // Out of descriptors or memory: say so (not at every retry) and breathe, rather than spin.
      failures.failed(st->log, "listener", ec);
      backoff.expires_after(accept_retry_delay);
      return backoff.async_wait(use_tuple);
    };
    asio::ip::tcp::endpoint peer;
    std::error_code ec;
    int taken = 0;
    while (!st->closed) {
      auto sock = accept_now(st->acceptor, peer, ec);
      if (sock) {
        failures.succeeded(st->log, "listener");
        if constexpr (!accepts_inherit_no_delay) {
          std::error_code nd;
          sock->set_option(asio::ip::tcp::no_delay(true), nd);
        }
        handler(std::move(*sock), peer);
        if (++taken < max_accepts_per_turn) continue;
      } else if (connection_gone(ec)) {
        continue;
      } else if (ec != asio::error::would_block && ec != asio::error::try_again) {
        co_await breathe(ec);
        continue;
      }
      taken = 0;
      auto [wec] = co_await st->acceptor.async_wait(asio::socket_base::wait_read, use_tuple);
      if (wec && !st->closed) co_await breathe(wec);
    }
  };
  asio::co_spawn(state_->acceptor.get_executor(), loop(state_, std::move(on_accept)), asio::detached);
}

}  // namespace socketmaster::server
