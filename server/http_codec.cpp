// The HTTP/1 framer; see http_codec.hpp.
//
// llhttp does the parsing. It is built in strict mode (LLHTTP_STRICT_MODE=1, cmake/Findllhttp.cmake)
// and no lenient flag is ever set. Exact byte positions come from its pause mechanism: callbacks
// return HPE_PAUSED at the end of a head, at the last chunk and at the end of a message, and
// llhttp_get_error_pos() says where it stopped. Bodies are never copied: a body event is simply the
// range of the input llhttp walked through before the next event.
//
// Strict llhttp 8.1 still accepts a bare LF ending the request line or the header section, obs-fold
// continuation lines, CTLs in header values, double spaces and foreign protocols (RTSP/, HTTP/2.0)
// in the request line. A second, independent scanner (section_scanner) therefore walks every head
// and trailer section first, insisting on CRLF line endings and no line starting with whitespace,
// finding where the section ends on its own and bounding its size; llhttp is only given bytes up to
// where the scanner stopped, and the two must agree on where the section ends. The rest is checked
// in on_headers_complete.
#include "http_codec.hpp"

#include <llhttp.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace socketmaster::server {

namespace {

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Control characters other than HTAB, and DEL: never valid in a field value or reason phrase.
bool is_ctl(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u < 0x20 && u != '\t') || u == 0x7f;
}

// RFC 3986 reg-name characters (unreserved, sub-delims, and '%' of pct-encoded).
bool is_reg_name_char(char c) {
  return is_alpha(c) || is_digit(c) || std::string_view("-._~!$&'()*+,;=%").find(c) != std::string_view::npos;
}

// uri-host [ ":" port ], as in a Host header or an authority. An empty value is allowed unless a
// port is required (RFC 9112 3.2: Host may be empty when the target URI has no authority).
bool valid_host(std::string_view v, bool need_port) {
  if (v.empty()) return !need_port;
  std::string_view rest;
  if (v.front() == '[') {
    const auto close = v.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    const auto literal = v.substr(1, close - 1);
    const bool literal_ok = std::all_of(literal.begin(), literal.end(), [](char c) {
      return is_hex(c) || c == ':' || c == '.';
    });
    if (!literal_ok) return false;
    rest = v.substr(close + 1);
  } else {
    const auto colon = v.find(':');
    const auto name = v.substr(0, colon);
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_reg_name_char)) return false;
    rest = colon == std::string_view::npos ? std::string_view{} : v.substr(colon);
  }
  if (rest.empty()) return !need_port;
  if (rest.front() != ':') return false;
  const auto port = rest.substr(1);
  return !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), is_digit);
}

// Walks a header section (a head with its start line, or a chunked trailer section) byte by byte,
// independently of llhttp: every line must end in CRLF, no line may start with whitespace
// (obs-fold), and the section may not exceed a size. It finds the end of the section itself (the
// first empty line after the start line; empty lines before a start line are skipped, as RFC 9112
// 2.2 allows) and captures the start line.
class section_scanner {
 public:
  enum class state { scanning, done, failed };

  void reset(bool has_start_line, std::size_t max_bytes) {
    *this = section_scanner{};
    lines_ = has_start_line ? 0 : 1;
    max_bytes_ = max_bytes;
  }

  // Returns how many bytes of `in` belong to the section as far as it can tell: up to and
  // including the final LF once done, up to (not including) the offending byte on failure, all of
  // them while still scanning.
  std::size_t scan(std::span<const char> in) {
    std::size_t i = 0;
    while (i < in.size() && state_ == state::scanning) {
      if (total_ == max_bytes_) return fail(i, "too large", true);
      const char c = in[i];
      if (prev_ == '\r') {
        if (c != '\n') return fail(i, "contains a CR that is not followed by LF", false);
        ++total_;
        ++i;
        prev_ = '\n';
        if (line_length_ != 0) {
          ++lines_;
          line_length_ = 0;
        } else if (lines_ > 0) {
          state_ = state::done;
        }
        continue;
      }
      if (c == '\n') return fail(i, "has a line ending in a bare LF", false);
      if (c == '\r') {
        ++total_;
        ++i;
        prev_ = c;
        continue;
      }
      if (line_length_ == 0 && (c == ' ' || c == '\t'))
        return fail(i, lines_ > 0 ? "has a line starting with whitespace (obs-fold)" : "starts with whitespace", false);
      // The rest of the line up to its CR (or LF, or the size limit) in one step: a byte-by-byte
      // walk through this branch cost the master as much as llhttp itself (issue 6, callgrind).
      // memchr, vectorised, beats a byte loop even on short header lines.
      const std::size_t limit = std::min(in.size(), i + (max_bytes_ - total_));
      const char* from = in.data() + i + 1;
      const char* to = in.data() + limit;
      if (const void* cr = std::memchr(from, '\r', static_cast<std::size_t>(to - from))) to = static_cast<const char*>(cr);
      if (const void* lf = std::memchr(from, '\n', static_cast<std::size_t>(to - from))) to = static_cast<const char*>(lf);
      const std::size_t end = static_cast<std::size_t>(to - in.data());
      const std::size_t run = end - i;
      if (lines_ == 0) start_line_.append(in.data() + i, run);
      line_length_ += run;
      total_ += run;
      prev_ = in[end - 1];
      i = end;
    }
    return i;
  }

