// socketmaster's own error codes, in one std::error_category shared by the master, the SDK and the
// yamux session. Expected network outcomes are reported as std::error_code, never thrown.
#pragma once

#include <system_error>

namespace socketmaster {

enum class errc {
  // yamux session
  session_closed = 1,       // the session has ended; no further streams or I/O
  remote_go_away,           // the peer sent GoAway(normal): it accepts no new streams
  local_go_away,            // we sent GoAway: we accept no new streams
  protocol_error,           // the peer broke the yamux protocol
  invalid_version,          // a frame carried a version other than 0
  invalid_frame_type,       // a frame carried an unknown type
  duplicate_stream,         // the peer opened a stream id that is already in use
  window_exceeded,          // the peer sent more data than the window we advertised
  peer_protocol_error,      // the peer ended the session with GoAway(protocol error)
  peer_internal_error,      // the peer ended the session with GoAway(internal error)
  keepalive_timeout,        // a ping was not answered within the write timeout
  write_timeout,            // writing to the transport took longer than the write timeout
  streams_exhausted,        // no stream ids are left in this session
  stream_reset,             // the peer (or we) reset the stream with RST
  stream_closed,            // the stream's send side was already shut down
  backlog_full,             // too many streams are waiting to be accepted
  invalid_config,           // a configuration value is out of range
  // handshake and PROXY header
  bad_handshake,            // a handshake message was malformed or a field was out of range
  handshake_too_large,      // a handshake message was larger than the reader allows
  bad_proxy_header,         // a stream did not start with a valid PROXY protocol v2 header
  // yamux session (added later; kept after the others so existing values stay put)
  stream_open_timeout,      // a stream we opened was not acknowledged by the peer in time
  unknown_stream,           // the peer sent a frame for a stream id that was never opened
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace socketmaster

template <>
struct std::is_error_code_enum<socketmaster::errc> : std::true_type {};
