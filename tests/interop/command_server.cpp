// serve_commands: one coroutine per stream, dispatching on the command line. See command_server.hpp
// and go/yamux_peer/serve.go, which this mirrors command for command.
#include "command_server.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <exception>
#include <span>
#include <string_view>
#include <tuple>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "data_gen.hpp"

namespace socketmaster::interop {

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t max_line = 4096;  // as the Go server's bufio.Reader

// Reads the command line, then the payload behind it: bytes that arrived past the '\n' are payload
// and are handed out first.
class command_reader {
 public:
  explicit command_reader(yamux::stream& s) : stream_(s) {}

  // The line without its '\n'; an error if the stream ends (or the line exceeds max_line) first.
  asio::awaitable<std::pair<std::string, std::string>> read_line() {
    buf_.resize(max_line);
    for (;;) {
      const auto nl = std::find(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(end_), '\n');
      if (nl != buf_.begin() + static_cast<std::ptrdiff_t>(end_)) {
        std::string line(buf_.begin(), nl);
        begin_ = static_cast<std::size_t>(nl - buf_.begin()) + 1;
        co_return std::pair{std::move(line), std::string()};
      }
      if (end_ == buf_.size()) co_return std::pair{std::string(), std::string("command line too long")};
      auto [ec, n] = co_await stream_.async_read_some(asio::buffer(buf_.data() + end_, buf_.size() - end_), use_tuple);
      end_ += n;
      consumed_ += n;
      if (ec && n == 0) co_return std::pair{std::string(), "reading command line: " + ec.message()};
    }
  }

  // Reads up to out.size() payload bytes.
  asio::awaitable<std::pair<std::error_code, std::size_t>> read_some(std::span<std::byte> out) {
    if (begin_ < end_) {
      const std::size_t n = std::min(out.size(), end_ - begin_);
      std::copy_n(reinterpret_cast<const std::byte*>(buf_.data() + begin_), n, out.data());
      begin_ += n;
      co_return std::pair{std::error_code(), n};
    }
    auto [ec, n] = co_await stream_.async_read_some(asio::buffer(out.data(), out.size()), use_tuple);
    consumed_ += n;
    co_return std::pair{ec, n};
  }

  // Bytes taken out of the stream so far (line, buffered payload and payload read).
  std::uint64_t consumed() const { return consumed_; }

 private:
  yamux::stream& stream_;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;
  std::uint64_t consumed_ = 0;
};

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

template <class Int>
std::optional<Int> parse(std::string_view s) {
  Int v{};
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string hex8(std::uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

// Writes a reply; the failure text if that fails.
asio::awaitable<std::string> reply(yamux::stream& s, std::string text) {
  auto [ec, n] = co_await asio::async_write(s, asio::buffer(text), use_tuple);
  co_return ec ? "writing reply: " + ec.message() : std::string();
}

asio::awaitable<std::string> echo(yamux::stream& s, command_reader& in, std::uint64_t n) {
  std::vector<std::byte> buf(32 * 1024);
  for (std::uint64_t done = 0; done < n;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), n - done));
    auto [ec, r] = co_await in.read_some({buf.data(), k});
    if (r > 0) {
      auto [wec, w] = co_await asio::async_write(s, asio::buffer(buf.data(), r), use_tuple);
      if (wec) co_return "ECHO: write after " + std::to_string(done) + " bytes: " + wec.message();
      done += r;
    }
    if (ec && done < n)
      co_return "ECHO: read after " + std::to_string(done) + " of " + std::to_string(n) + " bytes: " + ec.message();
  }
  co_return std::string();
}

// SINK and SLOW: read n bytes (SLOW in 4 KiB reads), reply with their CRC.
asio::awaitable<std::string> sink(yamux::stream& s, command_reader& in, std::uint64_t n, std::size_t chunk) {
  std::vector<std::byte> buf(chunk);
  crc32 crc;
  for (std::uint64_t done = 0; done < n;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), n - done));
    auto [ec, r] = co_await in.read_some({buf.data(), k});
    crc.update({buf.data(), r});
    done += r;
    if (ec && done < n) {
      co_await reply(s, "ERR short " + std::to_string(done) + "\n");
      co_return "SINK: read after " + std::to_string(done) + " of " + std::to_string(n) + " bytes: " + ec.message();
    }
  }
  co_return co_await reply(s, hex8(crc.value()) + " " + std::to_string(n) + "\n");
}

asio::awaitable<std::string> send(yamux::stream& s, std::uint64_t n, std::uint32_t seed,
                                  std::optional<std::uint64_t> reset_after) {
  data_gen gen(seed);
  std::vector<std::byte> buf(64 * 1024);
  const std::uint64_t total = reset_after ? std::min(n, *reset_after) : n;
  for (std::uint64_t done = 0; done < total;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - done));
    gen.fill({buf.data(), k});
    // The last piece with its FIN (async_write_last): the Go peer must read it all, then EOF.
    const bool last = !reset_after && done + k == total;
    std::error_code ec;
    if (last)
      std::tie(ec, std::ignore) = co_await s.async_write_last(asio::buffer(buf.data(), k), use_tuple);
    else
      std::tie(ec, std::ignore) = co_await asio::async_write(s, asio::buffer(buf.data(), k), use_tuple);
    if (ec) co_return "SEND: write after " + std::to_string(done) + " bytes: " + ec.message();
    done += k;
  }
  if (reset_after) s.reset();
  co_return std::string();
}

