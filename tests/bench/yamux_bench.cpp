// yamux_bench: how our yamux session compares with raw TCP and with hashicorp/yamux, measured in one
// run so the ratios hold on a noisy shared machine. Not a test: it reports figures and PASS/MISS
// against targets, and exits non-zero only when something broke (a transfer error, short or corrupt
// data, a peer that failed).
//
// What is measured
//   single  one stream carrying --bytes (1 GiB) from client to server over loopback TCP;
//   multi   --streams (64) concurrent streams carrying --stream-bytes (16 MiB) each;
//   idle    memory per idle open stream with --idle-streams (10,000) open.
// Contenders for single and multi, alternated within every round (the starting contender rotates
// from round to round) and reported as medians over --rounds (3):
//   yamux     our session, client and server each on its own thread with its own io_context, in one
//             process. That is the shape of the Go bench (both ends in one process, GOMAXPROCS = the
//             machine's cores), so both get the same two cores and the same loopback path.
//   tcp       the same transfer over one raw TCP connection per stream (C++ Asio, same buffers).
//   go-yamux  hashicorp/yamux: `yamux_peer -scenario bench` (its default 256 KiB max window).
//   go-tcp    Go over raw TCP: `yamux_peer -scenario bench-tcp`.
// Our writers hand 1 MiB to each async_write (--write-size), with a completion condition that passes
// the whole 1 MiB to each write_some (asio::transfer_all() would cut it into 64 KiB write_somes), and
// our sinks read with 256 KiB buffers (--read-size); the Go bench writes and reads 64 KiB at a time.
// Our session runs with yamux::config's defaults. Time runs from just before the streams are opened
// (connections dialled, for raw TCP) until the server side has received the last byte, as in
// bench.go. MB = 1e6 bytes. Ratios are the median of the per-round ratios (each round's contenders
// ran back to back, under the same load). The CPU column is user+system CPU seconds per GB moved:
// less sensitive to a busy machine than MB/s (for Go it includes the runtime's start-up).
//
// Every byte count is checked exactly, and every read is sampled against the sent pattern (one
// 8-byte word per 4 KiB of stream offset; --verify compares every byte), so a lost, duplicated or
// misplaced frame fails the run.
//
// Idle memory: the server side runs in a forked child process so each side's resident set is
// measured on its own (/proc/self/statm, after malloc_trim). Counted per side: everything the
// process allocated between a baseline taken once the session is up (and one warm-up stream has
// round-tripped) and the moment all streams are open and idle: the yamux stream state and its entry
// in the stream table, plus anything still buffered. The application's vector of stream handles is
// reserved before the baseline, so it is not counted. Each stream is idle after one 16-byte
// request and one 16-byte reply, with no read or write pending. The 2 KiB target applies per side
// (what one endpoint pays per open stream); the table also shows the pair.
#include "protocol/session.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <malloc.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#ifndef SOCKETMASTER_YAMUX_PEER
#define SOCKETMASTER_YAMUX_PEER ""
#endif

extern char** environ;

namespace {

using namespace socketmaster;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

constexpr std::size_t pattern_size = 1 << 20;  // the largest write; see class pattern
constexpr std::size_t sample_stride = 4096;     // one checked word per this many stream bytes
constexpr std::size_t idle_message = 16;        // request and reply size on an idle stream
constexpr auto run_limit = std::chrono::seconds(120);

// ---------------------------------------------------------------------------------------------
// Options

struct options {
  int rounds = 3;
  std::uint64_t single_bytes = 1ull << 30;
  std::size_t streams = 64;
  std::uint64_t stream_bytes = 16ull << 20;
  std::size_t idle_streams = 10'000;
  std::size_t write_size = 1 << 20;  // bytes per async_write
  std::size_t read_size = 256 << 10;  // bytes per async_read_some
  std::string go_peer = SOCKETMASTER_YAMUX_PEER;
  bool verify = false;
  bool run_single = true, run_multi = true, run_idle = true;
  bool run_yamux = true, run_tcp = true, run_go_yamux = true, run_go_tcp = true;
};

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: yamux_bench [options]\n"
               "  --rounds N         rounds per figure, medians reported (default 3)\n"
               "  --bytes N          bytes for the one-stream transfer (default 1G)\n"
               "  --streams N        concurrent streams for the multi-stream transfer (default 64)\n"
               "  --stream-bytes N   bytes per stream in the multi-stream transfer (default 16M)\n"
               "  --idle-streams N   idle streams opened for the memory figure (default 10000)\n"
               "  --write-size N     bytes per async_write of our writers (default 1M, at most 1M)\n"
               "  --read-size N      bytes per async_read_some of our sinks (default 256K)\n"
               "  --go-peer PATH     yamux_peer binary (default: the build's; env YAMUX_PEER)\n"
               "  --only LIST        contenders: any of yamux,tcp,go-yamux,go-tcp (default all)\n"
               "  --tests LIST       figures: any of single,multi,idle (default all)\n"
               "  --verify           compare every received byte (slower; default samples)\n"
               "  --quick            1 round, 256M one-stream, 4M per stream, 2000 idle streams\n"
               "  --help\n"
               "Sizes take a K, M or G suffix (powers of 1024).\n");
}

