// A child process for tests that need a real peer or client (the Go yamux peer, our master binary,
// curl): started from an argv, its stdout read line by line with a deadline, its exit awaited with a
// deadline. A test never leaks one: the destructor kills and reaps a child that is still running, and
// the child is killed by the kernel as well if the test process dies without running destructors.
//
// Linux only (pidfd_open, close_range, PR_SET_PDEATHSIG). Concurrency: one object is used by one
// thread; it blocks that thread only inside read_line() and wait(), never beyond their timeouts.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace socketmaster::test {

// How a child ended.
struct exit_status {
  int code = -1;   // the exit code if the child exited, -1 if a signal ended it
  int signal = 0;  // the signal that ended it, 0 if it exited

  bool success() const { return signal == 0 && code == 0; }
  friend bool operator==(const exit_status&, const exit_status&) = default;
  friend std::ostream& operator<<(std::ostream& os, const exit_status& s) {
    return s.signal ? os << "killed by signal " << s.signal : os << "exit code " << s.code;
  }
};

class child_process {
 public:
  using duration = std::chrono::steady_clock::duration;

  // Starts argv[0] (looked up in PATH when it holds no '/') with our environment plus `extra_env`
  // ("NAME=value" entries, replacing variables of the same name). stdin is /dev/null, stdout is a
  // pipe read by read_line(), stderr is ours so the child's logs land in the test's output. No other
  // descriptor of ours is inherited: a socket the child kept open would stop our close() from ever
  // reaching the peer. Throws std::system_error if the program cannot be started.
  explicit child_process(std::vector<std::string> argv, std::vector<std::string> extra_env = {});
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process();

  pid_t pid() const { return pid_; }

  // The next line of stdout without its '\n' (a last line without one is returned at EOF). Empty
  // when stdout has ended (see stdout_closed()) or when no complete line came within `timeout`.
  std::optional<std::string> read_line(duration timeout);
  // True once stdout has reached EOF and every line has been returned.
  bool stdout_closed() const { return eof_ && buffer_.empty(); }
  // Stops reading stdout and closes our end of the pipe, as a script that read the line it wanted
  // and went away does: the child's next write to stdout finds no reader (EPIPE, or SIGPIPE).
  void close_stdout();

  // Waits up to `timeout` for the child to end and reaps it; empty if it is still running.
  std::optional<exit_status> wait(duration timeout);
  // Ends the child with SIGKILL if it is still running, and reaps it.
  void kill();

 private:
  void reset();

  pid_t pid_ = -1;
  int pidfd_ = -1;       // becomes readable when the child ends: lets wait() poll with a timeout
  int stdout_fd_ = -1;
  std::string buffer_;   // stdout bytes read but not yet returned as a line
  bool eof_ = false;
  std::optional<exit_status> status_;
};

}  // namespace socketmaster::test
