// The SDK listener (client-sdk/listener.cpp) against the real `socketmaster` binary: registering,
// accepting and echoing with the client's real address; surviving a master restart; draining while
// a new instance takes over; every rejection with its code and message; cancellation and close;
// the same-host socket and each way of keeping the control connection on TCP.
// Clients are real loopback TCP connections. Every wait is on an event (a line, a connection, a
// response, a callback); the only clocks are the bounds on how long a test may take.
#include "socketmaster/client.hpp"

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/detached.hpp>
#include <asio/ssl.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include "protocol/errors.hpp"
#include "protocol/handshake.hpp"
#include "protocol/proxy_header.hpp"
#include "protocol/session.hpp"
#include "tests/client-sdk/sdk_test_support.hpp"
#include "tests/support/reserved_port.hpp"

using namespace socketmaster;
using namespace socketmaster::sdk_test;

namespace {

using accept_result = std::pair<std::error_code, client::stream>;

socket_definition raw_tcp(std::uint16_t port = 0) {
  socket_definition def;
  def.address = "127.0.0.1";  // loopback only: tests never listen on every interface
  def.port = port;
  return def;
}

// async_listen that must succeed (the test stops with the master's message otherwise). Not a
// structured binding: clang 14 cannot capture those in the lambdas doctest's macros expand to.
asio::awaitable<client::listener> listen_ok(const socket_definition& def, const client::options& opts) {
  auto result = co_await client::async_listen(co_await asio::this_coro::executor, def, opts, asio::use_awaitable);
  const client::listen_error& error = std::get<0>(result);
  REQUIRE_MESSAGE(!error.code, error.message);
  co_return std::move(std::get<1>(result));
}

// A whole stream echoed (a named coroutine: a lambda's captures would not outlive the call).
asio::awaitable<void> echo_all(client::stream& s) { co_await echo(s); }

// A raw TCP listener with one public connection whose stream is accepted and has carried `line`:
// what the drain tests then end in different ways.
struct one_stream {
  client::listener listener;
  asio::ip::tcp::socket client;
  client::stream stream;
};
asio::awaitable<one_stream> open_one_stream(const std::string& control, std::string line) {
  auto l = co_await listen_ok(raw_tcp(), test_options(control));
  auto c = co_await connect_to(l.bound_address());
  co_await asio::async_write(c, asio::buffer(line), asio::use_awaitable);
  auto [aec, s] = co_await l.async_accept(use_tuple);
  REQUIRE_FALSE(aec);
  std::string buffer;
  CHECK(co_await read_line(s, buffer) == line);
  co_return one_stream{std::move(l), std::move(c), std::move(s)};
}

// The listener's accept delivered to a queue, so a test can check later whether it has completed.
void accept_into(client::listener& l, event_queue<accept_result>& q) {
  l.async_accept([&q](std::error_code ec, client::stream s) { q.push({ec, std::move(s)}); });
}

// A token file for a master started with --token-file; removed when the test ends.
struct token_file {
  explicit token_file(const std::string& token)
      : path(std::filesystem::temp_directory_path() / ("socketmaster-sdk-token-" + std::to_string(::getpid()))) {
    std::ofstream(path) << token << "\n";
  }
  ~token_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  std::filesystem::path path;
};

// A minimal HTTP/1.1 keep-alive responder for the load test: answers every request with `name`,
// until the client (or the master, for a draining service) ends the stream.
asio::awaitable<void> http_respond(client::stream s, std::string name, std::uint64_t& served) {
  std::string buf;
  for (;;) {
    auto [ec, n] = co_await asio::async_read_until(s, asio::dynamic_buffer(buf), "\r\n\r\n", use_tuple);
    if (ec) co_return;
    buf.erase(0, n);
    const std::string response =
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(name.size()) + "\r\n\r\n" + name;
    auto [wec, wn] = co_await asio::async_write(s, asio::buffer(response), use_tuple);
    if (wec) co_return;
    ++served;
  }
}

asio::awaitable<void> http_service(client::listener& l, std::string name, std::uint64_t& served) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    auto [ec, s] = co_await l.async_accept(use_tuple);
    if (ec) co_return;
    asio::co_spawn(ex, http_respond(std::move(s), name, served), asio::detached);
  }
}

}  // namespace

TEST_CASE("listen, accept and echo through the real master; remote_endpoint() is the client's own address") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto l = co_await listen_ok(raw_tcp(), test_options(master.control_address()));
    CHECK(l.registration_id() > 0);
    CHECK(l.connected());
    const auto bound = endpoint_of(l.bound_address());
    CHECK(bound.address() == asio::ip::make_address("127.0.0.1"));
    CHECK(bound.port() != 0);

    constexpr int clients = 16;
    std::set<std::string> client_addresses, remote_endpoints;
    ends done(ex);
    auto serve_one = [&](client::stream s) -> asio::awaitable<void> {
      remote_endpoints.insert(text_of(s.remote_endpoint()));
      CHECK(s.local_endpoint() == bound);
      co_await echo(s);
    };
    auto service = [&]() -> asio::awaitable<void> {
      for (int i = 0; i < clients; ++i) {
        auto [ec, s] = co_await l.async_accept(use_tuple);
        REQUIRE_FALSE(ec);
        spawn(ex, serve_one(std::move(s)), done);
      }
    };
    auto one_client = [&](int i) -> asio::awaitable<void> {
      auto c = co_await connect_to(l.bound_address());
      client_addresses.insert(text_of(c.local_endpoint()));
      const std::string payload(64 * 1024 + static_cast<std::size_t>(i), static_cast<char>('a' + i));
      co_await asio::async_write(c, asio::buffer(payload), asio::use_awaitable);
      c.shutdown(asio::socket_base::shutdown_send);
      CHECK(co_await read_to_eof(c) == payload);
    };
    spawn(ex, service(), done);
    for (int i = 0; i < clients; ++i) spawn(ex, one_client(i), done);
    co_await join(done, 1 + 2 * clients);
    CHECK(remote_endpoints == client_addresses);
    CHECK(remote_endpoints.size() == clients);
  });
}