std::optional<std::uint64_t> parse_size(std::string_view s) {
  std::uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'K': case 'k': mult = 1ull << 10; break;
      case 'M': case 'm': mult = 1ull << 20; break;
      case 'G': case 'g': mult = 1ull << 30; break;
      default: break;
    }
    if (mult != 1) s.remove_suffix(1);
  }
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v * mult;
}

bool parse_list(std::string_view list, std::initializer_list<std::pair<std::string_view, bool*>> names) {
  for (auto& [name, flag] : names) *flag = false;
  while (!list.empty()) {
    const auto comma = list.find(',');
    const auto item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    bool known = false;
    for (auto& [name, flag] : names)
      if (item == name) *flag = known = true;
    if (!known) return false;
  }
  return true;
}

// Returns false (after printing why) when the command line is wrong.
bool parse_options(int argc, char** argv, options& o, bool& help) {
  if (const char* env = std::getenv("YAMUX_PEER"); env && *env) o.go_peer = env;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::optional<std::string_view> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string_view(argv[++i]);
    };
    auto size_value = [&]() -> std::optional<std::uint64_t> {
      auto v = value();
      return v ? parse_size(*v) : std::nullopt;
    };
    std::optional<std::uint64_t> n;
    if (arg == "--help" || arg == "-h") {
      help = true;
      return true;
    } else if (arg == "--quick") {
      o.rounds = 1;
      o.single_bytes = 256ull << 20;
      o.stream_bytes = 4ull << 20;
      o.idle_streams = 2000;
    } else if (arg == "--verify") {
      o.verify = true;
    } else if (arg == "--rounds" && (n = size_value()) && *n >= 1 && *n <= 1000) {
      o.rounds = static_cast<int>(*n);
    } else if (arg == "--bytes" && (n = size_value()) && *n >= 1) {
      o.single_bytes = *n;
    } else if (arg == "--streams" && (n = size_value()) && *n >= 1 && *n <= 10'000) {
      o.streams = *n;
    } else if (arg == "--stream-bytes" && (n = size_value()) && *n >= 1) {
      o.stream_bytes = *n;
    } else if (arg == "--idle-streams" && (n = size_value()) && *n >= 1 && *n <= 60'000) {
      o.idle_streams = *n;
    } else if (arg == "--write-size" && (n = size_value()) && *n >= 1 && *n <= pattern_size) {
      o.write_size = *n;
    } else if (arg == "--read-size" && (n = size_value()) && *n >= 1 && *n <= (64u << 20)) {
      o.read_size = *n;
    } else if (arg == "--go-peer") {
      auto v = value();
      if (!v) return false;
      o.go_peer = std::string(*v);
    } else if (arg == "--only") {
      auto v = value();
      if (!v || !parse_list(*v, {{"yamux", &o.run_yamux}, {"tcp", &o.run_tcp}, {"go-yamux", &o.run_go_yamux},
                                 {"go-tcp", &o.run_go_tcp}}))
        return false;
    } else if (arg == "--tests") {
      auto v = value();
      if (!v || !parse_list(*v, {{"single", &o.run_single}, {"multi", &o.run_multi}, {"idle", &o.run_idle}}))
        return false;
    } else {
      std::fprintf(stderr, "yamux_bench: bad or incomplete option '%s'\n", argv[i]);
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the transfers

// The bytes every writer sends: `period` (the write size) pseudo-random bytes, repeated. Stream
// offset q carries byte q % period, because every write starts at the pattern's beginning.
class pattern {
 public:
  explicit pattern(std::size_t period) : period_(period), bytes_(period + 8) {
    std::uint32_t x = 2654435761u;
    for (std::size_t i = 0; i < period; ++i) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      bytes_[i] = static_cast<std::byte>(x >> 7);
    }
    // A sampled 8-byte word may straddle the period: give it the wrapped bytes to compare with.
    for (std::size_t i = 0; i < 8; ++i) bytes_[period + i] = bytes_[i % period];
  }
  const std::byte* data() const { return bytes_.data(); }

  // Checks `got`, which arrived at stream offset `offset`: every byte when `full`, else the 8-byte
  // words at offsets that are multiples of sample_stride and lie wholly inside `got`.
  bool check(std::uint64_t offset, std::span<const std::byte> got, bool full) const {
    const std::size_t size = period_;
    if (full) {
      std::size_t done = 0;
      while (done < got.size()) {
        const std::size_t at = static_cast<std::size_t>((offset + done) % size);
        const std::size_t k = std::min(got.size() - done, size - at);
        if (std::memcmp(got.data() + done, bytes_.data() + at, k) != 0) return false;
        done += k;
      }
      return true;
    }
    std::uint64_t q = (offset + sample_stride - 1) / sample_stride * sample_stride;
    for (; q + 8 <= offset + got.size(); q += sample_stride) {
      const std::size_t at = static_cast<std::size_t>(q % size);
      if (std::memcmp(got.data() + (q - offset), bytes_.data() + at, 8) != 0) return false;
    }
    return true;
  }

 private:
  std::size_t period_;
  std::vector<std::byte> bytes_;
};

