// See route_table.hpp.
#include "route_table.hpp"

#include <algorithm>

namespace socketmaster::server {

namespace {
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), lower);
  return out;
}
}  // namespace

std::string normalize_host(std::string_view host) {
  if (!host.empty() && host.front() == '[') {  // [v6]:port
    const auto close = host.find(']');
    host = close == std::string_view::npos ? host.substr(1) : host.substr(1, close - 1);
  } else if (const auto colon = host.rfind(':'); colon != std::string_view::npos &&
                                                 host.find(':') == colon) {  // one colon: name:port
    host = host.substr(0, colon);
  }
  while (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return lowercase(host);
}

std::string normalize_domain_suffix(std::string_view suffix) {
  while (!suffix.empty() && suffix.front() == '.') suffix.remove_prefix(1);
  return normalize_host(suffix);
}

bool domain_matches(std::string_view host, std::string_view suffix) {
  if (suffix.empty()) return true;
  if (host.size() < suffix.size()) return false;
  if (host.substr(host.size() - suffix.size()) != suffix) return false;
  return host.size() == suffix.size() || host[host.size() - suffix.size() - 1] == '.';
}

bool path_matches(std::string_view path, std::string_view prefix) {
  if (prefix.empty()) return true;
  if (path.substr(0, prefix.size()) != prefix) return false;
  if (path.size() == prefix.size() || prefix.back() == '/') return true;
  const char next = path[prefix.size()];
  return next == '/' || next == '?' || next == '#';
}

void route_table::add(const route_key& key, std::uint64_t route_id) {
  entries_.push_back({key, route_id});
  std::stable_sort(entries_.begin(), entries_.end(), [](const entry& a, const entry& b) {
    if (a.key.domain_suffix.size() != b.key.domain_suffix.size())
      return a.key.domain_suffix.size() > b.key.domain_suffix.size();
    return a.key.path_prefix.size() > b.key.path_prefix.size();
  });
}

void route_table::remove(std::uint64_t route_id) {
  std::erase_if(entries_, [&](const entry& e) { return e.id == route_id; });
}

std::optional<std::uint64_t> route_table::find_exact(const route_key& key) const {
  for (const auto& e : entries_)
    if (e.key == key) return e.id;
  return std::nullopt;
}

std::optional<std::uint64_t> route_table::match(std::string_view host, std::string_view path) const {
  const std::string h = normalize_host(host);
  for (const auto& e : entries_)
    if (domain_matches(h, e.key.domain_suffix) && path_matches(path, e.key.path_prefix)) return e.id;
  return std::nullopt;
}

}  // namespace socketmaster::server
