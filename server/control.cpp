// See control.hpp.
#include "control.hpp"

#include <filesystem>
#include <optional>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "accept_failures.hpp"
#include "protocol/fd_passing.hpp"
#include "protocol/handshake.hpp"
#include "protocol/host_port.hpp"
#include "protocol/relay.hpp"
#include "protocol/shared_ring.hpp"

namespace socketmaster::server {

namespace {

using namespace asio::experimental::awaitable_operators;

// Compares tokens in time independent of where they differ and of their lengths: both sides are
// hashed first, then compared with CRYPTO_memcmp.
bool token_matches(const std::string& expected, const std::string& presented) {
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

std::string describe(const socket_definition& d) {
  std::string s = (d.address.empty() ? std::string("*") : d.address) + ":" + std::to_string(d.port);
  if (d.http) s += " http " + (d.http->domain_suffix.empty() ? std::string("*") : d.http->domain_suffix) +
                   (d.http->path_prefix.empty() ? std::string("/") : d.http->path_prefix);
  else
    s += " tcp";
  if (d.tls) s += " tls";
  // The SDK and the sidecar always ask for the header (it is how they learn the client's address),
  // so name what it carries rather than the protocol's name alone.
  if (d.proxy_protocol) s += " with client addresses (PROXY v2)";
  return s;
}

}  // namespace

struct control_listener::state {
  state(asio::any_io_executor e, const master_config& c, registry& r, logger& l)
      : ex(std::move(e)), cfg(c), reg(r), log(l), slot_freed(ex, asio::steady_timer::time_point::max()) {}
  asio::any_io_executor ex;
  const master_config& cfg;
  registry& reg;
  logger& log;
  std::optional<asio::ip::tcp::acceptor> tcp;
  std::optional<asio::local::stream_protocol::acceptor> local;
  std::optional<asio::local::stream_protocol::acceptor> same_host;  // see same_host_socket_name()
  std::string bound;
  std::string bind_problem;  // which part of bind() failed, for the master's message
  bool closed = false;
  // Handshakes being read or answered, at most cfg.max_pending_handshakes: at the limit the accept
  // loops wait (new clients queue in the kernel's backlog) until one ends, so the memory held for
  // unfinished handshakes is bounded by max_pending_handshakes * max_handshake_bytes.
  std::size_t pending = 0;
  // Never expires; cancel() wakes whoever waits on it (both accept loops, if there are two).
  asio::steady_timer slot_freed;
};

namespace {

using state_ptr = std::shared_ptr<control_listener::state>;

template <class Socket>
asio::awaitable<void> answer(Socket& sock, const handshake_response& response) {
  const auto bytes = encode(response);
  co_await asio::async_write(sock, asio::buffer(bytes), use_tuple);
}

template <class Socket>
asio::awaitable<void> reject(const state_ptr& st, Socket& sock, const std::string& peer, rejection_code code, std::string message) {
  ++st->reg.stats().rejections[static_cast<int>(code)];
  st->log.warn("control ", peer, ": rejected (", to_string(code), "): ", message);
  // A named object, not `answer(sock, handshake_rejected{...})`: g++ 12 destroys an aggregate
  // temporary that is converted (here to the response variant) inside a co_await expression twice,
  // a double free that killed the master on every unsupportedVersion/unauthorized/timeout rejection.
  const handshake_response response = handshake_rejected{code, std::move(message)};
  co_await answer(sock, response);
  std::error_code ec;
  sock.shutdown(asio::socket_base::shutdown_send, ec);
}

template <class Socket>
constexpr bool is_unix = std::is_same_v<Socket, asio::local::stream_protocol::socket>;

// Reads exactly one handshake message: first the segment table, then the rest, never a byte more
// (what follows on this connection is yamux). On a Unix socket the first bytes may bring a
// descriptor (a shared ring's memfd, HandshakeRequest.sharedRing): it lands in `ring_fd`.
template <class Socket>
asio::awaitable<std::pair<std::vector<std::byte>, std::string>> read_handshake(const state_ptr& st, Socket& sock,
                                                                               owned_fd& ring_fd) {
  // The buffer grows with the bytes that actually arrive, a chunk at a time: a segment table that
  // announces a 1 MiB message costs nothing until the bytes come. (It used to be resized to the
  // announced size at once, zero-filled: each slowloris client sending 8 bytes then nothing held
  // 1 MiB of resident memory for the whole handshake timeout.)
  constexpr std::size_t chunk = 16 * 1024;
  asio::steady_timer deadline(sock.get_executor(), st->cfg.handshake_timeout);
  std::vector<std::byte> msg;
  std::size_t want = 8;
  for (;;) {
    const std::size_t have = msg.size();
    if (msg.capacity() < want) msg.reserve(want);  // address space only; pages are touched as filled
    msg.resize(std::min(want, have + chunk));
    bool received = false;
    if constexpr (is_unix<Socket>) {
      if (have == 0) {
        // The first bytes by recvmsg, which keeps a descriptor that travels with them (a plain read
        // would have the kernel close it); the rest as usual.
        auto ready = co_await (sock.async_wait(asio::socket_base::wait_read, use_tuple) || deadline.async_wait(use_tuple));
        if (ready.index() == 1) co_return std::pair{std::vector<std::byte>{}, std::string("timeout")};
        std::error_code ec = std::get<0>(std::get<0>(ready));
        std::size_t n = 0;
        if (!ec) n = receive_with_fd(sock.native_handle(), msg, ring_fd, ec);
        if (ec == std::errc::resource_unavailable_try_again) {
          msg.clear();
          continue;
        }
        if (ec || n == 0) co_return std::pair{std::vector<std::byte>{}, std::string("closed")};
        msg.resize(n);
        if (msg.size() < want) continue;
        received = true;
      }
    }
    if (!received) {
      auto result = co_await (asio::async_read(sock, asio::buffer(msg.data() + have, msg.size() - have), use_tuple) ||
                              deadline.async_wait(use_tuple));
      if (result.index() == 1) co_return std::pair{std::vector<std::byte>{}, std::string("timeout")};
      auto [ec, n] = std::get<0>(result);
      if (ec) co_return std::pair{std::vector<std::byte>{}, std::string("closed")};
      if (msg.size() < want) continue;  // the rest of what is known to belong to the message
    }
    const auto size = message_size(msg, st->cfg.max_handshake_bytes);
    switch (size.what) {
      case message_size_result::kind::error:
        co_return std::pair{std::vector<std::byte>{}, size.error};
      case message_size_result::kind::complete:
        if (size.total_bytes <= msg.size()) co_return std::pair{std::move(msg), std::string{}};
        want = size.total_bytes;
        break;
      case message_size_result::kind::need_more:
        want = std::max(size.need_at_least, msg.size() + 1);
        break;
    }
  }
}

// Holds one of the pending-handshake slots until the handshake has been answered.
class handshake_slot {
 public:
  explicit handshake_slot(const state_ptr& st) : st_(st) { ++st_->pending; }
  ~handshake_slot() { release(); }
  handshake_slot(const handshake_slot&) = delete;
  handshake_slot& operator=(const handshake_slot&) = delete;
  void release() {
    if (!st_) return;
    --st_->pending;
    st_->slot_freed.cancel();
    st_.reset();
  }