namespace {

// Resident KiB of `pid`'s mappings of shared rings (smaps), or -1 when it maps none.
long ring_rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps");
  long total = -1;
  bool in_ring = false;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < line.find(' ')) {
      in_ring = line.find("memfd:socketmaster-ring") != std::string::npos;
      if (in_ring && total < 0) total = 0;
    } else if (in_ring && line.starts_with("Rss:")) {
      total += std::stol(line.substr(4));
    }
  }
  return total;
}

std::string patterned(std::size_t n) {
  std::string v(n, '\0');
  std::uint32_t x = 2463534242u;
  for (auto& c : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return v;
}

}  // namespace

TEST_CASE("a bulk answer reaches the master through the shared ring, intact and in order; a master that maps no "
          "ring (--max-shared-ring-bytes 0) gets it over the socket") {
  const std::string body = patterned(24 << 20);
  for (const bool ring : {true, false}) {
    CAPTURE(ring);
    master_process master(ring ? std::vector<std::string>{} : std::vector<std::string>{"--max-shared-ring-bytes", "0"});
    const pid_t pid = master.process().pid();
    run([&](asio::io_context& io) -> asio::awaitable<void> {
      auto ex = io.get_executor();
      auto l = co_await listen_ok(raw_tcp(), test_options(master.control_address()));
      // Mapped once the registration is answered, and nothing of the ring's payload touched yet.
      const long before = ring_rss_kib(pid);
      CHECK((ring ? before >= 0 && before <= 64 : before == -1));
      ends done(ex);
      auto service = [&]() -> asio::awaitable<void> {
        auto [ec, s] = co_await l.async_accept(use_tuple);
        REQUIRE_FALSE(ec);
        for (std::size_t at = 0; at < body.size(); at += 1 << 20)  // a megabyte per write, as hello does
          co_await asio::async_write(s, asio::buffer(body.data() + at, 1 << 20), asio::use_awaitable);
        s.shutdown_send();
        std::string rest = co_await read_to_eof(s);
        CHECK(rest.empty());
      };
      auto client = [&]() -> asio::awaitable<void> {
        auto c = co_await connect_to(l.bound_address());
        c.shutdown(asio::socket_base::shutdown_send);
        const std::string got = co_await read_to_eof(c);
        CHECK(got.size() == body.size());
        CHECK(got == body);
      };
      spawn(ex, service(), done);
      spawn(ex, client(), done);
      co_await join(done, 2);
      // The master read the payload from the ring's pages (the default ring is 16 MiB; 24 MiB passed)...
      if (ring) {
        CHECK(ring_rss_kib(pid) >= 4096);
        // ...which the service gives back once a housekeeping tick (2.5 s here) passes without payload.
        asio::steady_timer step(ex);
        const auto deadline = std::chrono::steady_clock::now() + 15s;
        while (ring_rss_kib(pid) > 64 && std::chrono::steady_clock::now() < deadline) {
          step.expires_after(100ms);
          co_await step.async_wait(asio::use_awaitable);
        }
        CHECK(ring_rss_kib(pid) <= 64);
      } else {
        CHECK(ring_rss_kib(pid) == -1);
      }
    });
  }
}

namespace {
// A self-signed certificate for CN=localhost and its key (PEM), made in memory for one test.
std::pair<std::string, std::string> self_signed_localhost() {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  REQUIRE(key);
  REQUIRE(cert);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  REQUIRE(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0);
  auto pem = [](auto write) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    REQUIRE(write(bio.get()) == 1);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
  };
  return {pem([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); }),
          pem([&](BIO* b) { return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr); })};
}
}  // namespace

TEST_CASE("a service can terminate TLS itself: asio::ssl::stream over an accepted stream, a verifying client "
          "through a raw TCP route") {
  master_process master;
  const auto pem = self_signed_localhost();  // not a structured binding: clang 14 cannot capture one
  const std::string& cert = pem.first;
  const std::string& key = pem.second;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto l = co_await listen_ok(raw_tcp(), test_options(master.control_address()));
    asio::ssl::context server_ctx(asio::ssl::context::tls_server);
    server_ctx.use_certificate_chain(asio::buffer(cert));
    server_ctx.use_private_key(asio::buffer(key), asio::ssl::context::pem);
    asio::ssl::context client_ctx(asio::ssl::context::tls_client);
    client_ctx.add_certificate_authority(asio::buffer(cert));
    client_ctx.set_verify_mode(asio::ssl::verify_peer);

    ends done(ex);
    std::string served;
    auto service = [&]() -> asio::awaitable<void> {
      auto [ec, s] = co_await l.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      asio::ssl::stream<client::stream> tls(std::move(s), server_ctx);
      const std::error_code hec = std::get<0>(co_await tls.async_handshake(asio::ssl::stream_base::server, use_tuple));
      REQUIRE_MESSAGE(!hec, hec.message());
      std::string buffer;
      served = co_await read_line(tls, buffer);
      // Bigger than a TLS record and a yamux window: many records, window updates under TLS.
      const std::string reply = "over TLS: " + served.substr(0, served.find('\n')) + " " + std::string(512 * 1024, 'r') + "\n";
      co_await asio::async_write(tls, asio::buffer(reply), asio::use_awaitable);
      co_await tls.async_shutdown(use_tuple);
    };
    std::string answer;
    auto one_client = [&]() -> asio::awaitable<void> {
      asio::ssl::stream<asio::ip::tcp::socket> tls(co_await connect_to(l.bound_address()), client_ctx);
      SSL_set_tlsext_host_name(tls.native_handle(), "localhost");
      tls.set_verify_callback(asio::ssl::host_name_verification("localhost"));
      const std::error_code hec = std::get<0>(co_await tls.async_handshake(asio::ssl::stream_base::client, use_tuple));
      REQUIRE_MESSAGE(!hec, hec.message());
      co_await asio::async_write(tls, asio::buffer(std::string("hello\n")), asio::use_awaitable);
      std::string buffer;
      answer = co_await read_line(tls, buffer);
    };
    spawn(ex, service(), done);
    spawn(ex, one_client(), done);
    co_await join(done, 2);
    CHECK(served == "hello\n");
    CHECK(answer == "over TLS: hello " + std::string(512 * 1024, 'r') + "\n");
  });
}