asio::awaitable<std::string> half_close(yamux::stream& s, command_reader& in) {
  std::vector<std::byte> buf(64 * 1024);
  std::uint64_t count = 0;
  for (;;) {
    auto [ec, r] = co_await in.read_some(buf);
    count += r;
    if (ec == asio::error::eof) break;
    if (ec) co_return "HALFCLOSE: read after " + std::to_string(count) + " bytes: " + ec.message();
  }
  co_return co_await reply(s, "BYE " + std::to_string(count) + "\n");
}

asio::awaitable<std::string> hold(yamux::session& session, yamux::stream& s, command_reader& in,
                                  const command_server_options& options, serve_stats& stats) {
  if (!options.reset_full_holds) {
    // Nothing is read again: the peer's window runs out. The stream lives until the session ends.
    co_await session.async_wait_closed(use_tuple);
    co_return std::string();
  }
  // The peer has used up our window when all it may send has arrived: the window we advertise, of
  // which the command reader took a few KiB (too few to return any credit). A ping round trip
  // at a time, rather than a timer, paces the check.
  while (s.available() + in.consumed() < s.receive_window()) {
    auto [ec, rtt] = co_await session.async_ping(use_tuple);
    if (ec) co_return "HOLD: ping: " + ec.message();
  }
  stats.held_bytes = s.available() + in.consumed();
  s.reset();
  co_return std::string();
}

asio::awaitable<std::string> serve_stream(yamux::session& session, yamux::stream s,
                                          const command_server_options& options, serve_stats& stats) {
  command_reader in(s);
  auto read = co_await in.read_line();
  if (!read.second.empty()) co_return read.second;
  const std::string& line = read.first;  // not a structured binding: `bad` captures it (clang 14)
  const auto f = fields(line);
  auto bad = [&](std::string why) -> asio::awaitable<std::string> {
    co_await reply(s, "ERR " + why + "\n");
    co_return "\"" + line + "\": " + why;
  };
  if (f.empty()) co_return co_await reply(s, "ERR unknown\n");
  const auto cmd = f[0];
  if ((cmd == "ECHO" || cmd == "SINK" || cmd == "SLOW") && f.size() == 2) {
    const auto n = parse<std::uint64_t>(f[1]);
    if (!n) co_return co_await bad("bad count \"" + std::string(f[1]) + "\"");
    if (cmd == "ECHO") co_return co_await echo(s, in, *n);
    co_return co_await sink(s, in, *n, cmd == "SLOW" ? 4096 : 64 * 1024);
  }
  if (cmd == "SEND" && f.size() == 3) {
    const auto n = parse<std::uint64_t>(f[1]);
    if (!n) co_return co_await bad("bad count \"" + std::string(f[1]) + "\"");
    const auto seed = parse<std::uint32_t>(f[2]);
    if (!seed) co_return co_await bad("bad seed \"" + std::string(f[2]) + "\"");
    co_return co_await send(s, *n, *seed, options.reset_send_after);
  }
  if (cmd == "HALFCLOSE" && f.size() == 1) co_return co_await half_close(s, in);
  if (cmd == "PING" && f.size() == 1) {
    auto [ec, rtt] = co_await session.async_ping(use_tuple);
    if (ec) co_return co_await bad("ping: " + ec.message());
    co_return co_await reply(s, "PONG " + std::to_string(std::chrono::nanoseconds(rtt).count()) + "\n");
  }
  if (cmd == "GOAWAY" && f.size() == 1) {
    session.go_away();
    co_return co_await reply(s, "OK\n");
  }
  if (cmd == "HOLD" && f.size() == 1) co_return co_await hold(session, s, in, options, stats);
  co_return co_await reply(s, "ERR unknown\n");
}

std::string describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return std::string("exception: ") + x.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace

asio::awaitable<serve_stats> serve_commands(yamux::session& session, command_server_options options) {
  serve_stats stats;
  const auto ex = co_await asio::this_coro::executor;
  std::size_t running = 0;
  // Wakes this coroutine when the last handler ends: handlers borrow the session, the options and
  // the stats, so this frame (and the caller's session) must outlive them.
  asio::steady_timer all_done(ex, asio::steady_timer::time_point::max());
  for (;;) {
    auto [ec, s] = co_await session.async_accept(use_tuple);
    if (ec) {
      stats.end_reason = ec;
      break;
    }
    ++stats.served;
    ++running;
    asio::co_spawn(ex, serve_stream(session, std::move(s), options, stats),
                   [&](std::exception_ptr e, std::string failure) {
                     if (e) failure = describe(e);
                     if (!failure.empty() && stats.failed++ == 0) stats.first_failure = std::move(failure);
                     if (--running == 0) all_done.cancel();
                   });
  }
  while (running > 0) co_await all_done.async_wait(use_tuple);
  co_return stats;
}

}  // namespace socketmaster::interop
