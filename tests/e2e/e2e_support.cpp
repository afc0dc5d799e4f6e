// See e2e_support.hpp.
#include "tests/e2e/e2e_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace socketmaster::e2e {

namespace {

using clock = std::chrono::steady_clock;

bool verbose() {
  const char* v = std::getenv("E2E_VERBOSE");
  return v && *v && std::string_view(v) != "0";
}

int poll_ms(clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

[[noreturn]] void throw_errno(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

std::string millis(duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

}  // namespace

std::string master_binary() {
  if (const char* other = std::getenv("SOCKETMASTER_E2E_MASTER"); other && *other) return other;
  return SOCKETMASTER_PATH;
}

// --- master_process ------------------------------------------------------------------------------

master_process::master_process(std::vector<std::string> extra_args)
    : process_([&] {
        // The shell only joins stderr (the log) to stdout and then becomes the master (exec).
        std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", master_binary(),
                                      "--admin", "127.0.0.1:0"};
        auto given = [&](std::string_view flag) {
          return std::find(extra_args.begin(), extra_args.end(), flag) != extra_args.end();
        };
        if (!given("--log-level")) argv.insert(argv.end(), {"--log-level", "debug"});
        if (!given("--control")) argv.insert(argv.end(), {"--control", "127.0.0.1:0"});
        argv.insert(argv.end(), extra_args.begin(), extra_args.end());
        return argv;
      }()) {
  reader_ = std::thread([this] { read_output(); });
  auto value_of = [&](std::string_view prefix) {
    std::unique_lock lock(mutex_);
    const auto deadline = clock::now() + default_wait;
    for (std::size_t i = 0;; ++i) {
      if (!changed_.wait_until(lock, deadline, [&] { return i < lines_.size() || ended_; })) break;
      if (i >= lines_.size()) break;
      if (lines_[i].starts_with(prefix)) return lines_[i].substr(prefix.size());
    }
    lock.unlock();
    throw std::runtime_error("the master did not print '" + std::string(prefix) + "...'; its output:\n" + log_tail());
  };
  control_ = value_of("control ");
  admin_ = value_of("admin ");
}

master_process::~master_process() {
  // Still running (a failed test): end it, so that its output ends and the reader returns.
  if (!process_.wait(0s)) ::kill(process_.pid(), SIGKILL);
  if (reader_.joinable()) reader_.join();
}

void master_process::read_output() {
  for (;;) {
    auto line = process_.read_line(1s);
    std::lock_guard lock(mutex_);
    if (line) {
      if (verbose()) std::cerr << "master[" << process_.pid() << "]: " << *line << "\n";
      lines_.push_back(std::move(*line));
      changed_.notify_all();
    } else if (process_.stdout_closed()) {
      ended_ = true;
      changed_.notify_all();
      return;
    }
  }
}

std::size_t master_process::mark() const {
  std::lock_guard lock(mutex_);
  return lines_.size();
}

std::string master_process::wait_for_log(std::string_view text, std::size_t from, duration timeout) {
  std::unique_lock lock(mutex_);
  std::size_t i = from;
  const bool found = changed_.wait_for(lock, timeout, [&] {
    for (; i < lines_.size(); ++i)
      if (lines_[i].find(text) != std::string::npos) return true;
    return ended_;
  });
  if (found && i < lines_.size()) return lines_[i];
  lock.unlock();
  throw std::runtime_error("the master logged no line containing '" + std::string(text) + "' within " + millis(timeout) +
                           "; its log ends:\n" + log_tail());
}

bool master_process::logged(std::string_view text, std::size_t from) const {
  std::lock_guard lock(mutex_);
  for (std::size_t i = from; i < lines_.size(); ++i)
    if (lines_[i].find(text) != std::string::npos) return true;
  return false;
}

std::vector<std::string> master_process::lines(std::size_t from) const {
  std::lock_guard lock(mutex_);
  if (from >= lines_.size()) return {};
  return {lines_.begin() + static_cast<std::ptrdiff_t>(from), lines_.end()};
}

std::string master_process::log_tail(std::size_t n) const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (std::size_t i = lines_.size() > n ? lines_.size() - n : 0; i < lines_.size(); ++i) out += "  " + lines_[i] + "\n";
  return out;
}

void master_process::terminate() {
  if (!process_.wait(0s)) ::kill(process_.pid(), SIGTERM);
}

std::optional<test::exit_status> master_process::wait_exit(duration timeout) {
  const auto deadline = clock::now() + timeout;
  {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_until(lock, deadline, [&] { return ended_; })) return std::nullopt;
  }
  return process_.wait(std::max<duration>(deadline - clock::now(), 0s));
}

