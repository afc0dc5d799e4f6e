// See upstream_listener.hpp.
#include "upstream_listener.hpp"

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
}

struct upstream_listener::state {
  state(const asio::any_io_executor& ex, logger& l) : acceptor(ex), log(l) {}
  asio::ip::tcp::acceptor acceptor;
  logger& log;
  bool closed = false;
};

std::unique_ptr<upstream_listener> upstream_listener::bind(const asio::any_io_executor& ex, std::string_view address,
                                                           std::uint16_t port, logger& log, std::error_code& ec) {
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
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
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
  auto loop = [](std::shared_ptr<state> st, accept_handler handler) -> asio::awaitable<void> {
    asio::steady_timer backoff(st->acceptor.get_executor());
    asio::ip::tcp::endpoint peer;
    while (!st->closed) {
      auto [ec, sock] = co_await st->acceptor.async_accept(peer, use_tuple);
      if (st->closed) co_return;
      if (ec) {
        // Out of descriptors or memory: say so once per occurrence and breathe, rather than spin.
        st->log.warn("listener accept failed: ", ec.message());
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(use_tuple);
        continue;
      }
      if constexpr (!accepts_inherit_no_delay) {
        std::error_code nd;
        sock.set_option(asio::ip::tcp::no_delay(true), nd);
      }
      handler(std::move(sock), peer);
    }
  };
  asio::co_spawn(state_->acceptor.get_executor(), loop(state_, std::move(on_accept)), asio::detached);
}

}  // namespace socketmaster::server
