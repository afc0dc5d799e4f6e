// A public listening socket, bound on demand for the registrations that ask for its (address, port)
// and closed when none is left. It only accepts: what happens to a connection is the handler's.
//
// Concurrency: from the master's executor. Ownership: the registry owns listeners; the accept loop
// shares the acceptor's state, so destroying the listener mid-accept is safe.
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <system_error>

#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>

#include "protocol/logger.hpp"

namespace socketmaster::server {

class upstream_listener {
 public:
  // The peer's address comes from accept() itself, which saves a getpeername() per connection.
  using accept_handler = std::function<void(asio::ip::tcp::socket, const asio::ip::tcp::endpoint& peer)>;

  // Binds `address:port`. An empty address means every interface: IPv6 dual-stack when the host
  // has IPv6, else IPv4. Port 0 picks a free port (see local_endpoint()). `client_speaks_first`
  // (HTTP, TLS) defers each accept until the client's first bytes have come (TCP_DEFER_ACCEPT).
  static std::unique_ptr<upstream_listener> bind(const asio::any_io_executor& ex, std::string_view address,
                                                 std::uint16_t port, bool client_speaks_first, logger& log,
                                                 std::error_code& ec);
  ~upstream_listener();
  upstream_listener(const upstream_listener&) = delete;
  upstream_listener& operator=(const upstream_listener&) = delete;

  asio::ip::tcp::endpoint local_endpoint() const;
  void start(accept_handler on_accept);
  void close();

 private:
  struct state;
  explicit upstream_listener(std::shared_ptr<state> s);
  std::shared_ptr<state> state_;
};

}  // namespace socketmaster::server
