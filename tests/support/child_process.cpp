// child_process: fork/exec with a stdout pipe, a pidfd to wait with a timeout, and a kill that always
// reaps. See child_process.hpp.
#include "tests/support/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

extern char** environ;

namespace socketmaster::test {

namespace {

[[noreturn]] void throw_errno(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

std::string_view env_name(std::string_view entry) { return entry.substr(0, entry.find('=')); }

// Milliseconds left until `deadline`, rounded up, as poll() takes them.
int poll_ms(std::chrono::steady_clock::time_point deadline) {
  using namespace std::chrono;
  const auto left = duration_cast<milliseconds>(deadline - steady_clock::now() + 999us).count();
  return static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
}

// Waits until `fd` is readable or `deadline` passes; false on timeout.
bool poll_readable(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, poll_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) throw_errno("poll");
  }
}

exit_status reap(pid_t pid) {
  int ws = 0;
  while (::waitpid(pid, &ws, 0) < 0)
    if (errno != EINTR) throw_errno("waitpid");
  if (WIFEXITED(ws)) return {WEXITSTATUS(ws), 0};
  return {-1, WIFSIGNALED(ws) ? WTERMSIG(ws) : 0};
}

}  // namespace

child_process::child_process(std::vector<std::string> argv, std::vector<std::string> extra_env) {
  if (argv.empty()) throw std::invalid_argument("child_process: empty argv");

  // Everything the child needs is built before fork(): after it, only async-signal-safe calls.
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string_view entry(*e);
    const bool replaced = std::any_of(extra_env.begin(), extra_env.end(),
                                      [&](const std::string& x) { return env_name(x) == env_name(entry); });
    if (!replaced) env.emplace_back(entry);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> argv_ptrs, env_ptrs;
  for (auto& a : argv) argv_ptrs.push_back(a.data());
  argv_ptrs.push_back(nullptr);
  for (auto& e : env) env_ptrs.push_back(e.data());
  env_ptrs.push_back(nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe2");
  // The child writes its errno here if exec fails; a successful exec closes it (O_CLOEXEC), so the
  // parent's read returns 0 exactly when the program is running.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw_errno("pipe2");
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    for (int fd : {out[0], out[1], report[0], report[1]}) ::close(fd);
    throw std::system_error(err, std::generic_category(), "fork");
  }
  if (pid == 0) {
    // Killed with the test process even if it dies without running destructors (a crash, an abort).
    // The kernel ties this to the forking thread: spawn from a thread that outlives the child.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, STDIN_FILENO) < 0 || ::dup2(out[1], STDOUT_FILENO) < 0) {
      const int err = errno;
      (void)!::write(report[1], &err, sizeof err);
      ::_exit(127);
    }
    // Our sockets are not O_CLOEXEC (Asio does not set it): keep every one of them out of the child.
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    ::execvpe(argv_ptrs[0], argv_ptrs.data(), env_ptrs.data());
    const int err = errno;
    (void)!::write(report[1], &err, sizeof err);
    ::_exit(127);
  }

  ::close(out[1]);
  ::close(report[1]);
  int child_errno = 0;
  ssize_t n;
  while ((n = ::read(report[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (n > 0) {
    ::close(out[0]);
    reap(pid);
    throw std::system_error(child_errno, std::generic_category(), "starting " + argv[0]);
  }
  pid_ = pid;
  stdout_fd_ = out[0];
  // Through syscall(): glibc 2.36's <sys/pidfd.h> declares pidfd_open without C linkage for C++.
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd_ < 0) {
    const int err = errno;
    kill();
    reset();
    throw std::system_error(err, std::generic_category(), "pidfd_open");
  }
}

child_process::child_process(child_process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      buffer_(std::move(other.buffer_)),
      eof_(other.eof_),
      status_(std::exchange(other.status_, std::nullopt)) {}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    kill();
    reset();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    buffer_ = std::move(other.buffer_);
    eof_ = other.eof_;
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

child_process::~child_process() {
  kill();
  reset();
}

void child_process::reset() {
  if (pidfd_ >= 0) ::close(pidfd_);
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  pidfd_ = stdout_fd_ = -1;
}

void child_process::close_stdout() {
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
  buffer_.clear();
  eof_ = true;
}

std::optional<std::string> child_process::read_line(duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (eof_ || stdout_fd_ < 0) {
      if (buffer_.empty()) return std::nullopt;
      return std::exchange(buffer_, {});
    }
    if (!poll_readable(stdout_fd_, deadline)) return std::nullopt;
    char chunk[4096];
    const ssize_t n = ::read(stdout_fd_, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      throw_errno("reading child stdout");
    }
    if (n == 0)
      eof_ = true;
    else
      buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::optional<exit_status> child_process::wait(duration timeout) {
  if (status_ || pid_ < 0) return status_;
  if (!poll_readable(pidfd_, std::chrono::steady_clock::now() + timeout)) return std::nullopt;
  status_ = reap(pid_);
  return status_;
}

void child_process::kill() {
  if (status_ || pid_ < 0) return;
  // Never signal a reaped pid (it may belong to someone else by now); until we reap it, it is ours.
  ::kill(pid_, SIGKILL);
  try {
    status_ = reap(pid_);
  } catch (const std::system_error&) {
    status_ = exit_status{-1, SIGKILL};  // someone else reaped it: it is gone either way
  }
}

}  // namespace socketmaster::test
