// Every knob of the master, with defaults; main() fills it from flags and environment, tests set
// fields directly. validate() reports a bad value before anything binds.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "protocol/config.hpp"

namespace socketmaster::server {

struct master_config {
  // Control port: host:port, or a path (contains '/') for a Unix socket.
  std::string control_address = "127.0.0.1:9999";
  // A loopback TCP control port also takes services on an abstract Unix socket named after it,
  // which the SDK tries first (socketmaster::same_host_socket_name): no TCP on the yamux hop.
  bool same_host_socket = true;
  // Send buffer asked of the kernel for each Unix control connection (same-host socket or socket
  // path), which caps the request at net.core.wmem_max and then doubles it; 0 keeps its default
  // (208 KiB), with which a bulk upload wakes the master and the service every 200 KiB. Loopback
  // TCP grows its buffer by itself. Kernel memory, used only while bytes wait.
  std::size_t unix_send_buffer = 1 << 20;
  // The largest shared ring (protocol/shared_ring.hpp) the master maps for a service on a Unix
  // control connection; a service offering a larger one sends its payload over the socket. The
  // memory is the service's (its memfd); the master's address space holds it while the service is
  // registered, and its pages are only touched as bulk payload passes. 0 maps none.
  std::size_t max_shared_ring_bytes = std::size_t{64} << 20;
  // Shared secret services must present; empty = none.
  std::string token;
  // Without a token the control port must be loopback or a Unix socket, unless this is set.
  bool allow_insecure_control = false;
  // How long a route outlives its last service, queueing new connections meanwhile.
  std::chrono::milliseconds grace{30'000};
  // Connections and requests waiting per route during grace.
  std::size_t queue_limit = 1024;
  // A handshake must arrive whole within this, and be at most this large.
  std::chrono::milliseconds handshake_timeout{10'000};
  std::size_t max_handshake_bytes = 1 << 20;
  // Handshakes read at once; more clients wait in the listen backlog. With the size limit above it
  // bounds the memory unfinished handshakes can hold (256 MiB at worst with the defaults).
  std::size_t max_pending_handshakes = 256;
  // A client must send a complete request head within this (408 otherwise); also the keep-alive
  // idle limit between requests.
  std::chrono::milliseconds header_timeout{10'000};
  // A write of an answer's bytes to a client (a piece of at most 256 KiB) that does not finish
  // within this ends the connection, and resets its stream to the service: a client that stops
  // reading cannot hold a connection and a stream for ever.
  std::chrono::milliseconds client_write_timeout{60'000};
  // A request body that stops arriving for this long (between two reads, not in all) gets 408
  // while no answer has started, and ends the connection: a client cannot hold a connection and a
  // stream to a service by sending a head and then nothing (nginx's client_body_timeout).
  std::chrono::milliseconds body_timeout{60'000};
  // A write of request body bytes to a service (a piece of at most 16 KiB) that does not finish
  // within this, because the service stopped reading, resets the stream: 504 if no answer has
  // started, else the connection ends. A service that takes nothing cannot hold a client's
  // connection and upload for ever (nginx's proxy_send_timeout). One that reads slowly is not
  // cut: each piece has its own deadline, and our SDK returns a stream's credit at least every
  // housekeeping tick however large its window grew; a hashicorp/yamux service returns it every
  // 128 KiB read, so one reading under about 2 KiB/s is cut.
  std::chrono::milliseconds service_write_timeout{60'000};
  // After an answer that ends a connection before its client finished sending (an error answer,
  // an answer before the request body ended), whatever the client still sends is read and dropped
  // for up to this long before the socket closes: closing with unread bytes would make the kernel
  // send a reset, which can destroy the answer before the client reads it (RFC 9112 9.6). 0: close
  // at once.
  std::chrono::milliseconds linger_timeout{5'000};
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_headers = 100;
  // On SIGTERM: stop accepting, then give open connections this long.
  std::chrono::milliseconds drain_timeout{30'000};
  // Admin server (Prometheus /metrics, /routes); empty = off.
  std::string admin_address;
  // The yamux sessions with services. Reads of 1 MiB: an answer's body goes from the read buffer
  // straight to the client's socket (payload_sink.hpp), one system call in and one out per MiB
  // (1 GiB through the master, alternating: 4.1-6.0 GB/s against 3.2-3.3 with yamux's 128 KiB).
  yamux::config yamux = [] {
    yamux::config c;
    c.read_buffer_size = 1024 * 1024;
    return c;
  }();

  // Returns an empty string when valid, else a sentence naming the bad setting.
  std::string validate() const;
};

}  // namespace socketmaster::server