  state current() const { return state_; }
  bool too_large() const { return too_large_; }
  const char* error() const { return error_; }
  const std::string& start_line() const { return start_line_; }
  std::size_t bytes() const { return total_; }

 private:
  std::size_t fail(std::size_t at, const char* why, bool too_large) {
    state_ = state::failed;
    error_ = why;
    too_large_ = too_large;
    return at;
  }

  state state_ = state::scanning;
  char prev_ = '\n';
  std::size_t line_length_ = 0;
  std::size_t lines_ = 0;  // non-empty lines completed
  std::size_t total_ = 0;
  std::size_t max_bytes_ = 0;
  std::string start_line_;
  const char* error_ = "";
  bool too_large_ = false;
};

// Whether `line` is exactly "METHOD SP target SP HTTP/major.minor", compared piece by piece rather
// than by building that string for every request.
bool is_request_line(std::string_view line, const request_head& h) {
  const auto take = [&line](std::string_view part) {
    if (!line.starts_with(part)) return false;
    line.remove_prefix(part.size());
    return true;
  };
  char version[32];
  char* end = std::to_chars(version, version + 15, h.version_major).ptr;
  *end++ = '.';
  end = std::to_chars(end, version + sizeof version, h.version_minor).ptr;
  return take(h.method) && take(" ") && take(h.target) && take(" HTTP/") && line == std::string_view(version, end);
}

}  // namespace

std::error_code http_limits::validate(const char** what) const {
  auto bad = [&](const char* field) {
    if (what) *what = field;
    return std::make_error_code(std::errc::invalid_argument);
  };
  if (max_head_bytes < 256) return bad("max_head_bytes must be at least 256");
  if (max_headers == 0) return bad("max_headers must be positive");
  return {};
}

namespace detail {

// The llhttp-driven state machine shared by request_parser and response_parser.
class message_parser {
 public:
  message_parser(llhttp_type_t type, const http_limits& limits) : limits_(limits), request_(type == HTTP_REQUEST) {
    llhttp_init(&llhttp_, type, &settings());
    start_head();
  }

  parse_result feed(std::span<const char> in) {
    switch (phase_) {
      case phase::head:
        return feed_head(in);
      case phase::body:
        return feed_body(in);
      case phase::end_pending:
        next_message();
        return {parse_result::kind::message_end, 0, {}, 0, {}};
      case phase::upgrade_pending:
        phase_ = phase::upgraded;
        return {parse_result::kind::upgrade, 0, {}, 0, {}};
      case phase::upgraded:
        return {parse_result::kind::upgrade, 0, {}, 0, {}};
      case phase::closed:
        return fail(bad_status(), "The connection has already ended.");
      case phase::failed:
        break;
    }
    return failure_;
  }

  // See response_parser::body_bytes_left. llhttp counts a Content-Length body down in
  // content_length as it consumes it.
  std::uint64_t body_bytes_left() const {
    if (phase_ != phase::body || in_trailers_) return 0;
    if ((llhttp_.flags & (F_CONTENT_LENGTH | F_CHUNKED | F_SKIPBODY)) != F_CONTENT_LENGTH) return 0;
    return llhttp_.content_length;
  }

  parse_result finish() {
    switch (phase_) {
      case phase::head:
        if (scanner_.bytes() == 0) return fail(502, "The backend closed the connection without sending a response.");
        return fail(502, "The backend closed the connection in the middle of a response head.");
      case phase::body: {
        // A body-less message completes without more bytes; anything else needs llhttp_finish().
        auto r = feed_body({});
        if (r.what != parse_result::kind::need_more) return r;
        event_ = event::none;
        llhttp_.data = this;
        const auto err = llhttp_finish(&llhttp_);
        if ((err == HPE_OK || err == HPE_PAUSED) && event_ == event::end) {
          phase_ = phase::closed;
          return {parse_result::kind::message_end, 0, {}, 0, {}};
        }
        return fail(502, "The backend closed the connection before the response was complete.");
      }
      case phase::end_pending:
      case phase::upgrade_pending:
      case phase::upgraded:
        return feed({});
      case phase::closed:
      case phase::failed:
        break;
    }
    return feed({});
  }

