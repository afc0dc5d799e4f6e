// The master's components wired together: the registry (routes, pools, listeners), the control
// port and the optional admin server. main() adds flags and signals; tests embed it directly.
//
// Concurrency: everything runs on the one io_context given; no locks.
#pragma once

#include <memory>
#include <string>
#include <system_error>

#include <asio/io_context.hpp>

#include "master_config.hpp"
#include "protocol/logger.hpp"

namespace socketmaster::server {

class registry;
class control_listener;
class admin_server;

class master {
 public:
  master(asio::io_context& io, master_config cfg, logger& log);
  ~master();

  // Binds the control port (and the admin address); the error says what failed.
  std::error_code start(std::string& what);
  std::string control_address() const;
  std::string admin_address() const;

  // Drain: stop accepting control and public connections; open ones go on, and so does the admin server.
  void stop_accepting();
  // Exit: stop accepting and end every service session and route, so that every coroutine of the
  // master can finish (the io_context then runs out of work instead of being stopped mid-flight).
  void shutdown();
  // Public connections still open.
  std::size_t active_connections() const;

  registry& routes();

 private:
  asio::io_context& io_;
  master_config cfg_;
  logger& log_;
  std::unique_ptr<registry> registry_;
  std::unique_ptr<control_listener> control_;
  std::unique_ptr<admin_server> admin_;
};

}  // namespace socketmaster::server
