// idle_connections: opens many keep-alive HTTP/1.1 connections, sends one request on each, reads
// its whole response and then leaves every connection open and idle, so proxy_bench.py can read a
// proxy's resident memory per idle proxied connection.
//
//   idle_connections --target 127.0.0.1:PORT [--connections 10000] [--parallel 256]
//                    [--sources 127.0.0.1,127.0.0.2] [--path /]
//
// Connections are dialled from the --sources addresses in turn (each its own ephemeral port range,
// IP_BIND_ADDRESS_NO_PORT so the kernel picks the port at connect time), --parallel at a time.
// Protocol on stdin/stdout, one line each:
//   prints "ready OPEN FAILED" once every connection has had its request answered (or failed);
//   on a line "check" prints "alive N": connections the server has not closed (a non-blocking
//     MSG_PEEK finds neither EOF nor data nor an error);
//   on end of input closes everything and exits.
// Needs a descriptor limit above --connections (proxy_bench.py raises it).
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

struct options {
  tcp::endpoint target;
  std::size_t connections = 10'000;
  std::size_t parallel = 256;
  std::vector<asio::ip::address> sources{asio::ip::make_address("127.0.0.1")};
  std::string path = "/";
};

struct state {
  const options& opts;
  std::string request;
  std::size_t next = 0;
  std::size_t failed = 0;
  std::vector<tcp::socket> open;
};

// Reads one response (head plus Content-Length body) and nothing more.
asio::awaitable<bool> read_response(tcp::socket& s) {
  std::string buf;
  char chunk[4096];
  std::size_t head_end;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (buf.size() > 64 * 1024) co_return false;
    auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
    buf.append(chunk, n);
    if (ec && n == 0) co_return false;
  }
  if (buf.compare(0, 12, "HTTP/1.1 200") != 0) co_return false;
  std::size_t length = 0;
  for (std::size_t pos = 0; (pos = buf.find("\r\n", pos)) != std::string::npos && pos < head_end;) {
    pos += 2;
    const std::string_view line(buf.data() + pos, buf.find("\r\n", pos) - pos);
    if (line.size() > 15 && (line.starts_with("Content-Length:") || line.starts_with("content-length:")))
      length = std::strtoull(std::string(line.substr(15)).c_str(), nullptr, 10);
  }
  std::size_t have = buf.size() - (head_end + 4);
  while (have < length) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
    have += n;
    if (ec && n == 0) co_return false;
  }
  co_return have == length;
}

asio::awaitable<void> dial_some(asio::io_context& io, state& st) {
  while (st.next < st.opts.connections) {
    const std::size_t i = st.next++;
    tcp::socket s(io);
    const auto& source = st.opts.sources[i % st.opts.sources.size()];
    std::error_code ec;
    s.open(st.opts.target.protocol(), ec);
    if (!ec) {
      const int yes = 1;
      ::setsockopt(s.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &yes, sizeof yes);
      s.bind(tcp::endpoint(source, 0), ec);
    }
    if (!ec) std::tie(ec) = co_await s.async_connect(st.opts.target, use_tuple);
    if (!ec) s.set_option(tcp::no_delay(true), ec);
    if (!ec) std::tie(ec, std::ignore) = co_await asio::async_write(s, asio::buffer(st.request), use_tuple);
    if (ec || !co_await read_response(s)) {
      ++st.failed;
      continue;
    }
    st.open.push_back(std::move(s));
  }
}

std::size_t count_alive(std::vector<tcp::socket>& sockets) {
  std::size_t alive = 0;
  for (auto& s : sockets) {
    char c;
    const auto r = ::recv(s.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ++alive;
  }
  return alive;
}

bool parse_options(int argc, char** argv, options& o) {
  bool have_target = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!v) return false;
    ++i;
    std::error_code ec;
    if (a == "--target") {
      const std::string t = v;
      const auto colon = t.rfind(':');
      if (colon == std::string::npos) return false;
      auto ip = asio::ip::make_address(t.substr(0, colon), ec);
      if (ec) return false;
      o.target = tcp::endpoint(ip, static_cast<std::uint16_t>(std::strtoul(t.c_str() + colon + 1, nullptr, 10)));
      have_target = true;
    } else if (a == "--connections") {
      o.connections = std::strtoul(v, nullptr, 10);
    } else if (a == "--parallel") {
      o.parallel = std::strtoul(v, nullptr, 10);
    } else if (a == "--path") {
      o.path = v;
    } else if (a == "--sources") {
      o.sources.clear();
      std::string_view list = v;
      while (!list.empty()) {
        const auto comma = list.find(',');
        auto ip = asio::ip::make_address(std::string(list.substr(0, comma)), ec);
        if (ec) return false;
        o.sources.push_back(ip);
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
      }
    } else {
      return false;
    }
  }
  return have_target && o.parallel > 0 && !o.sources.empty();
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (!parse_options(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: idle_connections --target HOST:PORT [--connections 10000] [--parallel 256]\n"
                 "                        [--sources IP,IP,...] [--path /]\n");
    return 2;
  }
  asio::io_context io(1);
  state st{o, "GET " + o.path + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle_connections\r\n\r\n", 0, 0, {}};
  st.open.reserve(o.connections);
  for (std::size_t k = 0; k < o.parallel; ++k) asio::co_spawn(io, dial_some(io, st), asio::detached);
  io.run();
  std::printf("ready %zu %zu\n", st.open.size(), st.failed);
  std::fflush(stdout);
  for (std::string line; std::getline(std::cin, line);) {
    if (line == "check") {
      std::printf("alive %zu\n", count_alive(st.open));
      std::fflush(stdout);
    }
  }
  return 0;
}
