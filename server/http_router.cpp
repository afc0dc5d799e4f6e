// HTTP/1.1 routing of one public connection. Each request is routed on its own (Host, then path);
// the connection keeps one stream to a backend and reuses it while consecutive requests go to the
// same member; pipelined and already-buffered bytes stay in our buffer until their turn. Bodies and
// responses are forwarded verbatim (responses are parsed only to find where they end). An Upgrade
// answered with 101 turns the connection into a two-way tunnel. A kept-alive stream can turn out to
// have been closed by the service meanwhile (an idle timeout), and a member can send GoAway just as
// a stream to it opens: a request that got no byte of answer that way is sent once more on a new
// stream when it is idempotent and bodiless (can_resend), instead of becoming a 502.
//
// Status codes we produce: 400 (malformed or smuggling shapes), 404 (no route), 408 (head not
// complete in time), 431 (head too large), 502 (backend failed before answering), 503 (queue full,
// or grace over with no service back).
#include <algorithm>
#include <array>
#include <cstring>
#include <iterator>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>

#include <asio/ssl/stream.hpp>
#include <sys/socket.h>

#include "http_codec.hpp"
#include "protocol/payload_sink.hpp"
#include "protocol/proxy_header.hpp"
#include "public_connection.hpp"
#include "tls.hpp"
#include "protocol/relay.hpp"

namespace socketmaster::server {

namespace {

using namespace asio::experimental::awaitable_operators;

// One non-blocking receive or send (MSG_DONTWAIT) with the results of the socket's read_some and
// write_some (eof for an orderly end, would_block when it would wait). Per call rather than
// switching the socket to non-blocking mode: that is an ioctl per connection, which Asio makes
// itself only if an asynchronous operation ever needs it.
std::size_t try_receive(asio::ip::tcp::socket& s, asio::mutable_buffer b, std::error_code& ec) {
  const ssize_t n = ::recv(s.native_handle(), b.data(), b.size(), MSG_DONTWAIT);
  if (n > 0 || b.size() == 0) {
    ec.clear();
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  ec = n == 0 ? std::error_code(asio::error::eof) : std::error_code(errno, asio::error::get_system_category());
  return 0;
}

// The same for sending: up to 16 buffers in one system call (sendmsg).
std::size_t try_send(asio::ip::tcp::socket& s, std::span<const asio::const_buffer> b, std::error_code& ec,
                     int flags = 0) {
  std::array<iovec, 16> iov;
  std::size_t count = 0;
  for (; count < b.size() && count < iov.size(); ++count)
    iov[count] = iovec{const_cast<void*>(b[count].data()), b[count].size()};
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = count;
  const ssize_t n = ::sendmsg(s.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL | flags);
  if (n >= 0) {
    ec.clear();
    return static_cast<std::size_t>(n);
  }
  ec = std::error_code(errno, asio::error::get_system_category());
  return 0;
}
std::size_t try_send(asio::ip::tcp::socket& s, asio::const_buffer b, std::error_code& ec, int flags = 0) {
  return try_send(s, std::span(&b, 1), ec, flags);
}

// The client's address for X-Forwarded-For. IPv4 by hand: address::to_string() goes through
// inet_ntop and sprintf, a twentieth of the master's instructions per Connection: close request
// (issue 6, callgrind). Connections come as IPv4 (or v4-mapped, normalised before us) nearly always.
std::string ip_text(const asio::ip::address& a) {
  if (!a.is_v4()) return a.to_string();
  const auto bytes = a.to_v4().to_bytes();
  std::string out;
  out.reserve(15);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0) out.push_back('.');
    const unsigned v = bytes[i];
    if (v >= 100) out.push_back(static_cast<char>('0' + v / 100));
    if (v >= 10) out.push_back(static_cast<char>('0' + v / 10 % 10));
    out.push_back(static_cast<char>('0' + v % 10));
  }
  return out;
}

constexpr std::size_t client_buffer_size = 16 * 1024;
constexpr std::size_t backend_buffer_size = 16 * 1024;
static_assert(backend_buffer_size == client_buffer_size, "idle_pool keeps one size of buffer for both");
// While a response body streams (a read filled the whole buffer), the backend buffer grows to
// this, so that each stream read and each client write moves up to 256 KiB instead of 16 KiB; it
// goes back to nothing when the response is over (issue 6: the 1 GiB transfer through the master).
constexpr std::size_t bulk_buffer_size = 256 * 1024;

// What a connection needs only while it has bytes to process: its parsers (about 0.9 KiB each)
// and its 16 KiB client buffer. A plain-TCP connection between requests parks them here and takes
// them (or others) back when its client sends again, so an idle connection holds none of it and a
// busy one does not pay malloc/free for it on every request (issue 6: master RSS per idle proxied
// connection). A connection that ends parks its parsers too, reset, and a new one takes parsers
// from here first. Parked parsers are at a message boundary, where a parser carries nothing from
// one message to the next, or reset. Bounded; per thread, as connections run on their thread's
// io_context.
struct idle_pool {
  static constexpr std::size_t max_each = 64;
  struct parked_request_parser {
    std::size_t max_head_bytes, max_headers;  // the limits it was made with
    request_parser parser;
  };
  std::vector<std::unique_ptr<char[]>> buffers;  // each client_buffer_size (= backend_buffer_size)
  std::vector<parked_request_parser> requests;
  std::vector<response_parser> responses;

  std::unique_ptr<char[]> take_buffer() {
    if (buffers.empty()) return std::make_unique_for_overwrite<char[]>(client_buffer_size);
    auto b = std::move(buffers.back());
    buffers.pop_back();
    return b;
  }
  void give_back(std::unique_ptr<char[]> b) {
    if (b && buffers.size() < max_each) buffers.push_back(std::move(b));
  }

