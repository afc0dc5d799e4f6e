// A CLI11 check for options given in seconds (--grace, --drain-timeout), shared by the master, the
// sidecar and the examples. CLI11's own NonNegativeNumber names its range up to DBL_MAX written out
// in full (300 digits) when it rejects a value; this says what is wanted. Include it only from a
// program's main: it brings CLI11 in.
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <string>
#include <system_error>

namespace socketmaster {

inline const CLI::Validator seconds_option(
    [](std::string& text) -> std::string {
      double v = -1;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc{} || end != text.data() + text.size() || !(v >= 0 && v <= 1e9))
        return "expected a number of seconds from 0 to 1e9, got '" + text + "'";
      return {};
    },
    "SECONDS");

}  // namespace socketmaster
