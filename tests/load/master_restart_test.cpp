// Master restarts: three services registered through the SDK, each on a fixed loopback port (hello
// on an HTTP route, the socketmaster-connect sidecar in front of `hello --listen` on another, and
// tcp_echo on a raw TCP port), outlive two restarts of the master on the same control address: one
// after SIGTERM (the master drains and closes their sessions) and one after SIGKILL (their sessions
// just drop). Each time, every service keeps running, reconnects on its own with its jittered
// backoff (the master stays down for a second, so several attempts fail first), registers the same
// definition again and prints where; every route answers again.
// At the end each service drains on SIGTERM and exits 0. The fixed ports are held by the test
// (tests/support/reserved_port.hpp): the master binds them with SO_REUSEADDR alongside.
#include <doctest/doctest.h>

#include <csignal>
#include <memory>
#include <optional>
#include <string>

#include "tests/load/load_support.hpp"
#include "tests/support/reserved_port.hpp"

using namespace socketmaster;
using namespace socketmaster::load;
using namespace std::chrono_literals;

namespace {

constexpr auto downtime = 1s;

std::string url(std::uint16_t port, std::string_view path) {
  return "http://127.0.0.1:" + std::to_string(port) + std::string(path);
}

}  // namespace

TEST_CASE("services reconnect on their own after the master restarts (SIGTERM, then SIGKILL) and every route answers again") {
  std::optional<e2e::master_process> m(std::in_place);
  const auto control = m->control();
  // Ports that stay ours while the master is down, so that nothing else takes one in between.
  asio::io_context io;
  const test::reserved_port hello_port_held(io), sidecar_port_held(io), echo_port_held(io);
  const auto hello_port = hello_port_held.port(), sidecar_port = sidecar_port_held.port(), echo_port = echo_port_held.port();
  const auto at = [](std::uint16_t port) { return "127.0.0.1:" + std::to_string(port); };

  sdk_service backend({HELLO_PATH, "--listen", "127.0.0.1:0", "--text", "behind the sidecar"});
  sdk_service hello({HELLO_PATH, "--master", control, "--address", "127.0.0.1", "--port", std::to_string(hello_port),
                     "--path", "/hello", "--text", "hello through the SDK"});
  sdk_service sidecar({CONNECT_PATH, "--master", control, "--address", "127.0.0.1", "--port",
                       std::to_string(sidecar_port), "--path", "/side", "--backend", backend.bound()});
  sdk_service echo({TCP_ECHO_PATH, "--master", control, "--address", "127.0.0.1", "--port", std::to_string(echo_port)});
  CHECK(hello.bound() == at(hello_port));
  CHECK(sidecar.bound() == at(sidecar_port));
  CHECK(echo.bound() == at(echo_port));

  auto every_route_answers = [&](const std::string& when) {
    CAPTURE(when);
    const auto h = e2e::curl({url(hello_port, "/hello/x")});
    CHECK(h.status == 200);
    CHECK(h.body.starts_with("hello through the SDK\npath: /hello/x\n"));
    const auto s = e2e::curl({url(sidecar_port, "/side/y")});
    CHECK(s.status == 200);
    CHECK(s.body.starts_with("behind the sidecar\npath: /side/y\n"));
    const std::string payload = "echoed after " + when;
    e2e::tcp_client c(echo_port);
    CHECK(c.exchange_then_half_close(payload) == payload);
  };
  every_route_answers("the first start");

  stop_flag pause;  // never set: the test's wall clock
  for (const int signal : {SIGTERM, SIGKILL}) {
    CAPTURE(signal);
    ::kill(m->pid(), signal);
    const auto status = m->wait_exit();
    REQUIRE(status.has_value());
    if (signal == SIGTERM) CHECK(status->success());
    // The services lost their master; none of them gave up or crashed.
    CHECK(hello.running());
    CHECK(sidecar.running());
    CHECK(echo.running());
    CHECK(e2e::tcp_client::connect_error(hello_port) == ECONNREFUSED);
    // Down for a while: each service's reconnect attempts fail and its backoff grows.
    pause.wait_for(downtime);

    m.emplace(std::vector<std::string>{"--control", control});
    CHECK(m->control() == control);
    // Each registers again on its own, with the same port.
    CHECK(hello.next_listening(20s) == at(hello_port));
    CHECK(sidecar.next_listening(20s) == at(sidecar_port));
    CHECK(echo.next_listening(20s) == at(echo_port));
    every_route_answers(signal == SIGTERM ? "a restart after SIGTERM" : "a restart after SIGKILL");
    CHECK(metric(*m, "socketmaster_registrations_total") == 3);
  }

  for (auto* s : {&hello, &sidecar, &echo, &backend}) {
    s->terminate();
    const auto status = s->wait();
    REQUIRE(status.has_value());
    CHECK(status->success());
  }
}