// The first failure of a run, from any thread.
class failure_log {
 public:
  void fail(std::string what) {
    std::lock_guard lock(mutex_);
    if (first_.empty()) first_ = std::move(what);
  }
  void fail(std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      fail(std::string("exception: ") + x.what());
    }
  }
  bool failed() const {
    std::lock_guard lock(mutex_);
    return !first_.empty();
  }
  std::string first() const {
    std::lock_guard lock(mutex_);
    return first_;
  }

 private:
  mutable std::mutex mutex_;
  std::string first_;
};

// Counts children down; wait() completes once all have finished. A parent that stops spawning
// early counts the missing ones down itself, then still waits for those it spawned (they borrow its
// frame). One io_context (thread) only.
class latch {
 public:
  latch(asio::io_context& io, std::size_t n) : timer_(io), left_(n) {}
  void count_down(std::size_t n = 1) {
    if (left_ == 0) return;
    left_ -= std::min(n, left_);
    if (left_ == 0) timer_.cancel();
  }
  asio::awaitable<void> wait() {
    if (left_ == 0) co_return;
    timer_.expires_at(clock_type::time_point::max());
    co_await timer_.async_wait(use_tuple);
  }

 private:
  asio::steady_timer timer_;
  std::size_t left_;
};

// One transfer: `streams` streams of `bytes_per_stream` each, client to server.
struct transfer {
  std::size_t streams;
  std::uint64_t bytes_per_stream;
  const pattern* pat;
  std::size_t write_size;
  std::size_t read_size;
  bool verify;
  failure_log errors;
  // Written by the client thread before the transfer starts / by the server thread as the last byte
  // arrives; read by the main thread after joining both.
  clock_type::time_point start{}, end{};
  std::uint64_t received = 0;  // server thread only

  std::uint64_t total() const { return streams * bytes_per_stream; }
  void arrived(std::size_t n) {
    received += n;
    if (received == total()) end = clock_type::now();
  }
};

// Reads `s` to EOF, checking the count and content.
template <class Stream>
asio::awaitable<void> sink(Stream s, transfer& t) {
  std::vector<std::byte> buf(t.read_size);
  std::uint64_t offset = 0;
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
    if (n > 0) {
      if (!t.pat->check(offset, std::span(buf).first(n), t.verify)) {
        t.errors.fail("data mismatch at stream offset " + std::to_string(offset));
        co_return;
      }
      offset += n;
      t.arrived(n);
    }
    if (ec == asio::error::eof) break;
    if (ec) {
      t.errors.fail("sink read: " + ec.message());
      co_return;
    }
  }
  if (offset != t.bytes_per_stream)
    t.errors.fail("sink got " + std::to_string(offset) + " of " + std::to_string(t.bytes_per_stream) + " bytes");
}

// asio::transfer_all() would hand the stream at most 64 KiB per write_some: let each write_some
// see the whole write_size piece, so a "1 MiB write" is one (for raw TCP: as few as the kernel
// allows).
struct whole_write {
  std::size_t operator()(const std::error_code& ec, std::size_t) const {
    return ec ? 0 : std::numeric_limits<std::size_t>::max();
  }
};

// Writes the stream's bytes in write_size pieces; false on error (recorded).
template <class Stream>
asio::awaitable<bool> send_all(Stream& s, transfer& t) {
  for (std::uint64_t left = t.bytes_per_stream; left > 0;) {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(left, t.write_size));
    auto [ec, n] = co_await asio::async_write(s, asio::buffer(t.pat->data(), k), whole_write{}, use_tuple);
    if (ec || n != k) {
      t.errors.fail("write: " + ec.message());
      co_return false;
    }
    left -= k;
  }
  co_return true;
}

// A client stream of the yamux transfer: its bytes, then FIN as the handle goes.
asio::awaitable<void> yamux_writer(yamux::stream st, transfer& t) { co_await send_all(st, t); }

// A client connection of the raw TCP transfer: connect, its bytes, then FIN.
asio::awaitable<void> tcp_writer(tcp::socket sock, tcp::endpoint ep, transfer& t) {
  auto [ec] = co_await sock.async_connect(ep, use_tuple);
  if (ec) {
    t.errors.fail("connect: " + ec.message());
    co_return;
  }
  sock.set_option(tcp::no_delay(true));
  if (co_await send_all(sock, t)) sock.shutdown(tcp::socket::shutdown_send);
}

