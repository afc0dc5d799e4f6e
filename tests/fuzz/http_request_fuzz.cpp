// libFuzzer target: bytes from a public client fed to request_parser the way the HTTP router feeds
// them, once all at once and once in pieces of varying size chosen by the input. Checks the
// framer's promises:
//   * consumed never exceeds the input; need_more consumes everything; a body event is exactly the
//     consumed prefix of the input; message_end, upgrade and error consume nothing;
//   * every call makes progress (no two zero-byte events in a row; error and upgrade are sticky);
//   * a parsed head serialises to bytes that parse back to the same head, and a head without a
//     body is followed by message_end (or upgrade) at once: nothing is refused after a head that
//     could have been refused before it;
//   * errors carry one of our statuses and a reason;
//   * how the bytes are split never changes the events (bodies compared whole, except for the
//     part of a broken body already handed out before an error).
// The first input byte is not wire data: its low bits seed the piece sizes and its top bit picks
// tight limits (small head, few headers, small bodies) so the limit paths are reached too.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "server/http_codec.hpp"

namespace {

using namespace socketmaster::server;
using kind = parse_result::kind;

#define FUZZ_ASSERT(cond)                                                         \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

bool same_head(const request_head& a, const request_head& b) {
  if (a.headers.size() != b.headers.size()) return false;
  for (std::size_t i = 0; i < a.headers.size(); ++i) {
    if (a.headers[i].name != b.headers[i].name || a.headers[i].value != b.headers[i].value) return false;
  }
  return a.method == b.method && a.target == b.target && a.path == b.path && a.version_major == b.version_major &&
         a.version_minor == b.version_minor && a.host == b.host && a.keep_alive == b.keep_alive &&
         a.upgrade == b.upgrade && a.expect_continue == b.expect_continue && a.chunked == b.chunked &&
         a.content_length == b.content_length;
}

void check_round_trip(const request_head& head, const http_limits& limits) {
  const std::string wire = serialize_request_head(head);
  // Serialising may add bytes (": " after each name), so the re-parse gets room for them.
  http_limits roomy = limits;
  roomy.max_head_bytes = limits.max_head_bytes * 2 + 64;
  request_parser again(roomy);
  const auto r = again.feed({wire.data(), wire.size()});
  FUZZ_ASSERT(r.what == kind::head);
  FUZZ_ASSERT(r.consumed == wire.size());
  FUZZ_ASSERT(same_head(head, again.head()));
}

struct outcome {
  std::vector<std::string> events;  // consecutive bodies merged
  std::vector<request_head> heads;
};

// Pieces of 1..16 bytes from a small LCG, or everything at once when seed is 0.
outcome run(std::string_view wire, unsigned seed, const http_limits& limits) {
  outcome out;
  request_parser parser(limits);
  std::string buffer;
  std::size_t next = 0;
  std::uint32_t state = seed;
  int zero_progress = 0;
  bool bodyless_head = false;  // the last event was the head of a message without a body
  const std::size_t max_calls = 4 * wire.size() + 16;
  for (std::size_t calls = 0;; ++calls) {
    FUZZ_ASSERT(calls < max_calls);
    const auto r = parser.feed({buffer.data(), buffer.size()});
    FUZZ_ASSERT(r.consumed <= buffer.size());
    if (bodyless_head) {
      FUZZ_ASSERT(r.what == kind::message_end || r.what == kind::upgrade);
      bodyless_head = false;
    }
    switch (r.what) {
      case kind::need_more:
        FUZZ_ASSERT(r.consumed == buffer.size());
        break;
      case kind::head:
        FUZZ_ASSERT(r.consumed > 0);
        FUZZ_ASSERT(parser.head().version_major == 1 && parser.head().version_minor <= 1);
        check_round_trip(parser.head(), limits);
        bodyless_head = !parser.head().chunked && parser.head().content_length.value_or(0) == 0;
        out.heads.push_back(parser.head());
        out.events.push_back("head");
        break;
      case kind::body:
        FUZZ_ASSERT(r.consumed > 0);
        FUZZ_ASSERT(r.body.data() == buffer.data() && r.body.size() == r.consumed);
        if (!out.events.empty() && out.events.back().rfind("body:", 0) == 0) {
          out.events.back().append(r.body.data(), r.body.size());
        } else {
          out.events.push_back("body:" + std::string(r.body.data(), r.body.size()));
        }
        break;
      case kind::message_end:
        FUZZ_ASSERT(r.consumed == 0);
        out.events.push_back("end");
        break;
      case kind::upgrade:
      case kind::error: {
        FUZZ_ASSERT(r.consumed == 0);
        if (r.what == kind::error) {
          FUZZ_ASSERT(r.status == 400 || r.status == 413 || r.status == 431 || r.status == 501 || r.status == 505);
          FUZZ_ASSERT(!r.reason.empty());
          out.events.push_back("error:" + std::to_string(r.status));
        } else {
          // Everything after the upgrade is the tunnel's: it must be exactly the unconsumed bytes.
          out.events.push_back("upgrade:" + buffer + std::string(wire.substr(next)));
        }
        const auto again = parser.feed({buffer.data(), buffer.size()});  // sticky
        FUZZ_ASSERT(again.what == r.what && again.consumed == 0 && again.status == r.status);
        return out;
      }
    }
    if (r.what != kind::need_more) {
      zero_progress = r.consumed == 0 ? zero_progress + 1 : 0;
      FUZZ_ASSERT(zero_progress < 2);
    }
    buffer.erase(0, r.consumed);
    if (r.what == kind::need_more) {
      if (next == wire.size()) return out;
      std::size_t n = wire.size() - next;
      if (seed != 0) {
        state = state * 1103515245u + 12345u;
        n = std::min<std::size_t>(n, 1 + (state >> 16) % 16);
      }
      buffer.append(wire.substr(next, n));
      next += n;
    }
  }
}

// Drops the body handed out just before an error (how much of it came out depends on the split).
std::vector<std::string> settled(std::vector<std::string> events) {
  if (events.size() >= 2 && events.back().rfind("error:", 0) == 0 && events[events.size() - 2].rfind("body:", 0) == 0)
    events.erase(events.end() - 2);
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const unsigned control = data[0];
  const std::string_view wire(reinterpret_cast<const char*>(data + 1), size - 1);
  http_limits limits;
  if (control & 0x80) {
    limits.max_head_bytes = 256;
    limits.max_headers = 4;
    limits.max_body_bytes = 16;
    limits.max_chunk_extension_bytes = 8;
  }
  const auto whole = run(wire, 0, limits);
  const auto split = run(wire, (control & 0x7f) + 1, limits);
  FUZZ_ASSERT(settled(whole.events) == settled(split.events));
  FUZZ_ASSERT(whole.heads.size() == split.heads.size());
  for (std::size_t i = 0; i < whole.heads.size(); ++i) FUZZ_ASSERT(same_head(whole.heads[i], split.heads[i]));
  return 0;
}
