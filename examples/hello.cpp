// hello: a small HTTP/1.1 keep-alive service behind socketmaster, the example of the README.
//
//   hello --port 8000 --path /a --text "From A"       registers through the SDK (empty = any)
//   hello --port 8443 --domain a.test --tls-cert a.pem --tls-key a.key    the master terminates TLS
//   hello --listen 127.0.0.1:8080 --text hi           serves the same handler on a plain TCP port
//
// GET /bytes/N answers N bytes; /ws upgrades to a WebSocket echo; any other path answers the text,
// the path and the client's address. Prints "listening ADDR" on stdout at each registration.
// SIGTERM drains: the master gets no new streams, kept-alive connections waiting for their next
// request are closed, requests in flight finish, then the process exits.
#include <CLI/CLI.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/read.hpp>
#include <asio/signal_set.hpp>
#include <asio/write.hpp>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <charconv>
#include <iostream>
#include <optional>
#include <tuple>
#include <vector>

#include "protocol/cli_checks.hpp"
#include "protocol/drain_on_signals.hpp"
#include "protocol/ignore_sigpipe.hpp"
#include "protocol/relay.hpp"
#include "socketmaster/client.hpp"

namespace {

using namespace socketmaster;

constexpr std::size_t max_head = 64 * 1024;

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

// The parts of a request head this service looks at, as views into the head: parsing allocates
// nothing, so the service's own cost per request stays small next to the proxy's in benchmarks.
struct request {
  std::string_view method, path, version;
  std::string_view content_length, connection, upgrade, websocket_key;  // empty when absent
};

std::optional<request> parse_head(std::string_view head) {
  request r;
  auto line_end = head.find("\r\n");
  const auto first = head.substr(0, line_end);
  const auto sp1 = first.find(' '), sp2 = first.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return std::nullopt;
  r.method = first.substr(0, sp1);
  r.path = first.substr(sp1 + 1, sp2 - sp1 - 1);
  r.version = first.substr(sp2 + 1);
  std::size_t pos = line_end + 2;
  while (pos < head.size()) {
    const auto end = head.find("\r\n", pos);
    const auto line = head.substr(pos, end - pos);
    pos = end + 2;
    if (line.empty()) break;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const auto name = line.substr(0, colon);
    auto value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (iequals(name, "content-length")) r.content_length = value;
    else if (iequals(name, "connection")) r.connection = value;
    else if (iequals(name, "upgrade")) r.upgrade = value;
    else if (iequals(name, "sec-websocket-key")) r.websocket_key = value;
  }
  return r;
}

std::string websocket_accept(std::string_view key) {
  const std::string magic = std::string(key) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(magic.data()), magic.size(), digest);
  unsigned char out[64];
  const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(out), static_cast<std::size_t>(n));
}

// Echoes WebSocket messages (text, binary, ping→pong) until a close frame, which is answered.
template <class Stream>
asio::awaitable<void> websocket_echo(Stream& s) {
  for (;;) {
    std::uint8_t h[2];
    if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(h), use_tuple); ec) co_return;
    const std::uint8_t opcode = h[0] & 0x0f;
    const bool masked = h[1] & 0x80;
    std::uint64_t len = h[1] & 0x7f;
    if (len >= 126) {
      std::uint8_t ext[8];
      const std::size_t k = len == 126 ? 2 : 8;
      if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(ext, k), use_tuple); ec) co_return;
      len = 0;
      for (std::size_t i = 0; i < k; ++i) len = (len << 8) | ext[i];
    }
    if (len > (16u << 20)) co_return;  // an example's limit
    std::uint8_t mask[4] = {};
    if (masked)
      if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(mask), use_tuple); ec) co_return;
    std::vector<std::uint8_t> payload(len);
    if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(payload), use_tuple); ec) co_return;
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] ^= mask[i % 4];
    const std::uint8_t reply_opcode = opcode == 0x9 ? 0xA : opcode;  // ping → pong
    if (opcode == 0xA) continue;
    std::vector<std::uint8_t> frame{static_cast<std::uint8_t>(0x80 | reply_opcode)};
    if (len < 126) {
      frame.push_back(static_cast<std::uint8_t>(len));
    } else if (len <= 0xffff) {
      frame.insert(frame.end(), {126, static_cast<std::uint8_t>(len >> 8), static_cast<std::uint8_t>(len)});
    } else {
      frame.push_back(127);
      for (int i = 7; i >= 0; --i) frame.push_back(static_cast<std::uint8_t>(len >> (8 * i)));
    }
    frame.insert(frame.end(), payload.begin(), payload.end());
    if (auto [ec, n] = co_await asio::async_write(s, asio::buffer(frame), use_tuple); ec) co_return;
    if (opcode == 0x8) co_return;
  }
}

