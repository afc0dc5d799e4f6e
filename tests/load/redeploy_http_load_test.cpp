// Redeploys under HTTP load: wrk keeps 50 kept-alive connections busy on one route for over 20 s
// while the hello service behind it is replaced twelve times: ten times with overlap (the new
// instance registers, then the old one drains with GoAway and exits, as examples/redeploy.sh does)
// and twice with a gap (the old one drains and exits, the route is in grace, the new one registers
// a second later). No client may see it: wrk reports no non-2xx answer and no socket error, every
// instance answered, and the master accepted no connection beyond wrk's own 50 (and its probe): the
// kept-alive connections carried on across every replacement, their later requests moved to the
// new instance.
#include <doctest/doctest.h>

#include <memory>
#include <sstream>
#include <string>

#include "tests/load/load_support.hpp"

using namespace socketmaster;
using namespace socketmaster::load;
using namespace std::chrono_literals;

namespace {

constexpr int connections = 50;
constexpr int replacements = 12;
constexpr auto pace = 1600ms;        // from one replacement to the next, while wrk runs
constexpr auto gap = 1s;             // how long the route has no instance at all, in grace
constexpr auto least_load = 21s;     // wrk runs at least this long
constexpr auto tail = 1500ms;        // the last instance serves at least this long
bool gap_before(int k) { return k == 6 || k == 12; }  // else with overlap

std::string report_text(const wrk_report& r) {
  std::ostringstream out;
  out << r.requests << " requests in " << r.seconds << " s; non-2xx " << r.non_success << "; socket errors: connect "
      << r.connect_errors << ", read " << r.read_errors << ", write " << r.write_errors << ", timeout " << r.timeouts
      << "; by instance:";
  for (const auto& [first, n] : r.by_first_line) out << " " << first << "=" << n;
  out << "; by status:";
  for (const auto& [code, n] : r.by_status) out << " " << code << "=" << n;
  return out.str();
}

}  // namespace

TEST_CASE("wrk over kept-alive connections sees no error while hello is replaced 10 times with overlap and twice with a gap") {
  // Info level: the master's per-request debug lines would cost more than the routing under test.
  e2e::master_process m({"--log-level", "info"});
  auto start = [&](int version, std::uint16_t port) {
    return start_registered(m, {HELLO_PATH, "--master", m.control(), "--address", "127.0.0.1", "--port",
                                std::to_string(port), "--path", "/app", "--text", "v" + std::to_string(version)});
  };
  auto current = start(1, 0);
  const auto port = e2e::port_of(current.process->bound());
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/app/load";

  // Requests queued through a gap wait about a second and a half (more in sanitizer builds): wrk's
  // default 2 s timeout would count those as errors, so it gets the grace period's order instead.
  wrk_run load(url, connections, 15s);
  stop_flag pause;  // never set: the driver's wall clock
  const auto began = clock::now();
  for (int k = 1; k <= replacements; ++k) {
    pause.wait_until(began + k * pace);
    const int version = k + 1;
    CAPTURE(version);
    const auto old = replace(m, current, [&] { return start(version, port); },
                             gap_before(k) ? std::optional<duration>(gap) : std::nullopt, pause);
    CHECK(old.success());
  }
  pause.wait_until(std::max(began + least_load, clock::now() + tail));
  const auto report = load.stop();
  const auto elapsed = std::chrono::duration<double>(clock::now() - began).count();
  MESSAGE("HTTP redeploy under load: ", replacements, " replacements (2 with a gap) in ", elapsed, " s; ",
          report_text(report));

  CHECK(report.seconds >= 20.0);
  CHECK(report.non_success == 0);
  CHECK(report.socket_errors() == 0);
  CHECK(report.requests >= 1000);
  CHECK(report.by_status.size() == 1);
  CHECK(report.by_status.contains(200));
  // Every instance answered, and nothing else did.
  CHECK(report.by_first_line.size() == replacements + 1);
  for (int version = 1; version <= replacements + 1; ++version) {
    CAPTURE(version);
    CHECK(report.by_first_line.contains("v" + std::to_string(version)));
  }
  // The master's view: it answered no error of its own, requests did wait through the gaps, and
  // wrk's connections were never closed under it (kept-alive connections moved to the new instance).
  CHECK(metric(m, "socketmaster_http_responses_total{class=\"5xx\"}") == 0);
  CHECK(metric(m, "socketmaster_http_responses_total{class=\"4xx\"}") == 0);
  CHECK(metric(m, "socketmaster_http_responses_total{class=\"2xx\"}") >= report.requests);
  CHECK(metric(m, "socketmaster_queued_total") >= 2);
  // wrk connects once to check the address (and closes at once), then opens its connections.
  CHECK(metric(m, "socketmaster_connections_accepted_total") == connections + 1);

  CHECK(drain(*current.process).success());
}
