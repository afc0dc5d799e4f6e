// The SDK listener against an independent master: go/master_standin, built from hashicorp/yamux and
// the `capnp` tool, with no code of ours. It decodes our handshake with `capnp decode`, answers with
// `capnp encode`, then (as the yamux client, like the master) opens 1,000 concurrent echo streams and
// a stream that asks for 64 MiB, each with a PROXY v2 header. The stand-in checks what comes back; this side checks what it was sent.
// The SDK runs on its own thread here, because this thread waits for the stand-in's output.
#include "socketmaster/client.hpp"

#include <thread>

#include <asio/detached.hpp>

#include "tests/client-sdk/sdk_test_support.hpp"

using namespace socketmaster;
using namespace socketmaster::sdk_test;

namespace {

// The generator go/master_standin/gen.go uses: xorshift64, 8 little-endian bytes per step.
class gen {
 public:
  explicit gen(std::uint64_t seed) : x_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  void fill(std::span<char> out) {
    for (auto& c : out) {
      if (left_ == 0) {
        x_ ^= x_ << 13;
        x_ ^= x_ >> 7;
        x_ ^= x_ << 17;
        for (int i = 0; i < 8; ++i) bytes_[i] = static_cast<char>(x_ >> (8 * i));
        left_ = 8;
      }
      c = bytes_[8 - left_--];
    }
  }

 private:
  std::uint64_t x_;
  std::array<char, 8> bytes_{};
  int left_ = 0;
};

// What the service saw; written on the SDK's thread, read after it has been joined.
struct service_log {
  int echo_streams = 0;
  int bulk_streams = 0;
  std::uint64_t echoed = 0;
  std::uint64_t bulk_sent = 0;
  std::vector<std::string> problems;
};

// "ECHO <n>": greet with the client's address, send back exactly n bytes, FIN. "BULK <n>": n bytes
// of the generator (seed 0), FIN. Either way, then wait for the stand-in's own FIN.
asio::awaitable<void> serve_stream(client::stream s, service_log& log) {
  std::string buf;
  const auto command = co_await read_line(s, buf);
  if (command.rfind("ECHO ", 0) == 0) {
    ++log.echo_streams;
    const std::string greeting = "from " + text_of(s.remote_endpoint()) + "\n";
    if (auto [ec, n] = co_await asio::async_write(s, asio::buffer(greeting), use_tuple); ec) {
      log.problems.push_back("greeting: " + ec.message());
      co_return;
    }
    std::uint64_t left = std::stoull(command.substr(5));
    std::array<char, 16 * 1024> chunk;
    while (left > 0) {
      std::size_t n = std::min<std::uint64_t>(buf.size(), left);
      if (n > 0) {
        std::copy_n(buf.data(), n, chunk.data());
        buf.erase(0, n);
      } else {
        auto [ec, got] = co_await s.async_read_some(asio::buffer(chunk.data(), std::min<std::uint64_t>(chunk.size(), left)), use_tuple);
        if (ec) {
          log.problems.push_back("echo read: " + ec.message());
          co_return;
        }
        n = got;
      }
      if (auto [ec, w] = co_await asio::async_write(s, asio::buffer(chunk.data(), n), use_tuple); ec) {
        log.problems.push_back("echo write: " + ec.message());
        co_return;
      }
      log.echoed += n;
      left -= n;
    }
  } else if (command.rfind("BULK ", 0) == 0) {
    ++log.bulk_streams;
    std::uint64_t left = std::stoull(command.substr(5));
    gen g(0);
    std::vector<char> block(1 << 20);
    while (left > 0) {
      const auto k = std::min<std::uint64_t>(left, block.size());
      g.fill({block.data(), k});
      auto [ec, n] = co_await asio::async_write(s, asio::buffer(block.data(), k), use_tuple);
      if (ec) {
        log.problems.push_back("bulk: " + ec.message());
        co_return;
      }
      log.bulk_sent += n;
      left -= k;
    }
  } else {
    log.problems.push_back("unexpected command: " + command);
    co_return;
  }
  s.shutdown_send();
  if (const auto rest = co_await read_to_eof(s, buf); !rest.empty())
    log.problems.push_back("unexpected bytes after the exchange: " + std::to_string(rest.size()));
}

socket_definition loopback_tcp() {
  socket_definition def;
  def.address = "127.0.0.1";
  return def;
}

struct standin_result {
  std::vector<std::string> lines;
  test::exit_status status;
};

// Reads the stand-in's lines until it exits (bounded), while `io` runs the SDK on another thread.
standin_result finish(test::child_process& standin, std::chrono::seconds limit) {
  standin_result r;
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!standin.stdout_closed() && std::chrono::steady_clock::now() < until)
    if (auto l = standin.read_line(until - std::chrono::steady_clock::now())) r.lines.push_back(*l);
  auto status = standin.wait(5s);
  REQUIRE_MESSAGE(status.has_value(), "the stand-in did not exit");
  r.status = *status;
  return r;
}

}  // namespace