// CPU time (user + system) this process and its threads have used.
double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

struct run_result {
  bool ok = false;
  double mbps = 0;
  double cpu_seconds = 0;  // per GB (1e9 bytes) moved
  std::string error;
};

// Runs `server_main` and `client_main` on two threads with an io_context each; the main thread is
// the watchdog. Fills the figures from `t`.
run_result run_two_sides(transfer& t,
                         const std::function<asio::awaitable<void>(asio::io_context&, tcp::acceptor&)>& server_main,
                         const std::function<asio::awaitable<void>(asio::io_context&, tcp::endpoint)>& client_main) {
  asio::io_context server_io(1), client_io(1);
  tcp::acceptor acceptor(server_io, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
  const auto endpoint = acceptor.local_endpoint();

  std::mutex m;
  std::condition_variable cv;
  int finished = 0;
  auto on_done = [&](std::exception_ptr e) {
    t.errors.fail(e);
    std::lock_guard lock(m);
    ++finished;
    cv.notify_all();
  };
  asio::co_spawn(server_io, server_main(server_io, acceptor), on_done);
  asio::co_spawn(client_io, client_main(client_io, endpoint), on_done);

  const double cpu0 = process_cpu_seconds();
  std::thread server_thread([&] { server_io.run(); });
  std::thread client_thread([&] { client_io.run(); });
  {
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, run_limit, [&] { return finished == 2; })) {
      t.errors.fail("did not finish within " + std::to_string(run_limit.count()) + " s");
      server_io.stop();
      client_io.stop();
    }
  }
  server_thread.join();
  client_thread.join();
  const double cpu = process_cpu_seconds() - cpu0;

  run_result r;
  if (t.errors.failed()) {
    r.error = t.errors.first();
    return r;
  }
  if (t.received != t.total()) {
    r.error = "received " + std::to_string(t.received) + " of " + std::to_string(t.total()) + " bytes";
    return r;
  }
  const double secs = std::chrono::duration<double>(t.end - t.start).count();
  r.ok = true;
  r.mbps = static_cast<double>(t.total()) / secs / 1e6;
  r.cpu_seconds = cpu / (static_cast<double>(t.total()) / 1e9);
  return r;
}

// ---------------------------------------------------------------------------------------------
// The contenders

run_result run_yamux(std::size_t streams, std::uint64_t bytes, const pattern& pat, const options& o) {
  transfer t{streams, bytes, &pat, o.write_size, o.read_size, o.verify, {}, {}, {}, 0};

  auto server_main = [&t](asio::io_context& io, tcp::acceptor& acceptor) -> asio::awaitable<void> {
    auto sock = co_await acceptor.async_accept(asio::use_awaitable);
    sock.set_option(tcp::no_delay(true));
    yamux::session sess(std::move(sock), yamux::role::server);
    latch sinks(io, t.streams);
    for (std::size_t i = 0; i < t.streams; ++i) {
      auto [ec, st] = co_await sess.async_accept(use_tuple);
      if (ec) {
        t.errors.fail("accept: " + ec.message());
        sinks.count_down(t.streams - i);
        break;
      }
      asio::co_spawn(io, sink(std::move(st), t), [&](std::exception_ptr e) {
        t.errors.fail(e);
        sinks.count_down();
      });
    }
    co_await sinks.wait();
    // Everything arrived: ending the session ends the client's too.
  };

  auto client_main = [&t](asio::io_context& io, tcp::endpoint ep) -> asio::awaitable<void> {
    tcp::socket sock(io);
    co_await sock.async_connect(ep, asio::use_awaitable);
    sock.set_option(tcp::no_delay(true));
    yamux::session sess(std::move(sock), yamux::role::client);
    latch writers(io, t.streams);
    t.start = clock_type::now();
    for (std::size_t i = 0; i < t.streams; ++i) {
      std::error_code ec;
      auto st = sess.open(ec);
      if (ec) {
        t.errors.fail("open: " + ec.message());
        writers.count_down(t.streams - i);
        break;
      }
      asio::co_spawn(io, yamux_writer(std::move(st), t), [&](std::exception_ptr e) {
        t.errors.fail(e);
        writers.count_down();
      });
    }
    co_await writers.wait();
    // The FINs are queued behind the data: keep the session until the server, having received
    // everything, ends it.
    co_await sess.async_wait_closed(use_tuple);
  };

  return run_two_sides(t, server_main, client_main);
}

