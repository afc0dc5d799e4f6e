// Redeploys under raw TCP load: 32 clients keep connections open through the master to tcp_echo,
// each living about two seconds and exchanging chunks of data all along, one after another, while
// the echo service is replaced four times with overlap (the old instance drains: its connections run
// to their end while new ones go to the new instance) and once with a gap (the old instance drains
// and exits, connections arriving meanwhile wait in the master's queue until the new one registers a
// second later). No connection may be cut: every byte comes back, in order, and each client's FIN is
// answered with the service's. Every instance must have carried connections.
// A cut seen once here under TSan: session_test "a SYN queued before the peer's ping goes out ...".
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/load/load_support.hpp"

using namespace socketmaster;
using namespace socketmaster::load;
using namespace std::chrono_literals;

namespace {

constexpr int clients = 32;
constexpr int replacements = 5;
constexpr int gap_at = 3;                  // this replacement leaves the route empty; the others overlap
constexpr auto pace = 2500ms;              // from one replacement to the next
constexpr auto gap = 1s;
constexpr auto round_pause = 40ms;         // between two chunks of one connection
constexpr auto lifetime_min = 1500ms;      // of one connection
constexpr auto lifetime_spread = 1000;     // ms added at random

// What the client threads found, shared under a mutex.
struct tally {
  std::mutex mutex;
  std::uint64_t connections = 0;
  std::uint64_t bytes = 0;
  std::vector<std::string> failures;
};

// One client slot: connection after connection until `stop`, each verified to its end.
void client_loop(int slot, std::uint16_t port, stop_flag& stop, tally& t) {
  std::mt19937 rng(static_cast<std::mt19937::result_type>(slot));
  std::uniform_int_distribution<std::size_t> chunk_size(1, 8192);
  std::uniform_int_distribution<int> extra_ms(0, lifetime_spread);
  std::uint64_t seq = 0;
  while (!stop.is_set()) {
    std::uint64_t echoed = 0;
    try {
      e2e::tcp_client c(port);
      const auto until = clock::now() + lifetime_min + std::chrono::milliseconds(extra_ms(rng));
      do {
        // Distinct content per slot, connection and round, so a misrouted or reordered byte shows.
        std::string chunk(chunk_size(rng), '\0');
        for (std::size_t i = 0; i < chunk.size(); ++i)
          chunk[i] = static_cast<char>('A' + (slot * 7 + seq * 13 + i) % 53);
        ++seq;
        c.send(chunk);
        if (c.read_exact(chunk.size(), 20s) != chunk) throw std::runtime_error("the echo differs from what was sent");
        echoed += chunk.size();
      } while (!stop.wait_for(round_pause) && clock::now() < until);
      c.shutdown_write();
      if (const auto rest = c.read_to_eof(20s); !rest.empty())
        throw std::runtime_error(std::to_string(rest.size()) + " unexpected bytes before the FIN");
      std::lock_guard lock(t.mutex);
      ++t.connections;
      t.bytes += echoed;
    } catch (const std::exception& x) {
      std::lock_guard lock(t.mutex);
      t.failures.push_back("client " + std::to_string(slot) + " after " + std::to_string(echoed) + " bytes: " + x.what());
    }
  }
}

}  // namespace

TEST_CASE("long-lived TCP connections are never cut while tcp_echo is replaced with overlap and with a gap") {
  e2e::master_process m;  // debug level: it logs which registration each connection went to
  auto start = [&](std::uint16_t port) {
    return start_registered(m, {TCP_ECHO_PATH, "--master", m.control(), "--address", "127.0.0.1", "--port",
                                std::to_string(port), "--drain-timeout", "60"});
  };
  // A draining instance exits once its last connection has ended: about one lifetime.
  constexpr auto drain_timeout = 20s;
  auto current = start(0);
  const auto port = e2e::port_of(current.process->bound());
  std::vector<std::uint64_t> ids{current.id};

  stop_flag stop_clients, pause;
  tally t;
  std::vector<std::thread> threads;
  struct joiner {  // the threads end however the test body ends
    stop_flag& stop;
    std::vector<std::thread>& threads;
    ~joiner() {
      stop.set();
      for (auto& th : threads) th.join();
    }
  } join_threads{stop_clients, threads};
  for (int slot = 0; slot < clients; ++slot)
    threads.emplace_back(client_loop, slot, port, std::ref(stop_clients), std::ref(t));

  const auto began = clock::now();
  for (int k = 1; k <= replacements; ++k) {
    pause.wait_until(began + k * pace);
    CAPTURE(k);
    const auto old = replace(m, current, [&] { return start(port); },
                             k == gap_at ? std::optional<duration>(gap) : std::nullopt, pause, drain_timeout);
    CHECK(old.success());
    ids.push_back(current.id);
  }
  pause.wait_for(pace);  // the last instance carries a round of connections too
  stop_clients.set();
  for (auto& th : threads) th.join();
  threads.clear();
  const auto elapsed = std::chrono::duration<double>(clock::now() - began).count();

  std::lock_guard lock(t.mutex);
  for (const auto& f : t.failures) FAIL_CHECK(f);
  // Which instance each connection went to, from the master's "... to registration N" lines.
  std::map<std::uint64_t, std::size_t> per_instance;
  const auto log = m.lines();
  for (const auto id : ids) {
    const std::string text = "to registration " + std::to_string(id);
    std::size_t n = 0;
    for (const auto& line : log)
      if (line.ends_with(text)) ++n;
    per_instance[id] = n;
  }
  std::string spread;
  for (const auto& [id, n] : per_instance) spread += " " + std::to_string(id) + "=" + std::to_string(n);
  MESSAGE("TCP redeploy under load: ", replacements, " replacements (one with a gap) in ", elapsed, " s; ",
          t.connections, " connections of ", clients, " concurrent clients, ", t.bytes,
          " bytes echoed; connections by registration:", spread);
  CHECK(t.failures.empty());
  CHECK(t.connections >= 100);
  for (const auto& instance : per_instance) {
    const auto id = instance.first;  // named, not a structured binding: CAPTURE's lambda takes it (clang 14)
    CAPTURE(id);
    CHECK(instance.second > 0);
  }
  CHECK(metric(m, "socketmaster_queued_total") >= 1);
  CHECK(drain(*current.process, drain_timeout).success());
}
