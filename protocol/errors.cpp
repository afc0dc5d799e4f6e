// Messages for socketmaster's error codes; see errors.hpp.
#include "errors.hpp"

#include <string>

namespace socketmaster {

namespace {
class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "socketmaster"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::session_closed: return "yamux session closed";
      case errc::remote_go_away: return "the peer is not accepting new streams (go away)";
      case errc::local_go_away: return "this session is going away and accepts no new streams";
      case errc::protocol_error: return "yamux protocol error";
      case errc::invalid_version: return "yamux frame with an unsupported version";
      case errc::invalid_frame_type: return "yamux frame with an unknown type";
      case errc::duplicate_stream: return "the peer opened a stream id that is already in use";
      case errc::window_exceeded: return "the peer sent more data than the receive window allows";
      case errc::peer_protocol_error: return "the peer ended the session with a protocol error";
      case errc::peer_internal_error: return "the peer ended the session with an internal error";
      case errc::keepalive_timeout: return "keepalive ping not answered in time";
      case errc::write_timeout: return "writing to the connection timed out";
      case errc::streams_exhausted: return "no stream ids left in this session";
      case errc::stream_reset: return "stream reset";
      case errc::stream_closed: return "stream send side already closed";
      case errc::backlog_full: return "accept backlog full";
      case errc::invalid_config: return "invalid configuration";
      case errc::bad_handshake: return "malformed handshake message";
      case errc::handshake_too_large: return "handshake message too large";
      case errc::bad_proxy_header: return "invalid PROXY protocol v2 header";
      case errc::stream_open_timeout: return "the peer did not acknowledge a new stream in time";
      case errc::unknown_stream: return "the peer sent a frame for a stream that was never opened";
    }
    return "unknown socketmaster error";
  }
};
}  // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace socketmaster
