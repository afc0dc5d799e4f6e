// open_loop_latency: per-request latency of an HTTP/1.1 server at a fixed request rate, the figure
// wrk cannot give (wrk sends as fast as it can, so its latency is that of a saturated server) and
// wrk2 would (Debian does not package it). proxy_bench.py runs it against each path.
//
// Open loop, as wrk2: --connections keep-alive connections share --rate requests per second; each
// connection has its own fixed schedule (one request every connections/rate seconds, the
// connections' schedules evenly staggered), and a request's latency runs from the moment it was
// scheduled, not from when it could be sent. A server that falls behind therefore shows its full
// queueing delay (no coordinated omission) and a lower achieved rate. Requests scheduled during the
// first --warmup seconds are sent but not counted.
//
// Output: one JSON object on stdout:
//   {"requests": N, "errors": N, "achieved_rps": X, "p50_us": X, "p90_us": X, "p99_us": X,
//    "p999_us": X, "max_us": X}
// With --samples FILE, every counted latency also goes to FILE, in nanoseconds, one per line, sorted,
// so that a caller can pool several short runs (proxy_bench.py interleaves paths in slices that way).
// An error is a connect or I/O failure or a status other than 200; the connection is re-dialled and
// its schedule goes on. Exit status 0, or 2 for bad options, or 1 when nothing could be measured
// (the JSON is printed all the same) or FILE could not be written (no JSON).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace {

using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t max_response_head = 16 * 1024;

struct options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string path = "/";
  double rate = 2000;
  std::size_t connections = 50;
  double duration = 8;
  double warmup = 1;
  std::string samples;  // file for the raw latencies; empty = none
};

struct results {
  std::vector<std::uint64_t> latencies_ns;  // counted requests only
  std::uint64_t errors = 0;
};

// The schedule all connections share: when counting starts and when no more requests are due.
struct schedule {
  clock_type::time_point start;
  clock_type::time_point count_from;
  clock_type::time_point end;
  clock_type::duration period;  // between two requests of one connection
  clock_type::duration stagger;  // between the first requests of neighbouring connections
};

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const auto a = static_cast<unsigned char>(text[i]);
    const auto b = static_cast<unsigned char>(prefix[i]);
    if (std::tolower(a) != std::tolower(b)) return false;
  }
  return true;
}

// The status and Content-Length of a response head (`head` ends with the blank line).
struct response_info {
  int status = 0;
  std::size_t content_length = 0;
  bool ok = false;
};

response_info parse_head(std::string_view head) {
  response_info r;
  if (head.size() < 12 || !head.starts_with("HTTP/1.")) return r;
  std::from_chars(head.data() + 9, head.data() + 12, r.status);
  std::size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    const std::size_t line_start = pos + 2;
    const std::size_t line_end = head.find("\r\n", line_start);
    if (line_end == std::string_view::npos) break;
    const auto line = head.substr(line_start, line_end - line_start);
    if (iequals_prefix(line, "content-length:")) {
      auto value = line.substr(15);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      std::from_chars(value.data(), value.data() + value.size(), r.content_length);
    }
    pos = line_end;
  }
  r.ok = true;
  return r;
}

// One keep-alive connection working through its own slice of the schedule.
class connection {
 public:
  connection(asio::io_context& io, const options& o, const schedule& s, std::size_t index, results& out)
      : opts_(o), sched_(s), index_(index), out_(out), socket_(io), timer_(io) {
    request_ = "GET " + o.path + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: open_loop_latency\r\n\r\n";
  }

  asio::awaitable<void> run() {
    auto due = sched_.start + sched_.stagger * static_cast<long>(index_);
    for (; due < sched_.end; due += sched_.period) {
      timer_.expires_at(due);
      co_await timer_.async_wait(use_tuple);
      const bool ok = co_await one_request();
      const auto done = clock_type::now();
      if (due < sched_.count_from) continue;
      if (ok)
        out_.latencies_ns.push_back(static_cast<std::uint64_t>(std::chrono::nanoseconds(done - due).count()));
      else
        ++out_.errors;
    }
    std::error_code ignored;
    socket_.close(ignored);
  }

