// The sidecar (client-sdk/connect_main.cpp) between the real master and backends that know nothing
// of socketmaster: `hello --listen` (a plain HTTP server), and small Asio servers here that read the
// PROXY v2 header the sidecar sends them, over TCP and over a Unix socket; its drain on SIGTERM.
#include <csignal>
#include <filesystem>

#include <asio/local/stream_protocol.hpp>
#include <unistd.h>

#include "protocol/host_port.hpp"
#include "protocol/proxy_header.hpp"
#include "tests/client-sdk/sdk_test_support.hpp"
#include "tests/support/reserved_port.hpp"

using namespace socketmaster;
using namespace socketmaster::sdk_test;

namespace {

// Starts a program that prints "listening ADDR" first; returns the address.
std::string listening_address(test::child_process& p) {
  auto line = p.read_line(10s);
  REQUIRE_MESSAGE(line.has_value(), "no 'listening' line");
  REQUIRE(line->rfind("listening ", 0) == 0);
  return line->substr(10);
}

// A backend that expects a PROXY v2 header, answers "source <client address>\n" and then echoes.
template <class Acceptor>
asio::awaitable<void> proxy_aware_backend(Acceptor& acceptor, int connections) {
  for (int i = 0; i < connections; ++i) {
    auto s = co_await acceptor.async_accept(asio::use_awaitable);
    std::vector<std::byte> header(proxy_v2_fixed_bytes);
    co_await asio::async_read(s, asio::buffer(header), asio::use_awaitable);
    auto parsed = parse_proxy_v2(header);
    REQUIRE(parsed.what == proxy_parse_result::kind::need_more);
    header.resize(parsed.header_bytes);
    co_await asio::async_read(s, asio::buffer(header.data() + proxy_v2_fixed_bytes, header.size() - proxy_v2_fixed_bytes),
                              asio::use_awaitable);
    parsed = parse_proxy_v2(header);
    REQUIRE(parsed.what == proxy_parse_result::kind::complete);
    const std::string greeting = "source " + text_of(parsed.info.source) + " destination " +
                                 text_of(parsed.info.destination) + "\n";
    co_await asio::async_write(s, asio::buffer(greeting), asio::use_awaitable);
    std::string rest = co_await read_to_eof(s);
    co_await asio::async_write(s, asio::buffer(rest), asio::use_awaitable);
  }
}

// One client through the master: checks the backend saw its own address, and the echo.
asio::awaitable<void> proxied_client(const std::string& address) {
  auto c = co_await connect_to(address);
  std::string buf;
  const auto greeting = co_await read_line(c, buf);
  CHECK(greeting == "source " + text_of(c.local_endpoint()) + " destination " + address + "\n");
  const std::string payload = "through the sidecar";
  co_await asio::async_write(c, asio::buffer(payload), asio::use_awaitable);
  c.shutdown(asio::socket_base::shutdown_send);
  CHECK(co_await read_to_eof(c, buf) == payload);
}

// Accepts one connection, sends `text` and closes it.
asio::awaitable<void> greet_once(asio::ip::tcp::acceptor& acceptor, std::string text) {
  auto s = co_await acceptor.async_accept(asio::use_awaitable);
  co_await asio::async_write(s, asio::buffer(text), asio::use_awaitable);
}

}  // namespace

TEST_CASE("the sidecar puts a plain HTTP server behind the master: requests reach hello --listen by path") {
  master_process master;
  test::child_process backend({HELLO_PATH, "--listen", "127.0.0.1:0", "--text", "From the backend"});
  const auto backend_address = listening_address(backend);
  test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1", "--port",
                               "0", "--path", "/side", "--backend", backend_address});
  const auto address = listening_address(sidecar);
  run([&](asio::io_context&) -> asio::awaitable<void> {
    const auto response = co_await http_get(address, "/side/hello");
    CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(response.find("From the backend\npath: /side/hello\n") != std::string::npos);
    // Another path is not the sidecar's.
    const auto other = co_await http_get(address, "/elsewhere");
    CHECK(other.rfind("HTTP/1.1 404 ", 0) == 0);
  });
  // SIGTERM drains and exits cleanly.
  ::kill(sidecar.pid(), SIGTERM);
  const auto status = sidecar.wait(10s);
  REQUIRE(status.has_value());
  CHECK(status->success());
}