TEST_CASE("an HTTP route: the request arrives verbatim with X-Forwarded-For, and remote_endpoint() is the client") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    socket_definition def = raw_tcp();
    def.http = http_route{"", "/svc"};
    // The blocking form, as a program's start-up would use it (nothing else runs on `io` yet).
    client::listen_error error;
    auto l = client::listen(io, def, test_options(master.control_address()), error);
    REQUIRE_MESSAGE(!error.code, error.message);

    ends done(ex);
    std::string client_address;
    auto service = [&]() -> asio::awaitable<void> {
      auto [ec, s] = co_await l.async_accept(use_tuple);
      REQUIRE_FALSE(ec);
      std::string buf;
      auto [rec, n] = co_await asio::async_read_until(s, asio::dynamic_buffer(buf), "\r\n\r\n", use_tuple);
      REQUIRE_FALSE(rec);
      CHECK(buf.rfind("GET /svc/hello HTTP/1.1\r\n", 0) == 0);
      CHECK(buf.find("X-Forwarded-For: 127.0.0.1\r\n") != std::string::npos);
      const std::string body = text_of(s.remote_endpoint());
      const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                                   "\r\nConnection: close\r\n\r\n" + body;
      co_await asio::async_write(s, asio::buffer(response), asio::use_awaitable);
      s.shutdown_send();
      co_await read_to_eof(s);
    };
    auto one_client = [&]() -> asio::awaitable<void> {
      auto c = co_await connect_to(l.bound_address());
      client_address = text_of(c.local_endpoint());
      const std::string request = "GET /svc/hello HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n";
      co_await asio::async_write(c, asio::buffer(request), asio::use_awaitable);
      const auto response = co_await read_to_eof(c);
      CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
      CHECK(response.substr(response.find("\r\n\r\n") + 4) == client_address);
    };
    spawn(ex, service(), done);
    spawn(ex, one_client(), done);
    co_await join(done, 2);
  });
}

TEST_CASE("a master restart is survived: a pending accept keeps waiting, the same listener registers again and serves") {
  std::optional<master_process> master(std::in_place);
  const std::string control = master->control_address();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    event_queue<std::string> registered(ex);
    auto opts = test_options(control);
    opts.on_registered = [&](std::uint64_t, const std::string& bound) { registered.push(bound); };
    auto l = co_await listen_ok(raw_tcp(), opts);
    const auto first_bound = co_await registered.next();
    CHECK(first_bound == l.bound_address());

    // A connection of the first session, open across the restart.
    auto old_client = co_await connect_to(first_bound);
    auto [aec, old_stream] = co_await l.async_accept(use_tuple);
    REQUIRE_FALSE(aec);

    event_queue<accept_result> pending(ex);
    accept_into(l, pending);

    master->kill();  // like a crash: no GoAway, the control connection just ends
    // The old session's stream ends with an error, not with a clean EOF.
    char byte;
    auto [rec, rn] = co_await old_stream.async_read_some(asio::buffer(&byte, 1), use_tuple);
    CHECK(rec);
    CHECK(rec != asio::error::eof);
    CHECK_FALSE(l.connected());
    CHECK(pending.empty());

    // A new master where the old one was; the listener finds it by itself.
    master.emplace(std::vector<std::string>{}, control);
    const auto second_bound = co_await registered.next();
    CHECK(l.connected());
    CHECK(l.bound_address() == second_bound);
    CHECK_FALSE(l.error());
    CHECK(pending.empty());  // still waiting: nothing has connected yet

    // A new client reaches the service through the new master, by the accept started before.
    auto c = co_await connect_to(second_bound);
    auto accepted = co_await pending.next();
    REQUIRE_FALSE(accepted.first);
    client::stream s = std::move(accepted.second);
    CHECK(s.remote_endpoint() == c.local_endpoint());
    ends done(ex);
    spawn(ex, echo_all(s), done);
    const std::string payload = "after the restart";
    co_await asio::async_write(c, asio::buffer(payload), asio::use_awaitable);
    c.shutdown(asio::socket_base::shutdown_send);
    CHECK(co_await read_to_eof(c) == payload);
    co_await join(done, 1);
  });
}