  void expect(std::string_view method) { expected_method_ = method; }

  // After `upgrade`, when the other side did not switch: what follows is HTTP again, starting
  // with the next message's first byte (llhttp stopped for good at the upgrade; a fresh one
  // takes over, as between two connections).
  void resume_after_declined_upgrade() {
    if (phase_ != phase::upgraded) return;
    llhttp_init(&llhttp_, request_ ? HTTP_REQUEST : HTTP_RESPONSE, &settings());
    event_ = event::none;
    start_head();
  }

  // A new parser's state with the same limits, keeping the header lists' room.
  // Field by field rather than assigning a new parser: building and moving a whole one cost
  // ~1.2k instructions per connection, two per Connection: close request (issue 6).
  void reset() {
    llhttp_init(&llhttp_, request_ ? HTTP_REQUEST : HTTP_RESPONSE, &settings());
    event_ = event::none;
    failure_ = {};
    expected_method_.clear();
    trailer_scanner_.reset(false, limits_.max_head_bytes);
    start_head();
    on_message_begin();  // the head and the per-message state; the header list keeps its room
    callback_status_ = 0;
    callback_reason_.clear();
  }

  request_head request;
  response_head response;

 private:
  enum class phase { head, body, end_pending, upgrade_pending, upgraded, closed, failed };
  enum class event { none, head, last_chunk, end, upgrade };