run_result run_tcp(std::size_t streams, std::uint64_t bytes, const pattern& pat, const options& o) {
  transfer t{streams, bytes, &pat, o.write_size, o.read_size, o.verify, {}, {}, {}, 0};

  auto server_main = [&t](asio::io_context& io, tcp::acceptor& acceptor) -> asio::awaitable<void> {
    latch sinks(io, t.streams);
    for (std::size_t i = 0; i < t.streams; ++i) {
      auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
      if (ec) {
        t.errors.fail("accept: " + ec.message());
        sinks.count_down(t.streams - i);
        break;
      }
      sock.set_option(tcp::no_delay(true));
      asio::co_spawn(io, sink(std::move(sock), t), [&](std::exception_ptr e) {
        t.errors.fail(e);
        sinks.count_down();
      });
    }
    co_await sinks.wait();
  };

  auto client_main = [&t](asio::io_context& io, tcp::endpoint ep) -> asio::awaitable<void> {
    latch writers(io, t.streams);
    t.start = clock_type::now();
    for (std::size_t i = 0; i < t.streams; ++i) {
      asio::co_spawn(io, tcp_writer(tcp::socket(io), ep, t), [&](std::exception_ptr e) {
        t.errors.fail(e);
        writers.count_down();
      });
    }
    co_await writers.wait();
  };

  return run_two_sides(t, server_main, client_main);
}

// Runs the Go bench (`scenario` is bench or bench-tcp) and reads its BENCH line.
run_result run_go(const std::string& peer, const char* scenario, std::size_t streams, std::uint64_t bytes) {
  run_result r;
  int out[2];
  if (pipe(out) != 0) {
    r.error = "pipe failed";
    return r;
  }
  const std::string streams_arg = std::to_string(streams), bytes_arg = std::to_string(bytes);
  std::vector<const char*> args = {peer.c_str(), "-scenario", scenario, "-streams", streams_arg.c_str(),
                                   "-bytes",     bytes_arg.c_str(), nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  posix_spawn_file_actions_addclose(&fa, out[1]);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, peer.c_str(), &fa, nullptr, const_cast<char* const*>(args.data()), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    r.error = "cannot run " + peer + ": " + std::strerror(rc);
    return r;
  }
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  close(out[0]);
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);

  const auto line_at = text.find("BENCH ");
  const auto mbps_at = text.find("MBps=", line_at == std::string::npos ? 0 : line_at);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || line_at == std::string::npos || mbps_at == std::string::npos) {
    while (!text.empty() && text.back() == '\n') text.pop_back();
    r.error = std::string(scenario) + " failed: " + text.substr(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
    return r;
  }
  r.mbps = std::strtod(text.c_str() + mbps_at + 5, nullptr);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; };
  // Whole process: includes the Go runtime's start-up and exit (a few milliseconds).
  r.cpu_seconds = (sec(ru.ru_utime) + sec(ru.ru_stime)) / (static_cast<double>(streams * bytes) / 1e9);
  r.ok = r.mbps > 0;
  if (!r.ok) r.error = std::string(scenario) + ": unreadable BENCH line";
  return r;
}

// ---------------------------------------------------------------------------------------------
// Idle-stream memory

struct memory_sample {
  std::int64_t rss = 0;   // resident bytes (/proc/self/statm)
  std::int64_t heap = 0;  // bytes malloc has handed out (mallinfo2: in use + mmapped chunks)
};

memory_sample sample_memory() {
  malloc_trim(0);  // give freed pages back so the resident set counts what is live
  memory_sample m;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    long size = 0, resident = 0;
    if (std::fscanf(f, "%ld %ld", &size, &resident) == 2) m.rss = resident * sysconf(_SC_PAGESIZE);
    std::fclose(f);
  }
  const auto mi = mallinfo2();
  m.heap = static_cast<std::int64_t>(mi.uordblks + mi.hblkhd);
  return m;
}

struct side_memory {
  std::int64_t rss_delta = 0;
  std::int64_t heap_delta = 0;
};

struct idle_result {
  bool ok = false;
  std::string error;
  side_memory client, server;
};

// A stream's idle exchange: 16 bytes one way, 16 back.
std::array<std::byte, idle_message> idle_bytes() {
  std::array<std::byte, idle_message> b{};
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>('a' + i);
  return b;
}

