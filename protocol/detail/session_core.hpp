// The transport-independent heart of a yamux session: stream table, flow control, the frame
// scheduler feeding the one writer, and the state machine driven by incoming frames. The transport
// loops (session.hpp) feed it bytes and write what it batches.
//
// Concurrency: a session_core and all of its streams belong to one executor (the transport's); every
// call must be made from it. No locks are taken.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/steady_timer.hpp>

#include "../config.hpp"
#include "../frame.hpp"
#include "../payload_sink.hpp"
#include "../shared_ring.hpp"
#include "byte_ring.hpp"
#include "pending_op.hpp"

namespace socketmaster::yamux {

enum class role { client, server };  // client opens odd stream ids, server even ones
class stream;

namespace detail {

using clock = std::chrono::steady_clock;
using io_op = pending_op<std::error_code, std::size_t>;
using accept_op = pending_op<std::error_code, stream>;
using ping_op = pending_op<std::error_code, clock::duration>;

// Buffers of one stream read or write taken from the caller's sequence (the rest waits for the
// next read_some/write_some, as on a socket). Every stream_state carries two arrays of this many,
// also while idle: 4 rather than 16 saves 384 bytes per stream (issue 6: master RSS per idle
// proxied connection); the proxies and the SDK pass one or two buffers per operation.
inline constexpr std::size_t max_op_buffers = 4;

// See session_core::write_some: the shortest time between two writes made at once by the caller.
inline constexpr std::chrono::microseconds direct_write_gap{250};

// One stream's state. Owned by the session's stream table; a `stream` handle points at it.
struct stream_state {
  std::uint32_t id = 0;

  // Receive side.
  byte_ring recv_buf;
  std::uint32_t recv_window = 0;       // bytes the peer may still send before our next update
  std::uint32_t recv_window_size = 0;  // the window we advertise, grown by auto-tuning
  std::uint32_t credit_owed = 0;       // bytes consumed by the reader, not yet returned to the peer
  std::uint32_t payload_in_flight = 0; // of the frame being received, bytes not yet arrived
  clock::time_point last_update{};
  bool remote_fin = false;
  bool reset = false;

  // Send side.
  std::uint32_t send_window = initial_stream_window;
  std::uint16_t pending_flags = 0;     // SYN/ACK/FIN/RST to send in the next frame for this stream
  std::uint32_t pending_delta = 0;     // window update to send
  bool fin_sent = false;
  bool awaiting_ack = false;           // we opened it; its SYN went out and no ACK/RST came back yet
  clock::time_point syn_queued{};      // when awaiting_ack began (config::stream_open_timeout)
  bool syn_deferred = false;           // we opened it; its SYN waits for a free unacknowledged slot
  bool fin_after_write = false;        // shutdown_send() while a write was in flight
  bool fin_with_write = false;         // the pending write is the last: its FIN follows it in the same batch
  bool in_control_queue = false;
  bool in_data_queue = false;

  // The handle let go of this stream; it lingers only until the peer finishes or resets it, or
  // config::stream_close_timeout after released_at.
  bool released = false;
  clock::time_point released_at{};

  // One pending read and one pending write, as on a socket.
  io_op* read_op = nullptr;
  std::array<asio::mutable_buffer, max_op_buffers> read_bufs{};
  std::size_t read_buf_count = 0;
  // Payload bytes already copied into read_bufs during the current on_input(); the read completes
  // with them when on_input() returns, so one transport read fills one stream read.
  std::size_t read_filled = 0;
  // Offered payload before the read (payload_sink.hpp); cleared when it takes less than offered.
  payload_sink* sink = nullptr;

  io_op* write_op = nullptr;
  std::array<asio::const_buffer, max_op_buffers> write_bufs{};
  std::size_t write_buf_count = 0;
  std::size_t write_total = 0;    // bytes in write_bufs
  std::size_t write_offset = 0;   // bytes of them already batched
  bool write_in_flight = false;   // part of the batch being written: buffers must stay untouched
  bool write_cancelled = false;

  bool fully_closed() const { return reset || (fin_sent && remote_fin); }
};

class session_core : public std::enable_shared_from_this<session_core>, public cancel_target {
 public:
  session_core(asio::any_io_executor ex, role r, const config& cfg);
  virtual ~session_core();
  session_core(const session_core&) = delete;
  session_core& operator=(const session_core&) = delete;

  const asio::any_io_executor& get_executor() const { return executor_; }
  const config& cfg() const { return config_; }
  role session_role() const { return role_; }

  // --- used by the session handle ---
  // Before start(): Data frames of at least shared_ring::min_payload go through `ring` (we write
  // it) or arrive through it (we read it). Both sides must have agreed on it (the handshake).
  void use_shared_ring(std::shared_ptr<shared_ring> ring, bool sending);
  // Payload bytes that went through the shared ring, sent or received.
  std::uint64_t ring_payload_bytes() const { return ring_payload_bytes_; }
  void start();
  stream_state* open(std::error_code& ec);
  void add_accept_op(accept_op* op);
  void add_ping_op(ping_op* op);
  void go_away(go_away_code code);
  void close(std::error_code reason);
  bool is_closed() const { return closed_; }
  std::error_code close_reason() const { return close_reason_; }
  bool remote_going_away() const { return remote_go_away_; }
  bool local_going_away() const { return local_go_away_; }
  std::size_t stream_count() const { return streams_.size(); }
  std::size_t backlog_size() const { return backlog_.size(); }
  clock::duration rtt() const { return rtt_; }
  void add_close_op(pending_op<std::error_code>* op);
  void add_idle_op(pending_op<std::error_code>* op);