  static message_parser& self(llhttp_t* p) { return *static_cast<message_parser*>(p->data); }

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_message_begin = [](llhttp_t* p) { return self(p).on_message_begin(); };
      s.on_url = [](llhttp_t* p, const char* at, std::size_t n) { return self(p).on_url(at, n); };
      s.on_header_field = [](llhttp_t* p, const char* at, std::size_t n) { return self(p).on_header_field(at, n); };
      s.on_header_field_complete = [](llhttp_t* p) { return self(p).on_header_field_complete(); };
      s.on_header_value = [](llhttp_t* p, const char* at, std::size_t n) { return self(p).on_header_value(at, n); };
      s.on_header_value_complete = [](llhttp_t* p) { return self(p).on_header_value_complete(); };
      s.on_headers_complete = [](llhttp_t* p) { return self(p).on_headers_complete(); };
      s.on_body = [](llhttp_t* p, const char*, std::size_t n) { return self(p).on_body(n); };
      s.on_chunk_extension_name = [](llhttp_t* p, const char*, std::size_t n) { return self(p).on_chunk_extension(n); };
      s.on_chunk_extension_value = [](llhttp_t* p, const char*, std::size_t n) { return self(p).on_chunk_extension(n); };
      s.on_chunk_header = [](llhttp_t* p) { return self(p).on_chunk_header(); };
      s.on_message_complete = [](llhttp_t* p) { return self(p).on_message_complete(); };
      return s;
    }();
    return s;
  }

  int bad_status() const { return request_ ? 400 : 502; }

  // --- feeding ---------------------------------------------------------------------------------

  struct run_result {
    llhttp_errno_t err;
    std::size_t pos;  // where llhttp stopped, relative to the input
  };

  // One llhttp_execute over `in`; a pause is resumed at once (the caller continues from `pos`).
  run_result run(std::span<const char> in) {
    static const char nothing = 0;  // llhttp wants a valid pointer even for no bytes
    const char* data = in.empty() ? &nothing : in.data();
    llhttp_.data = this;  // we may have been moved since the last call
    event_ = event::none;
    const auto err = llhttp_execute(&llhttp_, data, in.size());
    if (err == HPE_OK) return {err, in.size()};
    const auto pos = static_cast<std::size_t>(llhttp_get_error_pos(&llhttp_) - data);
    if (err == HPE_PAUSED) llhttp_resume(&llhttp_);
    return {err, pos};
  }

  parse_result feed_head(std::span<const char> in) {
    const std::size_t scanned = scanner_.scan(in);
    const auto [err, pos] = run(in.first(scanned));
    const bool done = scanner_.current() == section_scanner::state::done;
    if (err == HPE_PAUSED && event_ == event::head) {
      if (!done || pos != scanned) return disagreement();
      phase_ = phase::body;
      return {parse_result::kind::head, pos, {}, 0, {}};
    }
    if (err != HPE_OK) return fail_llhttp(err);
    if (done) {
      // The HTTP/2 connection preface looks like a head to the scanner; llhttp waits for its
      // "SM\r\n\r\n" before saying so.
      if (request_ && scanner_.start_line() == "PRI * HTTP/2.0") return fail_llhttp(HPE_PAUSED_H2_UPGRADE);
      return disagreement();  // llhttp walked past what must be the end of the head
    }
    if (scanner_.current() == section_scanner::state::failed) {
      if (scanner_.too_large()) {
        return fail(request_ ? 431 : 502, std::string(request_ ? "The request" : "The response") + " head is larger than " +
                                              std::to_string(limits_.max_head_bytes) + " bytes.");
      }
      return fail(bad_status(), std::string(request_ ? "The request" : "The response") + " head " + scanner_.error() + ".");
    }
    return {parse_result::kind::need_more, in.size(), {}, 0, {}};
  }

  parse_result feed_body(std::span<const char> in) {
    std::size_t from = 0;
    for (;;) {
      const auto rest = in.subspan(from);
      const std::size_t limit = in_trailers_ ? trailer_scanner_.scan(rest) : rest.size();
      const auto [err, pos] = run(rest.first(limit));
      if (err == HPE_PAUSED && event_ == event::last_chunk) {
        // The trailer section starts here: from now on the scanner leads, as for a head.
        from += pos;
        in_trailers_ = true;
        trailer_scanner_.reset(false, limits_.max_head_bytes);
        continue;
      }
      const bool ended = (err == HPE_PAUSED && event_ == event::end) || err == HPE_PAUSED_UPGRADE;
      if (ended) {
        if (in_trailers_ && (trailer_scanner_.current() != section_scanner::state::done || pos != limit))
          return disagreement();
        return end_of_message(in, from + pos, err == HPE_PAUSED_UPGRADE);
      }
      if (err != HPE_OK) return fail_llhttp(err);
      if (in_trailers_) {
        if (trailer_scanner_.current() == section_scanner::state::done) return disagreement();
        if (trailer_scanner_.current() == section_scanner::state::failed) {
          if (trailer_scanner_.too_large()) {
            return fail(request_ ? 431 : 502, "The trailer section is larger than " +
                                                  std::to_string(limits_.max_head_bytes) + " bytes.");
          }
          return fail(bad_status(), std::string("The trailer section ") + trailer_scanner_.error() + ".");
        }
      }
      if (in.empty()) return {parse_result::kind::need_more, 0, {}, 0, {}};
      return {parse_result::kind::body, in.size(), in, 0, {}};
    }
  }

  // The message ended `end` bytes into `in`: the bytes before are its last body bytes.
  parse_result end_of_message(std::span<const char> in, std::size_t end, bool upgrade) {
    if (end > 0) {
      phase_ = upgrade ? phase::upgrade_pending : phase::end_pending;
      return {parse_result::kind::body, end, in.first(end), 0, {}};
    }
    if (upgrade) {
      phase_ = phase::upgraded;
      return {parse_result::kind::upgrade, 0, {}, 0, {}};
    }
    next_message();
    return {parse_result::kind::message_end, 0, {}, 0, {}};
  }

  // After a message: the next one's head. An interim (1xx) answer is always followed by the final
  // one, but llhttp ends the connection after any message that is not keep-alive, as an HTTP/1.0
  // 103 Early Hints is; a fresh llhttp reads what follows (it was a 502 before).
  void next_message() {
    if (!request_ && response.status >= 100 && response.status < 200)
      llhttp_init(&llhttp_, HTTP_RESPONSE, &settings());
    start_head();
  }

  void start_head() {
    phase_ = phase::head;
    scanner_.reset(true, limits_.max_head_bytes);
    in_trailers_ = false;
  }

  parse_result fail(int status, std::string reason) {
    phase_ = phase::failed;
    failure_ = {parse_result::kind::error, 0, {}, status, std::move(reason)};
    return failure_;
  }

  parse_result disagreement() {
    return fail(bad_status(), request_ ? "The request could not be framed unambiguously."
                                       : "The backend's response could not be framed unambiguously.");
  }

  parse_result fail_llhttp(llhttp_errno_t err) {
    if (callback_status_ != 0) return fail(callback_status_, std::move(callback_reason_));
    const std::string what = llhttp_get_error_reason(&llhttp_) ? llhttp_get_error_reason(&llhttp_) : "";
    if (!request_) return fail(502, "The backend sent a malformed response (" + what + ").");
    switch (err) {
      case HPE_INVALID_METHOD: {
        // An unknown method (a token) is unsupported; anything else (binary, TLS on a plain port)
        // is just malformed.
        const auto& line = scanner_.start_line();
        if (!line.empty() && line.front() >= 'A' && line.front() <= 'Z')
          return fail(501, "The request method is not supported.");
        return fail(400, "The request line is malformed.");
      }
      case HPE_INVALID_CONSTANT:
        if (what == "Invalid method for HTTP/x.x request") return fail(501, "The request method is not supported.");
        break;
      case HPE_PAUSED_H2_UPGRADE:
        return fail(505, "HTTP/2 is not supported here; use HTTP/1.1.");
      case HPE_CLOSED_CONNECTION:
        return fail(400, "The client sent more data after a request with Connection: close.");
      default:
        break;
    }
    return fail(400, "The request is malformed (" + what + ").");
  }

  // --- llhttp callbacks ------------------------------------------------------------------------

  int reject(int status, std::string reason) {
    callback_status_ = status;
    callback_reason_ = std::move(reason);
    return -1;
  }

  std::vector<http_header>& headers() { return request_ ? request.headers : response.headers; }
  static constexpr std::size_t typical_headers = 16;

  int on_message_begin() {
    // A fresh head, except that the header list keeps its room: growing it one header at a time
    // was most of the parser's allocations per message.
    auto kept = std::move(headers());
    kept.clear();
    if (request_) {
      request = {};
    } else {
      response = {};
    }
    if (kept.capacity() < typical_headers) kept.reserve(typical_headers);
    headers() = std::move(kept);
    field_.clear();
    value_.clear();
    value_has_ctl_ = false;
    header_count_ = 0;
    host_count_ = 0;
    host_value_.clear();
    transfer_encoding_seen_ = false;
    body_bytes_ = 0;
    chunk_extension_bytes_ = 0;
    return 0;
  }

  int on_url(const char* at, std::size_t n) {
    request.target.append(at, n);
    return 0;
  }

  // Checks are made in the *_complete callbacks, which fire at a fixed byte; span callbacks fire
  // wherever the input happened to be split, so a check there could pre-empt an llhttp error in
  // one split and not in another.
  int on_header_field(const char* at, std::size_t n) {
    if (phase_ == phase::head) field_.append(at, n);  // a trailer: the trailer scanner bounds it
    return 0;
  }

  int on_header_field_complete() {
    if (phase_ == phase::head && ++header_count_ > limits_.max_headers) {
      return reject(request_ ? 431 : 502, std::string(request_ ? "The request" : "The response") + " has more than " +
                                              std::to_string(limits_.max_headers) + " header fields.");
    }
    return 0;
  }

  int on_header_value(const char* at, std::size_t n) {
    value_has_ctl_ = value_has_ctl_ || std::any_of(at, at + n, is_ctl);
    if (phase_ == phase::head) value_.append(at, n);
    return 0;
  }

  int on_header_value_complete() {
    if (value_has_ctl_) return reject(bad_status(), "A header field value contains a control character.");
    if (phase_ != phase::head) return 0;
    if (field_.empty()) return reject(bad_status(), "A header field has an empty name.");
    // The value is kept as llhttp saw it (trailing whitespace included), so what we forward is
    // exactly what we framed; our own checks look at it trimmed.
    if (request_) {
      std::string_view trimmed = value_;
      while (!trimmed.empty() && (trimmed.back() == ' ' || trimmed.back() == '\t')) trimmed.remove_suffix(1);
      if (iequals(field_, "Host")) {
        ++host_count_;
        host_value_ = trimmed;
      } else if (iequals(field_, "Expect") && iequals(trimmed, "100-continue")) {
        request.expect_continue = true;
      } else if (iequals(field_, "Transfer-Encoding")) {
        transfer_encoding_seen_ = true;  // llhttp does not flag an empty one
      }
    }
    headers().push_back({std::move(field_), std::move(value_)});
    field_.clear();
    value_.clear();
    return 0;
  }

  int on_headers_complete() {
    const int r = request_ ? request_headers_complete() : response_headers_complete();
    if (r != 0) return r;
    event_ = event::head;
    return HPE_PAUSED;
  }

  int request_headers_complete() {
    auto& h = request;
    h.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_.method));
    h.version_major = llhttp_.http_major;
    h.version_minor = llhttp_.http_minor;
    // llhttp accepts extra spaces and other protocols (RTSP/, ICE/) here; we want exactly
    // method SP request-target SP HTTP-version.
    if (!is_request_line(scanner_.start_line(), h)) return reject(400, "The request line is malformed.");
    if (h.version_major != 1 || h.version_minor > 1) return reject(505, "Only HTTP/1.0 and HTTP/1.1 are supported.");
    if (h.target.empty() || std::any_of(h.target.begin(), h.target.end(), [](char c) {
          return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
        })) {
      return reject(400, "The request target contains invalid characters.");
    }

    std::string authority;  // of an absolute-form target
    bool absolute = false;
    if (h.method == "CONNECT") {
      if (!valid_host(h.target, true)) return reject(400, "A CONNECT request needs a host:port target.");
    } else if (h.target == "*") {
      if (h.method != "OPTIONS") return reject(400, "Only OPTIONS may have the target *.");
      h.path = "*";
    } else if (h.target.front() == '/') {
      h.path = h.target.substr(0, h.target.find_first_of("?#"));
    } else {
      const auto scheme_end = h.target.find("://");
      if (scheme_end == std::string::npos ||
          !(iequals(h.target.substr(0, scheme_end), "http") || iequals(h.target.substr(0, scheme_end), "https"))) {
        return reject(400, "The request target is neither a path nor an http(s) URL.");
      }
      const auto rest = std::string_view(h.target).substr(scheme_end + 3);
      const auto authority_end = rest.find_first_of("/?#");
      authority = rest.substr(0, authority_end);
      if (authority.empty() || authority.find('@') != std::string::npos || !valid_host(authority, false))
        return reject(400, "The authority of the request target is malformed.");
      const auto after = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
      h.path = after.substr(0, after.find_first_of("?#"));
      if (h.path.empty()) h.path = "/";
      absolute = true;
    }

    if (host_count_ > 1) return reject(400, "The request has more than one Host header.");
    if (host_count_ == 0 && h.version_minor == 1) return reject(400, "An HTTP/1.1 request must have a Host header.");
    if (host_count_ == 1 && !valid_host(host_value_, false)) return reject(400, "The Host header is malformed.");
    if (absolute) {
      if (host_count_ == 1 && !iequals(host_value_, authority))
        return reject(400, "The Host header does not match the request target.");
      h.host = authority;
    } else if (host_count_ == 1) {
      h.host = host_value_;
    } else if (h.method == "CONNECT") {
      h.host = h.target;
    }

    // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means its framing cannot be trusted.
    const bool transfer_encoding = transfer_encoding_seen_ || (llhttp_.flags & F_TRANSFER_ENCODING);
    if (transfer_encoding && h.version_minor == 0)
      return reject(400, "An HTTP/1.0 request must not use Transfer-Encoding.");
    // RFC 9112 6.3: a request's Transfer-Encoding must end in chunked. llhttp checks this too, but
    // only after this callback (the head must not be reported first), and not for an empty value.
    if (transfer_encoding && !(llhttp_.flags & F_CHUNKED))
      return reject(400, "The request's Transfer-Encoding does not end in chunked.");
    h.chunked = (llhttp_.flags & F_CHUNKED) != 0;
    if (llhttp_.flags & F_CONTENT_LENGTH) h.content_length = llhttp_.content_length;
    if (limits_.max_body_bytes != 0 && h.content_length && *h.content_length > limits_.max_body_bytes)
      return reject(413, "The request body is larger than " + std::to_string(limits_.max_body_bytes) + " bytes.");
    h.upgrade = llhttp_.upgrade != 0;
    h.keep_alive = llhttp_should_keep_alive(&llhttp_) != 0;
    return 0;
  }

  int response_headers_complete() {
    auto& h = response;
    h.status = llhttp_.status_code;
    h.version_major = llhttp_.http_major;
    h.version_minor = llhttp_.http_minor;
    if (h.version_major != 1 || h.version_minor > 1)
      return reject(502, "The backend answered with an HTTP version other than 1.0 or 1.1.");
    if (h.status < 100 || h.status > 599) return reject(502, "The backend answered with an invalid status code.");
    // Exactly HTTP-version SP 3DIGIT [SP reason-phrase] (a missing SP before an empty reason is
    // tolerated, as RFC 9112 4 recommends).
    // Built by hand: snprintf was about a tenth of the master's instructions per keep-alive
    // request (issue 6). The version is 1.0 or 1.1 and the status three digits (checked above).
    const char prefix[] = {'H', 'T', 'T', 'P', '/', '1', '.', static_cast<char>('0' + h.version_minor), ' ',
                           static_cast<char>('0' + h.status / 100), static_cast<char>('0' + h.status / 10 % 10),
                           static_cast<char>('0' + h.status % 10), '\0'};
    const std::string_view line = scanner_.start_line();
    if (!line.starts_with(prefix)) return reject(502, "The backend's status line is malformed.");
    const auto rest = line.substr(std::string_view(prefix).size());
    if (!rest.empty() && rest.front() != ' ') return reject(502, "The backend's status line is malformed.");
    h.reason = rest.empty() ? std::string{} : std::string(rest.substr(1));
    if (std::any_of(h.reason.begin(), h.reason.end(), is_ctl))
      return reject(502, "The backend's reason phrase contains a control character.");

    bool no_body = h.status / 100 == 1 || h.status == 204 || h.status == 304 || iequals(expected_method_, "HEAD");
    h.upgrade = h.status == 101 || (iequals(expected_method_, "CONNECT") && h.status / 100 == 2);
    if (h.upgrade) no_body = true;
    // What returning 1 (skip body) or 2 (upgrade) from this callback would do; we return
    // HPE_PAUSED instead, to report the head first.
    llhttp_.upgrade = h.upgrade ? 1 : 0;
    if (no_body) llhttp_.flags |= F_SKIPBODY;
    h.chunked = (llhttp_.flags & F_CHUNKED) != 0;
    if (llhttp_.flags & F_CONTENT_LENGTH) h.content_length = llhttp_.content_length;
    h.keep_alive = !h.upgrade && llhttp_should_keep_alive(&llhttp_) != 0;
    return 0;
  }

  int on_body(std::size_t n) {
    body_bytes_ += n;
    if (request_ && limits_.max_body_bytes != 0 && body_bytes_ > limits_.max_body_bytes)
      return reject(413, "The request body is larger than " + std::to_string(limits_.max_body_bytes) + " bytes.");
    return 0;
  }

  int on_chunk_extension(std::size_t n) {
    chunk_extension_bytes_ += n;
    if (chunk_extension_bytes_ > limits_.max_chunk_extension_bytes)
      return reject(bad_status(), "The chunk extensions are longer than allowed.");
    return 0;
  }

  int on_chunk_header() {
    chunk_extension_bytes_ = 0;
    if (llhttp_.content_length != 0) return 0;
    event_ = event::last_chunk;
    return HPE_PAUSED;
  }

  int on_message_complete() {
    if (llhttp_.upgrade) {
      // llhttp now stops with HPE_PAUSED_UPGRADE right here.
      event_ = event::upgrade;
      return 0;
    }
    event_ = event::end;
    return HPE_PAUSED;
  }

  llhttp_t llhttp_;
  http_limits limits_;
  bool request_;
  phase phase_ = phase::head;
  event event_ = event::none;
  parse_result failure_;
  std::string expected_method_;

  section_scanner scanner_;
  section_scanner trailer_scanner_;
  bool in_trailers_ = false;

  std::string field_, value_;
  bool value_has_ctl_ = false;
  std::size_t header_count_ = 0;
  std::size_t host_count_ = 0;
  std::string host_value_;
  bool transfer_encoding_seen_ = false;
  std::uint64_t body_bytes_ = 0;
  std::size_t chunk_extension_bytes_ = 0;
  int callback_status_ = 0;
  std::string callback_reason_;
};

}  // namespace detail

