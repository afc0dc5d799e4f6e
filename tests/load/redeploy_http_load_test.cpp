// Redeploys under HTTP load: wrk keeps 50 kept-alive connections busy on one route for over 20 s,
// and a second wrk opens a new connection per request, while the hello service behind the route is
// replaced twelve times: ten times with overlap (the new instance registers, then the old one
// drains with GoAway and exits, as examples/redeploy.sh does) and twice with a gap (the old one
// drains and exits, the route is in grace, the new one registers a second later). No client may
// see it: wrk reports no non-2xx answer and no socket error, every instance answered the kept-alive
// connections, and the master accepted no connection beyond what the wrks opened themselves: the
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

constexpr int kept_alive = 50;  // wrk connections open for the whole run
// A second wrk sends "Connection: close": a new connection per request, paced so that the run
// leaves a few thousand TIME_WAIT sockets on the shared machine, not a port range's worth.
constexpr int closing = 4;
constexpr auto closing_pause = 20ms;
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

TEST_CASE("wrk over kept-alive and new connections sees no error while hello is replaced 10 times with overlap and twice with a gap") {
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
  wrk_run kept(url, kept_alive, 15s);
  wrk_run fresh(url, closing, 15s, "Connection: close", closing_pause);
  stop_flag pause;  // never set: the driver's wall clock
  const auto began = clock::now();
  int gaps = 0;
  for (int k = 1; k <= replacements; ++k) {
    pause.wait_until(began + k * pace);
    const int version = k + 1;
    CAPTURE(version);
    const auto old = replace(m, current, [&] { return start(version, port); },
                             gap_before(k) ? std::optional<duration>(gap) : std::nullopt, pause);
    CHECK(old.success());
    gaps += gap_before(k);
  }
  pause.wait_until(std::max(began + least_load, clock::now() + tail));
  const auto report = kept.stop();
  const auto fresh_report = fresh.stop();
  const auto elapsed = std::chrono::duration<double>(clock::now() - began).count();
  MESSAGE("HTTP redeploy under load: ", replacements, " replacements (", gaps, " with a gap) in ", elapsed,
          " s; kept-alive: ", report_text(report), "; new connection per request: ", report_text(fresh_report));

  for (const auto* r : {&report, &fresh_report}) {
    CHECK(r->seconds >= 20.0);
    CHECK(r->non_success == 0);
    CHECK(r->socket_errors() == 0);
    CHECK(r->by_status.size() == 1);
    CHECK(r->by_status.contains(200));
  }
  CHECK(report.requests >= 1000);
  CHECK(fresh_report.requests >= 100);
  // Every instance answered the kept-alive connections, and nothing else did.
  CHECK(report.by_first_line.size() == replacements + 1);
  for (int version = 1; version <= replacements + 1; ++version) {
    CAPTURE(version);
    CHECK(report.by_first_line.contains("v" + std::to_string(version)));
  }
  // The master's view: it answered no error of its own, and requests did wait through the gaps.
  CHECK(metric(m, "socketmaster_http_responses_total{class=\"5xx\"}") == 0);
  CHECK(metric(m, "socketmaster_http_responses_total{class=\"4xx\"}") == 0);
  CHECK(metric(m, "socketmaster_http_responses_total{class=\"2xx\"}") >= report.requests + fresh_report.requests);
  CHECK(metric(m, "socketmaster_queued_total") >= 2);
  // The kept-alive connections were never closed under wrk: the master accepted each wrk's probe
  // (it connects once to check the address), the 50, and one connection per closing request (plus
  // those still open when it stopped), so a reconnect of more than a handful of them would show.
  const auto accepted = metric(m, "socketmaster_connections_accepted_total");
  const auto expected = 1 + kept_alive + 1 + fresh_report.requests;
  CHECK(accepted >= expected);
  CHECK(accepted <= expected + closing);

  CHECK(drain(*current.process).success());
}
