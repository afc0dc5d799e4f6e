// The C++ side of the yamux_peer command protocol (see go/yamux_peer/main.go): what a Go driver
// scenario runs against when C++ is the server. Each stream the peer opens starts with one command
// line (ECHO, SINK, SEND, HALFCLOSE, PING, GOAWAY, HOLD, SLOW) and is served by it, exactly as the
// Go peer's `serve` scenario does, so either side can drive the other with the same scenarios.
//
// Concurrency: runs on the session's executor, like the session itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>

#include <asio/awaitable.hpp>

#include "protocol/session.hpp"

namespace socketmaster::interop {

struct command_server_options {
  // Test hooks that abort streams on purpose, to prove the peer sees our RST.
  // HOLD resets the stream once the peer has filled our receive window, instead of holding it until
  // the session ends.
  bool reset_full_holds = false;
  // SEND resets the stream after this many bytes instead of sending them all.
  std::optional<std::uint64_t> reset_send_after;
};

struct serve_stats {
  std::size_t served = 0;       // streams accepted
  std::size_t failed = 0;       // handlers that ended with an error (the first one is kept)
  std::string first_failure;
  std::error_code end_reason;   // why accepting stopped: the session's end
  std::uint64_t held_bytes = 0; // a reset HOLD: the bytes the peer had sent when we reset it
};

// Accepts and serves streams until the session ends, then waits for every stream's handler to
// finish (they borrow `session`).
asio::awaitable<serve_stats> serve_commands(yamux::session& session, command_server_options options = {});

}  // namespace socketmaster::interop
