// What the SDK tests share: the real master as a child process, a bounded coroutine test runner,
// loopback TCP clients, and a queue that turns SDK callbacks into events a test can await (so tests
// synchronise on what happened, never on time).
//
// Concurrency: everything here runs on the test's one io_context thread.
#pragma once

#include <chrono>
#include <deque>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "socketmaster/client.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/run_coroutine.hpp"

namespace socketmaster::sdk_test {

using namespace std::chrono_literals;
inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// The `socketmaster` binary on a loopback control port: an ephemeral one by default, or a given
// one (to restart a master where the services expect it). Killed (SIGKILL) when destroyed.
class master_process {
 public:
  explicit master_process(std::vector<std::string> extra_args = {}, std::string control = "127.0.0.1:0");
  const std::string& control_address() const { return control_; }
  // Ends it like a crash: SIGKILL, then reaped.
  void kill() { process_.kill(); }
  test::child_process& process() { return process_; }

 private:
  test::child_process process_;
  std::string control_;
};

// test::run_coroutine with the SDK tests' default limit.
template <class Body>
void run(Body body, std::chrono::seconds limit = 30s) {
  test::run_coroutine(std::move(body), limit);
}

// "127.0.0.1:8000" → endpoint. Throws on anything else.
asio::ip::tcp::endpoint endpoint_of(const std::string& host_port);
// Text of an endpoint as the SDK's bound_address() spells it.
std::string text_of(const asio::ip::tcp::endpoint& ep);

// Options for tests: the given master, a fast reconnect, logs on stderr (shown when a test fails).
client::options test_options(const std::string& master);
socketmaster::logger& test_log();

// A loopback TCP connection to `host_port`.
asio::awaitable<asio::ip::tcp::socket> connect_to(const std::string& host_port);

// Reads through the next '\n' (included); `buffer` keeps what came after it.
template <class Stream>
asio::awaitable<std::string> read_line(Stream& s, std::string& buffer) {
  auto [ec, n] = co_await asio::async_read_until(s, asio::dynamic_buffer(buffer), '\n', use_tuple);
  if (ec) co_return std::string{};
  std::string line = buffer.substr(0, n);
  buffer.erase(0, n);
  co_return line;
}

// Everything until EOF (or an error), after what `buffer` already holds.
template <class Stream>
asio::awaitable<std::string> read_to_eof(Stream& s, std::string buffer = {}) {
  for (;;) {
    char chunk[16 * 1024];
    auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
    buffer.append(chunk, n);
    if (ec) co_return buffer;
  }
}

// One HTTP/1.1 request with Connection: close over a new connection; the whole response.
asio::awaitable<std::string> http_get(const std::string& host_port, const std::string& path,
                                      const std::string& host = "localhost");

// Values handed over by callbacks (on_registered, completion handlers), awaited in order.
template <class T>
class event_queue {
 public:
  explicit event_queue(const asio::any_io_executor& ex) : wake_(ex) {}
  void push(T value) {
    items_.push_back(std::move(value));
    wake_.cancel();
  }
  // The next value; fails the test if none comes within `limit`.
  asio::awaitable<T> next(std::chrono::steady_clock::duration limit = 20s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (items_.empty()) {
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < until, "an expected event did not happen in time");
      wake_.expires_at(until);
      co_await wake_.async_wait(use_tuple);
    }
    T value = std::move(items_.front());
    items_.pop_front();
    co_return value;
  }
  bool empty() const { return items_.empty(); }

 private:
  asio::steady_timer wake_;
  std::deque<T> items_;
};

// Echoes a stream until EOF, then half-closes it (the service side of most tests).
asio::awaitable<std::uint64_t> echo(client::stream& s);

// Concurrent parts of a test: each spawned coroutine's end (its exception, if any) is pushed to
// `ends`; join() waits for `n` of them and rethrows the first failure.
using ends = event_queue<std::exception_ptr>;
inline void spawn(const asio::any_io_executor& ex, asio::awaitable<void> part, ends& done) {
  asio::co_spawn(ex, std::move(part), [&done](std::exception_ptr e) { done.push(e); });
}
asio::awaitable<void> join(ends& done, int n, std::chrono::steady_clock::duration limit = 30s);

}  // namespace socketmaster::sdk_test
