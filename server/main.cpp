// The socketmaster executable: flags (with environment equivalents) into a master_config, the master
// on one io_context thread, and signals: SIGTERM/SIGINT drain (stop accepting, let open connections
// finish within the drain timeout), a second signal stops at once.
#include <CLI/CLI.hpp>

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "master.hpp"
#include "protocol/cli_checks.hpp"
#include "protocol/handshake.hpp"
#include "protocol/ignore_sigpipe.hpp"

namespace {

using namespace socketmaster;

// Every public connection, every service session and every handshake in progress holds a file
// descriptor; the usual soft limit of 1024 would cap a proxy at a few hundred clients (accept then
// fails with EMFILE). Raise the soft limit to the hard limit, as nginx does with
// worker_rlimit_nofile, and say what we got.
void raise_fd_limit(logger& log) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    log.warn("cannot read the file descriptor limit: ", std::strerror(errno));
    return;
  }
  const rlim_t before = lim.rlim_cur;
  // An unlimited hard limit is still capped by the kernel (fs.nr_open, 1048576 by default).
  const rlim_t target = lim.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : lim.rlim_max;
  if (lim.rlim_cur < target) {
    lim.rlim_cur = target;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      log.warn("cannot raise the file descriptor limit from ", before, " to ", target, ": ", std::strerror(errno));
      return;
    }
  }
  log.info("file descriptor limit: ", lim.rlim_cur, " (soft limit was ", before, ", hard limit ", lim.rlim_max, ")");
}

}  // namespace