// --- request_parser / response_parser ------------------------------------------------------------

request_parser::request_parser(http_limits limits)
    : impl_(std::make_unique<detail::message_parser>(HTTP_REQUEST, limits)) {}
request_parser::request_parser(request_parser&&) noexcept = default;
request_parser& request_parser::operator=(request_parser&&) noexcept = default;
request_parser::~request_parser() = default;
parse_result request_parser::feed(std::span<const char> in) { return impl_->feed(in); }
void request_parser::reset() { impl_->reset(); }
void request_parser::resume_after_declined_upgrade() { impl_->resume_after_declined_upgrade(); }
const request_head& request_parser::head() const { return impl_->request; }

response_parser::response_parser(http_limits limits)
    : impl_(std::make_unique<detail::message_parser>(HTTP_RESPONSE, limits)) {}
response_parser::response_parser(response_parser&&) noexcept = default;
response_parser& response_parser::operator=(response_parser&&) noexcept = default;
response_parser::~response_parser() = default;
void response_parser::expect(std::string_view request_method) { impl_->expect(request_method); }
parse_result response_parser::feed(std::span<const char> in) { return impl_->feed(in); }
parse_result response_parser::finish() { return impl_->finish(); }
void response_parser::reset() { impl_->reset(); }
std::uint64_t response_parser::body_bytes_left() const { return impl_->body_bytes_left(); }
const response_head& response_parser::head() const { return impl_->response; }