TEST_CASE("against the hashicorp/yamux + capnp stand-in: 1,000 concurrent echo streams and a 64 MiB response") {
  constexpr int streams = 1000;
  constexpr std::uint64_t bulk = 64ull << 20;
  const std::string token = "standin-t0ken";
  test::child_process standin({MASTER_STANDIN_PATH, "-schema", SOCKETMASTER_SCHEMA_PATH, "-streams",
                               std::to_string(streams), "-echo-bytes", "16384", "-bulk", std::to_string(bulk),
                               "-expect-token", token, "-timeout", "200s"});
  const auto control = standin.read_line(10s);
  REQUIRE(control.has_value());
  REQUIRE(control->rfind("control ", 0) == 0);

  asio::io_context io(1);
  auto opts = test_options(control->substr(8));
  opts.token = token;
  client::listen_error error;
  auto l = client::listen(io, loopback_tcp(), opts, error);
  REQUIRE_MESSAGE(!error.code, error.message);
  // What the stand-in made up with `capnp encode`, decoded by us.
  CHECK(l.registration_id() == 77);
  CHECK(l.bound_address() == "127.0.0.1:4242");
  // The stand-in has no same-host socket: the SDK found nobody behind the name and took TCP.
  CHECK_FALSE(l.via_same_host_socket());

  service_log log;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, s] = co_await l.async_accept(use_tuple);
          if (ec) co_return;
          asio::co_spawn(io, serve_stream(std::move(s), log), asio::detached);
        }
      },
      asio::detached);
  std::thread sdk([&] { io.run_for(std::chrono::seconds(240)); });

  const auto r = finish(standin, std::chrono::seconds(200));
  asio::post(io, [&] {
    l.close();
    io.stop();
  });
  sdk.join();

  INFO("stand-in output: ", [&] {
    std::string all;
    for (const auto& line : r.lines) all += line + "\n";
    return all;
  }());
  REQUIRE(r.lines.size() >= 2);
  // Our handshake, as the capnp tool decoded it.
  CHECK(r.lines[0] == "request (version = 1, token = <13 bytes>, socket = (address = \"127.0.0.1\", port = 0, "
                      "proxyProtocol = true), sharedRing = false)");
  CHECK(r.lines.back() == "OK streams=1000 echoed=" + std::to_string(streams * 16384) + " bulk=" + std::to_string(bulk));
  CHECK(r.status.success());
  CHECK(log.problems.empty());
  for (const auto& p : log.problems) MESSAGE(p);
  CHECK(log.echo_streams == streams);
  CHECK(log.bulk_streams == 1);
  CHECK(log.echoed == streams * 16384ull);
  CHECK(log.bulk_sent == bulk);
}

TEST_CASE("against the stand-in: a rejection encoded by the capnp tool surfaces with its code and message") {
  test::child_process standin({MASTER_STANDIN_PATH, "-schema", SOCKETMASTER_SCHEMA_PATH, "-reject", "badCertificate",
                               "-reject-message", "the chain does not match the key", "-timeout", "30s"});
  const auto control = standin.read_line(10s);
  REQUIRE(control.has_value());
  asio::io_context io(1);
  client::listen_error error;
  auto l = client::listen(io, loopback_tcp(), test_options(control->substr(8)), error);
  REQUIRE(error.rejection);
  CHECK(*error.rejection == rejection_code::bad_certificate);
  CHECK(error.code == std::errc::invalid_argument);
  CHECK(error.message == "the chain does not match the key");
  const auto r = finish(standin, std::chrono::seconds(20));
  CHECK(r.lines.back() == "OK rejected badCertificate");
  CHECK(r.status.success());
}