  // A parked parser when there is one (with these limits), else a new one.
  request_parser take_request_parser(std::size_t head_bytes, std::size_t headers) {
    if (requests.empty() || requests.back().max_head_bytes != head_bytes || requests.back().max_headers != headers)
      return request_parser({head_bytes, headers});
    auto p = std::move(requests.back().parser);
    requests.pop_back();
    return p;
  }
  response_parser take_response_parser() {
    if (responses.empty()) return response_parser();
    auto p = std::move(responses.back());
    responses.pop_back();
    return p;
  }

  static idle_pool& local() {
    thread_local idle_pool pool;
    return pool;
  }
};

// A kept-alive stream to one member of one route.
struct backend_link {
  yamux::stream stream;
  std::uint64_t route_id = 0;
  std::uint64_t member_id = 0;
  bool open() const { return stream.is_open(); }
  void drop() { stream.close(); }
};

template <class Client>
class http_connection : private yamux::payload_sink {
 public:
  http_connection(registry& reg, std::string listener_key, Client& client, const connection_info& info)
      : reg_(reg),
        listener_key_(std::move(listener_key)),
        client_(client),
        info_(info),
        // Formatted once per connection, not per request.
        client_ip_(ip_text(info.client.address())),
        requests_(idle_pool::local().take_request_parser(reg.config().max_header_bytes, reg.config().max_headers)),
        responses_(idle_pool::local().take_response_parser()),
        watchdog_(client.get_executor()) {}
  ~http_connection() {
    if (watch_) watch_->connection = nullptr;  // a wait still queued finds nobody
    // The parsers serve the next connection (a new one costs two allocations and their header
    // lists two more: per request, with Connection: close).
    if (!parsers_parked_) {
      requests_.reset();
      responses_.reset();
      park_parsers();
    }
    idle_pool::local().give_back(std::move(in_));
    give_back_out_buffer();
  }
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;

  asio::awaitable<void> run() {
    for (;;) {
      const bool first_bytes_buffered = in_begin_ < in_end_;
      auto [event, status, reason] = co_await read_head(first_bytes_buffered);
      if (event == head_event::closed) break;
      if (event == head_event::failed) {
        linger_ = true;  // the parser stopped where the error was: the rest is unread
        co_await respond_and_close(status, reason);
        break;
      }
      const request_head& head = requests_.head();
      body_unfinished_ = head.chunked || head.content_length.value_or(0) != 0;
      auto lit = reg_.listeners().find(listener_key_);
      if (lit == reg_.listeners().end()) {
        // The port's listener closed while this connection was open: the grace period of its last
        // route ran out, or the master is shutting down. Still an answer, not an empty reply.
        co_await respond_and_close(503, reg_.draining() ? "the proxy is shutting down"
                                                        : "the service did not come back within its grace period");
        break;
      }
      if (misdirected(head.host, lit->second)) {
        co_await respond_and_close(421, "this connection's TLS server name is served with another certificate");
        break;
      }
      auto route_id = lit->second.routes.match(head.host, head.path);
      if (!route_id) {
        co_await respond_and_close(404, "no service is registered for this host and path");
        break;
      }
      reg_.log().debug("conn ", info_.id, ": ", head.method, " ", head.host, head.path, " -> route ", *route_id);
      body_sent_ = false;
      if (!co_await ensure_backend(*route_id)) break;
      auto outcome = co_await exchange(head, true);
      if (outcome == exchange_result::retry) {
        reg_.log().debug("conn ", info_.id, ": the service closed stream ", link_.stream.id(),
                         " without answering; sending the request on another");
        link_.drop();
        responses_ = response_parser();  // the failed stream may have left it in error (EOF)
        out_begin_ = out_end_ = 0;
        if (!co_await ensure_backend(*route_id)) break;
        outcome = co_await exchange(head, false);
      }
      if (outcome == exchange_result::upgraded) {
        co_await tunnel_upgraded();
        break;
      }
      if (outcome == exchange_result::failed) break;
      if (outcome == exchange_result::close) {
        // A plain socket is closed right after this (the coroutine ends), which sends the FIN
        // (with the answer held for it, after the shutdown() below the loop).
        if constexpr (!plain_socket) co_await end_output();
        break;
      }
      ++requests_served_;
      // The master is draining: a connection whose client has nothing more buffered with us ends
      // here, as when it goes idle (read_head), rather than holding the master until its deadline.
      if (reg_.draining() && in_begin_ == in_end_) {
        if constexpr (!std::is_same_v<Client, asio::ip::tcp::socket>) co_await end_output();
        break;
      }
      // Keep-alive: the next request may go elsewhere. A draining member's stream is closed now
      // that its response is complete.
      if (link_.open() && !reg_.member_usable(link_.route_id, link_.member_id)) link_.drop();
    }
    link_.drop();
    // The last answer waits in the socket for our FIN (relay_response): shutdown() sends both,
    // where a close() that finds unread request bytes would send a reset and drop the answer.
    if (corked_) co_await end_output();
    if (linger_ || body_unfinished_ || in_begin_ < in_end_) co_await linger_close();
  }

 private:
  // A TLS connection set up for one name asking for a host served with another certificate: the
  // client checked the wrong certificate for it, so the request is not ours to answer on this
  // connection (421; a client that shares connections across names retries on a new one).
  // Plain connections have no name to disagree with.
  bool misdirected(std::string_view host, const listener_info& listener) const {
    if constexpr (plain_socket) {
      return false;
    } else {
      const char* sni = SSL_get_servername(client_.native_handle(), TLSEXT_NAMETYPE_host_name);
      if (!sni || !listener.certificates) return false;  // no name given: the default certificate, any host
      return !listener.certificates->serves_on(sni, host);
    }
  }

  enum class head_event { head, closed, failed };
  struct head_outcome {
    head_event event;
    int status = 0;
    std::string reason = {};
  };
  enum class exchange_result { keep_alive, close, upgraded, failed, retry };
  using clock = asio::steady_timer::clock_type;