  // --- used by stream handles ---
  void read_some(stream_state& s, io_op* op);
  // `last`: once all of this write's bytes are batched, a FIN follows them in the same write.
  void write_some(stream_state& s, io_op* op, bool last = false);
  // Takes bytes already received and not yet read, without waiting; 0 when there are none (or a
  // read is pending). Like a non-blocking read_some on a socket.
  std::size_t read_buffered(stream_state& s, asio::mutable_buffer b);
  // Removes up to n buffered bytes the caller used in place, as read_buffered would have taken
  // them (nothing while a read is pending); returns how many.
  std::size_t consume_buffered(stream_state& s, std::size_t n);
  void shutdown_send(stream_state& s);
  void reset(stream_state& s);
  void cancel(stream_state& s);
  void release(stream_state& s);  // the handle is gone
  void cancel_op(void* op, std::uint32_t key) override;

  // --- used by the transport loops ---
  // Consumes all complete frames and payload in `in`; returns bytes consumed (only a partial header
  // is left over).
  std::size_t on_input(std::span<const std::byte> in);
  void on_read_error(std::error_code ec);
  // Fills `out` with the next gather write; false when there is nothing to write.
  bool prepare_batch(std::vector<asio::const_buffer>& out);
  void batch_done(std::error_code ec);
  bool reading_stopped() const { return closed_ || failing_; }
  // Runs the handlers of the reads and accepts that the last on_input() completed. The read loop
  // calls it right after on_input(), and nothing else may.
  void run_inline_completions();
  asio::awaitable<void> wait_for_work();

 protected:
  virtual void start_io() = 0;
  virtual void close_transport() = 0;
  // Writes the ready frames at once with one non-blocking system call, in the caller's turn, while
  // the writer coroutine sleeps (see write_some). True when nothing is left for the writer; a
  // transport that cannot do this (TLS, test streams) always answers false.
  virtual bool write_directly() { return false; }
  // What write_directly() could not write: the writer coroutine sends it first when it wakes.
  std::vector<asio::const_buffer> direct_rest_;

 private:
  stream_state* find(std::uint32_t id);
  stream_state& create_stream(std::uint32_t id);
  void erase_stream(std::uint32_t id);
  std::size_t handle_frames(std::span<const std::byte> in);
  void handle_header(const frame_header& h);
  void handle_payload(std::uint32_t id, std::span<const std::byte> data);
  // What no sink takes: into the waiting read's buffers, the rest into the stream's buffer.
  void deliver_payload(stream_state& s, std::span<const std::byte> data);
  // Offers the gathered pieces to the stream's sink in one call (sink_pieces_).
  void flush_sink_pieces();
  // The ring's spans held by streams waiting for their readers (the master's clients) are copied
  // into their streams' buffers and let go (see housekeeping()).
  void let_ring_go();
  void handle_stream_flags(stream_state& s, std::uint16_t f);
  void incoming_syn(const frame_header& h);
  void hand_over(stream_state& s, accept_op* op);
  void flush_deferred_acks();
  void opened_stream_answered(stream_state& s);
  void handle_ping(const frame_header& h);
  void handle_go_away(const frame_header& h);
  bool never_opened(std::uint32_t id) const;
  void fail(std::error_code ec, go_away_code code);
  void deliver_to_reader(stream_state& s);
  void consumed(stream_state& s, std::size_t n);
  // Sends the credit owed as a window update now, without growing the window (housekeeping).
  void return_credit(stream_state& s, clock::time_point now);
  void queue_control(stream_state& s, bool wake = true);
  void queue_data(stream_state& s, bool wake = true);
  void queue_session_frame(const frame_header& h);
  void notify_writer();
  // A completed read or accept: kept for run_inline_completions() while on_input() runs, else posted.
  void deliver(finished_op* op);
  // Writes what is queued at once (write_directly) when the writer is idle and has not written
  // directly within direct_write_gap; else wakes it. Only as the last step of a handle's call.
  void send_now_or_wake();
  void finish_if_done(stream_state& s);
  void complete_read(stream_state& s, std::error_code ec, std::size_t n);
  std::size_t fill_read(stream_state& s, std::span<const std::byte> data);
  void complete_filled_read(stream_state& s);
  void complete_write(stream_state& s, std::error_code ec, std::size_t n);
  void fail_stream_ops(stream_state& s, std::error_code ec);
  void emit_stream_control(stream_state& s);
  // Puts a bare SYN for every stream in the control or data queue still waiting for one (not
  // deferred) into the batch; false when the batch filled up first.
  bool announce_pending_opens();
  void emit_data_frame(stream_state& s, std::size_t& batch_bytes);
  void push_header(const frame_header& h);
  asio::awaitable<void> housekeeping();

