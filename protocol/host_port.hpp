// "host:port" as every flag and option of ours takes an address (the master's --control and
// --admin, the SDK's master address, the sidecar's --backend, hello's --listen): one reading, so
// that an address one program accepts the others accept too, and a bad one is refused with the
// same words everywhere rather than thrown out of std::stoul or cut to 16 bits.
#pragma once

#include <asio/ip/tcp.hpp>
#include <sys/un.h>

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace socketmaster {

// host: an IP literal, IPv6 in brackets ("[::1]:80"), or "localhost", read as 127.0.0.1 so that
// the loopback checks see it (no resolver: nothing here blocks). port: decimal, 0 to 65535.
std::optional<asio::ip::tcp::endpoint> parse_host_port(std::string_view text);

// The form parse_host_port reads back: "127.0.0.1:80", "[::1]:80".
std::string host_port_text(const asio::ip::tcp::endpoint& ep);

// A listener bound to every interface is dual-stack IPv6 and reports IPv4 peers as ::ffff:a.b.c.d:
// the IPv4 endpoint itself, as clients know it and as it compares with other IPv4 addresses.
asio::ip::tcp::endpoint unmapped(const asio::ip::tcp::endpoint& ep);

// Whether a connection to `target` would arrive at a listener bound to `bound` on this host: the
// same port, and the same address, or a wildcard listener (an IPv6 one takes IPv4 too, as the
// master binds it) and a target that is this host: loopback, the wildcard, or one of
// `this_host` (interface_addresses(), passed in so that this stays a pure function). Used by the
// sidecar to refuse a backend that is its own public port: each connection would come back to it.
bool reaches_listener(const asio::ip::tcp::endpoint& target, const asio::ip::tcp::endpoint& bound,
                      std::span<const asio::ip::address> this_host = {});

// The addresses of this host's interfaces (getifaddrs); empty when they cannot be read.
std::vector<asio::ip::address> interface_addresses();

// A Unix socket path rather than host:port: our addresses name a path only with a '/' in it
// ("./ctl.sock", "/run/sm.sock"), so that "ctl.sock" is a typo for host:port, not a file.
inline bool names_unix_path(std::string_view text) { return text.find('/') != std::string_view::npos; }
// The longest such path a socket address holds (sockaddr_un, NUL-terminated): 107 bytes on Linux.
// Asio's endpoint throws for a longer one, so check before making one.
inline constexpr std::size_t max_unix_path_bytes = sizeof(sockaddr_un::sun_path) - 1;

// What to tell a person whose address parse_host_port refused.
inline constexpr const char* host_port_expected =
    "expected host:port with an IP address or localhost (IPv6 in brackets) and a port from 0 to 65535";

}  // namespace socketmaster