// --- services ------------------------------------------------------------------------------------

go_service::go_service(const master_process& m, std::vector<std::string> args)
    : process_([&] {
        std::vector<std::string> argv{SERVICE_PEER_PATH, "-master", m.control(), "-schema", SOCKETMASTER_SCHEMA,
                                      "-timeout",        "90s"};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
      }()) {}

std::string go_service::next_line(duration timeout) {
  auto line = process_.read_line(timeout);
  if (!line)
    throw std::runtime_error(process_.stdout_closed() ? "service_peer ended without another line"
                                                      : "service_peer printed nothing within " + millis(timeout));
  return *line;
}

registration go_service::accepted(duration timeout) {
  const auto line = next_line(timeout);
  if (!line.starts_with("ACCEPTED ")) throw std::runtime_error("service_peer was not accepted: " + line);
  std::istringstream in(line.substr(9));
  registration r;
  in >> r.id >> r.bound;
  r.port = port_of(r.bound);
  return r;
}

std::string go_service::rejected(duration timeout) {
  const auto line = next_line(timeout);
  if (!line.starts_with("REJECTED ")) throw std::runtime_error("service_peer was not rejected: " + line);
  return line.substr(9);
}

void go_service::terminate() {
  if (!process_.wait(0s)) ::kill(process_.pid(), SIGTERM);
}

void go_service::kill() { process_.kill(); }

void go_service::resume() {
  if (!process_.wait(0s)) ::kill(process_.pid(), SIGUSR1);
}

void kill_registered(master_process& m, go_service& s, const registration& r) {
  const auto mark = m.mark();
  s.kill();
  m.wait_for_log("registration " + std::to_string(r.id) + " ended", mark);
}

hello_service::hello_service(const master_process& m, std::vector<std::string> args)
    : process_([&] {
        std::vector<std::string> argv{HELLO_PATH, "--master", m.control()};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
      }()) {
  auto line = process_.read_line(default_wait);
  if (!line || !line->starts_with("listening "))
    throw std::runtime_error("hello did not register: " + (line ? *line : std::string("no output")));
  bound_ = line->substr(10);
}

// --- clients -------------------------------------------------------------------------------------

namespace {

run_result collect(test::child_process& p, clock::time_point deadline) {
  run_result r;
  while (!p.stdout_closed() && clock::now() < deadline)
    if (auto line = p.read_line(deadline - clock::now())) r.out += *line + "\n";
  auto status = p.wait(std::max<duration>(deadline - clock::now(), 0s));
  if (!status) {
    p.kill();
    status = p.wait(0s);
  }
  r.status = *status;
  return r;
}

}  // namespace

run_result run(std::vector<std::string> argv, duration timeout) {
  test::child_process p(std::move(argv));
  return collect(p, clock::now() + timeout);
}

background_run::background_run(std::vector<std::string> argv) : process_(std::move(argv)) {}

run_result background_run::finish(duration timeout) { return collect(process_, clock::now() + timeout); }

bool background_run::ended() { return process_.wait(0s).has_value(); }