  asio::any_io_executor executor_;
  role role_;
  config config_;

  // Before the streams: their buffers may hold spans of the ring (shared_ring::hold), let go when
  // they are destroyed.
  std::shared_ptr<shared_ring> ring_;
  bool ring_sending_ = false;
  std::uint64_t ring_payload_bytes_ = 0;
  std::optional<std::uint64_t> oldest_hold_at_last_tick_;
  bool ring_written_since_tick_ = false;  // sending: payload went into the ring this tick
  bool ring_resident_ = false;            // sending: pages written since the last trim

  using stream_map = std::unordered_map<std::uint32_t, std::unique_ptr<stream_state>>;
  stream_map streams_;
  // Entries of ended streams (map node and state together), reused by the next ones: a stream per
  // request otherwise costs two allocations and two frees on each side (issue 6). A reused state is
  // a fresh one: it is reset when it ends, and ids are never reused, so no lookup can reach it.
  std::vector<stream_map::node_type> spare_streams_;
  static constexpr std::size_t max_spare_streams = 64;
  std::deque<stream_state*> backlog_;  // opened by the peer, not yet accepted
  std::deque<accept_op*> accept_ops_;
  std::uint32_t next_id_;
  std::size_t unacknowledged_opens_ = 0;
  std::deque<std::uint32_t> deferred_opens_;
  // The highest stream id the peer has opened (SYN seen, accepted or refused): a frame without SYN
  // for a peer id above it, or for one of our ids not handed out yet, is for a stream that never
  // existed, a protocol violation (ids are never reused, so no late frame can explain it).
  std::uint32_t highest_peer_id_ = 0;
  std::size_t window_growth_ = 0;  // sum over streams of recv_window_size - initial

  frame_reader reader_;
  std::uint32_t payload_stream_ = 0;  // stream the current Data payload belongs to, 0 = discard
  std::uint16_t payload_flags_ = 0;   // FIN/RST of the current Data frame, applied after its payload
  // Payload for a stream's sink, gathered over consecutive Data frames of one input and offered
  // at once: the sink then makes one system call for a read's worth of frames, not one per frame
  // (issue 6: 1 GiB through the master made a sendmsg per 64 KiB frame, and woke curl as often).
  // The pieces lie in the input buffer, so they are flushed before on_input() returns.
  std::uint32_t sink_stream_ = 0;
  std::size_t sink_piece_count_ = 0;
  std::array<std::span<const std::byte>, payload_sink::max_pieces> sink_pieces_{};
  std::vector<std::uint32_t> filled_reads_;  // streams whose read_filled > 0, in on_input() only
  bool collecting_ = false;                  // in on_input(): see deliver()
  std::vector<finished_op*> inline_completions_;

  // Writer state.
  std::vector<frame_header> session_frames_;
  std::deque<std::uint32_t> control_queue_;
  std::deque<std::uint32_t> data_queue_;
  std::vector<header_bytes> batch_headers_;
  std::vector<asio::const_buffer>* batch_out_ = nullptr;  // set while prepare_batch runs
  std::vector<std::uint32_t> batch_streams_;
  // Accepted streams whose ACK waits to ride on their first frame (config::ack_with_first_frame).
  std::vector<std::uint32_t> deferred_acks_;
  std::vector<io_op*> orphan_writes_;  // writes of released/reset streams whose bytes were in flight

  bool writing_ = false;
  bool writer_waiting_ = false;
  bool writer_parked_ = false;  // in wait_for_work(), woken or not
  bool writing_directly_ = false;
  clock::time_point last_direct_write_{};
  clock::time_point write_started_{};
  asio::steady_timer wake_;

  // Pings: ours and the user's, keyed by opaque value.
  struct ping_entry {
    clock::time_point sent;
    ping_op* op;  // null for keepalive and RTT probes
  };
  std::unordered_map<std::uint32_t, ping_entry> pings_;
  std::uint32_t next_ping_ = 1;
  clock::duration rtt_{};
  bool keepalive_outstanding_ = false;
  std::uint32_t keepalive_ping_ = 0;
  asio::steady_timer housekeeping_timer_;

  bool local_go_away_ = false;
  bool remote_go_away_ = false;
  // Our GoAway(normal) is followed by a ping. A SYN that arrives before the answer was sent before
  // the peer could know of the GoAway (the two crossed on the wire): it is still accepted, so a
  // draining service loses no connection. Once the answer is in, a SYN is refused with RST.
  std::uint32_t go_away_ping_ = 0;
  bool go_away_acknowledged_ = false;
  clock::time_point failing_since_{};
  bool failing_ = false;  // a GoAway(error) is being flushed before the session closes
  std::error_code failing_reason_;
  bool closed_ = false;
  std::error_code close_reason_;
  std::vector<pending_op<std::error_code>*> close_ops_;
  std::vector<pending_op<std::error_code>*> idle_ops_;  // wait for stream_count() == 0
};

}  // namespace detail
}  // namespace socketmaster::yamux