 private:
  asio::awaitable<bool> one_request() {
    if (!socket_.is_open()) {
      tcp::endpoint ep(asio::ip::make_address(opts_.host), opts_.port);
      auto [ec] = co_await socket_.async_connect(ep, use_tuple);
      if (ec) {
        std::error_code ignored;
        socket_.close(ignored);
        co_return false;
      }
      std::error_code nd;
      socket_.set_option(tcp::no_delay(true), nd);
      used_ = 0;
    }
    if (auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(request_), use_tuple); ec) co_return drop();
    // Read the head, then the rest of the body.
    std::size_t head_end = std::string_view::npos;
    while ((head_end = std::string_view(buffer_, used_).find("\r\n\r\n")) == std::string_view::npos) {
      if (used_ == sizeof buffer_) co_return drop();
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buffer_ + used_, sizeof buffer_ - used_), use_tuple);
      used_ += n;
      if (ec && n == 0) co_return drop();
    }
    const auto info = parse_head(std::string_view(buffer_, head_end + 4));
    if (!info.ok) co_return drop();
    std::size_t body_left = info.content_length;
    const std::size_t in_buffer = used_ - (head_end + 4);
    if (in_buffer > body_left) co_return drop();  // nothing is pipelined: more bytes mean a framing problem
    body_left -= in_buffer;
    used_ = 0;
    while (body_left > 0) {
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buffer_, std::min(body_left, sizeof buffer_)), use_tuple);
      body_left -= n;
      if (ec && n == 0) co_return drop();
    }
    co_return info.status == 200;
  }

  bool drop() {
    std::error_code ignored;
    socket_.close(ignored);
    used_ = 0;
    return false;
  }

  const options& opts_;
  const schedule& sched_;
  std::size_t index_;
  results& out_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  std::string request_;
  char buffer_[max_response_head];
  std::size_t used_ = 0;
};

bool parse_options(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--target" && (v = next())) {
      const std::string_view t = v;
      const auto colon = t.rfind(':');
      if (colon == std::string_view::npos) return false;
      o.host = std::string(t.substr(0, colon));
      o.port = static_cast<std::uint16_t>(std::strtoul(std::string(t.substr(colon + 1)).c_str(), nullptr, 10));
    } else if (a == "--path" && (v = next())) {
      o.path = v;
    } else if (a == "--rate" && (v = next())) {
      o.rate = std::strtod(v, nullptr);
    } else if (a == "--connections" && (v = next())) {
      o.connections = std::strtoul(v, nullptr, 10);
    } else if (a == "--duration" && (v = next())) {
      o.duration = std::strtod(v, nullptr);
    } else if (a == "--warmup" && (v = next())) {
      o.warmup = std::strtod(v, nullptr);
    } else if (a == "--samples" && (v = next())) {
      o.samples = v;
    } else {
      return false;
    }
  }
  return o.port != 0 && o.rate > 0 && o.connections > 0 && o.duration > 0 && o.warmup >= 0;
}

double percentile_us(const std::vector<std::uint64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (!parse_options(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: open_loop_latency --target HOST:PORT [--path /] [--rate 2000] [--connections 50]\n"
                 "                         [--duration 8] [--warmup 1] [--samples FILE]\n");
    return 2;
  }
  using std::chrono::duration_cast;
  using fsec = std::chrono::duration<double>;
  asio::io_context io(1);
  schedule s;
  s.period = duration_cast<clock_type::duration>(fsec(static_cast<double>(o.connections) / o.rate));
  s.stagger = duration_cast<clock_type::duration>(fsec(1.0 / o.rate));
  // A short lead so every connection is dialled before its first request is due.
  s.start = clock_type::now() + std::chrono::milliseconds(200);
  s.count_from = s.start + duration_cast<clock_type::duration>(fsec(o.warmup));
  s.end = s.count_from + duration_cast<clock_type::duration>(fsec(o.duration));

  results out;
  out.latencies_ns.reserve(static_cast<std::size_t>(o.rate * o.duration * 1.1) + 16);
  std::vector<std::unique_ptr<connection>> conns;
  for (std::size_t k = 0; k < o.connections; ++k) {
    conns.push_back(std::make_unique<connection>(io, o, s, k, out));
    asio::co_spawn(io, conns.back()->run(), asio::detached);
  }
  io.run();

  auto& v = out.latencies_ns;
  std::sort(v.begin(), v.end());
  if (!o.samples.empty()) {
    std::FILE* f = std::fopen(o.samples.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "open_loop_latency: cannot write %s: %s\n", o.samples.c_str(), std::strerror(errno));
      return 1;
    }
    for (const auto ns : v) std::fprintf(f, "%llu\n", static_cast<unsigned long long>(ns));
    const bool failed = std::ferror(f) != 0;
    if (std::fclose(f) != 0 || failed) {
      std::fprintf(stderr, "open_loop_latency: cannot write %s: %s\n", o.samples.c_str(), std::strerror(errno));
      return 1;
    }
  }
  const double achieved = static_cast<double>(v.size()) / o.duration;
  std::printf(
      "{\"requests\": %zu, \"errors\": %llu, \"achieved_rps\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, "
      "\"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f}\n",
      v.size(), static_cast<unsigned long long>(out.errors), achieved, percentile_us(v, 0.50),
      percentile_us(v, 0.90), percentile_us(v, 0.99), percentile_us(v, 0.999),
      v.empty() ? 0.0 : static_cast<double>(v.back()) / 1000.0);
  return v.empty() ? 1 : 0;
}
