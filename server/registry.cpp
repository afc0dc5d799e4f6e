// See registry.hpp.
#include "registry.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <limits>

#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include "tls.hpp"
#include "protocol/host_port.hpp"

namespace socketmaster::server {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

bool valid_domain_suffix(std::string_view d) {
  if (d.size() > 253) return false;
  return std::all_of(d.begin(), d.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

bool valid_path_prefix(std::string_view p) {
  if (p.empty()) return true;
  if (p.front() != '/' || p.size() > max_path_prefix_bytes) return false;
  return std::none_of(p.begin(), p.end(), [](char c) { return c <= ' ' || c == 0x7f || c == '?' || c == '#'; });
}

}  // namespace

registry::registry(asio::any_io_executor ex, const master_config& cfg, logger& log, connection_handler on_connection)
    : executor_(std::move(ex)), cfg_(cfg), log_(log), on_connection_(std::move(on_connection)) {}

registry::~registry() = default;

handshake_rejected registry::reject(rejection_code code, std::string message) {
  ++stats_.rejections[static_cast<int>(code)];
  return {code, std::move(message)};
}

handshake_rejected registry::internal_shutting_down() {
  return reject(rejection_code::internal, "the master is shutting down; register with its successor");
}

registry::registration_result registry::register_service(const socket_definition& def) {
  registration_result result;
  if (shut_down_) {  // a handshake that was still being read when the master began to exit
    result.rejected = internal_shutting_down();
    return result;
  }
  // 1. The definition itself.
  std::string address = def.address;
  if (!address.empty()) {
    std::error_code ec;
    auto ip = asio::ip::make_address(address, ec);
    if (ec) {
      result.rejected = reject(rejection_code::bad_request,
                               "the address '" + def.address + "' is not an IP address; use an IP literal or leave it empty for all interfaces");
      return result;
    }
    address = ip.to_string();
  }
  route_key key;
  if (def.http) {
    if (!valid_domain_suffix(def.http->domain_suffix)) {
      result.rejected = reject(rejection_code::bad_request,
                               "the domain suffix '" + def.http->domain_suffix + "' is not a valid host name");
      return result;
    }
    if (!valid_path_prefix(def.http->path_prefix)) {
      result.rejected = reject(rejection_code::bad_request,
                               "the path prefix must be empty or start with '/' and contain no spaces, '?' or '#'");
      return result;
    }
    // "/" matches every path, as no prefix does: one route, so that such registrations pool (two
    // routes, the longer "/" would always win and the other pool would never be used).
    key = {normalize_domain_suffix(def.http->domain_suffix), def.http->path_prefix == "/" ? std::string() : def.http->path_prefix};
  }
  if (def.tls && (def.tls->certificate_chain_pem.empty() || def.tls->private_key_pem.empty())) {
    result.rejected = reject(rejection_code::bad_certificate, "a TLS registration needs both a certificate chain and a private key");
    return result;
  }
  if (def.tls) {
    if (auto problem = tls_contexts::check(def.tls->certificate_chain_pem, def.tls->private_key_pem); !problem.empty()) {
      result.rejected = reject(rejection_code::bad_certificate, problem);
      return result;
    }
  }

  // 2. Its listener: reuse a compatible one, refuse an incompatible one, or bind a new one.
  const bool want_http = def.http.has_value();
  const bool want_tls = def.tls.has_value();
  const std::string lkey = address + "|" + std::to_string(def.port);
  auto it = def.port == 0 ? listeners_.end() : listeners_.find(lkey);
  if (def.port != 0 && it == listeners_.end()) {
    for (const auto& [k, l] : listeners_) {
      if (k.substr(k.find('|') + 1) == std::to_string(def.port)) {
        result.rejected = reject(rejection_code::conflict,
                                 "port " + std::to_string(def.port) + " is already served on " + l.bound_address +
                                     "; register with the same address (" +
                                     (k.substr(0, k.find('|')).empty() ? "empty, for all interfaces" : k.substr(0, k.find('|'))) + ")");
        return result;
      }
    }
  }
  // While the master drains (SIGTERM) it opens nothing: a registration that would need a new
  // listener or route is refused with `internal`, which the SDK retries, and so reaches the
  // master's successor. One that joins an existing route is taken, as before the drain: that
  // route may be in grace with requests queued for it, which the newcomer then serves.
  if (draining_ && (it == listeners_.end() || !it->second.routes.find_exact(key))) {
    result.rejected = internal_shutting_down();
    return result;
  }
  if (it != listeners_.end()) {
    auto& l = it->second;
    if (l.http != want_http) {
      result.rejected = reject(rejection_code::conflict,
                               "port " + std::to_string(def.port) + " already serves " + (l.http ? "HTTP" : "raw TCP") +
                                   " and cannot also serve " + (want_http ? "HTTP" : "raw TCP"));
      return result;
    }
    if (l.tls != want_tls) {
      result.rejected = reject(rejection_code::conflict,
                               "port " + std::to_string(def.port) + " is " + (l.tls ? "TLS-terminated" : "plain") +
                                   "; a " + (want_tls ? "TLS" : "plain") + " registration cannot share it");
      return result;
    }
  } else {
    std::error_code ec;
    auto acceptor = upstream_listener::bind(executor_, address, def.port, want_http || want_tls, log_, ec);
    if (!acceptor) {
      result.rejected = reject(rejection_code::bind_failed, "could not listen on " + (address.empty() ? std::string("*") : address) +
                                                                ":" + std::to_string(def.port) + ": " + ec.message());
      return result;
    }
    const std::string actual_key = def.port == 0 ? address + "|" + std::to_string(acceptor->local_endpoint().port()) : lkey;
    auto [pos, inserted] = listeners_.try_emplace(actual_key);
    auto& l = pos->second;
    l.key = actual_key;
    l.bound_address = host_port_text(acceptor->local_endpoint());
    l.http = want_http;
    l.tls = want_tls;
    if (want_tls) l.certificates = std::make_unique<tls_contexts>();
    l.acceptor = std::move(acceptor);
    l.acceptor->start([this, k = actual_key](asio::ip::tcp::socket s, const asio::ip::tcp::endpoint& peer) {
      auto lit = listeners_.find(k);
      if (lit == listeners_.end()) return;
      ++stats_.connections_accepted;
      on_connection_(lit->second, std::move(s), peer);
    });
    log_.info("listener ", l.bound_address, " opened (", want_http ? "http" : "tcp", want_tls ? ", tls" : "", ")");
    it = pos;
  }
  auto& l = it->second;

  // 3. Its route: join the pool of an equally specific registration or create the route.
  std::uint64_t route_id = 0;
  if (auto existing = l.routes.find_exact(key)) {
    route_id = *existing;
  } else {
    route_id = next_route_++;
    auto& r = routes_[route_id];
    r.id = route_id;
    r.key = key;
    r.listener_key = l.key;
    l.routes.add(key, route_id);
  }
  auto& r = routes_[route_id];
  ++r.pending_registrations;
  if (r.in_grace) {  // a replacement is on its way: keep the route
    r.in_grace = false;
    r.grace_timer.reset();
  }
  const std::uint64_t id = next_registration_++;
  registrations_[id] = {route_id, false, def.proxy_protocol};
  if (def.tls) {
    if (auto problem = l.certificates->add(id, key.domain_suffix, def.tls->certificate_chain_pem, def.tls->private_key_pem);
        !problem.empty()) {
      release_pending(id);
      result.rejected = reject(rejection_code::bad_certificate, problem);
      return result;
    }
  }
  ++stats_.registrations;
  result.registration_id = id;
  result.bound_address = l.bound_address;
  return result;
}

void registry::release_pending(std::uint64_t registration_id) {
  auto it = registrations_.find(registration_id);
  if (it == registrations_.end()) return;
  const auto route_id = it->second.route_id;
  registrations_.erase(it);
  auto rit = routes_.find(route_id);
  if (rit == routes_.end()) return;
  auto& r = rit->second;
  if (r.pending_registrations) --r.pending_registrations;
  if (auto* certificates = certificates_of(r)) certificates->remove(registration_id);
  if (r.members.empty() && r.pending_registrations == 0 && !r.in_grace) {
    if (r.queue.empty())
      remove_route(route_id);
    else
      start_grace(r);
  }
}

void registry::abandon(std::uint64_t registration_id) { release_pending(registration_id); }

void registry::attach(std::uint64_t registration_id, yamux::session& s) {
  auto it = registrations_.find(registration_id);
  if (it == registrations_.end()) return;
  auto rit = routes_.find(it->second.route_id);
  if (shut_down_ || rit == routes_.end()) {  // accepted just as the master shut down
    registrations_.erase(it);
    s.close();
    return;
  }
  it->second.attached = true;
  auto& r = rit->second;
  if (r.pending_registrations) --r.pending_registrations;
  r.members.push_back({registration_id, &s, it->second.proxy_protocol});
  drop_retained_certificates(r);  // the new member's own certificate takes over
  if (r.in_grace) {
    r.in_grace = false;
    r.grace_timer.reset();
  }
  wake_all(r);
}

void registry::detach(std::uint64_t registration_id) {
  auto it = registrations_.find(registration_id);
  if (it == registrations_.end()) return;
  if (!it->second.attached) {
    release_pending(registration_id);
    return;
  }
  const auto route_id = it->second.route_id;
  registrations_.erase(it);
  auto rit = routes_.find(route_id);
  if (rit == routes_.end()) return;  // removed by shutdown()
  auto& r = rit->second;
  std::erase_if(r.members, [&](const member& m) { return m.registration_id == registration_id; });
  const bool last = r.members.empty() && r.pending_registrations == 0 && !shut_down_;
  if (auto* certificates = certificates_of(r)) {
    // The last member's certificate outlives it for the grace period: without it, a TLS client
    // arriving during a redeploy had its handshake cut instead of waiting for the replacement.
    if (last)
      r.retained_certificates.push_back(registration_id);
    else
      certificates->remove(registration_id);
  }
  if (last) start_grace(r);
}

tls_contexts* registry::certificates_of(const route& r) {
  auto lit = listeners_.find(r.listener_key);
  return lit == listeners_.end() ? nullptr : lit->second.certificates.get();
}

void registry::drop_retained_certificates(route& r) {
  if (auto* certificates = certificates_of(r))
    for (auto id : r.retained_certificates) certificates->remove(id);
  r.retained_certificates.clear();
}

void registry::start_grace(route& r) {
  r.in_grace = true;
  r.grace_timer = std::make_unique<asio::steady_timer>(executor_, cfg_.grace);
  const auto id = r.id;
  auto* timer = r.grace_timer.get();
  timer->async_wait([this, id, timer](std::error_code ec) {
    if (ec) return;  // cancelled: a member came back
    auto it = routes_.find(id);
    if (it == routes_.end() || !it->second.in_grace || it->second.grace_timer.get() != timer) return;
    ++stats_.grace_expired;
    const auto& key = it->second.key;  // spelt as the registration lines spell it: * for any host, / for any path
    log_.info("route ", id, " (", key.domain_suffix.empty() ? "*" : key.domain_suffix.c_str(),
              key.path_prefix.empty() ? "/" : key.path_prefix.c_str(), ") grace period over: removed, ",
              it->second.queue.size(), " queued connections refused");
    remove_route(id);
  });
}

void registry::remove_route(std::uint64_t route_id) {
  auto it = routes_.find(route_id);
  if (it == routes_.end()) return;
  wake_all(it->second);  // they find the route gone and give up
  drop_retained_certificates(it->second);
  const std::string lkey = it->second.listener_key;
  routes_.erase(it);
  auto lit = listeners_.find(lkey);
  if (lit == listeners_.end()) return;
  lit->second.routes.remove(route_id);
  if (lit->second.routes.empty()) {
    log_.info("listener ", lit->second.bound_address, " closed: no route left");
    listeners_.erase(lit);
  }
}

void registry::wake_all(route& r) {
  for (auto* w : r.queue) {
    w->woken = true;
    w->timer.cancel();
  }
  r.queue.clear();
}

std::optional<member> registry::pick(route& r) {
  const std::size_t n = r.members.size();
  std::optional<std::size_t> best;
  std::size_t best_load = std::numeric_limits<std::size_t>::max();
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (r.next + k) % n;
    const auto& m = r.members[i];
    if (m.draining()) continue;
    const std::size_t load = m.session->stream_count();
    if (load < best_load) {
      best_load = load;
      best = i;
    }
  }
  if (!best) return std::nullopt;
  r.next = *best + 1;
  return r.members[*best];
}

asio::awaitable<acquired> registry::acquire(std::uint64_t route_id, asio::ip::tcp::socket::lowest_layer_type* client) {
  acquired out;
  for (;;) {
    auto it = routes_.find(route_id);
    if (it == routes_.end()) {
      out.status = acquire_status::expired;
      co_return out;
    }
    auto& r = it->second;
    if (auto m = pick(r)) {
      std::error_code ec;
      auto s = m->session->open(ec);
      if (!ec) {
        ++stats_.streams_opened;
        out.status = acquire_status::ok;
        out.stream = std::move(s);
        out.member_id = m->registration_id;
        out.proxy_protocol = m->proxy_protocol;
        co_return out;
      }
    }
    if (r.queue.size() >= cfg_.queue_limit) {
      ++stats_.queue_rejections;
      out.status = acquire_status::queue_full;
      co_return out;
    }
    // No live member (grace, or every member draining): wait in line, at most one grace period.
    route::waiter w(executor_);
    w.timer.expires_after(cfg_.grace);
    r.queue.push_back(&w);
    ++stats_.queued_total;
    log_.debug("route ", route_id, ": no live member, a connection waits in the queue (", r.queue.size(), " waiting)");
    // The client's departure ends the wait like a wake-up does; the watch outlives `w` only as
    // far as its handler, which then finds nobody to tell.
    auto watch = client ? watch_departure(*client, w.timer) : nullptr;
    co_await w.timer.async_wait(use_tuple);
    if (watch) {
      watch->timer = nullptr;
      std::error_code ignored;
      if (!watch->done) client->cancel(ignored);
      if (watch->client_left) {
        if (auto again = routes_.find(route_id); again != routes_.end()) std::erase(again->second.queue, &w);
        ++stats_.queue_abandoned;
        log_.debug("route ", route_id, ": a queued connection's client left; nothing of it is forwarded");
        out.status = acquire_status::abandoned;
        co_return out;
      }
    }
    if (!w.woken) {
      if (auto again = routes_.find(route_id); again != routes_.end()) std::erase(again->second.queue, &w);
      out.status = acquire_status::expired;
      co_return out;
    }
  }
}

std::shared_ptr<registry::departure_watch> registry::watch_departure(asio::ip::tcp::socket::lowest_layer_type& client,
                                                                     asio::steady_timer& timer) {
  auto watch = std::make_shared<departure_watch>();
  watch->timer = &timer;
  client.async_wait(asio::socket_base::wait_read, [watch, fd = client.native_handle()](std::error_code ec) {
    watch->done = true;
    if (ec || !watch->timer) return;  // cancelled: the wait ended otherwise
    // Readable: the end of the stream or an error, unless bytes come first (they are left there).
    char byte;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      watch->client_left = true;
      watch->timer->cancel();
    }
  });
  return watch;
}