// Connections waiting for their next request, so a drain can close them at once instead of
// waiting for the client (or the master's idle limit) to do it. Single-threaded, like the service.
struct idle_waiter {
  asio::cancellation_signal signal;
  idle_waiter* prev = nullptr;
  idle_waiter* next = nullptr;
  bool linked = false;
};

// An intrusive list: a connection's waiter lives in its coroutine frame, so waiting costs no
// allocation per request.
struct idle_connections {
  bool draining = false;
  idle_waiter* head = nullptr;

  void add(idle_waiter& w) {
    w.prev = nullptr;
    w.next = head;
    if (head) head->prev = &w;
    head = &w;
    w.linked = true;
  }
  void remove(idle_waiter& w) {
    if (!w.linked) return;
    (w.prev ? w.prev->next : head) = w.next;
    if (w.next) w.next->prev = w.prev;
    w.linked = false;
  }
  void drain() {
    draining = true;
    while (head) {
      auto& w = *head;
      remove(w);
      w.signal.emit(asio::cancellation_type::terminal);  // the connection resumes later, posted
    }
  }
};

// `prefix` by value: the plain-port mode passes a temporary, which a reference would outlive.
template <class Stream>
asio::awaitable<void> serve_connection(Stream s, std::string client, const std::string& text, std::string prefix,
                                       idle_connections& idle) {
  std::string buf;
  for (;;) {
    std::size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > max_head) co_return;
      char chunk[8192];
      if (buf.empty()) {
        // Between requests: the one place a drain may end the connection without losing anything.
        if (idle.draining) co_return;
        idle_waiter waiter;
        idle.add(waiter);
        auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), asio::bind_cancellation_slot(waiter.signal.slot(), use_tuple));
        idle.remove(waiter);
        buf.append(chunk, n);
        if (ec && n == 0) co_return;
        continue;
      }
      auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
      buf.append(chunk, n);
      if (ec && n == 0) co_return;
    }
    const auto req = parse_head(std::string_view(buf).substr(0, head_end + 4));
    if (!req) co_return;
    // req views buf: take what the answer needs before buf changes.
    std::size_t body = 0;  // Content-Length only: this example's clients send no chunked bodies
    if (!req->content_length.empty() &&
        std::from_chars(req->content_length.data(), req->content_length.data() + req->content_length.size(), body).ec !=
            std::errc{})
      co_return;
    const bool close = req->version == "HTTP/1.0" || iequals(req->connection, "close");
    const bool head_only = req->method == "HEAD";
    // The master forwards the full path; dispatch on what follows our registered prefix.
    std::string_view local = req->path;  // then without its leading slash
    if (!prefix.empty() && local.starts_with(prefix)) local.remove_prefix(prefix.size());
    if (local.starts_with('/')) local.remove_prefix(1);
    if (local == "ws" && iequals(req->upgrade, "websocket")) {
      const std::string response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   "Sec-WebSocket-Accept: " +
                                   websocket_accept(req->websocket_key) + "\r\n\r\n";
      buf.erase(0, head_end + 4);
      if (auto [ec, n] = co_await asio::async_write(s, asio::buffer(response), use_tuple); ec) co_return;
      co_await websocket_echo(s);
      co_return;
    }
    // One string for the whole answer: head, then (unless HEAD) the payload.
    std::size_t bulk = 0;
    std::string out;
    out.reserve(160 + text.size() + req->path.size() + client.size());
    out.append("HTTP/1.1 200 OK\r\n");
    if (local.starts_with("bytes/")) {
      const auto n = local.substr(6);
      if (std::from_chars(n.data(), n.data() + n.size(), bulk).ec != std::errc{}) co_return;
      out.append("Content-Type: application/octet-stream\r\nContent-Length: ").append(std::to_string(bulk));
    } else {
      const std::size_t payload = text.size() + req->path.size() + client.size() + 17;  // "\npath: " "\nclient: " "\n"
      out.append("Content-Type: text/plain\r\nContent-Length: ").append(std::to_string(payload));
    }
    out.append(close ? "\r\nConnection: close\r\n\r\n" : "\r\n\r\n");
    if (bulk == 0 && !head_only) out.append(text).append("\npath: ").append(req->path).append("\nclient: ").append(client).append("\n");
    if (head_only) bulk = 0;
    buf.erase(0, head_end + 4);
    while (buf.size() < body) {
      char chunk[8192];
      auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
      buf.append(chunk, n);
      if (ec && n == 0) co_return;
    }
    buf.erase(0, body);
    // An answer that ends the connection goes out with its FIN (write_last: on a yamux stream, in
    // the same system call).
    std::error_code wec;
    if (close && bulk == 0)
      std::tie(wec, std::ignore) = co_await write_last(s, asio::buffer(out));
    else
      std::tie(wec, std::ignore) = co_await asio::async_write(s, asio::buffer(out), use_tuple);
    if (wec) co_return;
    // asio::async_write's default condition hands the stream at most 64 KiB per write_some;
    // whole_writes (protocol/relay.hpp) hands it the megabyte: a yamux stream sends up to 16 frames
    // in one system call, a socket takes what fits, and there is one completion instead of sixteen.
    static const std::vector<char> block(1 << 20, 'x');
    while (bulk > 0) {
      const std::size_t k = std::min(bulk, block.size());
      const auto chunk = asio::buffer(block.data(), k);
      if (close && k == bulk)
        std::tie(wec, std::ignore) = co_await write_last(s, chunk);
      else
        std::tie(wec, std::ignore) = co_await asio::async_write(s, chunk, whole_writes, use_tuple);
      if (wec) co_return;
      bulk -= k;
    }
    if (close) co_return;
  }
}

