// A consumer offered a stream's payload where it lies in the session's read buffer, before it is
// copied anywhere (issue 6: a bulk body through the master crossed user space twice, into the
// stream's buffer and out of it, ~30% of the master's CPU per GiB).
//
// stream::offer_payload_to(sink) installs one. The session calls take() from its read loop, in
// arrival order, with the payload of consecutive Data frames of one transport read gathered into
// up to max_pieces pieces (one system call for them all, not one per frame), and only while the
// stream has no buffered bytes and its pending read holds none, so what the sink takes always
// comes before what a read returns. The bytes it takes are read as far as flow control goes (the
// window is credited as for a read). Taking fewer than offered ends the offer: the rest goes the
// usual way (the pending read, then the stream's buffer) and the sink is not called again until
// offered again. So does a read completing with bytes: the reader deals with them first, then
// offers again if it wants.
#pragma once

#include <cstddef>
#include <span>

namespace socketmaster::yamux {

class payload_sink {
 public:
  static constexpr std::size_t max_pieces = 16;

  // Returns how many bytes of the front of `pieces` (in order, as one sequence) it took; the
  // pieces are valid only during the call. Must not call into the stream or its session (it runs
  // in the middle of the session's input).
  virtual std::size_t take(std::span<const std::span<const std::byte>> pieces) = 0;

 protected:
  ~payload_sink() = default;
};

}  // namespace socketmaster::yamux
