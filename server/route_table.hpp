// Matching a request's Host and path against registered routes: the pure part of routing, with no
// I/O, unit-tested on its own.
//
// Rules: the host is compared case-insensitively with its port and a trailing dot removed; a domain
// suffix matches at a label boundary only (`example.com` matches `example.com` and `api.example.com`,
// never `badexample.com`); a path prefix matches at a segment boundary (`/a` matches `/a`, `/a/` and
// `/a/b`, not `/ab`; a prefix ending in `/` matches everything below it). Empty means "any". The most
// specific route wins: longest domain suffix first, then longest path prefix.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace socketmaster::server {

// Lowercases, strips a `:port`, IPv6 brackets and a trailing dot.
std::string normalize_host(std::string_view host);
// Normalises a registered domain suffix the same way (and drops a leading dot).
std::string normalize_domain_suffix(std::string_view suffix);
bool domain_matches(std::string_view normalized_host, std::string_view normalized_suffix);
bool path_matches(std::string_view path, std::string_view prefix);

struct route_key {
  std::string domain_suffix;  // normalised; empty = any host
  std::string path_prefix;    // empty = any path
  friend bool operator==(const route_key&, const route_key&) = default;
};

// A set of routes on one listener, each identified by the caller's id.
class route_table {
 public:
  // Adds a route; a key can only be present once (equally specific registrations share one route).
  void add(const route_key& key, std::uint64_t route_id);
  void remove(std::uint64_t route_id);
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }
  std::optional<std::uint64_t> find_exact(const route_key& key) const;
  // The most specific route matching a request, if any.
  std::optional<std::uint64_t> match(std::string_view host, std::string_view path) const;

 private:
  struct entry {
    route_key key;
    std::uint64_t id;
  };
  std::vector<entry> entries_;  // most specific first
};

}  // namespace socketmaster::server
