// The cadence of an accept loop's failure reports, with the time passed in.
#include "server/accept_failures.hpp"

#include <doctest/doctest.h>

using socketmaster::server::accept_failures;
using namespace std::chrono_literals;

TEST_CASE("a streak's first failure is reported, then one report per interval counting the rest") {
  accept_failures f(10s);
  const auto t0 = accept_failures::clock::time_point{} + 1h;
  std::uint64_t unreported = 99;
  CHECK(f.report(t0, unreported));
  CHECK(unreported == 0);
  // Retries every 50 ms for just under the interval: none of them is logged.
  int logged = 0;
  for (int i = 1; i < 200; ++i) logged += f.report(t0 + i * 50ms, unreported);
  CHECK(logged == 0);
  // The first failure at or past the interval is, and stands for the 199 before it.
  CHECK(f.report(t0 + 10s, unreported));
  CHECK(unreported == 199);
  CHECK_FALSE(f.report(t0 + 10s + 50ms, unreported));
  CHECK(f.end_streak() == 202);
}

TEST_CASE("a success ends the streak: the next failure is reported at once") {
  accept_failures f(10s);
  const auto t0 = accept_failures::clock::time_point{} + 1h;
  std::uint64_t unreported = 0;
  CHECK(f.end_streak() == 0);  // no streak: nothing to say
  CHECK(f.report(t0, unreported));
  CHECK_FALSE(f.report(t0 + 50ms, unreported));
  CHECK(f.end_streak() == 2);
  CHECK(f.end_streak() == 0);
  CHECK(f.report(t0 + 100ms, unreported));
  CHECK(unreported == 0);  // the earlier streak's silent failure was counted in its end
}
