// A sans-I/O HTTP/1 message framer for the HTTP router, on top of llhttp: it finds where each
// request (from a public client) and each response (from a backend) starts and ends, exposes the
// parsed head, and hands bodies back as the raw bytes on the wire so they are forwarded verbatim.
// No sockets here: the caller owns the buffers and feeds whatever bytes it has.
//
// It is deliberately stricter than llhttp alone: anything that two HTTP parsers could frame
// differently (request smuggling shapes, bare LF, obs-fold, CTLs in values, odd request lines) is
// rejected rather than normalised, because the bytes are forwarded to a backend whose parser we
// do not control.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace socketmaster::server {

struct http_header {
  std::string name;   // as sent (original case)
  // Without leading whitespace; trailing whitespace is kept, so a forwarded header is exactly the
  // one that was parsed.
  std::string value;
};

struct request_head {
  std::string method;  // canonical upper case, e.g. "GET"
  std::string target;  // the request-target exactly as sent
  // The target without its query: origin-form "/a/b", the path of an absolute-form target ("/" if
  // it has none), "*" for asterisk-form, empty for CONNECT's authority-form.
  std::string path;
  int version_major = 0;
  int version_minor = 0;
  std::vector<http_header> headers;  // original order and case
  // The Host header as sent, or the authority of an absolute-form target (which must then match
  // the Host header). Syntax-checked, not normalised (case and port are kept).
  std::string host;
  bool keep_alive = false;       // another request may follow this one on the connection
  bool upgrade = false;          // Upgrade + Connection: upgrade, or CONNECT
  bool expect_continue = false;  // Expect: 100-continue
  bool chunked = false;
  std::optional<std::uint64_t> content_length;
};

struct response_head {
  int status = 0;
  int version_major = 0;
  int version_minor = 0;
  std::string reason;  // the reason phrase as sent (may be empty)
  std::vector<http_header> headers;
  bool keep_alive = false;  // the connection may carry another response after this one
  bool upgrade = false;     // 101 Switching Protocols, or a 2xx answer to CONNECT
  bool chunked = false;
  std::optional<std::uint64_t> content_length;
};

// Limits on what a peer may make us hold or process. Aggregate: `{head_bytes, headers}` works.
struct http_limits {
  // Request/status line plus header section, CRLFs included; also bounds a chunked trailer section.
  std::size_t max_head_bytes = 64 * 1024;
  std::size_t max_headers = 100;
  // Largest request body (decoded payload); 0 = unlimited. Responses are never limited.
  std::uint64_t max_body_bytes = 0;
  // Chunk extensions carry no data we use; bound them so a peer cannot stream them forever.
  std::size_t max_chunk_extension_bytes = 4 * 1024;

  // Returns std::errc::invalid_argument when a value is out of range; `what` names the offending
  // field. (The generic category, so this module needs nothing but llhttp.)
  std::error_code validate(const char** what = nullptr) const;
};

// One step of a parser. `consumed` is exact: bytes past it belong to a later event (the next
// pipelined message, or the tunnel after an upgrade) and must be fed again.
struct parse_result {
  enum class kind {
    need_more,    // every byte given was consumed (consumed == input size); feed more
    head,         // the head is complete: see head()
    body,         // `body` holds raw body bytes (chunk framing and trailers included)
    message_end,  // the message is complete; the next feed starts the next message
    upgrade,      // the message is complete and whatever follows is another protocol; sticky
    error,        // `status` and `reason` say why; sticky; close the connection after answering
  };
  kind what = kind::need_more;
  std::size_t consumed = 0;
  // For kind::body: a view into the fed input, valid as long as that input is.
  std::span<const char> body;
  // For kind::error: the status to answer with (requests: 400, 413, 431, 501, 505; responses: 502).
  int status = 0;
  std::string reason;  // for kind::error: one sentence, safe to show to the peer
};

namespace detail {
class message_parser;
}

