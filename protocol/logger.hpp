// A small line logger passed to the components that log (never a global): one line per event with a
// timestamp, a level and the ids the caller puts in the message. It never sees secrets: callers log
// ids, addresses and codes, not tokens or keys.
#pragma once

#include <iosfwd>
#include <mutex>
#include <sstream>
#include <string_view>

namespace socketmaster {

class logger {
 public:
  enum class level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

  explicit logger(std::ostream& out, level min = level::info) : out_(&out), min_(min) {}
  // A logger that drops everything (tests, library users who do not care).
  static logger& null();

  bool enabled(level l) const { return out_ && l >= min_; }
  void set_level(level l) { min_ = l; }

  template <class... Args>
  void log(level l, const Args&... args) {
    if (!enabled(l)) return;
    std::ostringstream line;
    (line << ... << args);
    write(l, line.str());
  }
  template <class... Args> void debug(const Args&... a) { log(level::debug, a...); }
  template <class... Args> void info(const Args&... a) { log(level::info, a...); }
  template <class... Args> void warn(const Args&... a) { log(level::warn, a...); }
  template <class... Args> void error(const Args&... a) { log(level::error, a...); }

 private:
  logger() = default;
  void write(level l, std::string_view line);

  std::ostream* out_ = nullptr;
  level min_ = level::off;
  std::mutex mutex_;  // lines from several threads (the SDK's users may log from any) stay whole
};

}  // namespace socketmaster