TEST_CASE("one SIGTERM drains the sidecar: a connection under way flows both ways, and it exits 0 when that ends") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    asio::ip::tcp::acceptor backend(io, {asio::ip::make_address("127.0.0.1"), 0});
    test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1",
                                 "--port", "0", "--backend", text_of(backend.local_endpoint()), "--drain-timeout",
                                 "60"});
    const auto address = listening_address(sidecar);
    auto client = co_await connect_to(address);
    auto held = co_await backend.async_accept(asio::use_awaitable);  // the connection is under way
    ::kill(sidecar.pid(), SIGTERM);
    CHECK(sidecar.read_line(10s) == "draining");
    // Both directions still flow after the signal.
    std::string buf;
    co_await asio::async_write(client, asio::buffer(std::string("ping\n")), asio::use_awaitable);
    CHECK(co_await read_line(held, buf) == "ping\n");
    co_await asio::async_write(held, asio::buffer(std::string("pong\n")), asio::use_awaitable);
    CHECK(co_await read_line(client, buf) == "pong\n");
    // The backend ends it, the client sees the end and closes too: the sidecar, with nothing left
    // to wait for, exits 0 long before its 60 s drain timeout. (A half-closed connection is still
    // under way: the client may go on sending.)
    const auto ended = std::chrono::steady_clock::now();
    held.close();
    CHECK(co_await read_to_eof(client, buf) == "");
    client.close();
    const auto status = sidecar.wait(20s);
    REQUIRE(status.has_value());
    CHECK(status->success());
    CHECK(std::chrono::steady_clock::now() - ended < 10s);
  });
}

TEST_CASE("a second SIGTERM during a drain stops the sidecar at once instead of after --drain-timeout") {
  master_process master;
  asio::io_context io;
  asio::ip::tcp::acceptor backend(io, {asio::ip::make_address("127.0.0.1"), 0});
  test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1", "--port",
                               "0", "--backend", text_of(backend.local_endpoint()), "--drain-timeout", "60"});
  const auto address = listening_address(sidecar);
  asio::ip::tcp::socket client(io);
  client.connect(endpoint_of(address));
  auto held = backend.accept();  // the stream reached the backend: the drain has it to wait for
  ::kill(sidecar.pid(), SIGTERM);
  CHECK(sidecar.read_line(10s) == "draining");
  const auto second = std::chrono::steady_clock::now();
  ::kill(sidecar.pid(), SIGTERM);
  REQUIRE(sidecar.wait(20s).has_value());  // it ignored the second signal and waited out the 60 s
  CHECK(std::chrono::steady_clock::now() - second < 10s);
}

TEST_CASE("--proxy-protocol: a TCP backend learns each public client's address from a PROXY v2 header") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1",
                                 "--port", "0", "--backend", text_of(a.local_endpoint()), "--proxy-protocol"});
    const auto address = listening_address(sidecar);
    ends done(io.get_executor());
    constexpr int clients = 4;
    spawn(io.get_executor(), proxy_aware_backend(a, clients), done);
    for (int i = 0; i < clients; ++i) spawn(io.get_executor(), proxied_client(address), done);
    co_await join(done, clients + 1);
  });
}

TEST_CASE("--proxy-protocol over a Unix socket backend") {
  master_process master;
  const auto path = std::filesystem::temp_directory_path() / ("socketmaster-sdk-backend-" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    asio::local::stream_protocol::acceptor a(io, asio::local::stream_protocol::endpoint(path.string()));
    test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1",
                                 "--port", "0", "--backend", path.string(), "--proxy-protocol"});
    const auto address = listening_address(sidecar);
    ends done(io.get_executor());
    spawn(io.get_executor(), proxy_aware_backend(a, 1), done);
    spawn(io.get_executor(), proxied_client(address), done);
    co_await join(done, 2);
  });
  std::filesystem::remove(path);
}

TEST_CASE("the sidecar survives a master restart: it registers again, says where, and serves") {
  std::optional<master_process> master(std::in_place);
  const auto control = master->control_address();
  test::child_process backend({HELLO_PATH, "--listen", "127.0.0.1:0", "--text", "Still here"});
  const auto backend_address = listening_address(backend);
  test::child_process sidecar({CONNECT_PATH, "--master", control, "--address", "127.0.0.1", "--port", "0", "--path",
                               "/side", "--backend", backend_address});
  listening_address(sidecar);
  master->kill();
  master.emplace(std::vector<std::string>{}, control);
  const auto address = listening_address(sidecar);  // printed again for the new registration
  run([&](asio::io_context&) -> asio::awaitable<void> {
    const auto response = co_await http_get(address, "/side/again");
    CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(response.find("Still here\npath: /side/again\n") != std::string::npos);
  });
}