TEST_CASE("drain: the request in flight finishes on the draining listener while a new listener takes new ones") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto opts = test_options(master.control_address());
    auto old_instance = co_await listen_ok(raw_tcp(), opts);
    const std::string address = old_instance.bound_address();
    const auto port = endpoint_of(address).port();

    // A request in flight on the old instance: read, not answered yet.
    auto c1 = co_await connect_to(address);
    co_await asio::async_write(c1, asio::buffer(std::string("request 1\n")), asio::use_awaitable);
    auto [ec1, s1] = co_await old_instance.async_accept(use_tuple);
    REQUIRE_FALSE(ec1);
    std::string s1_buf, c1_buf;
    CHECK(co_await read_line(s1, s1_buf) == "request 1\n");

    // The new instance joins the same port's pool.
    auto new_instance = co_await listen_ok(raw_tcp(port), opts);
    CHECK(new_instance.bound_address() == address);

    event_queue<accept_result> old_accepts(ex);
    accept_into(old_instance, old_accepts);
    event_queue<std::error_code> drained(ex);
    const auto drain_started = std::chrono::steady_clock::now();
    old_instance.async_drain(10s, [&](std::error_code ec) { drained.push(ec); });

    // The GoAway was queued when the drain started, so it reaches the master before this part of
    // the answer: once the client has it, the master knows the old instance is going away.
    co_await asio::async_write(s1, asio::buffer(std::string("partial\n")), asio::use_awaitable);
    CHECK(co_await read_line(c1, c1_buf) == "partial\n");

    // A new connection now goes to the new instance.
    auto c2 = co_await connect_to(address);
    co_await asio::async_write(c2, asio::buffer(std::string("request 2\n")), asio::use_awaitable);
    auto [ec2, s2] = co_await new_instance.async_accept(use_tuple);
    REQUIRE_FALSE(ec2);
    std::string s2_buf, c2_buf;
    CHECK(co_await read_line(s2, s2_buf) == "request 2\n");
    co_await asio::async_write(s2, asio::buffer(std::string("answer 2\n")), asio::use_awaitable);
    CHECK(co_await read_line(c2, c2_buf) == "answer 2\n");
    CHECK(drained.empty());  // the old instance still has its request in flight
    CHECK(old_accepts.empty());

    // The old instance finishes its request; then its drain completes, early and cleanly.
    co_await asio::async_write(s1, asio::buffer(std::string("the rest\n")), asio::use_awaitable);
    s1.shutdown_send();
    CHECK(co_await read_to_eof(c1, c1_buf) == "the rest\n");
    c1.close();
    CHECK(co_await read_to_eof(s1) == "");
    s1.close();
    CHECK_FALSE(co_await drained.next());
    CHECK(std::chrono::steady_clock::now() - drain_started < 10s);
    auto [oec, ostream] = co_await old_accepts.next();
    CHECK(oec == asio::error::operation_aborted);
    CHECK_FALSE(ostream.is_open());
    CHECK(old_instance.error() == asio::error::operation_aborted);
    CHECK_FALSE(old_instance.connected());

    // And the new instance serves on.
    auto c3 = co_await connect_to(address);
    auto [ec3, s3] = co_await new_instance.async_accept(use_tuple);
    REQUIRE_FALSE(ec3);
    CHECK(s3.remote_endpoint() == c3.local_endpoint());
  });
}

TEST_CASE("drain: a stream still open at the deadline is cut and the drain completes with timed_out") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto [l, c, s] = co_await open_one_stream(master.control_address(), "never answered\n");

    event_queue<std::error_code> drained(ex);
    const auto started = std::chrono::steady_clock::now();
    l.async_drain(300ms, [&](std::error_code ec) { drained.push(ec); });
    CHECK(co_await drained.next() == std::errc::timed_out);
    CHECK(std::chrono::steady_clock::now() - started >= 300ms);
    CHECK_FALSE(l.connected());
    // The service's stream is cut, and so is the client's connection: its read ends.
    char one = 0;
    const std::error_code sec = std::get<0>(co_await s.async_read_some(asio::buffer(&one, 1), use_tuple));
    CHECK(sec);
    CHECK(co_await read_to_eof(c) == "");
  });
}

TEST_CASE("drain: a master that goes away while a stream is open ends the drain with that error, not success") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto [l, c, s] = co_await open_one_stream(master.control_address(), "in flight\n");

    event_queue<std::error_code> drained(ex);
    l.async_drain(20s, [&](std::error_code ec) { drained.push(ec); });
    master.kill();  // the stream is still open: its answer can no longer reach anyone
    const auto ec = co_await drained.next();
    CHECK(ec);
    CHECK(ec != std::errc::timed_out);  // long before the deadline
    CHECK_FALSE(l.connected());
  });
}

