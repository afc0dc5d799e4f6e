// Validation of the yamux session configuration; see config.hpp.
#include "config.hpp"

#include "errors.hpp"
#include "frame.hpp"

namespace socketmaster::yamux {

std::error_code config::validate(const char** what) const {
  auto bad = [&](const char* field) {
    if (what) *what = field;
    return make_error_code(errc::invalid_config);
  };
  if (max_streams == 0) return bad("max_streams must be positive");
  if (max_unacknowledged_opens == 0) return bad("max_unacknowledged_opens must be positive");
  if (enable_keepalive && keepalive_interval.count() <= 0) return bad("keepalive_interval must be positive");
  if (write_timeout.count() <= 0) return bad("write_timeout must be positive");
  if (stream_open_timeout.count() < 0) return bad("stream_open_timeout must not be negative");
  if (stream_close_timeout.count() < 0) return bad("stream_close_timeout must not be negative");
  if (initial_stream_window < yamux::initial_stream_window)
    return bad("initial_stream_window must be at least 256 KiB");
  if (max_stream_window < initial_stream_window) return bad("max_stream_window must be >= initial_stream_window");
  if (window_tuning_min_rtt.count() < 0) return bad("window_tuning_min_rtt must not be negative");
  if (max_frame_payload == 0) return bad("max_frame_payload must be positive");
  if (read_buffer_size < 4096) return bad("read_buffer_size must be at least 4096");
  if (max_batch_bytes < max_frame_payload) return bad("max_batch_bytes must be >= max_frame_payload");
  return {};
}

}  // namespace socketmaster::yamux
