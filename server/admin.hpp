// The optional admin server: Prometheus text at /metrics (routes, pool sizes, open streams, queued
// connections, rejections by code, traffic) and the routing table as JSON at /routes. Read-only.
#pragma once

#include <memory>
#include <string>
#include <system_error>

#include <asio/any_io_executor.hpp>

#include "protocol/logger.hpp"

namespace socketmaster::server {

class registry;

// The bodies, separately so they can be tested without a socket.
std::string render_metrics(const registry& reg);
std::string render_routes_json(const registry& reg);

class admin_server {
 public:
  admin_server(asio::any_io_executor ex, const registry& reg, logger& log);
  ~admin_server();
  std::error_code bind(const std::string& host_port);
  std::string bound_address() const;
  void start();
  void close();

  struct state;  // shared with the accept loop and the connections it spawns

 private:
  std::shared_ptr<state> state_;
};

}  // namespace socketmaster::server
