// What the end-to-end tests of the master are made of: the real `socketmaster` binary as a child
// process (its log read line by line, so a test waits on events it logs instead of sleeping), the
// independent Go service peer and our `hello` example as services, real clients run to completion
// (curl, openssl, python3 websockets), a blocking raw TCP client for what curl cannot do
// (pipelining, smuggling shapes, half-close), and a temporary directory for certificates.
//
// Every wait is bounded; a wait that times out throws with the tail of the master's log.
//
// SOCKETMASTER_E2E_MASTER=/path/to/socketmaster runs the suite against another build of the master
// (an ASan build, say); E2E_VERBOSE=1 mirrors the master's log to stderr as it arrives.
//
// Concurrency: each object is used by the test's thread; master_process reads the master's output
// on a thread of its own (so the master never blocks on a full pipe) and hands lines over under a
// mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/child_process.hpp"

namespace socketmaster::e2e {

using namespace std::chrono_literals;
using duration = std::chrono::steady_clock::duration;

inline constexpr duration default_wait = 15s;

// --- the master ----------------------------------------------------------------------------------

// The socketmaster binary the tests run ($SOCKETMASTER_E2E_MASTER, else this build's).
std::string master_binary();

// `socketmaster --control 127.0.0.1:0 --admin 127.0.0.1:0 --log-level debug` plus `extra_args`
// (which may name another --control or --log-level); stdout and stderr together, one log line at a
// time.
class master_process {
 public:
  explicit master_process(std::vector<std::string> extra_args = {});
  ~master_process();
  master_process(const master_process&) = delete;
  master_process& operator=(const master_process&) = delete;

  const std::string& control() const { return control_; }  // "127.0.0.1:port" or a socket path
  const std::string& admin() const { return admin_; }

  // The number of log lines so far: pass it to wait_for_log to look only at what comes after.
  std::size_t mark() const;
  // The first log line at or after `from` containing `text`; throws (with the log's tail) if none
  // comes within `timeout`.
  std::string wait_for_log(std::string_view text, std::size_t from = 0, duration timeout = default_wait);
  // Whether some line at or after `from` contains `text` (no waiting).
  bool logged(std::string_view text, std::size_t from = 0) const;
  std::string log_tail(std::size_t lines = 40) const;
  // A copy of the log lines at or after `from` (for counting events after the fact).
  std::vector<std::string> lines(std::size_t from = 0) const;

  // SIGTERM: the master drains.
  void terminate();
  // Waits for the master to exit (its output ends first); empty if it is still running.
  std::optional<test::exit_status> wait_exit(duration timeout = default_wait);
  pid_t pid() const { return process_.pid(); }

 private:
  void read_output();

  test::child_process process_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
  bool ended_ = false;
  std::thread reader_;
  std::string control_, admin_;
};

// --- services ------------------------------------------------------------------------------------

struct registration {
  std::uint64_t id = 0;
  std::string bound;    // as the master reported it, e.g. "[::]:41235"
  std::uint16_t port = 0;
};

// tests/e2e/go/service_peer: `-master CONTROL` plus `args` (-port, -path, -text, -tcp, -mode, ...).
class go_service {
 public:
  go_service(const master_process& m, std::vector<std::string> args);
  // Waits for ACCEPTED; throws if the peer says anything else (REJECTED ..., FAIL ...).
  registration accepted(duration timeout = default_wait);
  // Waits for REJECTED and returns "<code> <message>"; throws otherwise. The peer then exits 2.
  std::string rejected(duration timeout = default_wait);
  // The next stdout line (GOAWAY, DRAINED, CLOSED ...); throws if none comes in time.
  std::string next_line(duration timeout = default_wait);
  void terminate();  // SIGTERM: GoAway, in-flight work finishes, DRAINED
  void kill();       // SIGKILL: the control connection just drops
  void resume();     // SIGUSR1: a peer started with -hold-handshake (after CONNECTED) sends its request
  std::optional<test::exit_status> wait(duration timeout = default_wait) { return process_.wait(timeout); }

 private:
  test::child_process process_;
};

// examples/hello through our SDK: `--master CONTROL` plus `args`; ready at its "listening" line.
class hello_service {
 public:
  hello_service(const master_process& m, std::vector<std::string> args);
  const std::string& bound() const { return bound_; }
  pid_t pid() const { return process_.pid(); }

 private:
  test::child_process process_;
  std::string bound_;
};

// --- clients -------------------------------------------------------------------------------------

struct run_result {
  test::exit_status status;
  std::string out;  // all of stdout
};

// Runs a program to its end (killed after `timeout`, which the status then shows).
run_result run(std::vector<std::string> argv, duration timeout = default_wait);

// A program running in the background (curl waiting on a queued request, say); finish() collects it.
class background_run {
 public:
  explicit background_run(std::vector<std::string> argv);
  run_result finish(duration timeout = default_wait);
  // Whether it has already ended (without waiting).
  bool ended();

