// SIGTERM/SIGINT handling shared by the programs that register through the SDK (the sidecar, hello,
// tcp_echo), as the master does it: the first signal starts a graceful drain, a second one stops
// at once (an operator's second Ctrl-C must not wait out --drain-timeout). The drain is announced
// with a "draining" line on stdout, after the "listening" lines, for scripts.
#pragma once

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>

#include <iostream>
#include <system_error>
#include <utility>

#include "protocol/logger.hpp"

namespace socketmaster {

// `start_drain()` begins the drain; whatever it starts calls io.stop() when it is over.
template <class StartDrain>
void drain_on_signals(asio::signal_set& signals, asio::io_context& io, logger& log, StartDrain start_drain) {
  signals.async_wait([&signals, &io, &log, start = std::move(start_drain)](std::error_code ec, int) mutable {
    if (ec) return;
    std::cout << "draining" << std::endl;
    start();
    signals.async_wait([&io, &log](std::error_code second, int) {
      if (second) return;
      log.info("second signal: stopping now");
      io.stop();
    });
  });
}

}  // namespace socketmaster
