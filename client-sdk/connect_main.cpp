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
  if (text.find('/') != std::string::npos) {
    b.unix_socket = true;
    b.path = text;
    return b;
  }
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) throw CLI::ValidationError("--backend", "expected host:port or a Unix socket path");
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  b.tcp = {asio::ip::make_address(host), static_cast<std::uint16_t>(std::stoul(text.substr(colon + 1)))};
  return b;
}

template <class Backend>
asio::awaitable<void> forward(client::stream s, Backend backend, bool send_proxy_header) {
  if (send_proxy_header) {
    const auto header = encode_proxy_v2(s.remote_endpoint(), s.local_endpoint());
    auto [ec, n] = co_await asio::async_write(backend, asio::buffer(header), use_tuple);
    if (ec) co_return;
  }
  co_await tunnel(s, backend);
}

asio::awaitable<void> serve(client::listener& l, backend_address target, bool proxy_header, logger& log) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    auto [ec, s] = co_await l.async_accept(use_tuple);
    if (ec) {
      if (l.error()) log.error("listener ended: ", l.error().message());
      co_return;
    }
    if (target.unix_socket) {
      asio::local::stream_protocol::socket b(ex);
      auto [cec] = co_await b.async_connect(asio::local::stream_protocol::endpoint(target.path), use_tuple);
      if (cec) {
        log.warn("backend ", target.path, " unreachable: ", cec.message());
        s.reset();
        continue;
      }
      asio::co_spawn(ex, forward(std::move(s), std::move(b), proxy_header), asio::detached);
    } else {
      asio::ip::tcp::socket b(ex);
      auto [cec] = co_await b.async_connect(target.tcp, use_tuple);
      if (cec) {
        log.warn("backend ", target.tcp, " unreachable: ", cec.message());
        s.reset();
        continue;
      }
      std::error_code nd;
      b.set_option(asio::ip::tcp::no_delay(true), nd);
      asio::co_spawn(ex, forward(std::move(s), std::move(b), proxy_header), asio::detached);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"socketmaster-connect: put any backend behind socketmaster without linking the SDK."};
  socket_definition def;
  client::options opts;
  std::string domain, path, cert, key, backend;
  bool http = false, proxy_to_backend = false;
  double drain_seconds = 30;
  app.add_option("--master", opts.master_address, "Master control address (default $SOCKETMASTER_ADDR or 127.0.0.1:9999)");
  app.add_option("--token", opts.token, "Shared token (default $SOCKETMASTER_TOKEN)");
  app.add_option("--address", def.address, "Interface for the public listener (empty = all)");
  app.add_option("--port", def.port, "Public port (0 = the master picks)")->required();
  app.add_flag("--http", http, "Route HTTP by domain and path (implied by --domain or --path)");
  app.add_option("--domain", domain, "Domain suffix to serve (label boundary; empty = any)");
  app.add_option("--path", path, "Path prefix to serve (empty = any)");
  app.add_option("--tls-cert", cert, "PEM certificate chain: the master terminates TLS with it");
  app.add_option("--tls-key", key, "PEM private key for --tls-cert");
  app.add_option("--backend", backend, "Where streams go: host:port or a Unix socket path")->required();
  app.add_flag("--proxy-protocol", proxy_to_backend, "Send a PROXY v2 header to the backend first");
  app.add_option("--drain-timeout", drain_seconds, "Seconds open streams get after SIGTERM")->capture_default_str();
  backend_address target;
  try {
    app.parse(argc, argv);
    target = parse_backend(backend);
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
  asio::io_context io(1);
  client::listen_error error;
  auto l = client::listen(io, def, opts, error);
  if (error.code) {
    log.error("registration failed: ", error.message);
    return 1;
  }
  std::cout << "listening " << l.bound_address() << std::endl;
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](std::error_code ec, int) {
    if (ec) return;
    l.async_drain(std::chrono::milliseconds(static_cast<std::int64_t>(drain_seconds * 1000)), [&](std::error_code) {
      log.info("drained; exiting");
      io.stop();
    });
  });
  asio::co_spawn(io, serve(l, target, proxy_to_backend, log), [&](std::exception_ptr) {
    if (l.error()) io.stop();
  });
  io.run();
  return l.error() ? 1 : 0;
}