 private:
  state_ptr st_;
};

template <class Socket>
asio::awaitable<void> serve_control(state_ptr st, Socket sock, std::string peer) {
  handshake_slot slot(st);
  owned_fd ring_fd;
  auto [bytes, problem] = co_await read_handshake(st, sock, ring_fd);
  if (problem == "closed") {
    st->log.info("control ", peer, ": closed before completing a handshake");
    co_return;
  }
  if (problem == "timeout") {
    co_await reject(st, sock, peer, rejection_code::bad_request,
                    "the handshake did not arrive within " + std::to_string(st->cfg.handshake_timeout.count()) + " ms");
    co_return;
  }
  if (!problem.empty()) {
    co_await reject(st, sock, peer, rejection_code::bad_request, "the handshake is not a valid HandshakeRequest: " + problem);
    co_return;
  }
  handshake_request request;
  if (auto decoded = decode_request(bytes, request); !decoded.ok()) {
    // The sentence is built in a named object, not in the co_await expression: g++ 12 destroyed the
    // std::string temporary of `cond ? decoded.error.message() : decoded.detail` there twice, a
    // double free that killed the master on every well-framed but undecodable handshake
    // (tests/e2e/hostile_control_test.cpp sends thousands).
    std::string why = "the handshake is not a valid HandshakeRequest: ";
    why += decoded.detail.empty() ? decoded.error.message() : decoded.detail;
    co_await reject(st, sock, peer, rejection_code::bad_request, std::move(why));
    co_return;
  }
  if (request.version != 1) {
    co_await reject(st, sock, peer, rejection_code::unsupported_version,
                    "this master speaks handshake version 1; the client sent version " + std::to_string(request.version));
    co_return;
  }
  if (!st->cfg.token.empty() && !token_matches(st->cfg.token, request.token)) {
    co_await reject(st, sock, peer, rejection_code::unauthorized,
                    request.token.empty() ? "this master requires a token (SOCKETMASTER_TOKEN)" : "the token is wrong");
    co_return;
  }
  auto reg = st->reg.register_service(request.socket);
  if (reg.rejected) {
    st->log.warn("control ", peer, ": rejected (", to_string(reg.rejected->code), ") ", describe(request.socket), ": ",
                 reg.rejected->message);
    co_await answer(sock, *reg.rejected);
    co_return;
  }
  const auto id = reg.registration_id;
  std::shared_ptr<yamux::shared_ring> ring;
  std::string no_ring;  // why an offered ring is not used
  if (request.shared_ring) {
    if (!ring_fd)
      no_ring = is_unix<Socket> ? "no descriptor came with the handshake" : "a ring needs a Unix control connection";
    else if (st->cfg.max_shared_ring_bytes == 0)
      no_ring = "--max-shared-ring-bytes is 0";
    else
      ring = yamux::shared_ring::attach(ring_fd.release(), st->cfg.max_shared_ring_bytes, no_ring);
  }
  ring_fd.reset();
  const auto bytes_out = encode(handshake_response{handshake_accepted{id, reg.bound_address, ring != nullptr}});
  auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(bytes_out), use_tuple);
  if (wec) {
    st->reg.abandon(id);
    co_return;
  }
  st->log.info("registration ", id, " from ", peer, ": ", describe(request.socket), " on ", reg.bound_address,
               ring ? ", bulk payload through a shared ring of " + std::to_string(ring->capacity() >> 10) + " KiB" : "");
  if (!no_ring.empty()) {
    // Turned off here is a choice, not a problem with what the service sent.
    if (st->cfg.max_shared_ring_bytes == 0)
      st->log.info("registration ", id, ": its shared ring is not used (payload goes over the socket): ", no_ring);
    else
      st->log.warn("registration ", id, ": its shared ring is not used (payload goes over the socket): ", no_ring);
  }
  slot.release();
  // The master opens every stream and accepts none: a stream a service opens is refused at once,
  // with its data, rather than waiting in a backlog nobody drains (256 of them × a 256 KiB window).
  yamux::config session_cfg = st->cfg.yamux;
  session_cfg.accept_backlog = 0;
  yamux::session session(std::move(sock), yamux::role::client, session_cfg, {std::move(ring), false});
  st->reg.attach(id, session);
  auto [reason] = co_await session.async_wait_closed(use_tuple);
  st->reg.detach(id);
  const auto through_ring = session.ring_payload_bytes();
  st->log.info("registration ", id, " ended: ", reason.message(),
               through_ring ? "; " + std::to_string(through_ring >> 20) + " MiB of its payload came through the shared ring" : "");
}

template <class Acceptor>
asio::awaitable<void> accept_loop(state_ptr st, Acceptor& acceptor, const char* local_peer = "unix") {
  asio::steady_timer backoff(st->ex);
  accept_failures failures;
  bool waited = false;
  while (!st->closed) {
    if (st->pending >= st->cfg.max_pending_handshakes) {
      if (!waited) st->log.warn("control: ", st->pending, " handshakes in progress, the limit; accepting again when one ends");
      waited = true;
      co_await st->slot_freed.async_wait(use_tuple);
      continue;
    }
    waited = false;
    auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
    if (st->closed) co_return;
    if (ec) {
      failures.failed(st->log, "control", ec);
      backoff.expires_after(accept_retry_delay);
      co_await backoff.async_wait(use_tuple);
      continue;
    }
    failures.succeeded(st->log, "control");
    std::string peer;
    std::error_code pec;
    if constexpr (std::is_same_v<std::decay_t<decltype(sock)>, asio::ip::tcp::socket>) {
      auto ep = sock.remote_endpoint(pec);
      peer = pec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
      sock.set_option(asio::ip::tcp::no_delay(true), pec);
    } else {
      peer = local_peer;
      if (st->cfg.unix_send_buffer > 0)
        sock.set_option(asio::socket_base::send_buffer_size(static_cast<int>(st->cfg.unix_send_buffer)), pec);
    }
    asio::co_spawn(st->ex, serve_control(st, std::move(sock), peer), [st](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        st->log.error("control connection failed unexpectedly: ", x.what());
      }
    });
  }
}

}  // namespace

