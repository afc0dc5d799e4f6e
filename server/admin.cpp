// See admin.hpp.
#include "admin.hpp"

#include <algorithm>
#include <sstream>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include "accept_failures.hpp"
#include "registry.hpp"
#include "protocol/host_port.hpp"
#include "protocol/relay.hpp"

namespace socketmaster::server {

namespace {

std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

// Prometheus label values escape the same three characters.
std::string label(std::string_view s) { return json_escape(s); }

// The domain suffix ("*" for any) followed by the path prefix ("/" for any path: a registration for
// "/" is the route with none, see registry.cpp). A domain has no '/', so the name is unambiguous.
std::string route_name(const route& r) {
  return (r.key.domain_suffix.empty() ? std::string("*") : r.key.domain_suffix) +
         (r.key.path_prefix.empty() ? std::string("/") : r.key.path_prefix);
}

}  // namespace

std::string render_metrics(const registry& reg) {
  const auto& st = reg.stats();
  std::ostringstream m;
  m << "# HELP socketmaster_registrations_total Registrations accepted.\n"
    << "# TYPE socketmaster_registrations_total counter\n"
    << "socketmaster_registrations_total " << st.registrations << "\n"
    << "# HELP socketmaster_rejections_total Handshakes rejected, by code.\n"
    << "# TYPE socketmaster_rejections_total counter\n";
  for (int c = 0; c <= static_cast<int>(rejection_code::internal); ++c)
    m << "socketmaster_rejections_total{code=\"" << to_string(static_cast<rejection_code>(c)) << "\"} "
      << st.rejections[c] << "\n";
  m << "# HELP socketmaster_connections_accepted_total Public connections accepted, on every listener.\n"
    << "# TYPE socketmaster_connections_accepted_total counter\n"
    << "socketmaster_connections_accepted_total " << st.connections_accepted << "\n"
    << "# HELP socketmaster_active_connections Public connections open now.\n"
    << "# TYPE socketmaster_active_connections gauge\n"
    << "socketmaster_active_connections " << st.active_connections << "\n"
    << "# HELP socketmaster_draining 1 once the master stopped accepting (SIGTERM) and waits for its connections.\n"
    << "# TYPE socketmaster_draining gauge\n"
    << "socketmaster_draining " << (reg.draining() ? 1 : 0) << "\n"
    << "# HELP socketmaster_streams_opened_total yamux streams opened to services.\n"
    << "# TYPE socketmaster_streams_opened_total counter\n"
    << "socketmaster_streams_opened_total " << st.streams_opened << "\n"
    << "# HELP socketmaster_queued_total Connections that waited in a route's grace queue.\n"
    << "# TYPE socketmaster_queued_total counter\n"
    << "socketmaster_queued_total " << st.queued_total << "\n"
    << "# HELP socketmaster_queue_rejections_total Connections refused because a grace queue was full (503).\n"
    << "# TYPE socketmaster_queue_rejections_total counter\n"
    << "socketmaster_queue_rejections_total " << st.queue_rejections << "\n"
    << "# HELP socketmaster_queue_abandoned_total Queued connections whose client left before a service came back.\n"
    << "# TYPE socketmaster_queue_abandoned_total counter\n"
    << "socketmaster_queue_abandoned_total " << st.queue_abandoned << "\n"
    << "# HELP socketmaster_grace_expired_total Routes whose grace period ended without a service coming back.\n"
    << "# TYPE socketmaster_grace_expired_total counter\n"
    << "socketmaster_grace_expired_total " << st.grace_expired << "\n"
    << "# HELP socketmaster_relayed_bytes_total Bytes relayed: HTTP heads as forwarded, bodies, tunnels (when they end).\n"
    << "# TYPE socketmaster_relayed_bytes_total counter\n"
    << "socketmaster_relayed_bytes_total{direction=\"to_services\"} " << st.bytes_up << "\n"
    << "socketmaster_relayed_bytes_total{direction=\"to_clients\"} " << st.bytes_down << "\n"
    << "# HELP socketmaster_http_responses_total HTTP responses to clients by status class, the master's own included.\n"
    << "# TYPE socketmaster_http_responses_total counter\n";
  for (int c = 1; c <= 5; ++c)
    m << "socketmaster_http_responses_total{class=\"" << c << "xx\"} " << st.http_responses[c] << "\n";
  m << "# HELP socketmaster_routes Routes registered now, those in their grace period included.\n"
    << "# TYPE socketmaster_routes gauge\n"
    << "socketmaster_routes " << reg.routes().size() << "\n";
  // Per route, each family as one group, as the exposition format requires.
  struct family {
    const char* name;
    const char* type;
    const char* help;
    std::size_t (*value)(const route&);
  };
  static constexpr family families[] = {
      {"socketmaster_pool_members", "gauge", "Live service sessions behind a route.",
       [](const route& r) { return r.members.size(); }},
      {"socketmaster_open_streams", "gauge", "Streams open to the route's members.",
       [](const route& r) {
         std::size_t streams = 0;
         for (const auto& mem : r.members) streams += mem.session->stream_count();
         return streams;
       }},
      {"socketmaster_queued_connections", "gauge", "Connections and requests waiting for a member.",
       [](const route& r) { return r.queue.size(); }},
      {"socketmaster_route_in_grace", "gauge", "1 while the route has lost its last member and waits for another.",
       [](const route& r) { return std::size_t{r.in_grace ? 1u : 0u}; }},
  };
  for (const auto& f : families) {
    m << "# HELP " << f.name << " " << f.help << "\n# TYPE " << f.name << " " << f.type << "\n";
    for (const auto& [id, r] : reg.routes()) {
      const auto l = reg.listeners().find(r.listener_key);
      m << f.name << "{listener=\"" << label(l == reg.listeners().end() ? "" : l->second.bound_address) << "\",route=\""
        << label(route_name(r)) << "\"} " << f.value(r) << "\n";
    }
  }
  return m.str();
}

std::string render_routes_json(const registry& reg) {
  std::ostringstream j;
  j << "[";
  bool first = true;
  for (const auto& [id, r] : reg.routes()) {
    const auto l = reg.listeners().find(r.listener_key);
    if (!first) j << ",";
    first = false;
    j << "{\"id\":" << id << ",\"listener\":\"" << json_escape(l == reg.listeners().end() ? "" : l->second.bound_address)
      << "\",\"kind\":\"" << (l != reg.listeners().end() && l->second.http ? "http" : "tcp")
      << "\",\"tls\":" << (l != reg.listeners().end() && l->second.tls ? "true" : "false") << ",\"domain_suffix\":\""
      << json_escape(r.key.domain_suffix) << "\",\"path_prefix\":\"" << json_escape(r.key.path_prefix)
      << "\",\"in_grace\":" << (r.in_grace ? "true" : "false") << ",\"queued\":" << r.queue.size() << ",\"members\":[";
    for (std::size_t i = 0; i < r.members.size(); ++i) {
      const auto& mem = r.members[i];
      j << (i ? "," : "") << "{\"registration\":" << mem.registration_id
        << ",\"open_streams\":" << mem.session->stream_count() << ",\"draining\":" << (mem.draining() ? "true" : "false")
        << "}";
    }
    j << "]}";
  }
  j << "]\n";
  return j.str();
}

struct admin_server::state {
  state(asio::any_io_executor e, const registry& r, logger& l) : ex(std::move(e)), reg(r), log(l), acceptor(ex) {}
  asio::any_io_executor ex;
  const registry& reg;
  logger& log;
  asio::ip::tcp::acceptor acceptor;
  bool closed = false;
};

namespace {

asio::awaitable<void> serve_admin(std::shared_ptr<admin_server::state> st, asio::ip::tcp::socket sock) {
  using namespace asio::experimental::awaitable_operators;
  asio::streambuf head(8192);
  asio::steady_timer deadline(sock.get_executor(), std::chrono::seconds(5));
  auto got = co_await (asio::async_read_until(sock, head, "\r\n\r\n", use_tuple) || deadline.async_wait(use_tuple));
  if (got.index() != 0 || std::get<0>(std::get<0>(got))) co_return;
  std::istream in(&head);
  std::string method, target;
  in >> method >> target;
  target.resize(std::min(target.size(), target.find('?')));  // a scraper's parameters select nothing here
  std::string status = "200 OK", type = "text/plain; version=0.0.4", body, extra_headers;
  // HEAD is GET without the body (RFC 9110 9.3.2): health checkers and `curl -I` use it.
  const bool head_only = method == "HEAD";
  if (method != "GET" && !head_only) {
    status = "405 Method Not Allowed";
    extra_headers = "Allow: GET, HEAD\r\n";  // a 405 must say what is allowed (RFC 9110 15.5.6)
    body = "only GET and HEAD are served here\n";
  } else if (target == "/metrics") {
    body = render_metrics(st->reg);
  } else if (target == "/routes") {
    type = "application/json";
    body = render_routes_json(st->reg);
  } else {
    status = "404 Not Found";
    body = "try /metrics or /routes\n";
  }
  const std::string response = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                               "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers +
                               "Connection: close\r\n\r\n" + (head_only ? std::string() : body);
  // A client that never reads its answer holds it no longer than a public client would.
  deadline.expires_after(st->reg.config().client_write_timeout);
  co_await (asio::async_write(sock, asio::buffer(response), use_tuple) || deadline.async_wait(use_tuple));
  std::error_code ec;
  sock.shutdown(asio::socket_base::shutdown_send, ec);
}

}  // namespace

admin_server::admin_server(asio::any_io_executor ex, const registry& reg, logger& log)
    : state_(std::make_shared<state>(std::move(ex), reg, log)) {}
admin_server::~admin_server() { close(); }

std::error_code admin_server::bind(const std::string& host_port) {
  std::error_code ec;
  const auto parsed = parse_host_port(host_port);
  if (!parsed) return std::make_error_code(std::errc::invalid_argument);
  const asio::ip::tcp::endpoint ep = *parsed;
  auto& acc = state_->acceptor;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(64, ec);
  return ec;
}

std::string admin_server::bound_address() const {
  std::error_code ec;
  const auto ep = state_->acceptor.local_endpoint(ec);
  return host_port_text(ep);
}

void admin_server::start() {
  auto loop = [](std::shared_ptr<state> st) -> asio::awaitable<void> {
    accept_failures failures;
    while (!st->closed) {
      auto [ec, sock] = co_await st->acceptor.async_accept(use_tuple);
      if (st->closed || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // Out of descriptors or memory, or a connection gone before it was taken: the listener is
        // fine, so say so (not at every retry), breathe rather than spin, and go on accepting.
        failures.failed(st->log, "admin server:", ec);
        asio::steady_timer breathe(st->ex, accept_retry_delay);
        co_await breathe.async_wait(use_tuple);
        continue;
      }
      failures.succeeded(st->log, "admin server:");
      asio::co_spawn(st->ex, serve_admin(st, std::move(sock)), asio::detached);
    }
  };
  asio::co_spawn(state_->ex, loop(state_), asio::detached);
}

void admin_server::close() {
  state_->closed = true;
  std::error_code ec;
  state_->acceptor.close(ec);
}

}  // namespace socketmaster::server
