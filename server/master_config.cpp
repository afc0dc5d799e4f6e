// See master_config.hpp.
#include "master_config.hpp"

#include <utility>

#include "protocol/handshake.hpp"

namespace socketmaster::server {

namespace {
// Deadlines are now() + timeout on a nanosecond clock: a timeout beyond about 292 years overflows
// there and lands in the past, so that everything it guards would time out at once. The cap is
// the one of the flags given in seconds (1e9 s).
constexpr std::chrono::milliseconds max_timeout{1'000'000'000'000};
}  // namespace

std::string master_config::validate() const {
  const std::pair<std::chrono::milliseconds, const char*> timeouts[] = {
      {grace, "grace period"},          {handshake_timeout, "handshake timeout"},
      {header_timeout, "header timeout"}, {client_write_timeout, "client write timeout"},
      {body_timeout, "body timeout"},   {service_write_timeout, "service write timeout"},
      {linger_timeout, "linger timeout"}, {drain_timeout, "drain timeout"}};
  for (const auto& [t, name] : timeouts)
    if (t > max_timeout) return std::string("the ") + name + " must be at most 1e12 ms (1e9 s)";
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
  if (max_shared_ring_bytes > max_unix_send_buffer) return "the shared ring limit must be at most 1 GiB";
  const char* what = nullptr;
  if (yamux.validate(&what)) return std::string("yamux: ") + what;
  return {};
}

}  // namespace socketmaster::server