int main(int argc, char** argv) {
  ignore_sigpipe();
  server::master_config cfg;
  CLI::App app{"socketmaster: a zero-configuration reverse proxy. Services register over the control port."};
  app.set_version_flag("--version", std::string("socketmaster ") + SOCKETMASTER_VERSION);

  double grace_seconds = 30;
  double drain_seconds = 30;
  std::int64_t handshake_ms = cfg.handshake_timeout.count();
  std::int64_t header_ms = cfg.header_timeout.count();
  std::int64_t client_write_ms = cfg.client_write_timeout.count();
  std::int64_t body_ms = cfg.body_timeout.count();
  std::int64_t service_write_ms = cfg.service_write_timeout.count();
  std::int64_t linger_ms = cfg.linger_timeout.count();
  std::string token_file;
  std::string level = "info";

  app.add_option("--control", cfg.control_address, "Control address: host:port, or a Unix socket path (one with a /)")
      ->envname("SOCKETMASTER_CONTROL")
      ->check(address_or_path_option)
      ->capture_default_str();
  bool no_same_host_socket = false;
  app.add_flag("--no-same-host-socket", no_same_host_socket,
               "Take services on the TCP control port only, not also on its same-host (abstract Unix) socket");
  app.add_option("--unix-send-buffer", cfg.unix_send_buffer,
                 "Send buffer (bytes) asked of the kernel per Unix control connection; 0 = the kernel's default")
      ->capture_default_str()
      ->check(count_option);
  app.add_option("--max-shared-ring-bytes", cfg.max_shared_ring_bytes,
                 "Largest shared-memory ring mapped per same-host service for its bulk payload; 0 = none")
      ->capture_default_str()
      ->check(count_option);
  app.add_option("--grace", grace_seconds, "Seconds a route outlives its last service, queueing requests")
      ->envname("SOCKETMASTER_GRACE")
      ->capture_default_str()
      ->check(seconds_option);
  app.add_option("--token-file", token_file, "File holding the shared token services must present (else $SOCKETMASTER_TOKEN, if set)");
  app.add_flag("--allow-insecure-control", cfg.allow_insecure_control,
               "Allow a non-loopback control address without a token");
  app.add_option("--queue-limit", cfg.queue_limit, "Connections waiting per route during grace")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--handshake-timeout-ms", handshake_ms, "Time allowed for a service's handshake")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-handshake-bytes", cfg.max_handshake_bytes, "Largest handshake accepted")
      ->capture_default_str()
      ->check(count_option);
  app.add_option("--max-pending-handshakes", cfg.max_pending_handshakes,
                 "Handshakes read at once (more clients wait in the listen backlog)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--header-timeout-ms", header_ms, "Time allowed for a request head (408 after); keep-alive idle limit")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--client-write-timeout-ms", client_write_ms,
                 "A write of an answer to a client that does not finish within this closes the connection")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--body-timeout-ms", body_ms,
                 "A request body that stops arriving for this long gets 408 (or, once answered, a close)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--service-write-timeout-ms", service_write_ms,
                 "A write of a request body to a service that stops reading, not done within this, gets 504 (or, "
                 "once answered, a close)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--linger-ms", linger_ms,
                 "After closing on a client still sending, read and drop its bytes this long so the "
                 "answer is not lost to a TCP reset (0 = close at once)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{3'600'000}));
  app.add_option("--max-header-bytes", cfg.max_header_bytes, "Largest request head (431 above)")
      ->capture_default_str()
      ->check(count_option);
  app.add_option("--max-headers", cfg.max_headers, "Most request header fields (431 above)")
      ->capture_default_str()
      ->check(count_option);
  app.add_option("--drain-timeout", drain_seconds, "Seconds open connections get after SIGTERM")
      ->capture_default_str()
      ->check(seconds_option);
  app.add_option("--admin", cfg.admin_address, "Admin address (host:port) serving /metrics and /routes; off by default")
      ->envname("SOCKETMASTER_ADMIN")
      ->check(address_option);
  app.add_option("--log-level", level, "debug, info, warn or error")
      ->envname("SOCKETMASTER_LOG_LEVEL")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  app.add_option("--yamux-max-window", cfg.yamux.max_stream_window, "Largest per-stream receive window (bytes)")
      ->capture_default_str();
  // Durations as plain numbers of milliseconds: CLI11 would print the default as "30000ms", which
  // it then refuses as input.
  app.add_option("--yamux-keepalive-ms", cfg.yamux.keepalive_interval, "Ping interval on service sessions")
      ->default_str(std::to_string(cfg.yamux.keepalive_interval.count()));
  app.add_option("--yamux-open-timeout-ms", cfg.yamux.stream_open_timeout,
                 "A stream a service has not accepted within this ends its session (0 = wait forever)")
      ->default_str(std::to_string(cfg.yamux.stream_open_timeout.count()));

  try {
    app.parse(argc, argv);
    if (!token_file.empty()) {
      try {
        cfg.token = read_token_file(token_file);
      } catch (const std::runtime_error& e) {
        throw CLI::ValidationError("--token-file", e.what());
      }
    }
    else if (const char* env = std::getenv("SOCKETMASTER_TOKEN")) {
      cfg.token = env;
      // As read_token_file() refuses: no handshake could carry it, so no service could register.
      if (cfg.token.size() > max_token_bytes)
        throw CLI::ValidationError("SOCKETMASTER_TOKEN",
                                   "the token in $SOCKETMASTER_TOKEN is longer than " + std::to_string(max_token_bytes) + " bytes");
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg.same_host_socket = !no_same_host_socket;
  cfg.grace = std::chrono::milliseconds(static_cast<std::int64_t>(grace_seconds * 1000));
  cfg.drain_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(drain_seconds * 1000));
  cfg.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  cfg.header_timeout = std::chrono::milliseconds(header_ms);
  cfg.client_write_timeout = std::chrono::milliseconds(client_write_ms);
  cfg.body_timeout = std::chrono::milliseconds(body_ms);
  cfg.service_write_timeout = std::chrono::milliseconds(service_write_ms);
  cfg.linger_timeout = std::chrono::milliseconds(linger_ms);

  logger log(std::cerr, level == "debug" ? logger::level::debug
                        : level == "warn" ? logger::level::warn
                        : level == "error" ? logger::level::error
                                           : logger::level::info);
  raise_fd_limit(log);
  // One thread does everything (no resolver, no other thread posts to it): no locks in Asio's
  // scheduler and reactor, a few hundred instructions per request (issue 6).
  asio::io_context io(ASIO_CONCURRENCY_HINT_UNSAFE);
  server::master m(io, cfg, log);
  std::string what;
  if (m.start(what)) {
    log.error(what);
    return 1;
  }
  // One line on stdout for scripts and tests that start us with an ephemeral port.
  std::cout << "control " << m.control_address() << std::endl;
  if (!cfg.admin_address.empty()) std::cout << "admin " << m.admin_address() << std::endl;

  asio::signal_set signals(io, SIGTERM, SIGINT);
  asio::steady_timer drain_timer(io);
  bool draining = false;
  std::function<void()> wait_for_drain;
  const auto drain_deadline_holder = std::make_shared<std::chrono::steady_clock::time_point>();
  wait_for_drain = [&] {
    if (m.active_connections() == 0 || std::chrono::steady_clock::now() >= *drain_deadline_holder) {
      log.info("drained (", m.active_connections(), " connections cut); exiting");
      io.stop();
      return;
    }
    drain_timer.expires_after(std::chrono::milliseconds(100));
    drain_timer.async_wait([&](std::error_code ec) {
      if (!ec) wait_for_drain();
    });
  };
  std::function<void(std::error_code, int)> on_signal = [&](std::error_code ec, int sig) {
    if (ec) return;
    if (draining) {
      log.info("second signal: stopping now");
      io.stop();
      return;
    }
    draining = true;
    m.stop_accepting();
    // Logged once it is true (tests and operators act on this line): nothing is accepted any more.
    log.info("signal ", sig, ": stopped accepting; draining ", m.active_connections(), " connections, up to ",
             cfg.drain_timeout.count(), " ms");
    *drain_deadline_holder = std::chrono::steady_clock::now() + cfg.drain_timeout;
    wait_for_drain();
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  io.run();

  // Drained (or out of time): end the services' sessions and let every coroutine finish, for at
  // most a second (a connection cut at the drain deadline may still hold a timer). Stopping the
  // io_context with sessions open would abandon their coroutines, and the memory they hold.
  m.shutdown();
  signals.cancel();
  io.restart();
  io.run_for(std::chrono::seconds(1));
  return 0;
}