std::vector<std::string> curl_argv(std::vector<std::string> args) {
  std::vector<std::string> argv{"curl", "-sS", "--max-time", "10", "-w", "\n@@ %{http_code} %{num_connects}\n"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<http_response> parse_curl(const std::string& out) {
  std::vector<http_response> responses;
  std::size_t pos = 0;
  for (;;) {
    const auto marker = out.find("\n@@ ", pos);
    if (marker == std::string::npos) break;
    http_response r;
    r.body = out.substr(pos, marker - pos);
    const auto end = out.find('\n', marker + 1);
    std::istringstream in(out.substr(marker + 4, end - marker - 4));
    in >> r.status >> r.connects;
    responses.push_back(std::move(r));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return responses;
}

http_response curl(std::vector<std::string> args) {
  const auto result = run(curl_argv(std::move(args)));
  auto responses = parse_curl(result.out);
  if (!result.status.success() || responses.size() != 1) {
    std::ostringstream what;
    what << "curl failed (" << result.status << "), output:\n" << result.out;
    throw std::runtime_error(what.str());
  }
  return responses.front();
}

duration timed_get(std::uint16_t port, std::string_view path) {
  const auto start = clock::now();
  tcp_client c(port);
  c.send("GET " + std::string(path) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const auto response = c.read_response(5s);
  if (!response.starts_with("HTTP/1.1 200 "))
    throw std::runtime_error("GET " + std::string(path) + ": " + response.substr(0, response.find('\r')));
  return clock::now() - start;
}

long long ms(duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

std::string join(const std::vector<long long>& values) {
  std::string s;
  for (auto v : values) s += (s.empty() ? "" : " ") + std::to_string(v);
  return s;
}

std::string admin_get(const master_process& m, std::string_view path) {
  tcp_client c(port_of(m.admin()));
  c.send("GET " + std::string(path) + " HTTP/1.1\r\nHost: admin\r\n\r\n");
  const auto response = c.read_to_eof();
  const auto body = response.find("\r\n\r\n");
  if (!response.starts_with("HTTP/1.1 200") || body == std::string::npos)
    throw std::runtime_error("admin " + std::string(path) + ": " + response);
  return response.substr(body + 4);
}

run_result websocket_echo(const std::string& url, const std::string& cafile) {
  std::vector<std::string> argv{"/usr/bin/python3", E2E_SOURCE_DIR "/ws_echo_client.py", url};
  if (!cafile.empty()) argv.push_back(cafile);
  return run(std::move(argv));
}

// --- tcp_client ----------------------------------------------------------------------------------

namespace {

int connect_loopback(std::uint16_t port, int& error) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  error = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
  if (error) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace

tcp_client::tcp_client(std::uint16_t port) {
  int error = 0;
  fd_ = connect_loopback(port, error);
  if (fd_ < 0) throw std::system_error(error, std::generic_category(), "connect 127.0.0.1:" + std::to_string(port));
}

tcp_client::~tcp_client() {
  if (fd_ >= 0) ::close(fd_);
}

int tcp_client::connect_error(std::uint16_t port) {
  int error = 0;
  const int fd = connect_loopback(port, error);
  if (fd >= 0) ::close(fd);
  return error;
}

std::uint16_t tcp_client::local_port() const {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) throw_errno("getsockname");
  return ntohs(addr.sin_port);
}

void tcp_client::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("send");
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void tcp_client::shutdown_write() {
  if (::shutdown(fd_, SHUT_WR) != 0) throw_errno("shutdown");
}

bool tcp_client::fill(clock::time_point deadline) {
  pollfd p{fd_, POLLIN, 0};
  const int r = ::poll(&p, 1, poll_ms(deadline));
  if (r < 0 && errno != EINTR) throw_errno("poll");
  if (r <= 0) throw std::runtime_error("tcp_client: nothing arrived in time; so far: " + buffered_.substr(0, 300));
  char chunk[65536];
  const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n < 0) {
    if (errno == EINTR) return true;
    throw_errno("recv");
  }
  buffered_.append(chunk, static_cast<std::size_t>(n));
  return n > 0;
}

std::string tcp_client::read_to_eof(duration timeout) {
  const auto deadline = clock::now() + timeout;
  while (fill(deadline)) {
  }
  return std::exchange(buffered_, {});
}

std::string tcp_client::read_exact(std::size_t n, duration timeout) {
  const auto deadline = clock::now() + timeout;
  while (buffered_.size() < n)
    if (!fill(deadline)) throw std::runtime_error("tcp_client: EOF after " + std::to_string(buffered_.size()) + " bytes");
  std::string out = buffered_.substr(0, n);
  buffered_.erase(0, n);
  return out;
}

std::string tcp_client::read_head(duration timeout) {
  const auto deadline = clock::now() + timeout;
  std::size_t head_end;
  while ((head_end = buffered_.find("\r\n\r\n")) == std::string::npos)
    if (!fill(deadline)) throw std::runtime_error("tcp_client: EOF inside a response head: " + buffered_);
  std::string head = buffered_.substr(0, head_end + 4);
  buffered_.erase(0, head_end + 4);
  return head;
}

std::string tcp_client::read_response(duration timeout) {
  const auto deadline = clock::now() + timeout;
  const auto head = read_head(timeout);
  return head + read_exact(content_length(head), std::max<duration>(deadline - clock::now(), 0s));
}

tcp_client::segment_counts tcp_client::segments_received() const {
  // glibc's struct tcp_info stops before the counters (Linux 4.6+), which follow it in this order.
  struct tcp_info_counters {
    tcp_info base;
    std::uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
    std::uint32_t segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in;
  } info{};
  static_assert(offsetof(tcp_info_counters, segs_in) == 140 && offsetof(tcp_info_counters, data_segs_in) == 152);
  socklen_t len = sizeof info;
  if (::getsockopt(fd_, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) throw std::system_error(errno, std::system_category(), "TCP_INFO");
  if (len < offsetof(tcp_info_counters, data_segs_in) + sizeof info.data_segs_in) throw std::runtime_error("TCP_INFO without segment counts");
  return {info.segs_in, info.data_segs_in};
}

std::string tcp_client::exchange_then_half_close(std::string_view bytes, duration timeout) {
  const auto deadline = clock::now() + timeout;
  std::string received;
  char chunk[65536];
  while (!bytes.empty()) {
    pollfd p{fd_, POLLIN | POLLOUT, 0};
    const int r = ::poll(&p, 1, poll_ms(deadline));
    if (r < 0 && errno != EINTR) throw_errno("poll");
    if (r == 0) throw std::runtime_error("tcp_client: the exchange stalled with " + std::to_string(bytes.size()) + " bytes unsent");
    if (p.revents & POLLIN) {
      const auto n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n == 0) throw std::runtime_error("tcp_client: EOF before everything was sent");
      if (n > 0) received.append(chunk, static_cast<std::size_t>(n));
    }
    if (p.revents & POLLOUT) {
      const auto n = ::send(fd_, bytes.data(), std::min<std::size_t>(bytes.size(), 65536), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) bytes.remove_prefix(static_cast<std::size_t>(n));
      else if (n < 0 && errno != EAGAIN && errno != EINTR) throw_errno("send");
    }
    if (p.revents & (POLLERR | POLLHUP)) throw std::runtime_error("tcp_client: the connection failed during the exchange");
  }
  shutdown_write();
  received += std::exchange(buffered_, {});
  received += read_to_eof(std::max<duration>(deadline - clock::now(), 0s));
  return received;
}

tcp_listener::tcp_listener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw_errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 8) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd_);
    throw std::system_error(err, std::generic_category(), "tcp_listener");
  }
  port_ = ntohs(addr.sin_port);
}

