// The socketmaster client SDK: register a public socket with the local master and accept the public
// connections it forwards, as streams that work with asio::async_read/async_write and
// asio::ssl::stream like sockets do.
//
//   auto l = socketmaster::client::listen(io, {.port = 8000, .http = socketmaster::http_route{"", "/a"}});
//   for (;;) { auto s = co_await l.async_accept(asio::use_awaitable); /* s.remote_endpoint() ... */ }
//
// The listener survives master restarts (it reconnects with jittered exponential backoff and
// registers again; pending accepts keep waiting; streams of the lost session end with an error),
// gives up on permanent rejections (conflict, bad token, bad certificate, bad request), and drains
// for zero-downtime redeploys (GoAway, let open streams finish, close).
//
// Concurrency: a listener and its streams belong to the executor given to listen(); use them from
// it (one thread, or a strand). Destroying a listener closes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/dispatch.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/use_awaitable.hpp>

#include "protocol/config.hpp"
#include "protocol/handshake.hpp"
#include "protocol/logger.hpp"
#include "protocol/session.hpp"
#include "protocol/stream.hpp"

namespace socketmaster::client {

using socketmaster::http_route;
using socketmaster::rejection_code;
using socketmaster::socket_definition;
using socketmaster::tls_certificate;

// Reads a whole PEM file (certificate chain or key); throws std::system_error if it cannot.
std::string load_pem_file(const std::string& path);
// A TLS certificate from two PEM files.
tls_certificate load_certificate(const std::string& chain_path, const std::string& key_path);

struct options {
  // host:port (an IP literal or localhost), or a Unix socket path (anything with a '/').
  // Empty: $SOCKETMASTER_ADDR, else 127.0.0.1:9999.
  std::string master_address;
  // For a loopback host:port, reach the master through its same-host socket (an abstract Unix
  // socket named after the control address; the same handshake and yamux without TCP on the hop,
  // about 1.5x the bulk throughput) when it has one, else TCP. SOCKETMASTER_SAME_HOST_SOCKET=0
  // in the environment turns it off.
  bool same_host_socket = true;
  // Send buffer asked of the kernel for a Unix control connection (the same-host socket or a
  // socket path), which caps the request at net.core.wmem_max and then doubles it; 0 keeps the
  // kernel's default (208 KiB). Loopback TCP grows its buffer to megabytes by itself; a Unix socket
  // does not, and at 208 KiB a bulk body wakes this side and the master every 200 KiB (1 MiB, on a
  // host whose wmem_max allows it: about 4x fewer system calls and context switches per GiB; with
  // the kernel's stock wmem_max of 208 KiB it is granted 416 KiB). Kernel memory, used only while
  // bytes wait.
  std::size_t unix_send_buffer = 1 << 20;
  // Over a Unix control connection (the same-host socket or a socket path), offer the master a
  // shared-memory ring of this many bytes (a multiple of 4096, at least 64 KiB; 0 = none) through
  // which stream writes of 16 KiB and more reach it without passing through the socket: one copy
  // into the ring here, none out of the socket there. Payload that finds it full goes over the
  // socket; the default is a stream's largest window (yamux::config::max_stream_window), so one
  // bulk body never does. Pages are committed as bulk payload passes and given back after a
  // housekeeping tick without any; the memory goes with the connection. A master that does not
  // take it (an older one, --max-shared-ring-bytes) gets ordinary frames.
  std::size_t shared_ring_bytes = 16 << 20;
  // Shared token. Empty: $SOCKETMASTER_TOKEN, else none.
  std::string token;
  // Connecting to the master and its handshake answer, together, must take at most this.
  std::chrono::milliseconds connect_timeout{10'000};
  // Reconnect backoff after the control connection drops: from min doubling to max, +-50% jitter;
  // it starts over from min only after a session that lasted at least max.
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5'000};
  // Ask the master for a PROXY v2 header on every stream (stripped here; remote_endpoint() reports it).
  bool proxy_protocol = true;
  // A stream whose PROXY header has not arrived within this is reset (the master sends it at once).
  std::chrono::milliseconds proxy_header_timeout{5'000};
  yamux::config yamux{};
  logger* log = nullptr;  // null: silent
  // Called on the listener's executor after every successful registration, the first one and each
  // one after a reconnect, with the master's registration id and bound address (which changes
  // across a master restart when the definition asks for port 0).
  std::function<void(std::uint64_t registration_id, const std::string& bound_address)> on_registered;

  // errc::invalid_config when a value is out of range (`what` names it), yamux's included.
  std::error_code validate(const char** what = nullptr) const;
};

// Why listen() failed, or why a listener gave up: an error code, a sentence ready to print (the
// master's own when it rejected us) and, for a rejection, the master's code. Rejections map to:
// conflict → address_in_use, unauthorized → permission_denied, bad_certificate and bad_request →
// invalid_argument, bind_failed → address_not_available, unsupported_version →
// protocol_not_supported, internal → io_error (std::errc values).
struct listen_error {
  std::error_code code;
  std::string message = {};  // ready to print
  std::optional<rejection_code> rejection = std::nullopt;
};

// One public connection, forwarded by the master.
class stream {
 public:
  using executor_type = yamux::stream::executor_type;
  using lowest_layer_type = stream;

  stream() = default;
  stream(yamux::stream s, asio::ip::tcp::endpoint remote, asio::ip::tcp::endpoint local)
      : inner_(std::move(s)), remote_(remote), local_(local) {}

  executor_type get_executor() const { return inner_.get_executor(); }
  lowest_layer_type& lowest_layer() { return *this; }
  bool is_open() const { return inner_.is_open(); }
  // The public client's address as the master saw it (from the PROXY v2 header); a default
  // endpoint when no header was asked for (options::proxy_protocol false, the definition's
  // proxy_protocol false) or the master sent a LOCAL one.
  asio::ip::tcp::endpoint remote_endpoint() const { return remote_; }
  // The public address the client connected to (same source).
  asio::ip::tcp::endpoint local_endpoint() const { return local_; }

  template <class MutableBufferSequence, class Token = asio::default_completion_token_t<executor_type>>
  auto async_read_some(const MutableBufferSequence& b, Token&& token = Token()) {
    return inner_.async_read_some(b, std::forward<Token>(token));
  }
  template <class ConstBufferSequence, class Token = asio::default_completion_token_t<executor_type>>
  auto async_write_some(const ConstBufferSequence& b, Token&& token = Token()) {
    return inner_.async_write_some(b, std::forward<Token>(token));
  }
  // async_write and then shutdown_send(), with the FIN in the same system call as the last bytes:
  // the cheapest way to send an answer that ends the connection (yamux::stream::async_write_last).
  template <class ConstBufferSequence, class Token = asio::default_completion_token_t<executor_type>>
  auto async_write_last(const ConstBufferSequence& b, Token&& token = Token()) {
    return inner_.async_write_last(b, std::forward<Token>(token));
  }
  // Half-close: FIN after what was written; keep reading until the client's EOF.
  void shutdown_send() { inner_.shutdown_send(); }
  void reset() { inner_.reset(); }
  void cancel() { inner_.cancel(); }
  void close() { inner_.close(); }
  void close(std::error_code& ec) { inner_.close(ec); }
  yamux::stream& next_layer() { return inner_; }

 private:
  yamux::stream inner_;
  asio::ip::tcp::endpoint remote_;
  asio::ip::tcp::endpoint local_;
};

namespace detail {
struct listener_state;
// Accepts the next stream with all the listener's rules (reconnects, drain, close, PROXY header
// within its deadline); `taken`: a stream already taken from the session, its header on its way.
asio::awaitable<std::pair<std::error_code, stream>> accept_one(std::shared_ptr<listener_state> st,
                                                               yamux::stream taken = {});
// The session an accept can wait on directly: open, and the listener not closed; else null.
std::shared_ptr<yamux::session> accepting_session(const listener_state& st);
// A stream just taken from the session: ready (its PROXY header was there whole and is read),
// dropped (a bad header: reset), or wait (the header is not all there: nothing was consumed).
struct taken_stream {
  enum class kind { ready, dropped, wait } what;
  stream ready;
  yamux::stream waiting;
};
taken_stream take_stream(listener_state& st, yamux::stream s);
const asio::any_io_executor& executor_of(const listener_state& st);
// What an exception that ended one of our coroutines says (a throwing on_registered callback, say),
// for a listen_error's message: a bug surfaces with its sentence, not as a bare operation_canceled.
std::string exception_text(std::exception_ptr e);
void begin_drain(listener_state& st);
asio::awaitable<std::error_code> finish_drain(std::shared_ptr<listener_state> st, std::chrono::milliseconds deadline);
asio::awaitable<std::pair<listen_error, std::shared_ptr<listener_state>>> start(asio::any_io_executor ex,
                                                                                 socket_definition def, options opts);

// Runs `coro` and completes `token` with its (error_code, value) result.
template <class Value, class Token, class Coro>
auto run_as(asio::any_io_executor ex, Coro coro, Token&& token) {
  return asio::async_initiate<Token, void(std::error_code, Value)>(
      [ex](auto handler, Coro c) mutable {
        auto slot = asio::get_associated_cancellation_slot(handler);
        auto done = [h = std::move(handler), ex](std::exception_ptr e, std::pair<std::error_code, Value> r) mutable {
          if (e) r.first = std::make_error_code(std::errc::operation_canceled);
          auto hex = asio::get_associated_executor(h, ex);
          asio::dispatch(hex, [h = std::move(h), r = std::move(r)]() mutable { std::move(h)(r.first, std::move(r.second)); });
        };
        asio::co_spawn(ex, std::move(c), asio::bind_cancellation_slot(slot, std::move(done)));
      },
      token, std::move(coro));
}

// async_accept without a coroutine in the common case: the session's accept completes straight
// into this, which reads the PROXY header from the stream's first frame and hands the stream over in
// the same turn (issue 6: a coroutine per accept cost hello-sdk a turn of the event loop and a
// tenth of its instructions per Connection: close request). Everything else (reconnecting, a
// header still on its way, a session that ended) goes to accept_one.
template <class Handler>
void start_accept(std::shared_ptr<listener_state> st, Handler handler) {
  auto session = accepting_session(*st);
  if (!session) {
    const auto ex = executor_of(*st);
    return run_as<stream>(ex, accept_one(std::move(st)), std::move(handler));
  }
  auto slot = asio::get_associated_cancellation_slot(handler);
  session->async_accept(asio::bind_cancellation_slot(
      slot, [st, h = std::move(handler)](std::error_code ec, yamux::stream s) mutable {
        const auto ex = executor_of(*st);
        auto deliver = [&](std::error_code e, stream result) {
          auto hex = asio::get_associated_executor(h, ex);
          asio::dispatch(hex, [h = std::move(h), e, r = std::move(result)]() mutable { std::move(h)(e, std::move(r)); });
        };
        // Cancelled by the caller (a closed listener's or ended session's accepts go to accept_one,
        // which tells why).
        if (ec == asio::error::operation_aborted && accepting_session(*st)) return deliver(ec, stream{});
        if (ec) return run_as<stream>(ex, accept_one(std::move(st)), std::move(h));
        auto taken = take_stream(*st, std::move(s));
        switch (taken.what) {
          case taken_stream::kind::ready:
            return deliver({}, std::move(taken.ready));
          case taken_stream::kind::dropped:
            return start_accept(std::move(st), std::move(h));
          case taken_stream::kind::wait:
            return run_as<stream>(ex, accept_one(std::move(st), std::move(taken.waiting)), std::move(h));
        }
      }));
}
}  // namespace detail

// A registration with the master. Only a listener returned by a successful listen() may be used
// (a default-constructed one has no executor).
class listener {
 public:
  using executor_type = asio::any_io_executor;

  listener() = default;
  explicit listener(std::shared_ptr<detail::listener_state> st) : state_(std::move(st)) {}
  listener(listener&&) noexcept = default;
  // Closes the registration this listener held before taking the other's.
  listener& operator=(listener&& other) noexcept;
  ~listener();

  executor_type get_executor() const;
  // "host:port" of the public listener the master bound for us (the latest registration's).
  std::string bound_address() const;
  std::uint64_t registration_id() const;
  // Whether the control connection is up right now (false while reconnecting).
  bool connected() const;
  // Whether the latest control connection went to the master's same-host socket (options::same_host_socket).
  bool via_same_host_socket() const;
  // Set once the listener has given up: the permanent rejection's code, or operation_aborted after
  // close() or a finished drain. Empty while it works or reconnects.
  std::error_code error() const;
  // The same with the master's sentence and rejection code, ready to print.
  listen_error failure() const;

  // Waits for the next public connection; keeps waiting across reconnects. Completes with
  // operation_aborted after close() or a finished drain, with the rejection's code (see error())
  // when a reconnect was rejected for good. Cancellable through the handler's cancellation slot.
  template <class Token = asio::default_completion_token_t<executor_type>>
  auto async_accept(Token&& token = Token()) {
    return asio::async_initiate<Token, void(std::error_code, stream)>(
        [st = state_](auto handler) { detail::start_accept(st, std::move(handler)); }, token);
  }

  // Graceful stop for a redeploy. When the operation starts it queues GoAway (so the master opens
  // no new streams to us; anything written afterwards reaches the master after it) and stops
  // reconnecting. Streams the master opened before it saw the GoAway are still delivered by
  // async_accept; open streams run to their end; then the session is closed and the operation
  // completes: with no error, or with std::errc::timed_out when streams were still open at the
  // deadline and were cut, or with the connection's error when the master went away while streams
  // were still open (they were cut with it).
  template <class Token = asio::default_completion_token_t<executor_type>>
  auto async_drain(std::chrono::milliseconds deadline, Token&& token = Token()) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [st = state_, deadline](auto handler) {
          auto ex = detail::executor_of(*st);
          detail::begin_drain(*st);
          auto done = [h = std::move(handler), ex](std::exception_ptr e, std::error_code ec) mutable {
            if (e) ec = std::make_error_code(std::errc::operation_canceled);
            auto hex = asio::get_associated_executor(h, ex);
            asio::dispatch(hex, [h = std::move(h), ec]() mutable { std::move(h)(ec); });
          };
          asio::co_spawn(ex, detail::finish_drain(st, deadline), std::move(done));
        },
        token);
  }