// Parses the requests of one client connection, one event per feed() call:
//   need_more* head (body | need_more)* (message_end | upgrade) ... or error.
// Feed the unconsumed bytes again after each event (an empty span is fine: after a body that ended
// the message, or after the head of a body-less request, feed({}) yields message_end/upgrade).
// An Upgrade/CONNECT request ends with `upgrade` instead of `message_end`, after any declared body;
// nothing after it is consumed. head() is valid from the head event until the next message's first
// byte is fed.
//
// Concurrency: none; use from one coroutine. Movable, not copyable.
class request_parser {
 public:
  explicit request_parser(http_limits limits = {});
  request_parser(request_parser&&) noexcept;
  request_parser& operator=(request_parser&&) noexcept;
  ~request_parser();

  parse_result feed(std::span<const char> in);
  const request_head& head() const;
  // Back to a new parser's state (same limits), keeping its memory: a pooled parser serves the
  // next connection without allocating.
  void reset();
  // After the `upgrade` event, when the service answered without switching protocols: the bytes
  // after the head are parsed as the next request (RFC 9110 7.8 lets a server ignore Upgrade).
  void resume_after_declined_upgrade();

 private:
  std::unique_ptr<detail::message_parser> impl_;
};

// Parses the responses of one backend stream. Call expect() with the request's method before each
// response (HEAD responses have no body; a 2xx to CONNECT is an upgrade). Events as for requests;
// in addition:
//   * a 1xx other than 101 is a message of its own (head, message_end) and the final response
//     follows; the expected method stays in force;
//   * 101 gives head then upgrade;
//   * 204, 304 and HEAD responses have no body whatever their headers say;
//   * a response with neither Content-Length nor chunked ends when the backend closes: call
//     finish() on EOF, which gives message_end in that case and an error otherwise.
// Every error has status 502.
class response_parser {
 public:
  explicit response_parser(http_limits limits = {});
  response_parser(response_parser&&) noexcept;
  response_parser& operator=(response_parser&&) noexcept;
  ~response_parser();

  void expect(std::string_view request_method);
  parse_result feed(std::span<const char> in);
  parse_result finish();
  const response_head& head() const;
  void reset();  // as request_parser::reset
  // Within a Content-Length body: how many of its bytes have not been fed yet. Fewer than that are
  // body bytes and nothing else (the message goes on). 0 in a head, in a chunked or
  // read-until-close body, and for a response without a body.
  std::uint64_t body_bytes_left() const;

 private:
  std::unique_ptr<detail::message_parser> impl_;
};

// "METHOD target HTTP/x.y\r\n", the head's headers in their original order and case, then `extra`,
// then "\r\n". A header of the head whose name (case-insensitively) is also in `extra` is left out:
// `extra` replaces it.
std::string serialize_request_head(const request_head& head, std::span<const http_header> extra = {});

// "HTTP/x.y status reason\r\n", headers, `extra` (replacing same-named headers), "\r\n".
std::string serialize_response_head(const response_head& head, std::span<const http_header> extra = {});

// The head as a proxy forwards it: serialize_request_head's, with these three headers at the end
// in place of any the client sent:
//   X-Forwarded-For: the client's own X-Forwarded-For values (all of them, in order) followed by
//     client_ip, as proxies conventionally append. Only the last entry is ours: a backend must not
//     trust entries to the left of it.
//   X-Forwarded-Proto: "https" or "http", from how the client reached us.
//   X-Forwarded-Host: head.host (empty if the request had none).
// All three are always present, so the client's own copies are always replaced, never forwarded.
// Written in one pass into one allocation: it runs for every proxied request.
// TODO(forwarded-header): the RFC 7239 Forwarded header from the client is still passed through.
std::string serialize_forwarded_request_head(const request_head& head, std::string_view client_ip, bool tls);

// The RFC 9110 reason phrase of a status ("Bad Request"); "Unknown" for codes we do not know.
std::string_view reason_phrase(int status);

// A complete HTTP/1.1 response: status line, Content-Type: text/plain, Content-Length,
// Connection: close, and a one-line body (`reason`, or the reason phrase if empty; control
// characters are replaced by spaces).
std::string make_error_response(int status, std::string_view reason);

}  // namespace socketmaster::server
