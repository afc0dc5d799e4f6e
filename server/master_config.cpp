// See master_config.hpp.
#include "master_config.hpp"

#include "protocol/handshake.hpp"

namespace socketmaster::server {

std::string master_config::validate() const {
  if (control_address.empty()) return "the control address must not be empty";
  if (grace.count() < 0) return "the grace period must not be negative";
  if (queue_limit == 0) return "the queue limit must be positive";
  if (handshake_timeout.count() <= 0) return "the handshake timeout must be positive";
  if (max_handshake_bytes < 64) return "the handshake size limit must be at least 64 bytes";
  if (max_pending_handshakes == 0) return "the pending handshake limit must be positive";
  if (header_timeout.count() <= 0) return "the header timeout must be positive";
  if (client_write_timeout.count() <= 0) return "the client write timeout must be positive";
  if (body_timeout.count() <= 0) return "the body timeout must be positive";
  if (service_write_timeout.count() <= 0) return "the service write timeout must be positive";
  if (linger_timeout.count() < 0) return "the linger timeout must not be negative";
  if (max_header_bytes < 1024) return "the header size limit must be at least 1024 bytes";
  if (max_headers == 0) return "the header count limit must be positive";
  if (unix_send_buffer > max_unix_send_buffer) return "the Unix send buffer must be at most 1 GiB";
  const char* what = nullptr;
  if (yamux.validate(&what)) return std::string("yamux: ") + what;
  return {};
}

}  // namespace socketmaster::server
