// Raw TCP routes: each public connection becomes one stream to one pool member (queued during
// grace), with an optional PROXY v2 header first, then bytes both ways with FIN for FIN.
#include <asio/ssl/stream.hpp>

#include "protocol/proxy_header.hpp"
#include "public_connection.hpp"
#include "protocol/relay.hpp"

namespace socketmaster::server {

template <class Client>
asio::awaitable<void> relay_tcp(registry& reg, std::uint64_t route_id, Client& client, const connection_info& info) {
  auto got = co_await reg.acquire(route_id, &client.lowest_layer());
  if (got.status != acquire_status::ok) {
    const char* why = got.status == acquire_status::queue_full ? "queue full"
                      : got.status == acquire_status::abandoned ? "the client left while queued"
                                                                 : "grace over";
    reg.log().info("conn ", info.id, " from ", info.client, ": no service for the raw TCP route (", why, "); closing");
    co_return;
  }
  auto& backend = got.stream;
  reg.log().debug("conn ", info.id, " from ", info.client, ": stream ", backend.id(), " to registration ", got.member_id);
  if (got.proxy_protocol) {
    const auto header = encode_proxy_v2(info.client, connection_local_endpoint(client));
    auto [ec, n] = co_await asio::async_write(backend, asio::buffer(header), use_tuple);
    if (ec) co_return;
  }
  auto result = co_await tunnel(client, backend);
  reg.stats().bytes_up += result.a_to_b;  // counted when the connection ends
  reg.stats().bytes_down += result.b_to_a;
  reg.log().debug("conn ", info.id, " closed: ", result.a_to_b, " bytes up, ", result.b_to_a, " down",
                  result.error ? " (" + result.error.message() + ")" : "");
}

template asio::awaitable<void> relay_tcp(registry&, std::uint64_t, asio::ip::tcp::socket&, const connection_info&);
template asio::awaitable<void> relay_tcp(registry&, std::uint64_t, asio::ssl::stream<asio::ip::tcp::socket>&,
                                         const connection_info&);

}  // namespace socketmaster::server