tcp_listener::~tcp_listener() { ::close(fd_); }

// --- resources -----------------------------------------------------------------------------------

std::size_t rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.starts_with("VmRSS:")) return std::stoul(line.substr(6));
  throw std::runtime_error("no VmRSS for pid " + std::to_string(pid));
}

std::size_t fd_soft_limit(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/limits");
  for (std::string line; std::getline(f, line);) {
    if (!line.starts_with("Max open files")) continue;
    std::istringstream in(line.substr(14));
    std::string soft;
    in >> soft;
    return soft == "unlimited" ? std::numeric_limits<std::size_t>::max() : std::stoul(soft);
  }
  throw std::runtime_error("no open-file limit for pid " + std::to_string(pid));
}

std::size_t raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) throw_errno("getrlimit");
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) throw_errno("setrlimit");
  }
  return static_cast<std::size_t>(lim.rlim_cur);
}

void set_fd_soft_limit(std::size_t n) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) throw_errno("getrlimit");
  lim.rlim_cur = static_cast<rlim_t>(n);
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) throw_errno("setrlimit");
}

std::size_t rss_slack() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return 8;
#else
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return 8;
#endif
#endif
  if (const char* other = std::getenv("SOCKETMASTER_E2E_MASTER"); other && *other) return 8;
  return 1;
#endif
}

void bound_sanitizer_quarantine() {
  const char* current = std::getenv("ASAN_OPTIONS");
  std::string options = current && *current ? std::string(current) + ":" : std::string();
  options += "quarantine_size_mb=16";
  ::setenv("ASAN_OPTIONS", options.c_str(), 1);
}

// --- files ---------------------------------------------------------------------------------------

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/socketmaster-e2e-XXXXXX";
  if (!::mkdtemp(pattern.data())) throw_errno("mkdtemp");
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

certificate make_certificate(const temp_dir& dir, const std::string& name) {
  certificate c{dir.file(name + ".crt"), dir.file(name + ".key")};
  const auto r = run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-days", "2", "-subj", "/CN=" + name, "-addext", "subjectAltName=DNS:" + name, "-keyout", c.key,
                      "-out", c.cert});
  if (!r.status.success()) throw std::runtime_error("openssl req failed for " + name);
  return c;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, std::string_view content) {
  std::ofstream f(path, std::ios::binary);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::size_t content_length(std::string_view head) {
  std::string lower(head);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  const auto at = lower.find("\r\ncontent-length:");
  return at == std::string::npos ? 0 : std::stoul(lower.substr(at + 17, lower.find("\r\n", at + 2) - at - 17));
}

std::string schema_path() { return SOCKETMASTER_SCHEMA; }

std::uint16_t port_of(std::string_view host_port) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string_view::npos) throw std::invalid_argument("no port in " + std::string(host_port));
  return static_cast<std::uint16_t>(std::stoul(std::string(host_port.substr(colon + 1))));
}

std::size_t count(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = hay.find(needle); pos != std::string_view::npos; pos = hay.find(needle, pos + needle.size())) ++n;
  return n;
}

}  // namespace socketmaster::e2e