TEST_CASE("drain under load: a new instance takes over and no request fails") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto opts = test_options(master.control_address());
    socket_definition def = raw_tcp();
    def.http = http_route{"", "/load"};
    auto old_instance = co_await listen_ok(def, opts);
    const std::string address = old_instance.bound_address();
    def.port = endpoint_of(address).port();

    std::uint64_t served_old = 0, served_new = 0, ok = 0;
    std::vector<std::string> failures;
    bool stop = false;
    event_queue<int> progress(ex);  // one event per successful response
    asio::co_spawn(ex, http_service(old_instance, "old", served_old), asio::detached);

    // Half the clients keep their connection alive; the others open one per request, so the master
    // keeps opening new streams while the old instance goes away.
    auto client_loop = [&](bool keep_alive) -> asio::awaitable<void> {
      std::optional<asio::ip::tcp::socket> c;
      std::string buf;
      while (!stop) {
        if (!c) c.emplace(co_await connect_to(address));
        const std::string request = std::string("GET /load/x HTTP/1.1\r\nHost: t\r\n") +
                                    (keep_alive ? "" : "Connection: close\r\n") + "\r\n";
        auto [wec, wn] = co_await asio::async_write(*c, asio::buffer(request), use_tuple);
        auto [rec, n] = co_await asio::async_read_until(*c, asio::dynamic_buffer(buf), "\r\n\r\n", use_tuple);
        if (wec || rec) {
          failures.push_back("connection failed: " + (wec ? wec : rec).message());
          co_return;
        }
        const std::string head = buf.substr(0, n);
        buf.erase(0, n);
        const auto cl = head.find("Content-Length: ");
        const std::size_t length = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 16));
        if (buf.size() < length) {
          auto [bec, bn] = co_await asio::async_read(*c, asio::dynamic_buffer(buf), asio::transfer_exactly(length - buf.size()), use_tuple);
          if (bec) {
            failures.push_back("body failed: " + bec.message());
            co_return;
          }
        }
        buf.erase(0, length);
        if (head.rfind("HTTP/1.1 200 ", 0) != 0) {
          failures.push_back(head.substr(0, head.find("\r\n")));
          co_return;
        }
        ++ok;
        progress.push(0);
        if (!keep_alive) {
          c.reset();
          buf.clear();
        }
      }
    };
    auto wait_for_responses = [&](int n) -> asio::awaitable<void> {
      for (int i = 0; i < n; ++i) co_await progress.next();
    };

    ends done(ex);
    constexpr int clients = 8;
    for (int i = 0; i < clients; ++i) spawn(ex, client_loop(i % 2 == 0), done);
    co_await wait_for_responses(200);

    auto new_instance = co_await listen_ok(def, opts);
    asio::co_spawn(ex, http_service(new_instance, "new", served_new), asio::detached);
    co_await wait_for_responses(200);

    event_queue<std::error_code> drained(ex);
    old_instance.async_drain(10s, [&](std::error_code ec) { drained.push(ec); });
    CHECK_FALSE(co_await drained.next());
    const auto old_final = served_old;
    co_await wait_for_responses(400);
    stop = true;
    co_await join(done, clients);
    INFO("old served ", served_old, ", new served ", served_new, ", ok ", ok);
    CHECK(failures.empty());
    for (const auto& f : failures) MESSAGE("failed request: ", f);
    CHECK(served_old == old_final);  // nothing reached the old instance after its drain
    CHECK(served_old > 0);
    CHECK(served_new > 0);
  }, 60s);
}

TEST_CASE("each rejection surfaces with its code and the master's message") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    const auto opts = test_options(master.control_address());
    auto listen = [&](socket_definition def, client::options o) -> asio::awaitable<client::listen_error> {
      auto [error, l] = co_await client::async_listen(ex, std::move(def), std::move(o), asio::use_awaitable);
      CHECK_FALSE(l.connected());
      co_return error;
    };

    SUBCASE("conflict: HTTP on a port that serves raw TCP") {
      auto [aerr, raw] = co_await client::async_listen(ex, raw_tcp(), opts, asio::use_awaitable);
      REQUIRE_FALSE(aerr.code);
      socket_definition def = raw_tcp(endpoint_of(raw.bound_address()).port());
      def.http = http_route{"", "/x"};
      const auto e = co_await listen(def, opts);
      REQUIRE(e.rejection);
      CHECK(*e.rejection == rejection_code::conflict);
      CHECK(e.code == std::errc::address_in_use);
      CHECK(e.message.find("already serves raw TCP") != std::string::npos);
    }
    SUBCASE("bad request: a path prefix without a leading slash") {
      socket_definition def = raw_tcp();
      def.http = http_route{"", "no-slash"};
      const auto e = co_await listen(def, opts);
      REQUIRE(e.rejection);
      CHECK(*e.rejection == rejection_code::bad_request);
      CHECK(e.code == std::errc::invalid_argument);
      CHECK(e.message.find("path prefix") != std::string::npos);
    }
    SUBCASE("bad certificate: PEM that is not a certificate") {
      socket_definition def = raw_tcp();
      def.tls = tls_certificate{"not a certificate", "not a key"};
      const auto e = co_await listen(def, opts);
      REQUIRE(e.rejection);
      CHECK(*e.rejection == rejection_code::bad_certificate);
      CHECK(e.code == std::errc::invalid_argument);
      CHECK_FALSE(e.message.empty());
    }
    SUBCASE("bind failed: the port is taken by another program (not permanent, but listen() reports it)") {
      asio::ip::tcp::acceptor taken(io, {asio::ip::make_address("127.0.0.1"), 0});
      const auto e = co_await listen(raw_tcp(taken.local_endpoint().port()), opts);
      REQUIRE(e.rejection);
      CHECK(*e.rejection == rejection_code::bind_failed);
      CHECK(e.code == std::errc::address_not_available);
      CHECK(e.message.find("could not listen on 127.0.0.1:" + std::to_string(taken.local_endpoint().port())) !=
            std::string::npos);
    }
    SUBCASE("no master: connection refused, no rejection code") {
      auto o = opts;
      const test::reserved_port nobody(io);
      o.master_address = "127.0.0.1:" + std::to_string(nobody.port());
      const auto e = co_await listen(raw_tcp(), o);
      CHECK_FALSE(e.rejection);
      CHECK(e.code == asio::error::connection_refused);
      CHECK(e.message.find("cannot connect to the master at " + o.master_address) != std::string::npos);
    }
    SUBCASE("a master address that is not host:port is refused before connecting") {
      auto o = opts;
      o.master_address = "127.0.0.1:99999";
      const auto e = co_await listen(raw_tcp(), o);
      CHECK(e.code == std::errc::invalid_argument);
      CHECK(e.message.find("127.0.0.1:99999") != std::string::npos);
    }
    SUBCASE("invalid options are refused before connecting") {
      auto o = opts;
      o.reconnect_max = 1ms;
      o.reconnect_min = 10ms;
      const auto e = co_await listen(raw_tcp(), o);
      CHECK(e.code == socketmaster::errc::invalid_config);
      CHECK(e.message.find("reconnect_max") != std::string::npos);
    }
    SUBCASE("a Unix send buffer over 1 GiB is refused before connecting") {
      auto o = opts;
      o.unix_send_buffer = (std::size_t{1} << 30) + 1;
      const auto e = co_await listen(raw_tcp(), o);
      CHECK(e.code == socketmaster::errc::invalid_config);
      CHECK(e.message.find("unix_send_buffer must be at most 1 GiB") != std::string::npos);
    }
  });
}

