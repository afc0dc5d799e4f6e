// CLI11 checks shared by the master, the sidecar and the examples, each saying what is wanted when
// it refuses a value. Include it only from a program's main: it brings CLI11 in.
#pragma once

#include <CLI/CLI.hpp>

#include "protocol/host_port.hpp"

#include <charconv>
#include <string>
#include <system_error>

namespace socketmaster {

// Options given in seconds (--grace, --drain-timeout). CLI11's own NonNegativeNumber names its
// range up to DBL_MAX written out in full (300 digits) when it rejects a value.
inline const CLI::Validator seconds_option(
    [](std::string& text) -> std::string {
      double v = -1;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc{} || end != text.data() + text.size() || !(v >= 0 && v <= 1e9))
        return "expected a number of seconds from 0 to 1e9, got '" + text + "'";
      return {};
    },
    "SECONDS");

// Counts and sizes held in an unsigned type (--max-header-bytes, --max-headers, ...): CLI11 turns
// "-1" into the type's largest value, which would lift the limit instead of refusing the value.
inline const CLI::Validator count_option(
    [](std::string& text) -> std::string {
      unsigned long long v = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc{} || end != text.data() + text.size())
        return "expected a whole number from 0 to " + std::to_string(~0ull) + ", got '" + text + "'";
      return {};
    },
    "COUNT");

// Addresses: host:port (see host_port.hpp), and where a Unix socket will do, a path with a '/'.
inline const CLI::Validator address_option(
    [](std::string& text) -> std::string {
      if (parse_host_port(text)) return {};
      return std::string(host_port_expected) + ", got '" + text + "'";
    },
    "HOST:PORT");
inline const CLI::Validator address_or_path_option(
    [](std::string& text) -> std::string {
      if (names_unix_path(text) || parse_host_port(text)) return {};
      return std::string(host_port_expected) + ", or a Unix socket path with a '/', got '" + text + "'";
    },
    "HOST:PORT|PATH");

}  // namespace socketmaster
