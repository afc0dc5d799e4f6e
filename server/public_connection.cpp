// See public_connection.hpp.
#include "public_connection.hpp"

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl/stream.hpp>

#include "protocol/host_port.hpp"
#include "protocol/relay.hpp"
#include "tls.hpp"

namespace socketmaster::server {

namespace {

std::uint64_t next_connection_id = 1;  // the master is single-threaded

asio::awaitable<void> nothing() { co_return; }

// Not a coroutine: it returns the chosen service's coroutine for the caller to await, so an idle
// connection keeps no frame of its own for this step (issue 6: master RSS per idle connection).
template <class Client>
asio::awaitable<void> dispatch(registry& reg, const std::string& listener_key, Client& client, const connection_info& info) {
  auto it = reg.listeners().find(listener_key);
  if (it == reg.listeners().end()) return nothing();
  if (it->second.http) return route_http(reg, listener_key, client, info);
  // A raw TCP listener has exactly one route: the pool of every registration on it.
  auto route_id = it->second.routes.match("", "");
  if (!route_id) return nothing();
  return relay_tcp(reg, *route_id, client, info);
}

// Counts a public connection as active for as long as its coroutine lives (drain waits for zero).
struct active_guard {
  explicit active_guard(registry& r) : reg(r) { ++reg.stats().active_connections; }
  ~active_guard() { --reg.stats().active_connections; }
  registry& reg;
};

// TLS connections go on in a coroutine of their own, so that the frame every plain connection
// keeps for its whole life has no room for a TLS stream, a handshake timer and the awaitable
// operators' temporaries (issue 6: master RSS per idle proxied connection).
asio::awaitable<void> serve_tls(registry& reg, const std::string& listener_key, const listener_info& listener,
                                asio::ip::tcp::socket& socket, connection_info& info) {
  info.tls = true;
  auto context = listener.certificates->handshake_context();
  if (!context) co_return;
  asio::ssl::stream<asio::ip::tcp::socket> tls(std::move(socket), *context);
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(tls.get_executor(), reg.config().header_timeout);
  auto outcome = co_await (tls.async_handshake(asio::ssl::stream_base::server, use_tuple) || deadline.async_wait(use_tuple));
  if (outcome.index() == 1 || std::get<0>(outcome) != std::tuple<std::error_code>{}) {
    reg.log().debug("conn ", info.id, " from ", info.client, ": TLS handshake failed");
    co_return;
  }
  co_await dispatch(reg, listener_key, tls, info);
}

asio::awaitable<void> serve(registry& reg, std::string listener_key, asio::ip::tcp::socket socket,
                            asio::ip::tcp::endpoint peer) {
  active_guard active(reg);
  connection_info info;
  // Services see it in X-Forwarded-For and PROXY v2 headers, where a dual-stack listener's
  // ::ffff:a.b.c.d form is not the address the client has.
  info.client = unmapped(peer);
  info.id = next_connection_id++;
  auto it = reg.listeners().find(listener_key);
  if (it == reg.listeners().end()) co_return;
  if (!it->second.tls) {
    co_await dispatch(reg, listener_key, socket, info);
    co_return;
  }
  co_await serve_tls(reg, listener_key, it->second, socket, info);
}

}  // namespace

asio::ip::tcp::endpoint socket_local_endpoint(const asio::ip::tcp::socket::lowest_layer_type& socket) {
  std::error_code ec;
  return unmapped(socket.local_endpoint(ec));
}

void serve_public_connection(registry& reg, listener_info& listener, asio::ip::tcp::socket socket,
                             const asio::ip::tcp::endpoint& peer) {
  auto ex = socket.get_executor();
  asio::co_spawn(ex, serve(reg, listener.key, std::move(socket), peer), [&reg](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      reg.log().error("public connection failed unexpectedly: ", x.what());
    }
  });
}

}  // namespace socketmaster::server