TEST_CASE("unauthorized: a master with --token-file refuses a missing or wrong token and takes the right one") {
  token_file token("s3cret-token");
  master_process master({"--token-file", token.path.string()});
  asio::io_context io(1);
  auto opts = test_options(master.control_address());
  client::listen_error e;

  SUBCASE("missing") {
    auto l = client::listen(io, raw_tcp(), opts, e);
    REQUIRE(e.rejection);
    CHECK(*e.rejection == rejection_code::unauthorized);
    CHECK(e.code == std::errc::permission_denied);
    CHECK(e.message == "this master requires a token (SOCKETMASTER_TOKEN)");
  }
  SUBCASE("wrong, and the throwing form carries the master's message") {
    opts.token = "guess";
    try {
      auto l = client::listen(io, raw_tcp(), opts);
      FAIL("listen() should have thrown");
    } catch (const std::system_error& x) {
      CHECK(x.code() == std::errc::permission_denied);
      CHECK(std::string(x.what()).find("the token is wrong") != std::string::npos);
    }
  }
  SUBCASE("right, from options") {
    opts.token = "s3cret-token";
    auto l = client::listen(io, raw_tcp(), opts, e);
    CHECK_FALSE(e.code);
    CHECK(l.connected());
  }
  SUBCASE("right, from SOCKETMASTER_TOKEN") {
    ::setenv("SOCKETMASTER_TOKEN", "s3cret-token", 1);
    auto l = client::listen(io, raw_tcp(), opts, e);
    ::unsetenv("SOCKETMASTER_TOKEN");
    CHECK_FALSE(e.code);
    CHECK(l.connected());
  }
}

TEST_CASE("an on_registered callback that throws fails listen() with the exception's sentence") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto opts = test_options(master.control_address());
    opts.on_registered = [](std::uint64_t, const std::string&) { throw std::runtime_error("the callback broke"); };
    auto result = co_await client::async_listen(io.get_executor(), raw_tcp(), opts, asio::use_awaitable);
    const client::listen_error& error = std::get<0>(result);
    CHECK(error.code == std::errc::operation_canceled);
    CHECK(error.message == "listen failed: the callback broke");  // it was empty
  });
}

TEST_CASE("with no master address in the options, SOCKETMASTER_ADDR names the master") {
  master_process master;
  asio::io_context io(1);
  auto opts = test_options(master.control_address());
  opts.master_address.clear();
  client::listen_error e;
  ::setenv("SOCKETMASTER_ADDR", master.control_address().c_str(), 1);
  auto l = client::listen(io, raw_tcp(), opts, e);
  ::unsetenv("SOCKETMASTER_ADDR");
  CHECK_MESSAGE(!e.code, e.message);
  CHECK(l.connected());
  CHECK(l.registration_id() > 0);
}

TEST_CASE("a master socket path too long for a Unix socket address fails listen() with a reason, not operation_canceled") {
  asio::io_context io(1);
  // sockaddr_un holds 107 bytes of path.
  const std::string path = (std::filesystem::temp_directory_path() / std::string(120, 'm')).string();
  client::listen_error e;
  auto l = client::listen(io, raw_tcp(), test_options(path), e);
  CHECK_FALSE(l.connected());
  CHECK(e.code == std::errc::filename_too_long);
  CHECK_MESSAGE(e.message.find(path) != std::string::npos, "message: '" << e.message << "'");
}

TEST_CASE("a master that drops the connection while the handshake is being sent: listen() gives that reason, not timed_out") {
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    asio::ip::tcp::acceptor control(io, {asio::ip::make_address("127.0.0.1"), 0});
    const auto opts = test_options(text_of(control.local_endpoint()));
    socket_definition def = raw_tcp();
    // Far more than loopback's socket buffers hold: the write is still under way when the master goes.
    def.tls = tls_certificate{std::string(std::size_t{32} << 20, 'c'), "key"};
    event_queue<client::listen_error> result(ex);
    client::async_listen(ex, def, opts, [&](client::listen_error e, client::listener) { result.push(std::move(e)); });
    auto sock = co_await control.async_accept(asio::use_awaitable);
    // The handshake has begun to arrive (so the connect is done and the write under way): reset.
    std::array<char, 8> first;
    co_await asio::async_read(sock, asio::buffer(first), asio::use_awaitable);
    sock.set_option(asio::socket_base::linger(true, 0));
    sock.close();  // a reset, as from a master that crashed or stopped reading
    const auto e = co_await result.next();
    CHECK(e.code != std::errc::timed_out);
    CHECK_MESSAGE((e.code == asio::error::connection_reset || e.code == asio::error::broken_pipe), e.code.message());
    CHECK_MESSAGE(e.message.find(e.code.message()) != std::string::npos, "message: '" << e.message << "'");
  });
}

