// How often an accept loop that keeps failing says so. Out of descriptors (EMFILE/ENFILE) or memory,
// a loop retries every 50 ms; logging every retry wrote twenty identical warnings a second for as
// long as the shortage lasted, burying whatever else the log had to say. Sans-I/O: the loop passes
// the time in, so the rule is tested without a clock or a socket.
//
// A streak's first failure is a warning at once; then at most one warning per `every`, counting the
// failures it stands for (each one in between is a debug line); the first accept that succeeds ends
// the streak, and its length is logged once more so the log shows that the shortage is over.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "protocol/logger.hpp"

namespace socketmaster::server {

// How long an accept loop waits after a failure before it tries again, rather than spin.
inline constexpr std::chrono::milliseconds accept_retry_delay{50};

class accept_failures {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds default_every{10};

  explicit accept_failures(clock::duration every = default_every) : every_(every) {}

  // One failed accept at `now`. True when it is to be logged; `unreported` is then the number of
  // failures since the previous report that were not logged (0 for a streak's first).
  bool report(clock::time_point now, std::uint64_t& unreported);

  // What follows the error in a reported line: how retries go on, or how many this report stands for.
  std::string note(std::uint64_t unreported) const;

  // An accept succeeded: the number of failures in the streak it ends (0 when none was under way).
  std::uint64_t end_streak();

  // The loops' use of the above: `who` names the listener in the log ("listener", "control", ...).
  void failed(logger& log, std::string_view who, const std::error_code& ec);
  void succeeded(logger& log, std::string_view who) {
    if (streak_ != 0) log_recovery(log, who);  // inline: it runs at every accept
  }

 private:
  void log_recovery(logger& log, std::string_view who);

  clock::duration every_;
  std::uint64_t streak_ = 0;      // failures since the last success
  std::uint64_t unreported_ = 0;  // failures since the last report
  clock::time_point last_report_{};
};

}  // namespace socketmaster::server