bool control_address_is_local(const std::string& address) {
  if (names_unix_path(address)) return true;
  const auto ep = parse_host_port(address);
  return ep && ep->address().is_loopback();
}

control_listener::control_listener(asio::any_io_executor ex, const master_config& cfg, registry& reg, logger& log)
    : state_(std::make_shared<state>(std::move(ex), cfg, reg, log)) {}

control_listener::~control_listener() { close(); }

std::error_code control_listener::bind() {
  std::error_code ec;
  const std::string& address = state_->cfg.control_address;
  if (names_unix_path(address)) {
    // A stale socket file from a previous run would make bind fail; remove it only if it is a socket.
    std::filesystem::path p(address);
    if (std::filesystem::is_socket(p, ec)) std::filesystem::remove(p, ec);
    ec.clear();
    auto& acc = state_->local.emplace(state_->ex);
    asio::local::stream_protocol::endpoint ep(address);
    acc.open(ep.protocol(), ec);
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
    state_->bound = address;
    return ec;
  }
  const auto parsed = parse_host_port(address);
  if (!parsed) return std::make_error_code(std::errc::invalid_argument);
  const asio::ip::tcp::endpoint ep = *parsed;
  const auto ip = ep.address();
  auto& acc = state_->tcp.emplace(state_->ex);
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) {
    const auto local = acc.local_endpoint(ec);
    state_->bound = host_port_text(local);
  }
  if (ec) return ec;
  if (ip.is_loopback() && state_->cfg.same_host_socket) {
    // Taken by another process, the name is refused like a taken port: a service trying the name
    // first must only ever find this master behind it.
    const std::string name = same_host_socket_name(state_->bound);
    auto& same = state_->same_host.emplace(state_->ex);
    asio::local::stream_protocol::endpoint sep(name);
    same.open(sep.protocol(), ec);
    if (!ec) same.bind(sep, ec);
    if (!ec) same.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) state_->bind_problem = "its same-host socket @" + name.substr(1) + " (--no-same-host-socket turns it off)";
  }
  return ec;
}

std::string control_listener::same_host_name() const {
  return state_->same_host ? "@" + same_host_socket_name(state_->bound).substr(1) : std::string{};
}
std::string control_listener::bind_problem() const { return state_->bind_problem; }

std::string control_listener::bound_address() const { return state_->bound; }

void control_listener::start() {
  auto on_exit = [](std::exception_ptr) {};
  if (state_->tcp) asio::co_spawn(state_->ex, accept_loop(state_, *state_->tcp), on_exit);
  if (state_->local) asio::co_spawn(state_->ex, accept_loop(state_, *state_->local), on_exit);
  if (state_->same_host) asio::co_spawn(state_->ex, accept_loop(state_, *state_->same_host, "same-host"), on_exit);
}

void control_listener::close() {
  state_->closed = true;
  state_->slot_freed.cancel();
  std::error_code ec;
  if (state_->tcp) state_->tcp->close(ec);
  if (state_->same_host) state_->same_host->close(ec);  // an abstract name: no file to remove
  if (state_->local) {
    state_->local->close(ec);
    std::filesystem::remove(state_->bound, ec);
  }
}

}  // namespace socketmaster::server