  // Immediate: ends the session; open streams fail, pending accepts complete with operation_aborted.
  void close();

 private:
  std::shared_ptr<detail::listener_state> state_;
};

// Connects to the master, registers `def` and returns the listener once the master has bound the
// public socket. The completion signature is void(listen_error, listener); with use_awaitable the
// result is that pair as a tuple:
//   auto [error, l] = co_await client::async_listen(ex, def, opts, asio::use_awaitable);
//   if (error.code) { std::cerr << error.message << "\n"; co_return; }
template <class Token>
auto async_listen(asio::any_io_executor ex, socket_definition def, options opts, Token&& token) {
  return asio::async_initiate<Token, void(listen_error, listener)>(
      [ex](auto handler, socket_definition d, options o) {
        auto done = [h = std::move(handler), ex](std::exception_ptr e,
                                                 std::pair<listen_error, std::shared_ptr<detail::listener_state>> r) mutable {
          if (e) r.first = {std::make_error_code(std::errc::operation_canceled), "listen failed: " + detail::exception_text(e)};
          auto hex = asio::get_associated_executor(h, ex);
          asio::dispatch(hex, [h = std::move(h), r = std::move(r)]() mutable {
            std::move(h)(std::move(r.first), r.first.code ? listener{} : listener(std::move(r.second)));
          });
        };
        asio::co_spawn(ex, detail::start(ex, std::move(d), std::move(o)), std::move(done));
      },
      token, std::move(def), std::move(opts));
}

// Blocking form for a program's start-up, before io.run(): runs the handshake on `io` and returns
// the listener, or fills `error` (code, the master's message).
listener listen(asio::io_context& io, const socket_definition& def, const options& opts, listen_error& error);
// Throws std::system_error carrying the master's message.
listener listen(asio::io_context& io, const socket_definition& def, const options& opts = {});

}  // namespace socketmaster::client