// The server side, in the child process: accepts `n` streams (after one warm-up stream), answers
// each, keeps them all open and reports its memory delta through `report_fd`.
int idle_server(int listen_fd, int report_fd, std::size_t n) {
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::v4(), listen_fd);
  failure_log errors;
  side_memory result;

  auto serve = [&]() -> asio::awaitable<void> {
    auto sock = co_await acceptor.async_accept(asio::use_awaitable);
    acceptor.close();
    sock.set_option(tcp::no_delay(true));
    yamux::session sess(std::move(sock), yamux::role::server);
    std::vector<yamux::stream> idle;
    idle.reserve(n + 1);

    // Answers one stream; calls `before_reply` between reading the request and replying.
    auto answer = [&](yamux::stream st, std::function<void()> before_reply) -> asio::awaitable<void> {
      std::array<std::byte, idle_message> req{};
      auto [ec, got] = co_await asio::async_read(st, asio::buffer(req), use_tuple);
      if (ec || req != idle_bytes()) {
        errors.fail("idle server read: " + ec.message());
        co_return;
      }
      if (before_reply) before_reply();
      const auto reply = idle_bytes();
      auto [wec, put] = co_await asio::async_write(st, asio::buffer(reply), use_tuple);
      if (wec) {
        errors.fail("idle server write: " + wec.message());
        co_return;
      }
      idle.push_back(std::move(st));
    };

    memory_sample before;
    {
      auto [ec, st] = co_await sess.async_accept(use_tuple);
      if (ec) {
        errors.fail("idle server warm-up accept: " + ec.message());
        co_return;
      }
      co_await answer(std::move(st), [&] { before = sample_memory(); });
    }
    latch all(io, n);
    for (std::size_t i = 0; i < n; ++i) {
      auto [ec, st] = co_await sess.async_accept(use_tuple);
      if (ec) errors.fail("idle server accept: " + ec.message());
      if (errors.failed()) {
        all.count_down(n - i);
        break;
      }
      asio::co_spawn(io, answer(std::move(st), nullptr), [&](std::exception_ptr e) {
        errors.fail(e);
        all.count_down();
      });
    }
    co_await all.wait();
    const auto after = sample_memory();
    result = {after.rss - before.rss, after.heap - before.heap};
    if (idle.size() != n + 1) errors.fail("idle server holds " + std::to_string(idle.size()) + " streams");
    // Report, then hold the streams until the client ends the session.
    const std::string line = errors.failed() ? "ERR " + errors.first() + "\n"
                                             : "MEM " + std::to_string(result.rss_delta) + " " +
                                                   std::to_string(result.heap_delta) + "\n";
    [[maybe_unused]] auto w = write(report_fd, line.data(), line.size());
    co_await sess.async_wait_closed(use_tuple);
  };
  asio::co_spawn(io, serve(), [&](std::exception_ptr e) { errors.fail(e); });
  io.run_for(run_limit);
  if (errors.failed()) {
    const std::string line = "ERR " + errors.first() + "\n";
    [[maybe_unused]] auto w = write(report_fd, line.data(), line.size());
    return 1;
  }
  return 0;
}

// Opens `n` idle streams from this process to a forked server process; each side measures itself.
idle_result run_idle(std::size_t n) {
  idle_result r;
  // The listening socket is made before the fork (no io_context exists yet on either side).
  const int listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listen_fd < 0 || bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listen_fd, 16) != 0 || getsockname(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    r.error = std::string("listen: ") + std::strerror(errno);
    return r;
  }
  int report[2];
  if (pipe(report) != 0) {
    r.error = "pipe failed";
    return r;
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    r.error = "fork failed";
    return r;
  }
  if (pid == 0) {
    close(report[0]);
    _exit(idle_server(listen_fd, report[1], n));
  }
  close(listen_fd);
  close(report[1]);

  failure_log errors;
  asio::io_context io(1);
  auto drive = [&]() -> asio::awaitable<void> {
    tcp::socket sock(io);
    co_await sock.async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), ntohs(addr.sin_port)),
                                asio::use_awaitable);
    sock.set_option(tcp::no_delay(true));
    yamux::session sess(std::move(sock), yamux::role::client);
    std::vector<yamux::stream> idle;
    idle.reserve(n + 1);

    auto exchange = [&]() -> asio::awaitable<bool> {
      std::error_code ec;
      auto st = sess.open(ec);
      if (ec) {
        errors.fail("open: " + ec.message());
        co_return false;
      }
      const auto req = idle_bytes();
      auto [wec, put] = co_await asio::async_write(st, asio::buffer(req), use_tuple);
      std::array<std::byte, idle_message> reply{};
      auto [rec, got] = co_await asio::async_read(st, asio::buffer(reply), use_tuple);
      if (wec || rec || reply != req) {
        errors.fail("idle exchange: " + (wec ? wec : rec).message());
        co_return false;
      }
      idle.push_back(std::move(st));
      co_return true;
    };

    if (!co_await exchange()) co_return;  // warm-up: the server takes its baseline before replying
    const auto before = sample_memory();
    // A few exchanges in flight at once keep it quick while bounding transient memory.
    constexpr std::size_t workers = 16;
    std::size_t started = 0;
    latch done(io, workers);
    auto worker = [&]() -> asio::awaitable<void> {
      while (started < n && !errors.failed()) {
        ++started;
        if (!co_await exchange()) co_return;
      }
    };
    for (std::size_t w = 0; w < workers; ++w)
      asio::co_spawn(io, worker(), [&](std::exception_ptr e) {
        errors.fail(e);
        done.count_down();
      });
    co_await done.wait();
    const auto after = sample_memory();
    r.client = {after.rss - before.rss, after.heap - before.heap};
    if (!errors.failed() && idle.size() != n + 1)
      errors.fail("idle client holds " + std::to_string(idle.size()) + " streams");

    // The server reports once it has answered every stream (it never needs us again for that).
    std::string line;
    char c;
    while (read(report[0], &c, 1) == 1 && c != '\n') line.push_back(c);
    long long rss = 0, heap = 0;
    if (std::sscanf(line.c_str(), "MEM %lld %lld", &rss, &heap) == 2)
      r.server = {rss, heap};
    else
      errors.fail("idle server: " + (line.empty() ? std::string("no report") : line));
    sess.close();
  };
  asio::co_spawn(io, drive(), [&](std::exception_ptr e) { errors.fail(e); });
  io.run_for(run_limit);
  close(report[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!errors.failed() && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) errors.fail("idle server process failed");
  r.ok = !errors.failed();
  r.error = errors.first();
  return r;
}

