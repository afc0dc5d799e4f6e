// See sdk_test_support.hpp.
#include "tests/client-sdk/sdk_test_support.hpp"

#include <iostream>
#include <stdexcept>

#include "protocol/relay.hpp"

namespace socketmaster::sdk_test {

master_process::master_process(std::vector<std::string> extra_args, std::string control)
    : process_([&] {
        std::vector<std::string> argv{SOCKETMASTER_PATH, "--control", control, "--log-level", "info"};
        argv.insert(argv.end(), extra_args.begin(), extra_args.end());
        return argv;
      }(),
               // Whatever the environment says, this master takes its token from its flags only.
               {"SOCKETMASTER_TOKEN="}) {
  auto line = process_.read_line(10s);
  REQUIRE_MESSAGE(line.has_value(), "the master printed no control line");
  REQUIRE(line->rfind("control ", 0) == 0);
  control_ = line->substr(8);
}

asio::ip::tcp::endpoint endpoint_of(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("not host:port: " + host_port);
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {asio::ip::make_address(host), static_cast<std::uint16_t>(std::stoul(host_port.substr(colon + 1)))};
}

std::string text_of(const asio::ip::tcp::endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

socketmaster::logger& test_log() {
  static socketmaster::logger log(std::cerr, socketmaster::logger::level::info);
  return log;
}

client::options test_options(const std::string& master) {
  client::options o;
  o.master_address = master;
  o.token = {};
  o.connect_timeout = 5s;
  o.reconnect_min = 20ms;
  o.reconnect_max = 200ms;
  o.log = &test_log();
  return o;
}

asio::awaitable<asio::ip::tcp::socket> connect_to(const std::string& host_port) {
  asio::ip::tcp::socket s(co_await asio::this_coro::executor);
  co_await s.async_connect(endpoint_of(host_port), asio::use_awaitable);
  s.set_option(asio::ip::tcp::no_delay(true));
  co_return s;
}

asio::awaitable<std::string> http_get(const std::string& host_port, const std::string& path, const std::string& host) {
  auto s = co_await connect_to(host_port);
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
  co_await asio::async_write(s, asio::buffer(request), asio::use_awaitable);
  co_return co_await read_to_eof(s);
}

asio::awaitable<std::uint64_t> echo(client::stream& s) {
  std::array<std::byte, 16 * 1024> buf;
  std::uint64_t moved = 0;
  const auto ec = co_await pump(s, s, buf, moved);
  CHECK_FALSE(ec);
  co_return moved;
}

asio::awaitable<void> join(ends& done, int n, std::chrono::steady_clock::duration limit) {
  std::exception_ptr first;
  for (int i = 0; i < n; ++i)
    if (auto e = co_await done.next(limit); e && !first) first = e;
  if (first) std::rethrow_exception(first);
}

}  // namespace socketmaster::sdk_test