  // The read deadline (a head's 408, the idle limit between requests, a request body that stops
  // arriving, the end of a lingering close) and the write deadline are kept by one watchdog timer
  // per connection rather than by racing every read with a timer (`read || timer`): that race
  // cost a parallel group, two child coroutines, a cancellation signal and a timer wait per request
  // (issue 6: about a fifth of the master's CPU per keep-alive request and half its mallocs).
  // read_head() only stores the deadline; the timer wakes at most once per header_timeout, sees
  // whether the deadline has passed, and if so cancels the client's pending read. The timer's
  // handler outlives the connection when it is already queued, so it reaches the connection
  // through watch_state, which the destructor empties. The timer is armed only once the
  // connection first has to wait for its client (expect_by): a request that is there at accept
  // and an answer the socket takes at once need no timer (Connection: close, issue 6).
  struct watch_state {
    http_connection* connection;
  };
  // Before waiting for the client: makes sure the watchdog looks no later than `deadline`.
  void expect_by(clock::time_point deadline) {
    if (!watch_) {
      watch_ = std::make_shared<watch_state>(watch_state{this});
      arm_watchdog(watch_, deadline);
    } else if (watchdog_.expiry() > deadline) {
      arm_watchdog(watch_, deadline);
    }
  }
  static void arm_watchdog(const std::shared_ptr<watch_state>& watch, clock::time_point at) {
    auto& timer = watch->connection->watchdog_;
    timer.expires_at(at);
    timer.async_wait([watch](std::error_code ec) {
      // Aborted: re-armed earlier by write_client(), whose wait stands instead.
      if (ec == asio::error::operation_aborted) return;
      if (auto* c = watch->connection) c->on_watchdog(watch);
    });
  }
  void on_watchdog(const std::shared_ptr<watch_state>& watch) {
    const auto now = clock::now();
    if (write_deadline_ <= now) {
      write_deadline_ = clock::time_point::max();
      reg_.log().info("conn ", info_.id, " from ", info_.client, ": the client took no bytes of its answer for ",
                      reg_.config().client_write_timeout.count(), " ms; closed");
      std::error_code ec;
      client_.lowest_layer().cancel(ec);  // the write fails; client_failed() resets the stream
    }
    if (service_write_deadline_ <= now) {
      service_write_deadline_ = clock::time_point::max();
      const auto ms = reg_.config().service_write_timeout.count();
      reg_.log().info("conn ", info_.id, " from ", info_.client, ": the service took no bytes of the request body for ",
                      ms, " ms; its stream is reset");
      // The body's write fails, and so does the answer's read: exchange() answers 504 if no answer
      // has started, else the connection ends.
      request_failed(504, "the service took no bytes of the request body for " + std::to_string(ms) + " ms");
    }
    if (read_deadline_ <= now) {
      read_timed_out_ = true;
      read_deadline_ = clock::time_point::max();
      std::error_code ec;
      client_.lowest_layer().cancel(ec);
    }
    // With no timed read under way, look again one header timeout from now; a read that sets an
    // earlier deadline meanwhile (a head's, a lingering close's) re-arms sooner through
    // expect_by(), and so does write_client().
    const auto read_check = read_deadline_ == clock::time_point::max() ? now + reg_.config().header_timeout : read_deadline_;
    arm_watchdog(watch, std::min({read_check, write_deadline_, service_write_deadline_}));
  }

  // Writes all of `buffers` to the client under the client write timeout (on_watchdog).
  template <class ConstBuffers>
  asio::awaitable<std::tuple<std::error_code, std::size_t>> write_client(const ConstBuffers& buffers) {
    write_deadline_ = clock::now() + reg_.config().client_write_timeout;
    expect_by(write_deadline_);
    auto result = co_await asio::async_write(client_, buffers, use_tuple);
    write_deadline_ = clock::time_point::max();
    co_return result;
  }
  // On a plain socket a read of bytes that are already there, or a write the send buffer has room
  // for, is tried as a system call at once (try_receive, try_send): every completion Asio posts is
  // another turn of the event loop, and at low load each turn is an epoll_wait of its own (issue 6:
  // master p99 at a fixed rate; about 8 turns per keep-alive request before). would_block sends
  // the caller to the asynchronous operation. TLS streams always take that path.
  static constexpr bool plain_socket = std::is_same_v<Client, asio::ip::tcp::socket>;

  void take_in_buffer() {
    if (!in_) in_ = idle_pool::local().take_buffer();
  }
  // The backend buffer, unless it grew for a bulk body, goes back to the pool too.
  void give_back_out_buffer() {
    if (out_capacity_ == backend_buffer_size) idle_pool::local().give_back(std::move(out_));
    out_.reset();
    out_capacity_ = 0;
    out_begin_ = out_end_ = 0;
  }
  // out_ is full with part of a head held for an HTTP/1.0 client (relay_response): the held bytes
  // move to its front, or, when they are all of it, into a bulk buffer. False when even that is
  // full, which the parser's head limit (64 KiB) prevents.
  bool hold_room() {
    const std::size_t held = out_end_ - held_from_;
    if (held_from_ > 0) {
      std::memmove(out_.get(), out_.get() + held_from_, held);
    } else if (out_capacity_ < bulk_buffer_size) {
      auto bigger = std::make_unique_for_overwrite<char[]>(bulk_buffer_size);
      std::memcpy(bigger.get(), out_.get(), held);
      give_back_out_buffer();
      out_ = std::move(bigger);
      out_capacity_ = bulk_buffer_size;
    } else {
      return false;
    }
    out_begin_ = out_end_ = held;
    held_from_ = 0;
    return true;
  }
  // Lets go of the buffers that hold no unprocessed bytes.
  void release_idle_buffers() {
    if (in_begin_ == in_end_) {
      idle_pool::local().give_back(std::move(in_));
      in_.reset();
      in_begin_ = in_end_ = 0;
    }
    if (out_begin_ == out_end_) give_back_out_buffer();
  }
  // Between requests (no byte of the next one read): the parsers go to the pool.
  void park_parsers() {
    auto& pool = idle_pool::local();
    if (pool.requests.size() < idle_pool::max_each)
      pool.requests.push_back({reg_.config().max_header_bytes, reg_.config().max_headers, std::move(requests_)});
    else
      request_parser dropped(std::move(requests_));  // freed now; requests_ is left empty
    if (pool.responses.size() < idle_pool::max_each)
      pool.responses.push_back(std::move(responses_));
    else
      response_parser dropped(std::move(responses_));
    parsers_parked_ = true;
  }
  void unpark_parsers() {
    if (!parsers_parked_) return;
    parsers_parked_ = false;
    auto& pool = idle_pool::local();
    requests_ = pool.take_request_parser(reg_.config().max_header_bytes, reg_.config().max_headers);
    responses_ = pool.take_response_parser();
  }
  struct idle_guard {
    registry& reg;
    registry::idle_connection entry;
    bool parked;
    idle_guard(registry& r, asio::ip::tcp::socket::lowest_layer_type& socket, bool park) : reg(r), entry{&socket}, parked(park) {
      if (parked) reg.park(entry);
    }
    idle_guard(const idle_guard&) = delete;
    idle_guard& operator=(const idle_guard&) = delete;
    ~idle_guard() {
      if (parked) reg.unpark(entry);
    }
  };
  struct read_deadline_guard {
    clock::time_point& deadline;
    ~read_deadline_guard() { deadline = clock::time_point::max(); }
  };