// --- serialisation -------------------------------------------------------------------------------

namespace {

// An absolute-form target ("http://host/p?q") without its scheme and authority ("/p?q"); empty
// for the other forms (origin "/p", asterisk "*", CONNECT's authority).
std::string_view origin_form_of_absolute(const request_head& head) {
  if (head.target.empty() || head.target.front() == '/' || head.target == "*" || head.method == "CONNECT") return {};
  const auto scheme_end = head.target.find("://");
  if (scheme_end == std::string::npos) return {};
  const auto rest = std::string_view(head.target).substr(scheme_end + 3);
  const auto authority_end = rest.find_first_of("/?#");
  return authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
}

void append_request_line(std::string& out, const request_head& head, std::string_view target) {
  out.append(head.method).append(" ").append(target).append(" HTTP/");
  out.append(std::to_string(head.version_major)).append(".").append(std::to_string(head.version_minor)).append("\r\n");
}

void append_headers(std::string& out, std::span<const http_header> headers, std::span<const http_header> extra) {
  for (const auto& h : headers) {
    const bool replaced = std::any_of(extra.begin(), extra.end(), [&](const http_header& e) { return iequals(e.name, h.name); });
    if (replaced) continue;
    out.append(h.name).append(": ").append(h.value).append("\r\n");
  }
  for (const auto& e : extra) out.append(e.name).append(": ").append(e.value).append("\r\n");
  out.append("\r\n");
}

}  // namespace

