// The SDK listener: handshake, the yamux session (the service is the yamux server), PROXY v2
// stripping, reconnect with jittered exponential backoff, drain. See socketmaster/client.hpp.
#include "socketmaster/client.hpp"

#include <array>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string_view>
#include <tuple>

#include <asio/cancellation_state.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include "protocol/errors.hpp"
#include "protocol/fd_passing.hpp"
#include "protocol/handshake.hpp"
#include "protocol/host_port.hpp"
#include "protocol/proxy_header.hpp"
#include "protocol/session.hpp"
#include "protocol/shared_ring.hpp"

namespace socketmaster::client {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
using namespace asio::experimental::awaitable_operators;

// Rejections that retrying cannot fix: the listener ends with them instead of looping forever.
bool permanent(rejection_code c) {
  switch (c) {
    case rejection_code::bad_request:
    case rejection_code::unsupported_version:
    case rejection_code::unauthorized:
    case rejection_code::conflict:
    case rejection_code::bad_certificate:
      return true;
    case rejection_code::bind_failed:
    case rejection_code::internal:
      return false;
  }
  return true;
}

std::error_code to_error(rejection_code c) {
  switch (c) {
    case rejection_code::unauthorized: return std::make_error_code(std::errc::permission_denied);
    case rejection_code::conflict: return std::make_error_code(std::errc::address_in_use);
    case rejection_code::bind_failed: return std::make_error_code(std::errc::address_not_available);
    case rejection_code::bad_certificate:
    case rejection_code::bad_request: return std::make_error_code(std::errc::invalid_argument);
    case rejection_code::unsupported_version: return std::make_error_code(std::errc::protocol_not_supported);
    case rejection_code::internal: return std::make_error_code(std::errc::io_error);
  }
  return std::make_error_code(std::errc::io_error);
}

}  // namespace

std::error_code options::validate(const char** what) const {
  const auto bad = [&](const char* name) {
    if (what) *what = name;
    return make_error_code(errc::invalid_config);
  };
  if (connect_timeout.count() <= 0) return bad("connect_timeout must be positive");
  if (reconnect_min.count() <= 0) return bad("reconnect_min must be positive");
  if (reconnect_max < reconnect_min) return bad("reconnect_max must be at least reconnect_min");
  if (proxy_header_timeout.count() <= 0) return bad("proxy_header_timeout must be positive");
  if (unix_send_buffer > max_unix_send_buffer) return bad("unix_send_buffer must be at most 1 GiB");
  if (shared_ring_bytes != 0 && (shared_ring_bytes < yamux::shared_ring::min_capacity || shared_ring_bytes % 4096 != 0 ||
                                 shared_ring_bytes > max_unix_send_buffer))
    return bad("shared_ring_bytes must be 0, or a multiple of 4096 from 64 KiB to 1 GiB");
  return yamux.validate(what);
}