 private:
  test::child_process process_;
};

// curl -sS --max-time 10 plus `args`, with "\n@@ <http_code> <num_connects>" written after each
// transfer (-w), so one run with several URLs tells each response apart.
std::vector<std::string> curl_argv(std::vector<std::string> args);
struct http_response {
  int status = 0;
  int connects = 0;  // new connections this transfer made (0: it reused the previous one)
  std::string body;
};
std::vector<http_response> parse_curl(const std::string& out);
// One URL: curl's exit status must be 0 and exactly one response come back.
http_response curl(std::vector<std::string> args);

// GET <path> on 127.0.0.1:port over a new connection (Connection: close): how long until the whole
// response was in. Throws unless it is a 200 that arrives within 5 s. Tests under attack assert it
// stays under a second: the master still serves others.
duration timed_get(std::uint16_t port, std::string_view path);
// Whole milliseconds, for figures in messages; and a list of them, space-separated.
long long ms(duration d);
std::string join(const std::vector<long long>& values);

// GET http://<admin><path> with a raw socket; the body.
std::string admin_get(const master_process& m, std::string_view path);

// Kills `s` (its control connection just drops) and waits until the master logs that its
// registration `r` ended: the route is in grace from there.
void kill_registered(master_process& m, go_service& s, const registration& r);

// /usr/bin/python3 tests/e2e/ws_echo_client.py URL [CAFILE]: prints "ECHO OK" after echoing text,
// a large message, binary and a ping, and closing cleanly.
run_result websocket_echo(const std::string& url, const std::string& cafile = {});

// --- a raw TCP client ----------------------------------------------------------------------------

class tcp_client {
 public:
  // Connects to 127.0.0.1:port; throws on failure.
  explicit tcp_client(std::uint16_t port);
  ~tcp_client();
  tcp_client(const tcp_client&) = delete;
  tcp_client& operator=(const tcp_client&) = delete;

  // errno of a connect to 127.0.0.1:port (0 when it succeeds; the socket is closed again).
  static int connect_error(std::uint16_t port);

  std::uint16_t local_port() const;
  void send(std::string_view bytes);
  void shutdown_write();
  // Everything until the peer's FIN; throws if it does not come within `timeout`.
  std::string read_to_eof(duration timeout = default_wait);
  // Exactly `n` bytes; throws on timeout or EOF.
  std::string read_exact(std::size_t n, duration timeout = default_wait);
  // A response head, up to and including its empty line; throws on timeout or EOF.
  std::string read_head(duration timeout = default_wait);
  // One HTTP/1.1 response framed by Content-Length (head and body); throws on timeout or EOF.
  std::string read_response(duration timeout = default_wait);
  // Sends all of `bytes` while reading what comes back, then shuts the write side and reads to EOF:
  // what an echo service returns, without either side's buffers filling up.
  std::string exchange_then_half_close(std::string_view bytes, duration timeout = default_wait);
  // The kernel's count of the segments this connection received: all, and those with data.
  struct segment_counts {
    std::uint32_t all;
    std::uint32_t with_data;
  };
  segment_counts segments_received() const;

 private:
  bool fill(std::chrono::steady_clock::time_point deadline);  // false at EOF

  int fd_ = -1;
  std::string buffered_;
};

// A socket of the test's own listening on 127.0.0.1 (a port some other process holds).
class tcp_listener {
 public:
  tcp_listener();
  ~tcp_listener();
  tcp_listener(const tcp_listener&) = delete;
  tcp_listener& operator=(const tcp_listener&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// --- resources -----------------------------------------------------------------------------------

// VmRSS of a process in KiB, from /proc/<pid>/status; throws if it cannot be read.
std::size_t rss_kib(pid_t pid);
// The soft RLIMIT_NOFILE of a process, from /proc/<pid>/limits; throws if it cannot be read.
std::size_t fd_soft_limit(pid_t pid);
// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (a test holding a thousand
// sockets needs it); returns the new soft limit.
std::size_t raise_fd_limit();
// Sets this process's soft RLIMIT_NOFILE (children inherit it); throws on failure.
void set_fd_soft_limit(std::size_t n);

// Bounds on a master's memory growth are multiplied by this: 1 normally, 8 when the tests or the
// master (SOCKETMASTER_E2E_MASTER) may run under a sanitizer, whose allocator keeps freed memory in
// quarantine and pads every allocation.
std::size_t rss_slack();
// For a test that measures a master's memory across many thousands of allocations: ASan keeps freed
// memory in a quarantine (256 MiB by default) that such an attack fills, and RSS growth would then
// measure the quarantine. Appends quarantine_size_mb=16 to ASAN_OPTIONS for masters started from
// here on (other builds ignore it). Call it before any thread of the test runs.
void bound_sanitizer_quarantine();

// --- files ---------------------------------------------------------------------------------------

// A fresh directory under $TMPDIR, removed with everything in it.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct certificate {
  std::string cert, key;  // PEM file paths
};
// A self-signed P-256 certificate for CN=`name`, SAN DNS:`name`, made by openssl in `dir`.
certificate make_certificate(const temp_dir& dir, const std::string& name);

std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view content);

// protocol/socketmaster.capnp, for the capnp tool.
std::string schema_path();

// The Content-Length of a response head (0 if it has none).
std::size_t content_length(std::string_view head);

// "[::]:41235" -> 41235.
std::uint16_t port_of(std::string_view host_port);
// How many times `needle` occurs in `hay`.
std::size_t count(std::string_view hay, std::string_view needle);

}  // namespace socketmaster::e2e