  // Reads until a complete request head; 408 if it does not arrive in time.
  asio::awaitable<head_outcome> read_head(bool has_bytes) {
    read_deadline_ = clock::now() + reg_.config().header_timeout;
    read_timed_out_ = false;
    read_deadline_guard disarm{read_deadline_};
    bool started = has_bytes;
    for (;;) {
      if (in_begin_ < in_end_) {
        auto r = requests_.feed({in_.get() + in_begin_, in_end_ - in_begin_});
        in_begin_ += r.consumed;
        if (r.what == parse_result::kind::head) co_return head_outcome{head_event::head};
        if (r.what == parse_result::kind::error) co_return head_outcome{head_event::failed, r.status, r.reason};
        started = true;
        if (in_begin_ < in_end_) continue;  // a body/message_end of a request we skipped cannot happen here
      }
      in_begin_ = in_end_ = 0;
      // Between requests the connection is idle: parked with the registry, so that a drain of the
      // master closes it at once (registry::close_listeners cancels the wait or read below).
      const bool between_requests = !started && requests_served_ > 0;
      if (between_requests && reg_.draining()) co_return head_outcome{head_event::closed};
      idle_guard idle(reg_, client_.lowest_layer(), between_requests);
      if constexpr (std::is_same_v<Client, asio::ip::tcp::socket>) {
        // Not before the first request: a new connection's request is usually there already, and
        // waiting would cost an epoll_ctl for nothing (Connection: close does this per request).
        if (!started && requests_served_ > 0) {
          // Between requests (or before the first): hold no buffer while the client is silent, so
          // an idle connection costs no 32 KiB of buffers (issue 6: master RSS per idle proxied
          // connection). Wait until the socket is readable, then take the buffer and read. (TLS
          // cannot wait this way: OpenSSL may already hold decrypted bytes.)
          release_idle_buffers();
          park_parsers();
          expect_by(read_deadline_);
          auto [wec] = co_await client_.async_wait(asio::socket_base::wait_read, use_tuple);
          if (read_timed_out_ || wec) co_return head_outcome{head_event::closed};
          unpark_parsers();
        }
      }
      take_in_buffer();
      std::error_code ec = asio::error::would_block;
      std::size_t n = 0;
      // A connection's first read goes straight to Asio, which tries the receive itself before it
      // waits: the listener hands a connection over as soon as the handshake completes, usually
      // before the client's request is there, and a try of our own would be a second failed recv.
      if constexpr (plain_socket) {
        const bool first_read = !started && requests_served_ == 0;
        if (!first_read) n = try_receive(client_, asio::buffer(in_.get(), client_buffer_size), ec);
      }
      if (ec == asio::error::would_block) {
        expect_by(read_deadline_);
        std::tie(ec, n) = co_await client_.async_read_some(asio::buffer(in_.get(), client_buffer_size), use_tuple);
      }
      if (read_timed_out_) {
        if (started) co_return head_outcome{head_event::failed, 408, "the request head did not arrive in time"};
        co_return head_outcome{head_event::closed};  // an idle keep-alive connection: just close
      }
      in_end_ = n;
      if (ec && n == 0) co_return head_outcome{head_event::closed};
    }
  }

  asio::awaitable<void> respond_and_close(int status, const std::string& reason) {
    const std::string response = make_error_response(status, reason);
    ++reg_.stats().http_responses[status / 100];
    co_await write_client(asio::buffer(response));
    co_await end_output();
    reg_.log().debug("conn ", info_.id, " from ", info_.client, ": ", status, " ", reason);
  }

  // Our side of the connection is done: FIN (after close_notify on TLS), once.
  asio::awaitable<void> end_output() {
    if (output_ended_) co_return;
    output_ended_ = true;
    co_await half_close(client_);
  }

  // Ends a connection whose client may still be sending (the rest of a request after an error
  // answer or an early answer, pipelined requests after a Connection: close one): after our FIN,
  // reads and drops what comes until the client's FIN, an error, or linger_timeout. Closing with
  // unread bytes would make the kernel answer them with a reset, which can destroy our answer in
  // the client's receive buffer before it reads it (RFC 9112 9.6). Raw bytes on TLS too: nothing
  // more is decrypted after close_notify.
  asio::awaitable<void> linger_close() {
    asio::ip::tcp::socket& socket = [&]() -> asio::ip::tcp::socket& {
      if constexpr (plain_socket) return client_;
      else return client_.next_layer();
    }();
    if (!socket.is_open() || reg_.config().linger_timeout.count() == 0) co_return;
    co_await end_output();
    read_deadline_ = clock::now() + reg_.config().linger_timeout;
    read_timed_out_ = false;
    read_deadline_guard disarm{read_deadline_};
    take_in_buffer();
    for (;;) {
      expect_by(read_deadline_);
      auto [ec, n] = co_await socket.async_read_some(asio::buffer(in_.get(), client_buffer_size), use_tuple);
      if (ec || read_timed_out_) break;
    }
    in_begin_ = in_end_ = 0;
  }