std::string load_pem_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::system_error(std::make_error_code(std::errc::no_such_file_or_directory), "cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

tls_certificate load_certificate(const std::string& chain_path, const std::string& key_path) {
  return {load_pem_file(chain_path), load_pem_file(key_path)};
}

namespace detail {

struct listener_state {
  listener_state(asio::any_io_executor e, socket_definition d, options o)
      : ex(std::move(e)), def(std::move(d)), opts(std::move(o)), session_ready(ex), backoff(ex), connect_deadline(ex) {
    session_ready.expires_at(asio::steady_timer::time_point::max());
  }
  asio::any_io_executor ex;
  socket_definition def;
  options opts;
  logger& log() { return opts.log ? *opts.log : logger::null(); }

  // Shared: accepts in progress hold it while the supervisor may replace it after a reconnect.
  std::shared_ptr<yamux::session> session;
  std::string bound_address;
  std::uint64_t registration_id = 0;
  asio::steady_timer session_ready;  // cancelled to wake accepters when a session is (re)established or we stop
  asio::steady_timer backoff;
  // Bounds the connect + handshake in progress (never two at once); close() cancels it.
  asio::steady_timer connect_deadline;
  listen_error failure;  // set once the listener has given up
  bool via_same_host = false;  // the latest connection went to the master's same-host socket
  bool draining = false;
  bool closed = false;

  void wake_accepters() {
    session_ready.cancel();
    session_ready.expires_at(asio::steady_timer::time_point::max());
  }
  // Stops everything that could keep the listener alive: backoff, a connect in progress, waiters.
  void stop(listen_error why) {
    if (!failure.code) failure = std::move(why);
    closed = true;
    backoff.cancel();
    connect_deadline.cancel();
    wake_accepters();
  }
  void registered(const handshake_accepted& accepted) {
    registration_id = accepted.registration_id;
    bound_address = accepted.bound_address;
    if (opts.on_registered) opts.on_registered(registration_id, bound_address);
  }
};

const asio::any_io_executor& executor_of(const listener_state& st) { return st.ex; }

namespace {

struct handshake_outcome {
  listen_error error;
  std::shared_ptr<yamux::session> session;
  handshake_accepted accepted;
};

template <class Socket>
asio::awaitable<handshake_outcome> handshake_over(listener_state& st, Socket sock, asio::steady_timer& deadline) {
  handshake_outcome out;
  handshake_request req;
  req.token = st.opts.token;
  req.socket = st.def;
  std::shared_ptr<yamux::shared_ring> ring;
  if constexpr (std::is_same_v<Socket, asio::local::stream_protocol::socket>) {
    // Without a ring (memfd_create refused, say) the payload goes over the socket as it always can.
    std::error_code rec;
    if (st.opts.shared_ring_bytes > 0) ring = yamux::shared_ring::create(st.opts.shared_ring_bytes, rec);
  }
  req.shared_ring = ring != nullptr;
  const auto bytes = encode(req);
  std::size_t first = 0;
  if (ring) {
    // The ring's descriptor rides on the request's first bytes; a fresh socket takes them at once.
    std::error_code sec;
    first = send_with_fd(sock.native_handle(), bytes, ring->fd(), sec);
    if (sec) {
      out.error = {sec, "could not send the handshake to the master: " + sec.message()};
      co_return out;
    }
  }
  auto w = co_await (asio::async_write(sock, asio::buffer(bytes.data() + first, bytes.size() - first), use_tuple) ||
                     deadline.async_wait(use_tuple));
  if (w.index() == 1) {
    out.error = {std::make_error_code(std::errc::timed_out), "the master did not take the handshake in time"};
    co_return out;
  }
  if (auto [ec, n] = std::get<0>(w); ec) {
    out.error = {ec, "could not send the handshake to the master: " + ec.message()};
    co_return out;
  }
  std::vector<std::byte> msg;
  std::size_t want = 8;
  for (;;) {
    const std::size_t have = msg.size();
    msg.resize(want);
    auto r = co_await (asio::async_read(sock, asio::buffer(msg.data() + have, want - have), use_tuple) ||
                       deadline.async_wait(use_tuple));
    if (r.index() == 1) {
      out.error = {std::make_error_code(std::errc::timed_out), "the master did not answer the handshake in time"};
      co_return out;
    }
    if (auto [ec, n] = std::get<0>(r); ec) {
      out.error = {ec, "the master closed the connection during the handshake: " + ec.message()};
      co_return out;
    }
    const auto size = message_size(msg, max_handshake_bytes);
    if (size.what == message_size_result::kind::error) {
      out.error = {make_error_code(errc::protocol_error), "the master's answer is not a handshake response: " + size.error};
      co_return out;
    }
    if (size.what == message_size_result::kind::complete && size.total_bytes <= msg.size()) break;
    want = size.what == message_size_result::kind::complete ? size.total_bytes : std::max(size.need_at_least, msg.size() + 1);
  }
  handshake_response response;
  if (auto decoded = decode_response(msg, response); !decoded.ok()) {
    out.error = {decoded.error, "the master's answer is not a handshake response: " +
                                    (decoded.detail.empty() ? decoded.error.message() : decoded.detail)};
    co_return out;
  }
  if (auto* rejected = std::get_if<handshake_rejected>(&response)) {
    out.error = {to_error(rejected->code), rejected->message, rejected->code};
    co_return out;
  }
  out.accepted = std::get<handshake_accepted>(response);
  // From here on the connection is the yamux session; the master opens the streams.
  if (!out.accepted.shared_ring) ring.reset();  // the master reads none: ordinary frames only
  out.session = std::make_shared<yamux::session>(std::move(sock), yamux::role::server, st.opts.yamux,
                                                 yamux::session::ring_use{std::move(ring), true});
  co_return out;
}

// A Unix stream connect completes or fails at once, so it is made as a non-blocking call. Then one
// pass through the reactor before the handshake: connect_and_register() starts inline, and when
// the blocking listen() runs inside a handler of its io_context (its run_one() loop nests), a
// completion Asio queues at once (the first write to a Unix socket, an async_connect) would land on
// the outer handler's thread-private queue, which only that handler's end releases. The pass is an
// expired timer's: a wait for writability would leave the socket registered for it for good, and
// a Unix socket would then wake us each time the master reads (see session.hpp).
asio::awaitable<std::error_code> connect_local(asio::local::stream_protocol::socket& sock,
                                               const asio::local::stream_protocol::endpoint& ep,
                                               std::size_t send_buffer) {
  std::error_code ec;
  sock.open(asio::local::stream_protocol(), ec);
  if (!ec) sock.non_blocking(true, ec);
  if (!ec && send_buffer > 0) sock.set_option(asio::socket_base::send_buffer_size(static_cast<int>(send_buffer)), ec);
  if (!ec) sock.connect(ep, ec);
  if (ec) co_return ec;
  asio::steady_timer pass(sock.get_executor(), asio::steady_timer::time_point::min());
  co_await pass.async_wait(use_tuple);
  co_return ec;
}

asio::awaitable<handshake_outcome> connect_and_register(listener_state& st) {
  auto& deadline = st.connect_deadline;
  deadline.expires_after(st.opts.connect_timeout);
  const std::string& addr = st.opts.master_address;
  handshake_outcome out;
  const auto failed = [&](std::error_code ec, bool timed_out) {
    if (timed_out) ec = st.closed || st.draining ? asio::error::operation_aborted : std::make_error_code(std::errc::timed_out);
    out.error = {ec, "cannot connect to the master at " + addr + ": " + (timed_out ? std::string("timed out") : ec.message())};
    return out;
  };
  if (names_unix_path(addr)) {
    // Asio's endpoint throws for a path sockaddr_un cannot hold, and an exception out of here would
    // reach the caller as operation_canceled with no sentence.
    if (addr.size() > max_unix_path_bytes) co_return failed(std::make_error_code(std::errc::filename_too_long), false);
    asio::local::stream_protocol::socket sock(st.ex);
    if (auto ec = co_await connect_local(sock, asio::local::stream_protocol::endpoint(addr), st.opts.unix_send_buffer)) co_return failed(ec, false);
    co_return co_await handshake_over(st, std::move(sock), deadline);
  }
  const auto master = parse_host_port(addr);
  if (!master || master->port() == 0) {
    out.error = {std::make_error_code(std::errc::invalid_argument),
                 "the master address '" + addr + "': " + host_port_expected + " (not 0), or a Unix socket path with a '/'"};
    co_return out;
  }
  const auto ip = master->address();
  std::error_code ec;
  st.via_same_host = false;
  if (ip.is_loopback() && st.opts.same_host_socket) {
    // The master's same-host socket first (no TCP on the hop). Nobody behind the name (a master
    // that runs without it, another implementation) or a full backlog refuses at once: TCP then.
    const std::string bound = host_port_text(*master);
    asio::local::stream_protocol::socket local(st.ex);
    if (!co_await connect_local(local, asio::local::stream_protocol::endpoint(same_host_socket_name(bound)),
                              st.opts.unix_send_buffer)) {
      st.via_same_host = true;
      co_return co_await handshake_over(st, std::move(local), deadline);
    }
  }
  asio::ip::tcp::socket sock(st.ex);
  auto c = co_await (sock.async_connect(*master, use_tuple) || deadline.async_wait(use_tuple));
  if (c.index() == 1 || std::get<0>(std::get<0>(c))) co_return failed(c.index() == 0 ? std::get<0>(std::get<0>(c)) : std::error_code{}, c.index() == 1);
  sock.set_option(asio::ip::tcp::no_delay(true), ec);
  co_return co_await handshake_over(st, std::move(sock), deadline);
}

// Keeps the registration alive: waits for the session to end, then reconnects and registers the
// same definition again, until closed, drained, or permanently rejected.
asio::awaitable<void> supervise(std::shared_ptr<listener_state> st) {
  std::mt19937 rng(std::random_device{}());
  int attempt = 0;
  // The backoff starts over only after a session that lasted: a master that takes the
  // registration and drops the connection at once must not be redialled every 100 ms for ever.
  auto session_began = std::chrono::steady_clock::now();
  for (;;) {
    if (auto s = st->session) {
      co_await s->async_wait_closed(use_tuple);
      if (st->session == s) st->session.reset();
      if (st->closed || st->draining) co_return;
      if (std::chrono::steady_clock::now() - session_began >= st->opts.reconnect_max) attempt = 0;
      st->log().warn("registration ", st->registration_id, ": connection to the master lost (",
                     s->close_reason().message(), "); reconnecting");
      st->wake_accepters();  // accepters parked on the old session look again
    }
    // Jittered exponential backoff: spread a fleet of services that lost the same master.
    const auto base = std::min<std::int64_t>(st->opts.reconnect_max.count(),
                                             st->opts.reconnect_min.count() << std::min(attempt, 16));
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    st->backoff.expires_after(std::chrono::milliseconds(static_cast<std::int64_t>(base * jitter(rng))));
    co_await st->backoff.async_wait(use_tuple);
    if (st->closed || st->draining) co_return;
    ++attempt;
    auto out = co_await connect_and_register(*st);
    if (st->closed || st->draining) co_return;  // out.session, if any, closes as it goes
    if (out.session) {
      session_began = std::chrono::steady_clock::now();
      st->session = std::move(out.session);
      st->log().info("registration ", out.accepted.registration_id, ": registered again on ", out.accepted.bound_address);
      st->registered(out.accepted);
      st->wake_accepters();
      continue;
    }
    if (out.error.rejection && permanent(*out.error.rejection)) {
      st->log().error("registration rejected for good (", to_string(*out.error.rejection), "): ", out.error.message);
      st->stop(std::move(out.error));
      co_return;
    }
    st->log().info("reconnect attempt ", attempt, " failed: ", out.error.message);
  }
}

}  // namespace

std::string exception_text(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

asio::awaitable<std::pair<listen_error, std::shared_ptr<listener_state>>> start(asio::any_io_executor ex,
                                                                                 socket_definition def, options opts) {
  if (opts.master_address.empty()) {
    const char* env = std::getenv("SOCKETMASTER_ADDR");
    opts.master_address = env && *env ? env : "127.0.0.1:9999";
  }
  if (opts.token.empty())
    if (const char* env = std::getenv("SOCKETMASTER_TOKEN")) opts.token = env;
  if (const char* env = std::getenv("SOCKETMASTER_SAME_HOST_SOCKET"); env && std::string_view(env) == "0")
    opts.same_host_socket = false;
  def.proxy_protocol = def.proxy_protocol || opts.proxy_protocol;
  const char* what = nullptr;
  if (auto ec = opts.validate(&what))
    co_return std::pair{listen_error{ec, std::string("invalid client option: ") + what}, nullptr};
  auto st = std::make_shared<listener_state>(ex, std::move(def), std::move(opts));
  auto out = co_await connect_and_register(*st);
  if (!out.session) co_return std::pair{std::move(out.error), nullptr};
  st->session = std::move(out.session);
  st->log().info("registration ", out.accepted.registration_id, ": listening on ", out.accepted.bound_address);
  st->registered(out.accepted);
  asio::co_spawn(ex, supervise(st), [st](std::exception_ptr e) {
    if (!e) return;
    // A bug (or a throwing on_registered): say so once, and stop pretending to be registered.
    const auto what = exception_text(e);
    st->log().error("registration ", st->registration_id, ": reconnect supervisor failed: ", what);
    st->stop({std::make_error_code(std::errc::state_not_recoverable), what});
  });
  co_return std::pair{listen_error{}, std::move(st)};
}

namespace {

// Reads the PROXY v2 header the master writes first on each stream (16 fixed bytes, then its
// stated length). The master sends it with the stream's first frame, so it is normally taken from
// what has arrived already, without an event-loop turn; only a header that is not all there yet
// is waited for, within the configured time.
asio::awaitable<std::optional<proxy_info>> read_proxy_header(listener_state& st, yamux::stream& s) {
  std::vector<std::byte> header(proxy_v2_fixed_bytes);
  std::size_t have = 0;
  std::optional<asio::steady_timer> deadline;
  for (;;) {
    have += s.read_buffered(asio::buffer(header.data() + have, header.size() - have));
    if (have < header.size()) {
      if (!deadline) deadline.emplace(st.ex, st.opts.proxy_header_timeout);
      auto r = co_await (asio::async_read(s, asio::buffer(header.data() + have, header.size() - have), use_tuple) ||
                         deadline->async_wait(use_tuple));
      if (r.index() == 1) {
        st.log().warn("stream ", s.id(), ": no PROXY header from the master in time; dropped");
        co_return std::nullopt;
      }
      if (std::get<0>(std::get<0>(r))) co_return std::nullopt;  // the stream ended first
      have = header.size();
    }
    auto parsed = parse_proxy_v2(header);
    if (parsed.what == proxy_parse_result::kind::complete) co_return parsed.info;
    if (parsed.what == proxy_parse_result::kind::error) {
      st.log().warn("stream ", s.id(), ": bad PROXY header from the master (", parsed.error, "); dropped");
      co_return std::nullopt;
    }
    header.resize(parsed.header_bytes);
  }
}

bool cancelled(const asio::cancellation_state& cs) { return cs.cancelled() != asio::cancellation_type::none; }

}  // namespace

std::shared_ptr<yamux::session> accepting_session(const listener_state& st) {
  if (st.closed || !st.session || !st.session->is_open()) return nullptr;
  return st.session;
}

namespace {

// The stream as the application sees it: the public client's endpoints from its PROXY header (none
// for a LOCAL one).
stream client_stream(yamux::stream s, const proxy_info& info) {
  if (info.local) return stream(std::move(s), {}, {});
  return stream(std::move(s), info.source, info.destination);
}

}  // namespace

taken_stream take_stream(listener_state& st, yamux::stream s) {
  if (!st.def.proxy_protocol) return {taken_stream::kind::ready, stream(std::move(s), {}, {}), {}};
  // Only a header that is all there is taken; otherwise nothing is consumed and accept_one reads it.
  std::array<std::byte, proxy_v2_fixed_bytes> fixed;
  if (s.peek_buffered(asio::buffer(fixed)) < fixed.size()) return {taken_stream::kind::wait, {}, std::move(s)};
  auto parsed = parse_proxy_v2(fixed);
  if (parsed.what == proxy_parse_result::kind::need_more) {
    if (s.available() < parsed.header_bytes) return {taken_stream::kind::wait, {}, std::move(s)};
    // On the stack unless TLVs make it long (an address pair is at most 216 bytes).
    std::array<std::byte, 256> small;
    std::vector<std::byte> large;
    std::span<std::byte> header(small.data(), parsed.header_bytes);
    if (parsed.header_bytes > small.size()) {
      large.resize(parsed.header_bytes);
      header = large;
    }
    s.read_buffered(asio::buffer(header.data(), header.size()));
    parsed = parse_proxy_v2(header);
  } else {
    s.read_buffered(asio::buffer(fixed));
  }
  if (parsed.what != proxy_parse_result::kind::complete) {
    st.log().warn("stream ", s.id(), ": bad PROXY header from the master (", parsed.error, "); dropped");
    s.reset();
    return {taken_stream::kind::dropped, {}, {}};
  }
  return {taken_stream::kind::ready, client_stream(std::move(s), parsed.info), {}};
}

asio::awaitable<std::pair<std::error_code, stream>> accept_one(std::shared_ptr<listener_state> st, yamux::stream s) {
  const auto aborted = [&] {
    return std::pair{st->closed && st->failure.code ? st->failure.code : std::error_code(asio::error::operation_aborted),
                     stream{}};
  };
  for (;;) {
    if (!s.is_open()) {  // else taken from the session already (start_accept), its header on its way
      if (st->closed) co_return aborted();
      auto session = st->session;
      if (!session || !session->is_open()) {
        // Draining with no session left: nothing more will come.
        if (st->draining) co_return aborted();
        // Reconnecting: wait for the supervisor's signal (a cancelled wait is the wake-up).
        co_await st->session_ready.async_wait(use_tuple);
        if (cancelled(co_await asio::this_coro::cancellation_state)) co_return std::pair{std::error_code(asio::error::operation_aborted), stream{}};
        continue;
      }
      // Also while draining: streams the master opened before it saw our GoAway are still ours to
      // serve; the session refuses later ones, and the drain closes it once everything is done.
      std::error_code ec;
      std::tie(ec, s) = co_await session->async_accept(use_tuple);
      if (cancelled(co_await asio::this_coro::cancellation_state)) {
        if (!ec) s.reset();  // taken from the session just as the caller gave up: refuse it
        co_return std::pair{std::error_code(asio::error::operation_aborted), stream{}};
      }
      if (ec) continue;  // the session ended: the supervisor reconnects (or we were closed)
    }
    if (!st->def.proxy_protocol) co_return std::pair{std::error_code{}, stream(std::move(s), {}, {})};
    // A caller giving up now would lose this stream: finish reading its header first.
    co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
    auto info = co_await read_proxy_header(*st, s);
    co_await asio::this_coro::reset_cancellation_state();
    if (info) co_return std::pair{std::error_code{}, client_stream(std::move(s), *info)};
    s.reset();
    s = yamux::stream{};
  }
}

void begin_drain(listener_state& st) {
  if (st.draining || st.closed) return;
  st.draining = true;
  st.backoff.cancel();
  st.connect_deadline.cancel();
  st.wake_accepters();
  if (st.session && st.session->is_open()) {
    st.session->go_away();
    st.log().info("registration ", st.registration_id, ": draining, ", st.session->stream_count(), " streams open");
  }
}

asio::awaitable<std::error_code> finish_drain(std::shared_ptr<listener_state> st, std::chrono::milliseconds deadline) {
  std::error_code result;
  if (auto session = st->session; session && session->is_open() && !st->closed) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    // The GoAway went out before this ping: once the answer is back, the master has seen it and
    // every stream it opened before that has arrived (refused or in the accept backlog).
    asio::steady_timer limit(st->ex, deadline);
    co_await (session->async_ping(use_tuple) || limit.async_wait(use_tuple));
    // Then every stream runs to its end, or the deadline (the same expiry) cuts them.
    std::error_code lost;  // the connection to the master ended while streams were still open
    if (std::chrono::steady_clock::now() < until) {
      const auto open = session->stream_count();
      auto waited = co_await (session->async_wait_idle(use_tuple) || limit.async_wait(use_tuple));
      if (waited.index() == 0 && open > 0) lost = std::get<0>(std::get<0>(waited));
    }
    if (lost) {
      // Not a clean drain: whatever those streams still had to say was lost with the connection.
      st->log().warn("registration ", st->registration_id, ": the connection to the master ended during the drain (",
                     lost.message(), "); the streams still open were cut");
      result = lost;
    } else if (const auto left = session->is_open() ? session->stream_count() : 0) {
      st->log().warn("registration ", st->registration_id, ": drain deadline reached, ", left, " streams cut");
      result = std::make_error_code(std::errc::timed_out);
    } else {
      st->log().info("registration ", st->registration_id, ": drained");
    }
    session->close();
  }
  st->stop({asio::error::operation_aborted, "the listener was drained"});
  co_return result;
}

}  // namespace detail

listener& listener::operator=(listener&& other) noexcept {
  if (this != &other) {
    close();
    state_ = std::move(other.state_);
  }
  return *this;
}

listener::~listener() { close(); }

listener::executor_type listener::get_executor() const { return state_->ex; }
std::string listener::bound_address() const { return state_ ? state_->bound_address : std::string{}; }
std::uint64_t listener::registration_id() const { return state_ ? state_->registration_id : 0; }
bool listener::connected() const { return state_ && state_->session && state_->session->is_open(); }
bool listener::via_same_host_socket() const { return state_ && state_->via_same_host; }
std::error_code listener::error() const { return state_ ? state_->failure.code : std::error_code{}; }
listen_error listener::failure() const { return state_ ? state_->failure : listen_error{}; }

void listener::close() {
  if (!state_) return;
  state_->stop({asio::error::operation_aborted, "the listener was closed"});
  if (state_->session) state_->session->close();
}

listener listen(asio::io_context& io, const socket_definition& def, const options& opts, listen_error& error) {
  bool done = false;
  listener result;
  async_listen(io.get_executor(), def, opts, [&](listen_error e, listener l) {
    error = std::move(e);
    result = std::move(l);
    done = true;
  });
  // Drive the io_context just until the handshake is answered; the caller runs it afterwards.
  while (!done && !io.stopped()) io.run_one();
  if (io.stopped()) io.restart();
  if (!done) error = {asio::error::operation_aborted, "the io_context was stopped before the master answered"};
  return result;
}

listener listen(asio::io_context& io, const socket_definition& def, const options& opts) {
  listen_error error;
  auto l = listen(io, def, opts, error);
  if (error.code) throw std::system_error(error.code, error.message);
  return l;
}

}  // namespace socketmaster::client
