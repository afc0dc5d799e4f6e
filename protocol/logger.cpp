// See logger.hpp.
#include "logger.hpp"

#include <chrono>
#include <ctime>
#include <ostream>

namespace socketmaster {

logger& logger::null() {
  static logger instance;
  return instance;
}

void logger::write(level l, std::string_view line) {
  static constexpr const char* names[] = {"debug", "info", "warn", "error"};
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard lock(mutex_);
  *out_ << stamp << '.' << (ms < 100 ? (ms < 10 ? "00" : "0") : "") << ms << "Z " << names[static_cast<int>(l)] << ' '
        << line << '\n';
  out_->flush();
}

}  // namespace socketmaster