// ---------------------------------------------------------------------------------------------
// Report

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

struct contender {
  const char* name;
  std::function<run_result()> run;
  std::vector<run_result> rounds;
};

std::string human_size(std::uint64_t n) {
  if (n >= (1ull << 30) && n % (1ull << 30) == 0) return std::to_string(n >> 30) + " GiB";
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return std::to_string(n >> 20) + " MiB";
  if (n >= (1ull << 10) && n % (1ull << 10) == 0) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

// Median over rounds of (a / b), using only rounds where both ran.
std::optional<double> ratio(const contender& a, const contender& b) {
  std::vector<double> r;
  for (std::size_t i = 0; i < a.rounds.size() && i < b.rounds.size(); ++i)
    if (a.rounds[i].ok && b.rounds[i].ok) r.push_back(a.rounds[i].mbps / b.rounds[i].mbps);
  if (r.empty()) return std::nullopt;
  return median(r);
}

// Runs every contender `rounds` times, alternating, and prints the rows; false if any run broke.
bool throughput_figure(const char* title, std::vector<contender>& cs, int rounds, bool one_stream) {
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t k = 0; k < cs.size(); ++k) {
      auto& c = cs[(k + static_cast<std::size_t>(round)) % cs.size()];
      if (!c.run) continue;
      std::fprintf(stderr, "  [%s] round %d/%d: %s ...", title, round + 1, rounds, c.name);
      c.rounds.push_back(c.run());
      const auto& r = c.rounds.back();
      if (r.ok)
        std::fprintf(stderr, " %.0f MB/s\n", r.mbps);
      else
        std::fprintf(stderr, " FAILED: %s\n", r.error.c_str());
    }
  }

  bool ok = true;
  std::printf("\n%s\n", title);
  std::printf("  %-34s", "contender");
  for (int i = 0; i < rounds; ++i) std::printf(" %8s%-2d", "round", i + 1);
  std::printf(" %10s %12s\n", "median", "CPU s/GB");
  for (auto& c : cs) {
    if (!c.run) continue;
    std::printf("  %-34s", c.name);
    std::vector<double> mbps, cpu;
    for (auto& r : c.rounds) {
      if (r.ok) {
        std::printf(" %10.0f", r.mbps);
        mbps.push_back(r.mbps);
        cpu.push_back(r.cpu_seconds);
      } else {
        std::printf(" %10s", "FAILED");
        ok = false;
      }
    }
    if (mbps.empty())
      std::printf(" %10s %12s\n", "-", "-");
    else
      std::printf(" %10.0f %12.3f\n", median(mbps), median(cpu));
  }
  for (auto& c : cs)
    for (auto& r : c.rounds)
      if (!r.ok) std::printf("  ERROR %s: %s\n", c.name, r.error.c_str());

  auto print_ratio = [&](const char* label, const contender& a, const contender& b, std::optional<double> target) {
    if (!a.run || !b.run) return;
    const auto v = ratio(a, b);
    if (!v) {
      std::printf("  %-34s %10s\n", label, "-");
      return;
    }
    if (target)
      std::printf("  %-34s %10.2f   target >= %.2f  %s\n", label, *v, *target, *v >= *target ? "PASS" : "MISS");
    else
      std::printf("  %-34s %10.2f\n", label, *v);
  };
  std::printf("  ratios (median of per-round ratios)\n");
  print_ratio("ours / raw TCP (C++)", cs[0], cs[1], one_stream ? std::optional(0.8) : std::nullopt);
  print_ratio("ours / hashicorp/yamux (Go)", cs[0], cs[2], 1.5);
  print_ratio("hashicorp/yamux / raw TCP (Go)", cs[2], cs[3], std::nullopt);
  print_ratio("raw TCP C++ / raw TCP Go", cs[1], cs[3], std::nullopt);
  return ok;
}