TEST_CASE("a permanent rejection during a reconnect ends the listener with that error instead of retrying") {
  std::optional<master_process> master(std::in_place);
  const std::string control = master->control_address();
  token_file token("only-the-new-master-wants-this");
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto l = co_await listen_ok(raw_tcp(), test_options(control));
    event_queue<accept_result> pending(ex);
    accept_into(l, pending);

    master->kill();
    // The replacement requires a token this service does not have: retrying cannot help.
    master.emplace(std::vector<std::string>{"--token-file", token.path.string()}, control);
    auto [ec, s] = co_await pending.next();
    CHECK(ec == std::errc::permission_denied);
    CHECK_FALSE(s.is_open());
    CHECK(l.error() == std::errc::permission_denied);
    const auto why = l.failure();
    REQUIRE(why.rejection);
    CHECK(*why.rejection == rejection_code::unauthorized);
    CHECK(why.message == "this master requires a token (SOCKETMASTER_TOKEN)");
    CHECK_FALSE(l.connected());
    // Given up for good: a later accept fails at once with the same error.
    auto [ec2, s2] = co_await l.async_accept(use_tuple);
    CHECK(ec2 == std::errc::permission_denied);
  });
}

TEST_CASE("a cancelled accept completes with operation_aborted and takes no connection with it") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto l = co_await listen_ok(raw_tcp(), test_options(master.control_address()));
    event_queue<accept_result> cancelled(ex);
    asio::cancellation_signal signal;
    l.async_accept(asio::bind_cancellation_slot(
        signal.slot(), [&](std::error_code ec, client::stream s) { cancelled.push({ec, std::move(s)}); }));
    signal.emit(asio::cancellation_type::terminal);
    auto [cec, cs] = co_await cancelled.next();
    CHECK(cec == asio::error::operation_aborted);
    CHECK_FALSE(cs.is_open());

    // The next connection goes to the next accept.
    auto c = co_await connect_to(l.bound_address());
    auto [ec, s] = co_await l.async_accept(use_tuple);
    REQUIRE_FALSE(ec);
    CHECK(s.remote_endpoint() == c.local_endpoint());
  });
}

TEST_CASE("close(): a pending accept completes with operation_aborted, open streams fail, later accepts fail at once") {
  master_process master;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    auto l = co_await listen_ok(raw_tcp(), test_options(master.control_address()));
    auto c = co_await connect_to(l.bound_address());
    auto [aec, open_stream] = co_await l.async_accept(use_tuple);
    REQUIRE_FALSE(aec);
    event_queue<accept_result> pending(ex);
    accept_into(l, pending);
    l.close();
    auto [ec, s] = co_await pending.next();
    CHECK(ec == asio::error::operation_aborted);
    char byte;
    auto [rec, rn] = co_await open_stream.async_read_some(asio::buffer(&byte, 1), use_tuple);
    CHECK(rec);
    auto [ec2, s2] = co_await l.async_accept(use_tuple);
    CHECK(ec2 == asio::error::operation_aborted);
    CHECK(l.error() == asio::error::operation_aborted);
    // The client's connection is closed by the master once the service is gone.
    CHECK(co_await read_to_eof(c) == "");
  });
}

namespace {

// A master stand-in in this process, for what the real master never does on purpose: it answers the
// SDK's handshake with `accepted` and then drives the yamux session (master role) by hand.
asio::awaitable<yamux::session> hand_driven_master(asio::ip::tcp::acceptor& control) {
  auto sock = co_await control.async_accept(asio::use_awaitable);
  std::vector<std::byte> request(8);
  co_await asio::async_read(sock, asio::buffer(request), asio::use_awaitable);
  for (;;) {
    auto size = message_size(request, max_handshake_bytes);
    REQUIRE(size.what != message_size_result::kind::error);
    const std::size_t want = size.what == message_size_result::kind::complete ? size.total_bytes : size.need_at_least;
    const std::size_t have = request.size();
    if (want > have) {
      request.resize(want);
      co_await asio::async_read(sock, asio::buffer(request.data() + have, want - have), asio::use_awaitable);
    }
    if (size.what == message_size_result::kind::complete) break;
  }
  const auto reply = encode(handshake_response{handshake_accepted{7, text_of(control.local_endpoint())}});
  co_await asio::async_write(sock, asio::buffer(reply), asio::use_awaitable);
  co_return yamux::session(std::move(sock), yamux::role::client);
}

// The next accepted stream: it must come from `client` and start with `payload`.
asio::awaitable<client::stream> accepted_from(event_queue<accept_result>& accepted, asio::ip::tcp::endpoint client,
                                              std::string payload) {
  auto [ec, s] = co_await accepted.next();
  REQUIRE_FALSE(ec);
  CHECK(s.remote_endpoint() == client);
  std::string got(payload.size(), '\0');
  auto [rec, n] = co_await asio::async_read(s, asio::buffer(got), use_tuple);
  CHECK_FALSE(rec);
  CHECK(got == payload);
  co_return std::move(s);
}

}  // namespace

