// Where a public connection goes after accept: the TLS handshake on TLS listeners (SNI picks the
// certificate), then the HTTP router or the raw TCP relay depending on the listener.
#pragma once

#include <asio/ip/tcp.hpp>

#include "registry.hpp"

namespace socketmaster::server {

// What a connection knows about itself, for PROXY headers and X-Forwarded-*.
struct connection_info {
  asio::ip::tcp::endpoint client;
  bool tls = false;
  std::uint64_t id = 0;
};

// Spawns the coroutine that serves `socket` accepted on `listener` from `peer`.
void serve_public_connection(registry& reg, listener_info& listener, asio::ip::tcp::socket socket,
                             const asio::ip::tcp::endpoint& peer);

// The address the client connected to, for a PROXY v2 header: asked of the socket only when a
// service wants the header (a getsockname() per connection otherwise).
asio::ip::tcp::endpoint socket_local_endpoint(const asio::ip::tcp::socket::lowest_layer_type& socket);
template <class Client>
asio::ip::tcp::endpoint connection_local_endpoint(const Client& client) {
  return socket_local_endpoint(client.lowest_layer());
}

// The two kinds of service, for each client stream type (plain TCP, TLS); defined in
// tcp_relay.cpp and http_router.cpp.
template <class Client>
asio::awaitable<void> relay_tcp(registry& reg, std::uint64_t route_id, Client& client, const connection_info& info);
template <class Client>
asio::awaitable<void> route_http(registry& reg, std::string listener_key, Client& client, const connection_info& info);

}  // namespace socketmaster::server