  // Reuses the kept-alive stream when it serves the same route and its member still takes work;
  // otherwise asks the registry for a member (queueing during grace).
  asio::awaitable<bool> ensure_backend(std::uint64_t route_id) {
    link_reused_ = link_.open() && link_.route_id == route_id && reg_.member_usable(route_id, link_.member_id);
    if (link_reused_) co_return true;
    link_.drop();
    auto got = co_await reg_.acquire(route_id, &client_.lowest_layer());
    if (got.status == acquire_status::abandoned) co_return false;  // nobody to answer
    if (got.status == acquire_status::queue_full) {
      co_await respond_and_close(503, "the service is restarting and too many requests are waiting; retry shortly");
      co_return false;
    }
    if (got.status != acquire_status::ok) {
      co_await respond_and_close(503, "the service did not come back within its grace period");
      co_return false;
    }
    link_ = {std::move(got.stream), route_id, got.member_id};
    reg_.log().debug("conn ", info_.id, ": stream ", link_.stream.id(), " to registration ", link_.member_id);
    // The header goes out with the first request head, in one write and one frame (exchange()).
    if (got.proxy_protocol) proxy_prefix_ = encode_proxy_v2(info_.client, connection_local_endpoint(client_));
    co_return true;
  }

  // Sends one request (head, then body as it arrives) and relays its response. With `may_retry`,
  // a failure that provably left the request unprocessed returns `retry` instead of a 502.
  asio::awaitable<exchange_result> exchange(const request_head& head, bool may_retry) {
    const bool client_keep_alive = head.keep_alive;
    const std::string method = head.method;
    const std::string serialized = serialize_forwarded_request_head(head, client_ip_, info_.tls);
    response_bytes_ = 0;
    const std::array<asio::const_buffer, 2> out{asio::buffer(proxy_prefix_), asio::buffer(serialized)};
    auto [wec, wn] = co_await asio::async_write(link_.stream, out, use_tuple);
    reg_.stats().bytes_up += wn - std::min(wn, proxy_prefix_.size());
    std::vector<std::byte>().swap(proxy_prefix_);
    if (wec) {
      if (may_retry && can_resend(head)) co_return exchange_result::retry;
      link_.drop();
      co_await respond_and_close(502, "the service failed before answering");
      co_return exchange_result::failed;
    }
    responses_.expect(method);
    response_started_ = false;
    final_head_parsed_ = false;
    interim_dropped_ = head.version_minor == 0;
    held_from_ = no_hold;
    request_upgrade_ = false;
    response_upgrade_ = false;
    response_keep_alive_ = true;
    body_stopped_ = false;
    request_error_ = {};
    service_write_deadline_ = clock::time_point::max();
    bool request_ok = true, response_ok = false;
    if (body_sent_) {  // sent again (a retry): there is no body, and the parser has finished with it
      response_ok = co_await relay_response();
    } else if (!head.chunked && head.content_length.value_or(0) == 0) {
      // No body: send_body() only asks the parser for message_end (or upgrade) and completes
      // without I/O, so the two run one after the other instead of in a parallel group (`&&`
      // allocates the group and two child coroutines per request; issue 6).
      request_ok = co_await send_body();
      response_ok = co_await relay_response();
    } else {
      std::tie(request_ok, response_ok) = co_await (send_body() && relay_response());
    }
    // The watchdog reset the stream (request_failed) in the turn its last write completed: both
    // sides may have ended well, but the stream is gone and must not carry another request.
    if (request_error_.status != 0) request_ok = false;
    if (!response_ok) {
      if (may_retry && can_resend(head)) co_return exchange_result::retry;
      if (!response_started_) {
        // A request that failed on the client's side (a malformed body, a body that stopped) is
        // the client's error to hear, not the service's.
        if (request_error_.status != 0) co_await respond_and_close(request_error_.status, request_error_.reason);
        else co_await respond_and_close(502, "the service failed before answering");
      }
      link_.drop();
      co_return exchange_result::failed;
    }
    if (!request_ok) {
      link_.drop();
      co_return exchange_result::failed;
    }
    if (request_upgrade_ && response_upgrade_) co_return exchange_result::upgraded;
    // The service answered an Upgrade without switching: HTTP/1.1 goes on, on this connection
    // (RFC 9110 7.8), the bytes after the request being the next one. Not after a CONNECT: a
    // body it declared was never forwarded (whatever follows its head is the tunnel's), so the
    // service and we could disagree on where the next request starts.
    if (request_upgrade_ && method == "CONNECT") co_return exchange_result::close;
    if (request_upgrade_) requests_.resume_after_declined_upgrade();
    if (!response_keep_alive_) link_.drop();
    // The service ends the connection where the client meant to go on: requests it may have
    // pipelined are unread, so close in stages (linger_close).
    if (client_keep_alive && !response_keep_alive_) linger_ = true;
    if (!client_keep_alive || !response_keep_alive_) co_return exchange_result::close;
    co_return exchange_result::keep_alive;
  }