std::string serialize_request_head(const request_head& head, std::span<const http_header> extra) {
  std::string out;
  out.reserve(256);
  append_request_line(out, head, head.target);
  append_headers(out, head.headers, extra);
  return out;
}

std::string serialize_response_head(const response_head& head, std::span<const http_header> extra) {
  char line[32];
  std::snprintf(line, sizeof line, "HTTP/%d.%d %03d ", head.version_major, head.version_minor, head.status);
  std::string out(line);
  out.append(head.reason).append("\r\n");
  append_headers(out, head.headers, extra);
  return out;
}

std::string serialize_forwarded_request_head(const request_head& head, std::string_view client_ip, bool tls) {
  constexpr std::string_view xff = "X-Forwarded-For";
  std::size_t size = head.method.size() + head.target.size() + head.host.size() + client_ip.size() + 96;
  for (const auto& h : head.headers) size += h.name.size() + h.value.size() + 4;
  std::string out;
  out.reserve(size);  // one allocation: this runs for every proxied request
  // RFC 9112 3.2.1, 3.2.2: towards an origin server a request goes in origin form, its Host being
  // the authority of an absolute-form target. The service routes (as the master did) on the path.
  const bool absolute = !head.target.empty() && head.target.front() != '/' && head.target != "*" && head.method != "CONNECT";
  if (absolute) {
    const auto origin = origin_form_of_absolute(head);
    if (origin.empty()) append_request_line(out, head, "/");
    else if (origin.front() != '/') append_request_line(out, head, std::string("/").append(origin));  // "?q"
    else append_request_line(out, head, origin);
    out.append("Host: ").append(head.host).append("\r\n");
  } else {
    append_request_line(out, head, head.target);
  }
  for (const auto& h : head.headers) {
    if (iequals(h.name, xff) || iequals(h.name, "X-Forwarded-Proto") || iequals(h.name, "X-Forwarded-Host")) continue;
    if (absolute && iequals(h.name, "Host")) continue;
    // RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is to be ignored; passed
    // on, it would draw a 100 Continue, which an HTTP/1.0 client must not get (15.2).
    if (head.version_minor == 0 && iequals(h.name, "Expect")) continue;
    out.append(h.name).append(": ").append(h.value).append("\r\n");
  }
  out.append(xff).append(": ");
  for (const auto& h : head.headers) {
    if (iequals(h.name, xff) && !h.value.empty()) out.append(h.value).append(", ");
  }
  out.append(client_ip).append("\r\nX-Forwarded-Proto: ").append(tls ? "https" : "http");
  out.append("\r\nX-Forwarded-Host: ").append(head.host).append("\r\n\r\n");
  return out;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string make_error_response(int status, std::string_view reason) {
  std::string body(reason.empty() ? reason_phrase(status) : reason);
  std::replace_if(body.begin(), body.end(), [](char c) { return is_ctl(c) || c == '\t'; }, ' ');
  body.push_back('\n');
  char line[32];
  std::snprintf(line, sizeof line, "HTTP/1.1 %03d ", status);
  std::string out(line);
  out.append(reason_phrase(status)).append("\r\n");
  out.append("Content-Type: text/plain\r\n");
  out.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  out.append("Connection: close\r\n\r\n");
  out.append(body);
  return out;
}

}  // namespace socketmaster::server
