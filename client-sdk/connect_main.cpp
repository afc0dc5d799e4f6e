// socketmaster-connect: the sidecar for backends that do not link the SDK (nginx, a Python app, a Go
// service). It registers the socket definition given by flags and forwards every stream to a local
// TCP or Unix address, optionally with a PROXY v2 header so the backend learns the client's address.
// It reconnects when the master restarts and drains on SIGTERM, like an SDK user.
#include <CLI/CLI.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/signal_set.hpp>

#include <iostream>
#include <memory>
#include <optional>

#include "protocol/cli_checks.hpp"
#include "protocol/drain_on_signals.hpp"
#include "protocol/fresh_socket.hpp"
#include "protocol/handshake.hpp"
#include "protocol/host_port.hpp"
#include "protocol/ignore_sigpipe.hpp"
#include "protocol/proxy_header.hpp"
#include "protocol/relay.hpp"
#include "socketmaster/client.hpp"

namespace {

using namespace socketmaster;

struct backend_address {
  bool unix_socket = false;
  std::string path;
  asio::ip::tcp::endpoint tcp;
};

backend_address parse_backend(const std::string& text) {
  backend_address b;
  if (names_unix_path(text)) {
    // Checked here, once: a path that does not fit a sockaddr_un would otherwise make every stream's
    // endpoint throw, ending the sidecar at its first public connection.
    if (text.size() > max_unix_path_bytes)
      throw CLI::ValidationError("--backend", "a Unix socket path of at most " + std::to_string(max_unix_path_bytes) +
                                                  " bytes, got " + std::to_string(text.size()) + " bytes");
    b.unix_socket = true;
    b.path = text;
    return b;
  }
  const auto ep = parse_host_port(text);
  if (!ep || ep->port() == 0)
    throw CLI::ValidationError("--backend", std::string(host_port_expected) + " (not 0), or a Unix socket path with a '/', got '" + text + "'");
  b.tcp = *ep;
  return b;
}

// A backend at the sidecar's own public address sends every stream back through the master to this
// sidecar, which connects again: one connection becomes as many as the master has descriptors for.
// Refused before registering when the port is given; with --port 0 the master's choice is checked
// when it is known (the port is free to be chosen only because no backend listens on it).
std::optional<std::string> loops_back(const backend_address& b, const asio::ip::tcp::endpoint& bound) {
  if (b.unix_socket || !reaches_listener(b.tcp, bound, interface_addresses())) return std::nullopt;
  return "the backend " + host_port_text(b.tcp) + " is this sidecar's own public address " + host_port_text(bound) +
         ": every connection would come back to it through the master";
}

// How long connecting to the backend may take before the stream is reset.
constexpr std::chrono::seconds backend_connect_timeout{10};

// The deadline is a timer that cancels the wait, rather than racing the two with ||: a parallel
// group per stream (two coroutines) was a quarter of the sidecar's instructions per Connection:
// close request (issue 6, callgrind). The timer's handler touches the socket only while the
// connect is pending: an expiry queued just as the connect completed finds `done` set (and by then
// this frame may be gone, hence the shared flags). `wait` is the socket's asynchronous operation
// that ends when the connect does.
template <class Socket, class Wait>
asio::awaitable<std::error_code> within_connect_timeout(Socket& b, Wait wait) {
  struct flags {
    bool done = false;
    bool timed_out = false;
  };
  auto f = std::make_shared<flags>();
  asio::steady_timer limit(b.get_executor(), backend_connect_timeout);
  limit.async_wait([&b, f](std::error_code ec) {
    if (ec || f->done) return;
    f->timed_out = true;
    b.cancel();
  });
  auto [ec] = co_await wait();
  f->done = true;
  limit.cancel();
  if (f->timed_out) co_return std::make_error_code(std::errc::timed_out);
  co_return ec;
}

// A Unix socket backend: Asio's connect.
asio::awaitable<std::error_code> connect_backend(asio::local::stream_protocol::socket& b,
                                                 const asio::local::stream_protocol::endpoint& ep) {
  co_return co_await within_connect_timeout(b, [&] { return b.async_connect(ep, use_tuple); });
}

// A TCP backend: on loopback the connect has usually completed by the time connect() returns, so it
// is confirmed at once and no timer, writability wait or turn of the event loop is spent on it
// (start_connect); otherwise it is awaited as Asio would.
asio::awaitable<std::error_code> connect_backend(asio::ip::tcp::socket& b, const asio::ip::tcp::endpoint& ep) {
  std::error_code ec;
  switch (start_connect(b, ep, /*no_delay=*/true, ec)) {
    case connect_progress::connected: co_return std::error_code{};
    case connect_progress::failed: co_return ec;
    case connect_progress::in_progress: break;
  }
  ec = co_await within_connect_timeout(b, [&] { return b.async_wait(asio::socket_base::wait_write, use_tuple); });
  co_return ec ? ec : finish_connect(b);
}

// One stream: its own connection to the backend (so a slow backend never holds up the accept
// loop), the PROXY v2 header when asked, then bytes both ways until both sides are done.
template <class Backend, class Endpoint>
asio::awaitable<void> forward(client::stream s, Backend backend, Endpoint target, bool send_proxy_header, logger& log) {
  if (auto ec = co_await connect_backend(backend, target)) {
    log.warn("stream from ", s.remote_endpoint(), ": backend ", target, " unreachable: ", ec.message());
    s.reset();
    co_return;
  }
  if (send_proxy_header) {
    // No client address known (the definition asked for none, or the master sent LOCAL): say so.
    const bool known = s.remote_endpoint() != asio::ip::tcp::endpoint{};
    const auto header = known ? encode_proxy_v2(s.remote_endpoint(), s.local_endpoint()) : encode_proxy_v2_local();
    auto [ec, n] = co_await asio::async_write(backend, asio::buffer(header), use_tuple);
    if (ec) {
      s.reset();
      co_return;
    }
  }
  co_await tunnel(s, backend);
}

asio::awaitable<void> serve(client::listener& l, backend_address target, bool proxy_header, logger& log) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    auto [ec, s] = co_await l.async_accept(use_tuple);
    if (ec) {
      if (l.error() && l.error() != asio::error::operation_aborted) log.error("listener ended: ", l.failure().message);
      co_return;
    }
    if (target.unix_socket)
      asio::co_spawn(ex, forward(std::move(s), asio::local::stream_protocol::socket(ex),
                                 asio::local::stream_protocol::endpoint(target.path), proxy_header, log),
                     asio::detached);
    else
      asio::co_spawn(ex, forward(std::move(s), asio::ip::tcp::socket(ex), target.tcp, proxy_header, log), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  ignore_sigpipe();
  CLI::App app{"socketmaster-connect: put any backend behind socketmaster without linking the SDK."};
  socket_definition def;
  client::options opts;
  std::string domain, path, cert, key, backend;
  bool http = false, proxy_to_backend = false;
  double drain_seconds = 30;
  app.add_option("--master", opts.master_address, "Master control address (default $SOCKETMASTER_ADDR or 127.0.0.1:9999)")
      ->check(address_or_path_option);
  auto* token_option =
      app.add_option("--token", opts.token, "Shared token (default $SOCKETMASTER_TOKEN; prefer --token-file: argv is public)");
  std::string token_file;
  app.add_option("--token-file", token_file, "File whose first line is the shared token")->excludes(token_option);
  app.set_version_flag("--version", std::string("socketmaster-connect ") + SOCKETMASTER_VERSION);
  app.add_option("--address", def.address, "Interface for the public listener (empty = all)");
  app.add_option("--port", def.port, "Public port (0 = the master picks)")->required();
  app.add_flag("--http", http, "Route HTTP by domain and path (implied by --domain or --path)");
  app.add_option("--domain", domain, "Domain suffix to serve (label boundary; empty = any)");
  app.add_option("--path", path, "Path prefix to serve (empty = any)");
  app.add_option("--tls-cert", cert, "PEM certificate chain: the master terminates TLS with it");
  app.add_option("--tls-key", key, "PEM private key for --tls-cert");
  app.add_option("--backend", backend, "Where streams go: host:port or a Unix socket path")->required();
  app.add_flag("--proxy-protocol", proxy_to_backend, "Send a PROXY v2 header to the backend first");
  app.add_option("--drain-timeout", drain_seconds, "Seconds open streams get after SIGTERM")
      ->capture_default_str()
      ->check(seconds_option);
  backend_address target;
  try {
    app.parse(argc, argv);
    target = parse_backend(backend);
    if (!token_file.empty()) {
      try {
        opts.token = read_token_file(token_file);
      } catch (const std::runtime_error& e) {
        throw CLI::ValidationError("--token-file", e.what());
      }
    }
    if (def.port != 0) {
      std::error_code ec;  // empty: all interfaces, as the master binds them (IPv6 taking IPv4 too)
      const auto ip = def.address.empty() ? asio::ip::address(asio::ip::address_v6::any()) : asio::ip::make_address(def.address, ec);
      if (const auto loop = ec ? std::nullopt : loops_back(target, {ip, def.port})) throw CLI::ValidationError("--backend", *loop);
    }
    if (http || !domain.empty() || !path.empty()) def.http = http_route{domain, path};
    if (!cert.empty() || !key.empty()) def.tls = client::load_certificate(cert, key);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "socketmaster-connect: " << e.what() << "\n";
    return 2;
  }
  logger log(std::cerr);
  opts.log = &log;
  // Single-threaded, as everything here: Asio can skip its locks.
  asio::io_context io(ASIO_CONCURRENCY_HINT_UNSAFE);
  bool rejected = false;
  // One stdout line per registration, the first and each one after a master restart: scripts wait
  // for it, and with --port 0 the address may change (and may be the backend's: see loops_back).
  opts.on_registered = [&](std::uint64_t, const std::string& bound) {
    const auto ep = parse_host_port(bound);
    if (const auto loop = ep ? loops_back(target, *ep) : std::nullopt) {
      log.error("registration refused by this sidecar: ", *loop);
      rejected = true;
      io.stop();
      return;
    }
    std::cout << "listening " << bound << std::endl;
  };
  client::listen_error error;
  // Before the registration: a SIGTERM right after the "listening" line (a redeploy script's, a
  // test's) is then held for the drain below instead of killing the process with its streams.
  asio::signal_set signals(io, SIGTERM, SIGINT);
  auto l = client::listen(io, def, opts, error);
  if (rejected) return 1;  // by on_registered, which said why (listen() may report the stop as its error)
  if (error.code) {
    log.error("registration failed: ", error.message);
    return 1;
  }
  drain_on_signals(signals, io, log, [&] {
    l.async_drain(std::chrono::milliseconds(static_cast<std::int64_t>(drain_seconds * 1000)), [&](std::error_code ec) {
      if (ec)  // timed out, or the master went away: streams were cut, which the operator should know
        log.warn("drain ended with streams cut (", ec.message(), "); exiting");
      else
        log.info("drained; exiting");
      io.stop();
    });
  });
  asio::co_spawn(io, serve(l, target, proxy_to_backend, log), [&](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);  // a bug: let it end the process loudly
    // A permanent rejection during a reconnect ends us; a drain ends through its own handler.
    if (l.error() && l.error() != asio::error::operation_aborted) {
      rejected = true;
      io.stop();
    }
  });
  io.run();
  return rejected ? 1 : 0;
}
