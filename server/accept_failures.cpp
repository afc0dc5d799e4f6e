// See accept_failures.hpp.
#include "accept_failures.hpp"

#include <chrono>

namespace socketmaster::server {

bool accept_failures::report(clock::time_point now, std::uint64_t& unreported) {
  const bool first = streak_ == 0;
  ++streak_;
  if (!first && now - last_report_ < every_) {
    ++unreported_;
    return false;
  }
  unreported = unreported_;
  unreported_ = 0;
  last_report_ = now;
  return true;
}

std::string accept_failures::note(std::uint64_t unreported) const {
  const auto every = std::chrono::duration_cast<std::chrono::seconds>(every_).count();
  if (unreported == 0)
    return " (retrying every " + std::to_string(accept_retry_delay.count()) + " ms; repeats are logged once per " +
           std::to_string(every) + " s)";
  return " (and " + std::to_string(unreported) + " more since the last report)";
}

std::uint64_t accept_failures::end_streak() {
  const auto n = streak_;
  streak_ = 0;
  unreported_ = 0;
  return n;
}

void accept_failures::failed(logger& log, std::string_view who, const std::error_code& ec) {
  if (std::uint64_t unreported = 0; report(clock::now(), unreported))
    log.warn(who, " accept failed: ", ec.message(), note(unreported));
  else
    log.debug(who, " accept failed again: ", ec.message());
}

void accept_failures::log_recovery(logger& log, std::string_view who) {
  if (const auto failed = end_streak()) log.info(who, " accepting again after ", failed, " failed accepts");
}

}  // namespace socketmaster::server
