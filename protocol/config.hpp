// Every limit and timeout of a yamux session, with the defaults of hashicorp/yamux where it has one,
// and a validate() step so a bad value is reported before a session starts.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <system_error>

namespace socketmaster::yamux {

struct config {
  // Streams the peer opened that wait for async_accept; one more is refused with RST. 0: a side
  // that never accepts (the master) refuses every stream the peer opens, and holds none of the
  // data that came with them (each could bring a whole window, 256 KiB).
  std::size_t accept_backlog = 256;
  // Streams we opened whose SYN the peer has not answered yet; further opens wait (their SYN and
  // data are held back) until an ACK or RST comes back. hashicorp/yamux uses its backlog, 256.
  std::size_t max_unacknowledged_opens = 256;
  // Streams open at once (both directions); a SYN beyond this is refused with RST.
  std::size_t max_streams = 65536;
  // Send a ping every keepalive_interval; an unanswered one ends the session.
  bool enable_keepalive = true;
  std::chrono::milliseconds keepalive_interval{30'000};
  // A write to the transport, or a keepalive ping, that takes longer than this ends the session.
  std::chrono::milliseconds write_timeout{10'000};
  // A stream we opened whose SYN the peer has not answered (ACK or RST) within this ends the
  // session (GoAway(normal), then close), like hashicorp/yamux's StreamOpenTimeout: a peer whose
  // application accepts nothing would otherwise hold every opener, and everything queued behind the
  // max_unacknowledged_opens limit, forever. Zero disables the check.
  std::chrono::milliseconds stream_open_timeout{30'000};
  // A stream the application let go of (closed, FIN sent) that the peer has not finished (FIN or
  // RST) within this is reset, as newer hashicorp/yamux does with StreamCloseTimeout (5 min): a
  // peer that never ends its side cannot keep streams in the table (up to max_streams) for ever.
  // Zero disables it.
  std::chrono::milliseconds stream_close_timeout{300'000};
  // An accepted stream's ACK waits for the stream's first frame, which then carries it: a service
  // that answers at once (a short HTTP exchange) sends one frame and one system call fewer per
  // stream. It goes out sooner when a batch is written anyway, when the application's read of the
  // stream has to wait for the peer, and at the latest on the next housekeeping tick (a quarter of
  // the shortest of write_timeout, keepalive_interval and stream_open_timeout), well inside the
  // opener's open timeout. false sends it when the stream is accepted, as hashicorp/yamux does.
  bool ack_with_first_frame = true;
  // Receive window a stream starts with; the protocol fixes 256 KiB, a larger value is announced to
  // the peer with the SYN/ACK window delta as hashicorp/yamux does.
  std::uint32_t initial_stream_window = 256 * 1024;
  // Auto-tuning grows a busy stream's receive window up to this.
  std::uint32_t max_stream_window = 16 * 1024 * 1024;
  // Auto-tuning doubles a window whose reader took half of it within two round trips, and takes the
  // round trip (the last ping's) as at least this. On one host a ping's round trip measures two
  // wakeups, 20-60 us, about the time a window-limited stream takes between two of its updates
  // anyway, so with the measured value a bulk stream's window grew or stayed at 256 KiB by chance
  // (issue 6: 1 GiB through the same-host socket at 1.1-2.2 GB/s with 8k window updates per GiB,
  // against 3-4.5 GB/s once it grew). With 1 ms a reader counts as window-limited when it takes
  // 128 KiB within 2 ms (64 MB/s); the growth stays within the two limits around this one.
  std::chrono::microseconds window_tuning_min_rtt{1000};
  // Sum of the growth above the initial window over all streams of a session: the memory a session
  // may hold for its peer beyond the protocol's fixed initial windows.
  std::size_t session_window_budget = 64 * 1024 * 1024;
  // Largest Data frame payload we send.
  std::uint32_t max_frame_payload = 64 * 1024;
  // Bytes read from the transport at once. Where payload goes through streams' buffers to the
  // application's reads, a buffer that stays in the CPU's cache with them beats fewer system calls:
  // yamux_bench, one stream, 128 KiB 4967-5762 MB/s against 4260-4501 with 256 KiB or 1 MiB (the
  // same figures for each, so it is the cache, not the calls). The master, whose payload goes from
  // this buffer straight to client sockets (payload_sink.hpp), sets 1 MiB (master_config.hpp).
  // One buffer per session, not per stream.
  std::size_t read_buffer_size = 128 * 1024;
  // Bytes gathered into one write to the transport.
  std::size_t max_batch_bytes = 1024 * 1024;

  // Returns errc::invalid_config when a value is out of range; `what` names the offending field.
  std::error_code validate(const char** what = nullptr) const;
};

}  // namespace socketmaster::yamux