  // Whether a request whose stream failed may go out again on another stream: only when the
  // service cannot have acted on it. That holds when not a byte of answer came back, the request
  // is idempotent and bodiless (so it is still whole: its head), and either the stream was a
  // kept-alive one that the service had already closed (a server ending an idle connection does
  // that) or the member has sent GoAway (hashicorp/yamux resets streams that arrive after its
  // GoAway; a draining SDK service closes a stream whose request has not arrived yet). A service
  // that dies mid-request is neither: its client gets a 502.
  // GoAway is asked of the stream's own session, not of the pool: a draining service whose last
  // stream this was may close it and exit, and the master may detach the member before this
  // coroutine resumes (a 502 during redeploys, seen under TSan by tests/load).
  bool can_resend(const request_head& head) const {
    if (response_bytes_ != 0 || head.upgrade || head.chunked || head.content_length.value_or(0) != 0)
      return false;
    static constexpr std::string_view idempotent[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    if (std::find(std::begin(idempotent), std::end(idempotent), head.method) == std::end(idempotent)) return false;
    return link_reused_ || link_.stream.remote_going_away();
  }

  // Forwards the request body (verbatim) until the parser says the message ended.
  asio::awaitable<bool> send_body() {
    for (;;) {
      // Told to stop while a stream write of ours was completing (the answer ended, or the service
      // failed, and its cancel() found no read of ours to cancel): start no new read.
      if (body_stopped_) co_return false;
      if (in_begin_ < in_end_) {
        auto r = requests_.feed({in_.get() + in_begin_, in_end_ - in_begin_});
        in_begin_ += r.consumed;
        if (r.what == parse_result::kind::body) {
          // Within service_write_timeout, or on_watchdog resets the stream (request_failed: 504).
          service_write_deadline_ = clock::now() + reg_.config().service_write_timeout;
          expect_by(service_write_deadline_);
          auto [ec, n] = co_await asio::async_write(link_.stream, asio::buffer(r.body.data(), r.body.size()), use_tuple);
          service_write_deadline_ = clock::time_point::max();
          reg_.stats().bytes_up += n;
          if (body_stopped_) co_return false;
          if (ec) co_return backend_failed();
          continue;
        }
        if (r.what == parse_result::kind::message_end) {
          body_sent_ = true;
          body_unfinished_ = false;
          co_return true;
        }
        if (r.what == parse_result::kind::upgrade) {
          request_upgrade_ = true;
          body_unfinished_ = false;
          co_return true;
        }
        if (r.what == parse_result::kind::error) co_return request_failed(r.status, std::move(r.reason));
        if (in_begin_ < in_end_) continue;
      }
      // need_more: the body is still arriving.
      auto r = requests_.feed({});
      if (r.what == parse_result::kind::message_end) {
        body_sent_ = true;
        body_unfinished_ = false;
        co_return true;
      }
      if (r.what == parse_result::kind::upgrade) {
        request_upgrade_ = true;
        body_unfinished_ = false;
        co_return true;
      }
      in_begin_ = in_end_ = 0;
      take_in_buffer();
      // Each read of the body within body_timeout of the last (on_watchdog cancels it).
      read_deadline_ = clock::now() + reg_.config().body_timeout;
      read_timed_out_ = false;
      expect_by(read_deadline_);
      auto [ec, n] = co_await client_.async_read_some(asio::buffer(in_.get(), client_buffer_size), use_tuple);
      read_deadline_ = clock::time_point::max();
      in_end_ = n;
      if (body_stopped_) co_return false;  // by the answer's end (stop_body) or the service (backend_failed)
      if (read_timed_out_) {
        co_return request_failed(408, "the request body stopped arriving for " +
                                          std::to_string(reg_.config().body_timeout.count()) + " ms");
      }
      if (ec && n == 0) co_return client_failed();
    }
  }

  // The request cannot go on because of what the client sent (or stopped sending): the service's
  // stream is reset, which ends relay_response() too, and exchange() answers `status` if no
  // answer has started. The client connection stays, for that answer.
  bool request_failed(int status, std::string reason) {
    request_error_ = {status, std::move(reason)};
    link_.stream.reset();
    return false;
  }

  // The answer ended the connection (no keep-alive) while the request body was still coming:
  // stop forwarding it, wherever send_body() waits (the client's read, or the stream's window).
  // RFC 9112 9.6: the server closes after an answer that says close; linger_close() then takes
  // what the client still sends.
  void stop_body() {
    body_stopped_ = true;
    link_.stream.reset();
    std::error_code ec;
    client_.lowest_layer().cancel(ec);
  }

  // While relay_response() waits on the stream with all it read forwarded, the rest of a
  // Content-Length body goes to a plain client straight from the session's read buffer, by a
  // non-blocking send (payload_sink.hpp): a bulk body no longer crosses user space through out_
  // (issue 6: that copy was ~30% of the master's CPU per GiB). Whatever the client socket does not
  // take at once comes through the read, under the write timeout, and so does the body's last
  // byte: the read completes and the parser reports the message end there, as for any response.
  std::size_t take(std::span<const std::span<const std::byte>> pieces) override {
    if constexpr (plain_socket) {
      if (responses_.body_bytes_left() <= 1) return 0;
      std::array<asio::const_buffer, yamux::payload_sink::max_pieces> parts;
      const std::size_t count = std::min(pieces.size(), parts.size());
      for (std::size_t i = 0; i < count; ++i) parts[i] = asio::buffer(pieces[i].data(), pieces[i].size());
      std::error_code ec;
      return send_body_parts(std::span(parts).first(count), ec);
    } else {
      return 0;
    }
  }

  // One non-blocking send of body bytes to a plain client, for take() and send_buffered_body():
  // up to the body's last byte but one (its caller checked that more than one is left), all the
  // parts in one system call; the parser counts what went (body only, fewer than left).
  std::size_t send_body_parts(std::span<asio::const_buffer> parts, std::error_code& ec) {
    std::uint64_t limit = responses_.body_bytes_left() - 1;
    std::size_t count = 0;
    for (; count < parts.size() && limit > 0; ++count) {
      parts[count] = asio::buffer(parts[count], static_cast<std::size_t>(std::min<std::uint64_t>(parts[count].size(), limit)));
      limit -= parts[count].size();
    }
    const std::size_t n = try_send(client_, parts.first(count), ec);
    for (std::size_t i = 0, fed = 0; fed < n; ++i) {
      const std::size_t k = std::min(n - fed, parts[i].size());
      responses_.feed({static_cast<const char*>(parts[i].data()), k});
      fed += k;
    }
    response_bytes_ += n;
    reg_.stats().bytes_down += n;
    return n;
  }

  // Sends the body bytes buffered in the stream to a plain client from where they lie (all but
  // the body's last byte, as take()), waiting for the client socket under the write timeout when it
  // is full: a body that outran its client is not copied into out_ to be sent from there. False
  // when the client failed.
  asio::awaitable<bool> send_buffered_body() {
    if constexpr (plain_socket) {
      for (;;) {
        const std::uint64_t left = responses_.body_bytes_left();
        if (left <= 1 || link_.stream.available() == 0) co_return true;
        std::array<asio::const_buffer, 16> parts;
        const std::size_t count = link_.stream.buffered_data(parts);
        std::error_code ec;
        const std::size_t n = send_body_parts(std::span(parts).first(count), ec);
        if (n > 0) {
          link_.stream.consume_buffered(n);
          continue;
        }
        if (ec != asio::error::would_block) co_return client_failed();
        write_deadline_ = clock::now() + reg_.config().client_write_timeout;
        expect_by(write_deadline_);
        auto [wec] = co_await client_.async_wait(asio::socket_base::wait_write, use_tuple);
        write_deadline_ = clock::time_point::max();
        if (wec) co_return client_failed();
      }
    } else {
      co_return true;
    }
  }

  // Relays the response bytes verbatim until the end of the (final) response. An HTTP/1.0 client
  // gets no 1xx answer (RFC 9110 15.2: it could take a 103 Early Hints for the answer): its 1xx
  // messages are dropped, and until the final head is complete nothing is forwarded, so that the
  // start of a head that turns out to be a 1xx never reaches it (held_from_).
  asio::awaitable<bool> relay_response() {
    for (;;) {
      std::size_t forward_from = held_from_ != no_hold ? held_from_ : out_begin_;
      held_from_ = no_hold;
      bool done = false;
      // Feed until the parser needs more; a body that ends exactly at the end of the buffer still
      // has its message_end to report, from an empty feed.
      while (!done) {
        auto r = responses_.feed({out_.get() + out_begin_, out_end_ - out_begin_});
        out_begin_ += r.consumed;
        switch (r.what) {
          case parse_result::kind::head:
            final_head_parsed_ = responses_.head().status >= 200 || responses_.head().status == 101;
            break;
          case parse_result::kind::body:
            break;
          case parse_result::kind::message_end:
            // 100 Continue and friends are messages of their own: the real answer follows.
            if (responses_.head().status >= 100 && responses_.head().status < 200) {
              if (interim_dropped_) forward_from = out_begin_;
              break;
            }
            response_keep_alive_ = responses_.head().keep_alive;
            ++reg_.stats().http_responses[responses_.head().status / 100];
            done = true;
            break;
          case parse_result::kind::upgrade:
            response_upgrade_ = responses_.head().status == 101;
            response_keep_alive_ = false;
            ++reg_.stats().http_responses[responses_.head().status / 100];
            done = true;
            break;
          case parse_result::kind::error:
            co_return backend_failed();
          case parse_result::kind::need_more:
            break;
        }
        if (r.what == parse_result::kind::need_more) break;
      }
      if (interim_dropped_ && !final_head_parsed_ && !done && out_begin_ > forward_from) {
        // Part of a head whose status is not known yet: kept in out_ until it is.
        held_from_ = forward_from;
        if (out_end_ == out_capacity_ && !hold_room()) co_return backend_failed();
      } else if (out_begin_ > forward_from) {
        const auto piece = asio::buffer(out_.get() + forward_from, out_begin_ - forward_from);
        std::error_code ec;
        std::size_t n = 0;
        if constexpr (plain_socket) {
          // The last piece before we close goes with MSG_MORE: the kernel holds it until our FIN
          // joins it (run()), one segment for the client to take instead of two. With
          // `Connection: close` that is a tenth of the master's CPU per request and more of the
          // client's (issue 6).
          corked_ = done && !response_keep_alive_ && !response_upgrade_;
          n = try_send(client_, piece, ec, corked_ ? MSG_MORE : 0);
        }
        if ((!ec || ec == asio::error::would_block) && n < piece.size()) {
          corked_ = false;  // the rest goes without MSG_MORE, which sends what was held too
          auto [rec, rn] = co_await write_client(piece + n);
          ec = rec;
          n += rn;
        }
        reg_.stats().bytes_down += n;
        if (ec) co_return client_failed();
        // From here on the client has part of the real answer: a failure can no longer be a 502.
        if (final_head_parsed_) response_started_ = true;
      }
      if (done) {
        // The bulk buffer only lives while a body flows.
        if (out_capacity_ > backend_buffer_size && out_begin_ == out_end_) give_back_out_buffer();
        out_filled_ = false;
        // (Not a 101: after it the rest of the body is the tunnel's first bytes.)
        if (!response_keep_alive_ && !response_upgrade_ && body_unfinished_) stop_body();
        co_return true;
      }
      if (out_begin_ == out_end_ && held_from_ == no_hold) {
        out_begin_ = out_end_ = 0;
        // Nothing is left in the buffer here (the parser took it all), so it may be swapped.
        if (!out_) {
          out_ = idle_pool::local().take_buffer();
          out_capacity_ = backend_buffer_size;
        } else if (out_filled_ && out_capacity_ < bulk_buffer_size) {
          give_back_out_buffer();
          out_ = std::make_unique_for_overwrite<char[]>(bulk_buffer_size);
          out_capacity_ = bulk_buffer_size;
        }
      }
      // Everything read so far has gone to the client: the body's rest may bypass out_, from the
      // stream's buffer and then as it arrives (take()).
      const bool in_body = plain_socket && out_begin_ == out_end_ && responses_.body_bytes_left() > 1;
      if (in_body && link_.stream.available() > 0 && !co_await send_buffered_body()) co_return false;
      const bool offered = in_body && link_.stream.available() == 0 && responses_.body_bytes_left() > 1;
      const std::size_t space = out_capacity_ - out_end_;
      if (offered) link_.stream.offer_payload_to(this);
      auto [ec, n] = co_await link_.stream.async_read_some(asio::buffer(out_.get() + out_end_, space), use_tuple);
      if (offered) link_.stream.offer_payload_to(nullptr);
      out_filled_ = n == space;
      out_end_ += n;
      response_bytes_ += n;
      if (ec && n == 0) {
        if (ec == asio::error::eof) {
          auto r = responses_.finish();
          if (r.what == parse_result::kind::message_end) {
            response_keep_alive_ = false;
            if (body_unfinished_) stop_body();
            co_return true;
          }
        }
        co_return backend_failed();
      }
    }
  }

  // The service's side failed (write refused, reset, EOF or a malformed response): make the other
  // direction stop promptly, but keep the client connection, which is still owed a 502 if no byte
  // of a response has reached it. Cancelling the client's pending read ends send_body() without
  // closing the socket (closing it here used to turn every 502 into an empty reply).
  bool backend_failed() {
    body_stopped_ = true;
    link_.stream.reset();
    std::error_code ec;
    client_.lowest_layer().cancel(ec);
    return false;
  }

  // The client's side failed (EOF mid-body, a malformed body, a write refused): nothing more can
  // be said to it; stop both directions.
  bool client_failed() {
    link_.stream.reset();
    abort_stream(client_);
    return false;
  }

  asio::awaitable<void> tunnel_upgraded() {
    // Bytes that arrived early on either side belong to the tunnel.
    if (in_begin_ < in_end_) {
      auto [ec, n] = co_await asio::async_write(link_.stream, asio::buffer(in_.get() + in_begin_, in_end_ - in_begin_), use_tuple);
      reg_.stats().bytes_up += n;
      if (ec) co_return;
    }
    if (out_begin_ < out_end_) {
      auto [ec, n] = co_await asio::async_write(client_, asio::buffer(out_.get() + out_begin_, out_end_ - out_begin_), use_tuple);
      reg_.stats().bytes_down += n;
      if (ec) co_return;
    }
    in_.reset();
    in_begin_ = in_end_ = 0;
    out_.reset();
    out_begin_ = out_end_ = 0;
    out_capacity_ = 0;
    // Counted when the tunnel ends (tunnel() is shared with the SDK and counts for itself).
    const auto moved = co_await tunnel(client_, link_.stream);
    reg_.stats().bytes_up += moved.a_to_b;
    reg_.stats().bytes_down += moved.b_to_a;
  }

  registry& reg_;
  std::string listener_key_;
  Client& client_;
  const connection_info& info_;
  std::string client_ip_;
  request_parser requests_;
  response_parser responses_;
  bool parsers_parked_ = false;
  std::uint64_t requests_served_ = 0;  // kept-alive exchanges completed on this connection  // requests_ and responses_ are empty (moved to the pool)
  std::unique_ptr<char[]> in_;
  std::size_t in_begin_ = 0, in_end_ = 0;
  std::unique_ptr<char[]> out_;
  std::size_t out_begin_ = 0, out_end_ = 0;
  std::size_t out_capacity_ = 0;  // of out_ (allocated on the first response read)
  bool out_filled_ = false;       // the last stream read filled out_: a body is streaming
  backend_link link_;
  std::vector<std::byte> proxy_prefix_;  // a new stream's PROXY v2 header, until the first request goes
  bool link_reused_ = false;        // the current request went over a kept-alive stream
  bool body_sent_ = false;          // the current request's body (if any) has gone out whole
  std::size_t response_bytes_ = 0;  // read from the stream for the current request
  bool final_head_parsed_ = false;  // of the current response (not a 1xx)
  bool interim_dropped_ = false;    // the client speaks HTTP/1.0: 1xx answers are not for it
  static constexpr std::size_t no_hold = static_cast<std::size_t>(-1);
  std::size_t held_from_ = no_hold;  // out_ from here: a head not forwarded yet (relay_response)
  bool response_started_ = false;   // bytes of the final response have been written to the client
  bool response_keep_alive_ = true;
  bool request_upgrade_ = false;
  bool response_upgrade_ = false;
  bool corked_ = false;  // the last answer was sent with MSG_MORE: end_output() must follow
  bool body_unfinished_ = false;  // the current request has a body not yet read to its end
  bool body_stopped_ = false;     // send_body() is to stop: its read was cancelled on purpose
  struct request_error {
    int status = 0;  // 0: none
    std::string reason;
  } request_error_;
  bool linger_ = false;        // close with linger_close() even at a message boundary
  bool output_ended_ = false;  // end_output() was done
  asio::steady_timer watchdog_;
  std::shared_ptr<watch_state> watch_;
  clock::time_point read_deadline_ = clock::time_point::max();  // max: no timed read under way
  clock::time_point write_deadline_ = clock::time_point::max();  // max: no client write under way
  clock::time_point service_write_deadline_ = clock::time_point::max();  // max: no body write to the service
  bool read_timed_out_ = false;
};

}  // namespace

template <class Client>
asio::awaitable<void> route_http(registry& reg, std::string listener_key, Client& client, const connection_info& info) {
  http_connection<Client> connection(reg, std::move(listener_key), client, info);
  co_await connection.run();
}

template asio::awaitable<void> route_http(registry&, std::string, asio::ip::tcp::socket&, const connection_info&);
template asio::awaitable<void> route_http(registry&, std::string, asio::ssl::stream<asio::ip::tcp::socket>&,
                                          const connection_info&);

}  // namespace socketmaster::server
