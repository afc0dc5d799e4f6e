#include "protocol/host_port.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

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

asio::ip::tcp::endpoint unmapped(const asio::ip::tcp::endpoint& ep) {
  const auto a = ep.address();
  if (!a.is_v6() || !a.to_v6().is_v4_mapped()) return ep;
  return {asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()), ep.port()};
}

bool reaches_listener(const asio::ip::tcp::endpoint& target, const asio::ip::tcp::endpoint& bound,
                      std::span<const asio::ip::address> this_host) {
  if (target.port() != bound.port()) return false;
  const auto to = unmapped(target).address();
  const auto at = unmapped(bound).address();
  if (to == at) return true;
  const bool same_family_or_dual_stack = at.is_v6() || to.is_v4();
  const bool to_this_host = to.is_loopback() || to.is_unspecified() ||
                            std::find(this_host.begin(), this_host.end(), to) != this_host.end();
  if (at.is_unspecified()) return same_family_or_dual_stack && to_this_host;
  // Connecting to the wildcard address reaches this host's loopback (Linux).
  if (to.is_unspecified()) return at.is_loopback() && to.is_v6() == at.is_v6();
  return false;
}

std::vector<asio::ip::address> interface_addresses() {
  std::vector<asio::ip::address> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (const ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      out.emplace_back(asio::ip::address_v4(ntohl(in->sin_addr.s_addr)));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      asio::ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), in6->sin6_addr.s6_addr, bytes.size());
      out.emplace_back(asio::ip::address_v6(bytes, in6->sin6_scope_id));
    }
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace socketmaster