// "a.b.c.d:port" or "[v6]:port". IPv4 by hand: address_v4::to_string goes through inet_ntop and
// sprintf, a thousand instructions for every connection (every request, with Connection: close).
std::string endpoint_text(const asio::ip::tcp::endpoint& ep) {
  auto a = ep.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  if (a.is_v6()) return "[" + a.to_string() + "]:" + std::to_string(ep.port());
  std::string text;  // at most "255.255.255.255:65535": no allocation
  for (const auto octet : a.to_v4().to_bytes()) text.append(std::to_string(octet)).push_back('.');
  text.back() = ':';
  return text.append(std::to_string(ep.port()));
}

}  // namespace

int main(int argc, char** argv) {
  socketmaster::ignore_sigpipe();
  CLI::App app{"hello: a keep-alive HTTP service, registered with socketmaster or on a plain port"};
  std::string master, address, domain, path, text = "Hello from socketmaster", listen_on, cert, key;
  std::uint16_t port = 0;
  double drain_seconds = 10;
  app.set_version_flag("--version", std::string("hello (socketmaster ") + SOCKETMASTER_VERSION + ")");
  app.footer("Environment: SOCKETMASTER_ADDR (the master's control address), SOCKETMASTER_TOKEN (the token a master "
      "started with --token-file expects)");
  // The options of a registration, which --listen (no master) cannot honour: refused with it.
  const std::vector<CLI::Option*> registration{
      app.add_option("--master", master, "Master control address (default $SOCKETMASTER_ADDR or 127.0.0.1:9999)")
          ->check(address_or_path_option),
      app.add_option("--address", address, "Interface for the public listener (empty = all)"),
      app.add_option("--port", port, "Public port to register (0 = the master picks)"),
      app.add_option("--domain", domain, "Domain suffix (empty = any)"),
      app.add_option("--path", path, "Path prefix (empty = any)")};
  app.add_option("--text", text, "What to answer")->capture_default_str();
  auto* tls_key = app.add_option("--tls-key", key, "PEM private key for --tls-cert");
  auto* tls_cert = app.add_option("--tls-cert", cert, "PEM certificate chain: the master terminates TLS with it")->needs(tls_key);
  tls_key->needs(tls_cert);
  auto* listen_option = app.add_option("--listen", listen_on, "Serve on this host:port directly instead of registering")
                                ->check(address_option);
  for (auto* o : registration) listen_option->excludes(o);
  listen_option->excludes(tls_cert)->excludes(tls_key);
  app.add_option("--drain-timeout", drain_seconds, "Seconds in-flight requests get after SIGTERM")
      ->capture_default_str()
      ->check(seconds_option);
  CLI11_PARSE(app, argc, argv);

  socketmaster::logger log(std::cerr);
  // Single-threaded, as everything here: Asio can skip its locks.
  asio::io_context io(ASIO_CONCURRENCY_HINT_UNSAFE);
  asio::signal_set signals(io, SIGTERM, SIGINT);
  idle_connections idle;

  if (!listen_on.empty()) {
    asio::ip::tcp::acceptor acceptor(io, *socketmaster::parse_host_port(listen_on));  // checked by address_option
    std::cout << "listening " << endpoint_text(acceptor.local_endpoint()) << std::endl;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (;;) {
            auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
            if (ec) co_return;
            std::error_code ignored;
            sock.set_option(asio::ip::tcp::no_delay(true), ignored);
            const auto client = endpoint_text(sock.remote_endpoint(ignored));
            asio::co_spawn(io, serve_connection(std::move(sock), client, text, std::string{}, idle), asio::detached);
          }
        },
        asio::detached);
    signals.async_wait([&](std::error_code, int) { io.stop(); });
    io.run();
    return 0;
  }

  socket_definition def;
  def.address = address;
  def.port = port;
  def.http = http_route{domain, path};
  try {
    if (!cert.empty()) def.tls = client::load_certificate(cert, key);
  } catch (const std::exception& e) {
    std::cerr << "hello: " << e.what() << "\n";
    return 2;
  }
  client::options opts;
  opts.master_address = master;
  opts.log = &log;
  opts.on_registered = [](std::uint64_t, const std::string& bound) { std::cout << "listening " << bound << std::endl; };
  client::listen_error error;
  auto l = client::listen(io, def, opts, error);
  if (error.code) {
    std::cerr << "hello: registration failed: " << error.message << "\n";
    return 1;
  }
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, s] = co_await l.async_accept(use_tuple);
          if (ec) {
            if (ec != asio::error::operation_aborted) {
              std::cerr << "hello: " << l.failure().message << "\n";
              io.stop();
            }
            co_return;
          }
          const auto client = endpoint_text(s.remote_endpoint());
          asio::co_spawn(io, serve_connection(std::move(s), client, text, path, idle), asio::detached);
        }
      },
      asio::detached);
  drain_on_signals(signals, io, log, [&] {
    // GoAway first: it reaches the master before the FINs of the idle connections we close next.
    l.async_drain(std::chrono::milliseconds(static_cast<std::int64_t>(drain_seconds * 1000)),
                  [&](std::error_code) { io.stop(); });
    idle.drain();
  });
  io.run();
  return l.error() && l.error() != asio::error::operation_aborted ? 1 : 0;
}
