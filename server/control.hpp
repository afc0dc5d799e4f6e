// The control port: services connect here, send one Cap'n Proto HandshakeRequest, get one
// HandshakeResponse, and (when accepted) the same connection carries the yamux session through which
// the master opens one stream per public connection. The master is the yamux client.
//
// Every handshake is answered; a rejection carries a code and a sentence. The request is bounded in
// size and in time, so a silent or slow client never holds anyone else up.
#pragma once

#include <memory>
#include <string>
#include <system_error>

#include <asio/any_io_executor.hpp>

#include "master_config.hpp"
#include "protocol/logger.hpp"
#include "registry.hpp"

namespace socketmaster::server {

class control_listener {
 public:
  control_listener(asio::any_io_executor ex, const master_config& cfg, registry& reg, logger& log);
  ~control_listener();

  // Binds cfg.control_address (host:port, or a Unix socket path when it contains '/'), and for a
  // loopback host:port the same-host socket named after it (protocol/handshake.hpp).
  std::error_code bind();
  // "127.0.0.1:9999" or the socket path, as bound.
  std::string bound_address() const;
  // For a loopback TCP control port (and cfg.same_host_socket), the abstract Unix socket that
  // also takes services on this host ("@socketmaster/control/127.0.0.1:9999"); empty otherwise.
  std::string same_host_name() const;
  // After a failed bind(): what failed when it was not the control address itself.
  std::string bind_problem() const;
  void start();
  void close();

  struct state;  // shared with the accept loop and the connections it spawns

 private:
  std::shared_ptr<state> state_;
};

// Whether `address` is a loopback host:port or a Unix socket path (the only safe places for a
// control port without a token).
bool control_address_is_local(const std::string& address);

}  // namespace socketmaster::server