TEST_CASE("a TCP backend that refuses: each public connection ends at once; once it listens, they go through") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    test::reserved_port backend(io);
    test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1",
                                 "--port", "0", "--backend", text_of(backend.endpoint())});
    const auto address = listening_address(sidecar);
    for (int i = 0; i < 3; ++i) {  // refused each time, and the sidecar goes on serving
      auto c = co_await connect_to(address);
      CHECK(co_await read_to_eof(c) == "");
    }
    auto a = std::move(backend).listen();
    ends done(io.get_executor());
    spawn(io.get_executor(), greet_once(a, "hello from the backend"), done);
    auto c = co_await connect_to(address);
    CHECK(co_await read_to_eof(c) == "hello from the backend");
    co_await join(done, 1);
  });
}

TEST_CASE("the sidecar exits with status 1 and the master's message when its registration is rejected") {
  master_process master;
  test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1", "--port",
                               "0", "--path", "no-slash", "--backend", "127.0.0.1:9"});
  const auto status = sidecar.wait(10s);
  REQUIRE(status.has_value());
  CHECK(*status == test::exit_status{1, 0});
  CHECK(sidecar.read_line(1s) == std::nullopt);  // no "listening" line
}

TEST_CASE("a backend at the sidecar's own public port is refused at start, before the master is asked") {
  master_process master;
  asio::io_context io;
  const test::reserved_port port(io);  // a port number that stays ours; the sidecar never binds it
  const auto p = std::to_string(port.port());
  // The public address given, and all interfaces (empty), which take loopback connections too, and
  // connections to this host's other addresses (the sidecar refuses before connecting anywhere).
  std::vector<std::pair<std::string, std::string>> cases{{"127.0.0.1", "127.0.0.1:" + p}, {"", "localhost:" + p}};
  for (const auto& a : interface_addresses())
    if (!a.is_loopback() && a.is_v4()) cases.emplace_back("", a.to_string() + ":" + p);
  for (const auto& address_and_backend : cases) {
    CAPTURE(address_and_backend.second);
    test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address",
                                 address_and_backend.first, "--port", p, "--backend", address_and_backend.second});
    const auto status = sidecar.wait(10s);
    REQUIRE(status.has_value());
    CHECK(status->signal == 0);
    CHECK(status->code > 1);  // a refused option (CLI11's code); a registration the master rejected exits 1
    CHECK(sidecar.read_line(1s) == std::nullopt);  // no "listening" line
  }
}

TEST_CASE("a Unix backend path too long for a socket address is refused at start, not by a crash at the first connection") {
  master_process master;
  // sockaddr_un holds 107 bytes of path: this one cannot be connected to, ever.
  const std::string path = (std::filesystem::temp_directory_path() / std::string(120, 'b')).string();
  test::child_process sidecar({CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1", "--port",
                               "0", "--backend", path});
  const auto line = sidecar.read_line(10s);
  if (line && line->rfind("listening ", 0) == 0) {
    // Registered with a backend it can never reach: the first public connection used to end it.
    run([&](asio::io_context&) -> asio::awaitable<void> {
      auto c = co_await connect_to(line->substr(10));
      co_await read_to_eof(c);
    });
  }
  CHECK_MESSAGE(line == std::nullopt, "registered with an unusable backend: " << line.value_or(""));
  const auto status = sidecar.wait(10s);
  REQUIRE(status.has_value());
  CHECK(status->signal == 0);  // not std::terminate's SIGABRT
  CHECK(status->code != 0);
}

TEST_CASE("SIGTERM still drains the sidecar and hello when whoever read their stdout has gone (no death by SIGPIPE)") {
  master_process master;
  const std::vector<std::vector<std::string>> programs{
      {CONNECT_PATH, "--master", master.control_address(), "--address", "127.0.0.1", "--port", "0", "--backend",
       "127.0.0.1:9"},
      {HELLO_PATH, "--master", master.control_address(), "--address", "127.0.0.1", "--port", "0"}};
  for (const auto& argv : programs) {
    CAPTURE(argv[0]);
    test::child_process p(argv);
    listening_address(p);
    // A script that waited for the "listening" line and went away: the "draining" line has no reader.
    p.close_stdout();
    ::kill(p.pid(), SIGTERM);
    // Nothing is open: the drain ends at once and the program exits 0, as with a reader.
    const auto status = p.wait(10s);
    REQUIRE(status.has_value());
    CHECK(*status == test::exit_status{0, 0});
  }
}