bool idle_figure(const options& o) {
  std::fprintf(stderr, "  [idle] opening %zu streams ...", o.idle_streams);
  const auto r = run_idle(o.idle_streams);
  std::fprintf(stderr, r.ok ? " done\n" : " FAILED\n");
  std::printf("\nMemory per idle open stream, %zu streams open (server side in a child process)\n", o.idle_streams);
  if (!r.ok) {
    std::printf("  ERROR: %s\n", r.error.c_str());
    return false;
  }
  const double n = static_cast<double>(o.idle_streams);
  auto row = [&](const char* side, double rss, double heap, bool judged) {
    std::printf("  %-34s %10.0f B RSS %10.0f B heap", side, rss / n, heap / n);
    if (judged) std::printf("   target <= 2048 B  %s", rss / n <= 2048 ? "PASS" : "MISS");
    std::printf("\n");
  };
  row("client side (opener)", static_cast<double>(r.client.rss_delta), static_cast<double>(r.client.heap_delta), true);
  row("server side (acceptor)", static_cast<double>(r.server.rss_delta), static_cast<double>(r.server.heap_delta),
      true);
  row("both ends of one stream", static_cast<double>(r.client.rss_delta + r.server.rss_delta),
      static_cast<double>(r.client.heap_delta + r.server.heap_delta), false);
  std::printf("  (a stream's state in the session, yamux::detail::stream_state, is %zu bytes; the rest is\n"
              "   its stream table entry and malloc's overhead)\n",
              sizeof(yamux::detail::stream_state));
  std::printf("  (RSS delta after malloc_trim from a warmed-up session to all streams idle, divided by the\n"
              "   stream count; 'heap' is malloc's in-use delta. Each stream did one 16-byte request/reply\n"
              "   and has no read or write pending. The target applies per side.)\n");
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  bool help = false;
  if (!parse_options(argc, argv, o, help)) {
    print_usage(stderr);
    return 2;
  }
  if (help) {
    print_usage(stdout);
    return 0;
  }
  const bool have_go = !o.go_peer.empty() && access(o.go_peer.c_str(), X_OK) == 0;
  if ((o.run_go_yamux || o.run_go_tcp) && !have_go) {
    std::fprintf(stderr, "yamux_bench: Go peer '%s' not found (build the yamux_peer target or pass --go-peer); "
                         "skipping the Go figures\n", o.go_peer.c_str());
    o.run_go_yamux = o.run_go_tcp = false;
  }

  double load[1] = {0};
  if (getloadavg(load, 1) != 1) load[0] = -1;
  std::printf("yamux_bench: %d round(s), contenders alternated within each round; MB/s with MB = 1e6 bytes.\n"
              "Our session uses yamux::config defaults; both ends run in this process on two threads.\n"
              "Machine: %ld cores, load average %.2f at start.\n",
              o.rounds, sysconf(_SC_NPROCESSORS_ONLN), load[0]);
  bool ok = true;
  // Memory first: the heap is fresh and no thread exists yet when the server side is forked.
  if (o.run_idle) ok = idle_figure(o) && ok;

  const pattern pat(o.write_size);
  auto make = [&](std::size_t streams, std::uint64_t bytes) {
    std::vector<contender> cs;
    cs.push_back({"socketmaster yamux (C++)", nullptr, {}});
    cs.push_back({"raw TCP (C++ Asio)", nullptr, {}});
    cs.push_back({"hashicorp/yamux (Go)", nullptr, {}});
    cs.push_back({"raw TCP (Go)", nullptr, {}});
    if (o.run_yamux) cs[0].run = [&, streams, bytes] { return run_yamux(streams, bytes, pat, o); };
    if (o.run_tcp) cs[1].run = [&, streams, bytes] { return run_tcp(streams, bytes, pat, o); };
    if (o.run_go_yamux) cs[2].run = [&, streams, bytes] { return run_go(o.go_peer, "bench", streams, bytes); };
    if (o.run_go_tcp) cs[3].run = [&, streams, bytes] { return run_go(o.go_peer, "bench-tcp", streams, bytes); };
    return cs;
  };
  if (o.run_single) {
    auto cs = make(1, o.single_bytes);
    const std::string title = "Throughput, 1 stream x " + human_size(o.single_bytes) + " (MB/s)";
    ok = throughput_figure(title.c_str(), cs, o.rounds, true) && ok;
  }
  if (o.run_multi) {
    auto cs = make(o.streams, o.stream_bytes);
    const std::string title = "Throughput, " + std::to_string(o.streams) + " streams x " + human_size(o.stream_bytes) +
                              " (MB/s, all streams together)";
    ok = throughput_figure(title.c_str(), cs, o.rounds, false) && ok;
  }
  std::printf("\n%s\n", ok ? "yamux_bench: done" : "yamux_bench: FAILED (see ERROR lines)");
  return ok ? 0 : 1;
}
