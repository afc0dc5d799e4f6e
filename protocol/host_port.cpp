#include "protocol/host_port.hpp"

#include <charconv>

namespace socketmaster {

std::optional<asio::ip::tcp::endpoint> parse_host_port(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  const std::string_view digits = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  else if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs its brackets
  unsigned port = 0;
  const auto [end, pec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (digits.empty() || pec != std::errc{} || end != digits.data() + digits.size() || port > 65535) return std::nullopt;
  std::error_code ec;
  const auto ip = host == "localhost" ? asio::ip::address(asio::ip::address_v4::loopback())
                                      : asio::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  return asio::ip::tcp::endpoint(ip, static_cast<std::uint16_t>(port));
}

std::string host_port_text(const asio::ip::tcp::endpoint& ep) {
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

namespace {

// An IPv4 peer seen by a dual-stack socket is ::ffff:a.b.c.d: compare it as the IPv4 address it is.
asio::ip::address unmapped(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return a;
}

}  // namespace

bool reaches_listener(const asio::ip::tcp::endpoint& target, const asio::ip::tcp::endpoint& bound) {
  if (target.port() != bound.port()) return false;
  const auto to = unmapped(target.address());
  const auto at = unmapped(bound.address());
  if (to == at) return true;
  const bool same_family_or_dual_stack = at.is_v6() || to.is_v4();
  // Connecting to the wildcard address reaches this host's loopback (Linux).
  if (at.is_unspecified()) return same_family_or_dual_stack && (to.is_loopback() || to.is_unspecified());
  if (to.is_unspecified()) return at.is_loopback() && to.is_v6() == at.is_v6();
  return false;
}

}  // namespace socketmaster