bool registry::member_usable(std::uint64_t route_id, std::uint64_t member_id) const {
  auto it = routes_.find(route_id);
  if (it == routes_.end()) return false;
  for (const auto& m : it->second.members)
    if (m.registration_id == member_id) return !m.draining();
  return false;
}

void registry::close_listeners() {
  draining_ = true;
  for (auto& [k, l] : listeners_)
    if (l.acceptor) l.acceptor->close();
  // Their waits complete (operation_aborted) in later turns, when each connection unparks itself.
  for (auto* c = idle_; c; c = c->next) {
    std::error_code ec;
    c->socket->cancel(ec);
  }
}

void registry::park(idle_connection& c) {
  c.prev = nullptr;
  c.next = idle_;
  if (idle_) idle_->prev = &c;
  idle_ = &c;
}

void registry::unpark(idle_connection& c) {
  if (c.prev)
    c.prev->next = c.next;
  else if (idle_ == &c)
    idle_ = c.next;
  if (c.next) c.next->prev = c.prev;
  c.prev = c.next = nullptr;
}

void registry::shutdown() {
  shut_down_ = true;
  // Closing a session may resume its control coroutine, which detaches (edits the pools) and then
  // destroys the session: collect first, close afterwards.
  std::vector<yamux::session*> sessions;
  for (auto& [id, r] : routes_)
    for (auto& m : r.members) sessions.push_back(m.session);
  for (auto* s : sessions) s->close();
  while (!routes_.empty()) remove_route(routes_.begin()->first);
}

}  // namespace socketmaster::server
