// libFuzzer target: bytes a peer sends where a handshake message is expected. Measures them with
// message_size(), decodes the measured message (and the raw input, which exercises the framing
// checks) as both a request and a response, and checks the invariants: nothing throws, the size is
// sane, and whatever decodes re-encodes to the same values.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "protocol/errors.hpp"
#include "protocol/handshake.hpp"

namespace {

using namespace socketmaster;

void check(bool ok) {
  if (!ok) std::abort();
}

void check_error(const decode_result& r) {
  check(r.error == errc::bad_handshake || r.error == errc::handshake_too_large);
  check(!r.detail.empty());
}

void decode_both(std::span<const std::byte> message) {
  handshake_request request;
  if (const auto r = decode_request(message, request); r.ok()) {
    handshake_request again;
    check(decode_request(encode(request), again).ok());
    check(again == request);
  } else {
    check_error(r);
  }
  handshake_response response;
  if (const auto r = decode_response(message, response); r.ok()) {
    handshake_response again;
    check(decode_response(encode(response), again).ok());
    check(again == response);
  } else {
    check_error(r);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto input = std::as_bytes(std::span(data, size));
  const auto measured = message_size(input, max_handshake_bytes);
  switch (measured.what) {
    case message_size_result::kind::need_more:
      check(measured.need_at_least > size && measured.need_at_least <= max_handshake_bytes);
      break;
    case message_size_result::kind::complete:
      check(measured.total_bytes % 8 == 0 && measured.total_bytes <= max_handshake_bytes);
      if (measured.total_bytes <= size) decode_both(input.first(measured.total_bytes));
      break;
    case message_size_result::kind::error:
      check(!measured.error.empty());
      break;
  }
  decode_both(input);
  return 0;
}
