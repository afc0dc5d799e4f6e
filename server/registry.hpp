// Registrations, the routes they serve, the pools of live service sessions behind each route, the
// grace period that keeps a route alive after its last service left, and the bounded FIFO queue of
// connections waiting for a member during that time. It also owns the public listeners, creating
// one on demand per (address, port) and closing it when no route uses it any more.
//
// Concurrency: single-threaded; every call from the master's executor.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "master_config.hpp"
#include "protocol/handshake.hpp"
#include "protocol/logger.hpp"
#include "protocol/session.hpp"
#include "route_table.hpp"
#include "upstream_listener.hpp"

namespace socketmaster::server {

class tls_contexts;

// One live service connection in a pool.
struct member {
  std::uint64_t registration_id = 0;
  yamux::session* session = nullptr;  // owned by the control connection's coroutine
  bool proxy_protocol = false;
  bool draining() const { return !session->is_open() || session->remote_going_away(); }
};

struct route {
  std::uint64_t id = 0;
  route_key key;
  std::string listener_key;
  std::vector<member> members;
  std::size_t pending_registrations = 0;  // handshakes accepted, session not attached yet
  std::size_t next = 0;                   // round-robin position among equally loaded members
  bool in_grace = false;
  std::unique_ptr<asio::steady_timer> grace_timer;
  // TLS: the certificates of members that left while the route went into grace. They stay on the
  // listener so that clients arriving meanwhile can finish their handshake and wait in the queue;
  // the next member to attach (with its own certificate) or the route's removal drops them.
  std::vector<std::uint64_t> retained_certificates;
  struct waiter;
  std::deque<waiter*> queue;
};

struct route::waiter {
  explicit waiter(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  bool woken = false;
};

// What a connection gets when it asks for a member of a route.
// abandoned: the client left while its connection waited in the queue (nothing of it is forwarded).
enum class acquire_status { ok, no_route, queue_full, expired, abandoned };

struct acquired {
  acquire_status status = acquire_status::no_route;
  yamux::stream stream;          // open stream to the chosen member (status ok)
  std::uint64_t member_id = 0;   // its registration id
  bool proxy_protocol = false;
};

struct listener_info {
  std::string key;
  std::string bound_address;
  bool http = false;
  bool tls = false;
  route_table routes;
  std::unique_ptr<upstream_listener> acceptor;
  std::unique_ptr<tls_contexts> certificates;
};

struct registry_stats {
  std::uint64_t registrations = 0;
  std::uint64_t rejections[7] = {};
  std::uint64_t streams_opened = 0;
  std::uint64_t connections_accepted = 0;
  std::uint64_t queued_total = 0;
  std::uint64_t queue_rejections = 0;
  std::uint64_t queue_abandoned = 0;  // clients that left while waiting in a queue
  std::uint64_t grace_expired = 0;
  std::uint64_t active_connections = 0;
  std::uint64_t bytes_up = 0;    // client to service
  std::uint64_t bytes_down = 0;  // service to client
  std::uint64_t http_responses[6] = {};  // by class: [1] 1xx ... [5] 5xx, our own error answers included
};

class registry {
 public:
  // Called for each accepted public connection of a listener.
  using connection_handler = std::function<void(listener_info&, asio::ip::tcp::socket, const asio::ip::tcp::endpoint& peer)>;

  registry(asio::any_io_executor ex, const master_config& cfg, logger& log, connection_handler on_connection);
  ~registry();

  struct registration_result {
    std::optional<handshake_rejected> rejected;
    std::uint64_t registration_id = 0;
    std::string bound_address;
  };
  // Validates `def`, binds or reuses its listener, creates or joins its route. On success the
  // registration is pending until attach() (or abandon() if the handshake could not be answered).
  registration_result register_service(const socket_definition& def);
  void attach(std::uint64_t registration_id, yamux::session& s);
  void abandon(std::uint64_t registration_id);
  // The service's session ended; the route enters grace if this was its last member.
  void detach(std::uint64_t registration_id);

  // A member of `route_id` with an open stream, waiting in the route's queue while it has none.
  // While it waits, `client` (the public connection's socket, when given) is watched: a client
  // that closes or resets its connection gives up its place (abandoned), so that a request nobody
  // waits for any more is neither kept in the queue nor forwarded when a service comes back. Bytes
  // arriving from the client (a body, a pipelined request, TLS records) hide whether it is still
  // there; then it keeps its place. Nothing else may wait on `client` meanwhile.
  asio::awaitable<acquired> acquire(std::uint64_t route_id, asio::ip::tcp::socket::lowest_layer_type* client = nullptr);
  // Whether a kept-alive stream to `member_id` may carry another request of `route_id`.
  bool member_usable(std::uint64_t route_id, std::uint64_t member_id) const;

  // Stops every listener (drain on SIGTERM) and closes the connections parked between requests;
  // routes and sessions stay, and connections with a request under way finish it.
  void close_listeners();
  bool draining() const { return draining_; }

  // A public connection between two requests, waiting for its client to send again. It is parked
  // here for that time, so that a drain closes it at once (cancels the wait) instead of leaving
  // the master waiting for it until its idle limit (--header-timeout) or the drain deadline.
  struct idle_connection {
    asio::ip::tcp::socket::lowest_layer_type* socket = nullptr;  // the client's
    idle_connection* prev = nullptr;
    idle_connection* next = nullptr;
  };
  void park(idle_connection& c);
  void unpark(idle_connection& c);
  // The master is exiting: closes every service session (their control coroutines then end) and
  // removes every route, which answers queued connections, cancels grace timers and closes the
  // listeners. Registrations still in their handshake are closed when they attach.
  void shutdown();

  const std::map<std::string, listener_info>& listeners() const { return listeners_; }
  const std::map<std::uint64_t, route>& routes() const { return routes_; }
  registry_stats& stats() { return stats_; }
  const registry_stats& stats() const { return stats_; }
  const master_config& config() const { return cfg_; }
  logger& log() { return log_; }
  const asio::any_io_executor& executor() const { return executor_; }

 private:
  struct registration {
    std::uint64_t route_id = 0;
    bool attached = false;
    bool proxy_protocol = false;
  };

  // acquire()'s watch on a queued connection's client, shared with the wait's handler.
  struct departure_watch {
    asio::steady_timer* timer = nullptr;  // the waiter's, to cancel; null once acquire() moved on
    bool done = false;                    // the handler ran
    bool client_left = false;
  };
  std::shared_ptr<departure_watch> watch_departure(asio::ip::tcp::socket::lowest_layer_type& client, asio::steady_timer& timer);

  handshake_rejected reject(rejection_code code, std::string message);
  handshake_rejected internal_shutting_down();
  std::optional<member> pick(route& r);
  void wake_all(route& r);
  void start_grace(route& r);
  void remove_route(std::uint64_t route_id);
  tls_contexts* certificates_of(const route& r);
  void drop_retained_certificates(route& r);
  void release_pending(std::uint64_t registration_id);

  asio::any_io_executor executor_;
  const master_config& cfg_;
  logger& log_;
  connection_handler on_connection_;
  std::map<std::string, listener_info> listeners_;  // by "address|port"
  std::map<std::uint64_t, route> routes_;
  std::map<std::uint64_t, registration> registrations_;
  std::uint64_t next_registration_ = 1;
  std::uint64_t next_route_ = 1;
  bool shut_down_ = false;
  bool draining_ = false;
  idle_connection* idle_ = nullptr;  // head of the parked connections (an intrusive list)
  registry_stats stats_;
};

}  // namespace socketmaster::server