TEST_CASE("a PROXY header split across frames is read whole; a bad one is dropped at once, one that never completes after proxy_header_timeout") {
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto ex = io.get_executor();
    asio::ip::tcp::acceptor control(io, {asio::ip::make_address("127.0.0.1"), 0});
    auto opts = test_options(text_of(control.local_endpoint()));
    opts.proxy_header_timeout = 300ms;
    event_queue<client::listener> listening(ex);
    asio::co_spawn(ex, listen_ok(raw_tcp(), opts), [&](std::exception_ptr e, client::listener l) {
      REQUIRE_FALSE(e);
      listening.push(std::move(l));
    });
    auto master = co_await hand_driven_master(control);
    auto l = co_await listening.next();
    event_queue<accept_result> accepted(ex);
    accept_into(l, accepted);

    const asio::ip::tcp::endpoint client(asio::ip::make_address("192.0.2.7"), 4242);
    const asio::ip::tcp::endpoint public_end(asio::ip::make_address("127.0.0.1"), 8080);
    const auto header = encode_proxy_v2(client, public_end);
    REQUIRE(header.size() > 20);
    const std::string payload = "after the header";

    // Split: the fixed part's first 10 bytes, then (once a ping has been answered, so the SDK has
    // taken the stream and what came with it, and waits for more) the rest and a payload.
    auto split = master.open();
    co_await asio::async_write(split, asio::buffer(header.data(), 10), asio::use_awaitable);
    co_await master.async_ping(asio::use_awaitable);
    CHECK(accepted.empty());
    co_await asio::async_write(split, std::array{asio::buffer(header.data() + 10, header.size() - 10), asio::buffer(payload)},
                               asio::use_awaitable);
    CHECK((co_await accepted_from(accepted, client, payload)).local_endpoint() == public_end);

    // Not a PROXY header at all: reset at once, and the pending accept waits on.
    accept_into(l, accepted);
    auto bad = master.open();
    const std::string garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    co_await asio::async_write(bad, asio::buffer(garbage), asio::use_awaitable);
    char byte;
    auto [bec, bn] = co_await bad.async_read_some(asio::buffer(&byte, 1), use_tuple);
    CHECK(bec == errc::stream_reset);
    CHECK(accepted.empty());

    // Incomplete for good: the SDK resets the stream after proxy_header_timeout; the next stream,
    // whole in one frame, is what the pending accept gets.
    auto stuck = master.open();
    co_await asio::async_write(stuck, asio::buffer(header.data(), 10), asio::use_awaitable);
    auto [sec, sn] = co_await stuck.async_read_some(asio::buffer(&byte, 1), use_tuple);
    CHECK(sec == errc::stream_reset);
    CHECK(accepted.empty());
    auto whole = master.open();
    co_await asio::async_write(whole, std::array{asio::buffer(header), asio::buffer(payload)}, asio::use_awaitable);
    co_await accepted_from(accepted, client, payload);

    // Longer than the SDK's buffer on the stack: the address pair and a 300-byte TLV, in one frame.
    {
      auto long_header = header;
      const auto length = static_cast<unsigned>(header.size() - proxy_v2_fixed_bytes + 3 + 300);
      long_header[14] = std::byte(length >> 8);
      long_header[15] = std::byte(length & 0xff);
      for (const unsigned b : {0xe0u, 300u >> 8, 300u & 0xff}) long_header.push_back(std::byte(b));
      long_header.insert(long_header.end(), 300, std::byte{'t'});
      accept_into(l, accepted);
      auto tlv = master.open();
      const std::array<asio::const_buffer, 2> parts{asio::buffer(long_header), asio::buffer(payload)};
      co_await asio::async_write(tlv, parts, asio::use_awaitable);
      co_await accepted_from(accepted, client, payload);
    }
  });
}

TEST_CASE("a loopback master address reaches the master's same-host socket; the option, the environment "
          "and the master's --no-same-host-socket each keep it on TCP") {
  struct variant {
    const char* name;
    std::vector<std::string> master_args;
    bool option;
    bool env_off;
    bool expect_same_host;
  };
  const variant variants[] = {
      {"default", {}, true, false, true},
      {"options::same_host_socket = false", {}, false, false, false},
      {"SOCKETMASTER_SAME_HOST_SOCKET=0", {}, true, true, false},
      {"master --no-same-host-socket", {"--no-same-host-socket"}, true, false, false},
  };
  for (const auto& v : variants) {
    CAPTURE(v.name);
    master_process master(v.master_args);
    struct env_off {  // unset again however the case ends
      explicit env_off(bool on) : on(on) {
        if (on) ::setenv("SOCKETMASTER_SAME_HOST_SOCKET", "0", 1);
      }
      ~env_off() {
        if (on) ::unsetenv("SOCKETMASTER_SAME_HOST_SOCKET");
      }
      bool on;
    } env(v.env_off);
    run([&](asio::io_context& io) -> asio::awaitable<void> {
      auto ex = io.get_executor();
      auto opts = test_options(master.control_address());
      opts.same_host_socket = v.option;
      auto l = co_await listen_ok(raw_tcp(), opts);
      CHECK(l.via_same_host_socket() == v.expect_same_host);
      // Either way the registration serves: one connection echoed through it.
      ends done(ex);
      auto service = [&]() -> asio::awaitable<void> {
        auto [ec, s] = co_await l.async_accept(use_tuple);
        REQUIRE_FALSE(ec);
        co_await echo(s);
      };
      auto one_client = [&]() -> asio::awaitable<void> {
        auto c = co_await connect_to(l.bound_address());
        const std::string payload(300 * 1024, 'x');
        co_await asio::async_write(c, asio::buffer(payload), asio::use_awaitable);
        c.shutdown(asio::socket_base::shutdown_send);
        CHECK(co_await read_to_eof(c) == payload);
      };
      spawn(ex, service(), done);
      spawn(ex, one_client(), done);
      co_await join(done, 2);
    });
  }
}
