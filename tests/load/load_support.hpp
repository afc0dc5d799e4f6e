// What the load tests add to the end-to-end support (tests/e2e/e2e_support.hpp): wrk as a child
// process with its report parsed, our SDK programs (hello, tcp_echo, the socketmaster-connect
// sidecar) as services that a test replaces, stops and awaits, a stop flag that is also how a driver
// lets deliberate wall time pass between replacements, and fixed loopback ports for services that
// must get their port back after a master restart.
//
// Concurrency: each object is used by one thread, except stop_flag, which any thread may wait on
// and set.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/e2e/e2e_support.hpp"

namespace socketmaster::load {

using e2e::duration;
using e2e::default_wait;
using clock = std::chrono::steady_clock;

// --- wrk -----------------------------------------------------------------------------------------

// wrk's report, and what tests/load/count_bodies.lua adds to it.
struct wrk_report {
  std::uint64_t requests = 0;  // "N requests in 21.00s, ..."
  double seconds = 0;
  std::uint64_t non_success = 0;  // "Non-2xx or 3xx responses: N" (absent: 0)
  // "Socket errors: connect N, read N, write N, timeout N" (absent: all 0)
  std::uint64_t connect_errors = 0, read_errors = 0, write_errors = 0, timeouts = 0;
  std::map<std::string, std::uint64_t> by_first_line;  // "body <first line> <n>" lines of the script
  std::map<int, std::uint64_t> by_status;              // "status <code> <n>" lines of the script

  std::uint64_t socket_errors() const { return connect_errors + read_errors + write_errors + timeouts; }
};

// Parses wrk's output; throws if its "requests in" summary line is missing.
wrk_report parse_wrk(std::string_view out);

// wrk -t1 -c<connections> --timeout <request_timeout> -s count_bodies.lua [-H <header>] <url>,
// running until stop() (its own -d is only a backstop); with a `pause`, each connection waits that
// long before each of its requests.
class wrk_run {
 public:
  wrk_run(const std::string& url, int connections, std::chrono::seconds request_timeout,
          const std::string& header = {}, std::chrono::milliseconds pause = {});
  // SIGINT: wrk stops, prints its report as after -d, and exits; the report, parsed. Throws with
  // wrk's output if it does not end within `timeout` or prints no report.
  wrk_report stop(duration timeout = default_wait);

 private:
  test::child_process process_;
};

// --- services ------------------------------------------------------------------------------------

// A program of ours that prints "listening ADDR" at each registration (hello, tcp_echo, the
// sidecar) or once bound (hello --listen); ready when that line comes. stderr (the SDK's log) goes
// to the test's output. Killed, if still running, when destroyed.
class sdk_service {
 public:
  explicit sdk_service(std::vector<std::string> argv);
  const std::string& bound() const { return bound_; }
  // The next "listening ADDR" line (a registration after a master restart); throws if none comes.
  std::string next_listening(duration timeout = default_wait);
  void terminate();  // SIGTERM: GoAway, in-flight work finishes, exit
  std::optional<test::exit_status> wait(duration timeout = default_wait) { return process_.wait(timeout); }
  bool running() { return !process_.wait(duration::zero()).has_value(); }
  pid_t pid() const { return process_.pid(); }

 private:
  test::child_process process_;
  std::string bound_;
};

// An instance of a service and the id of its registration with the master.
struct registered_service {
  std::unique_ptr<sdk_service> process;
  std::uint64_t id = 0;
};

// Starts `argv` (a program registering with `m`) and waits until the master has logged its
// registration, so that the instance is in the pool when this returns.
registered_service start_registered(e2e::master_process& m, std::vector<std::string> argv);

// SIGTERM, then its exit status; throws if it has not exited within `timeout`.
test::exit_status drain(sdk_service& s, duration timeout = default_wait);

class stop_flag;

// One redeploy: replaces `current` by the instance `start` makes, and returns the old one's exit
// status. Without `gap`, with overlap: the new instance registers, then the old one drains (GoAway)
// and exits (what examples/redeploy.sh does). With `gap`: the old one drains and exits, the master
// logs the end of its registration (the route is in grace), `gap` of wall time passes (`pause`),
// then the new instance registers. A draining instance exits once its last stream has ended:
// `drain_timeout` must cover the longest of them.
test::exit_status replace(e2e::master_process& m, registered_service& current,
                          const std::function<registered_service()>& start, std::optional<duration> gap,
                          stop_flag& pause, duration drain_timeout = default_wait);

// --- time and ports ------------------------------------------------------------------------------

// Set once, when a test's load should end. Until then, wait_until() is how a thread lets wall time
// pass on purpose (a pause between rounds, a gap between two instances): it returns early, with
// true, once the flag is set.
class stop_flag {
 public:
  void set();
  bool is_set() const;
  bool wait_until(clock::time_point t);
  bool wait_for(duration d) { return wait_until(clock::now() + d); }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool set_ = false;
};

// The id the master gave a registration, from its "registration N from ..." line at or after `from`
// that names `bound` ("127.0.0.1:8000"); throws if none comes within `timeout`.
std::uint64_t registration_id(e2e::master_process& m, std::size_t from, const std::string& bound,
                              duration timeout = default_wait);

// A value of the master's /metrics, e.g. metric(m, "socketmaster_queued_total") or
// metric(m, "socketmaster_http_responses_total{class=\"5xx\"}"); throws if absent.
std::uint64_t metric(const e2e::master_process& m, std::string_view name);

}  // namespace socketmaster::load
