// tcp_echo: the smallest raw TCP service behind socketmaster. Every public connection on the
// registered port comes back as a stream; whatever the client sends is sent back, and the client's
// FIN is answered with ours.
//
//   tcp_echo --port 7000                      then: nc localhost 7000
//
// Prints "listening ADDR" on stdout at each registration (again after a master restart). SIGTERM
// drains: the master opens no new streams, open connections run until their clients close them
// (at most --drain-timeout), then the process exits.
#include <CLI/CLI.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>

#include <iostream>

#include "protocol/cli_checks.hpp"
#include "protocol/drain_on_signals.hpp"
#include "protocol/ignore_sigpipe.hpp"
#include "protocol/relay.hpp"
#include "socketmaster/client.hpp"

namespace {

using namespace socketmaster;

// The coroutine frame owns the stream; pump() (protocol/relay.hpp) copies until EOF, then FIN.
asio::awaitable<void> echo(client::stream s, logger& log) {
  std::array<std::byte, 16 * 1024> buf;
  std::uint64_t bytes = 0;
  const auto from = s.remote_endpoint();
  if (auto ec = co_await pump(s, s, buf, bytes)) log.info("connection from ", from, " ended: ", ec.message());
  log.debug("connection from ", from, ": ", bytes, " bytes echoed");
}

}  // namespace

int main(int argc, char** argv) {
  socketmaster::ignore_sigpipe();
  CLI::App app{"tcp_echo: a raw TCP echo service registered with socketmaster"};
  socket_definition def;
  client::options opts;
  double drain_seconds = 10;
  app.set_version_flag("--version", std::string("tcp_echo (socketmaster ") + SOCKETMASTER_VERSION + ")");
  app.footer("Environment: SOCKETMASTER_ADDR (the master's control address), SOCKETMASTER_TOKEN (the token a master "
      "started with --token-file expects)");
  app.add_option("--master", opts.master_address, "Master control address (default $SOCKETMASTER_ADDR or 127.0.0.1:9999)")
      ->check(address_or_path_option);
  app.add_option("--address", def.address, "Interface for the public listener (empty = all)");
  app.add_option("--port", def.port, "Public port to register (0 = the master picks)")->capture_default_str();
  app.add_option("--drain-timeout", drain_seconds, "Seconds open connections get after SIGTERM")
      ->capture_default_str()
      ->check(seconds_option);
  CLI11_PARSE(app, argc, argv);

  logger log(std::cerr);
  opts.log = &log;
  opts.on_registered = [](std::uint64_t, const std::string& bound) { std::cout << "listening " << bound << std::endl; };
  asio::io_context io(1);
  client::listen_error error;
  // Before the registration: a SIGTERM right after the "listening" line (a redeploy script's, a
  // test's) is then held for the drain below instead of killing the process with its streams.
  asio::signal_set signals(io, SIGTERM, SIGINT);
  auto l = client::listen(io, def, opts, error);
  if (error.code) {
    std::cerr << "tcp_echo: registration failed: " << error.message << "\n";
    return 1;
  }
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, s] = co_await l.async_accept(use_tuple);
          if (ec) {
            if (ec != asio::error::operation_aborted) {
              std::cerr << "tcp_echo: " << l.failure().message << "\n";
              io.stop();
            }
            co_return;
          }
          asio::co_spawn(io, echo(std::move(s), log), asio::detached);
        }
      },
      asio::detached);
  drain_on_signals(signals, io, log, [&] {
    l.async_drain(std::chrono::milliseconds(static_cast<std::int64_t>(drain_seconds * 1000)),
                  [&](std::error_code) { io.stop(); });
  });
  io.run();
  return l.error() && l.error() != asio::error::operation_aborted ? 1 : 0;
}
