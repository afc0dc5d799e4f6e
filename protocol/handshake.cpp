// The handshake codec: plain C++ values to and from Cap'n Proto messages (see handshake.hpp). The
// generated schema code and Cap'n Proto itself stay private to this file.
#include "protocol/handshake.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string_view>

#include "protocol/errors.hpp"
#include "protocol/socketmaster.capnp.h"

namespace socketmaster {

namespace {

constexpr std::size_t word_bytes = sizeof(capnp::word);
static_assert(word_bytes == 8);

std::uint32_t load_le32(std::span<const std::byte> b, std::size_t at) {
  return std::uint32_t(b[at]) | std::uint32_t(b[at + 1]) << 8 | std::uint32_t(b[at + 2]) << 16 |
         std::uint32_t(b[at + 3]) << 24;
}

capnp::Text::Reader text(const std::string& s) {
  // std::string keeps a NUL after its last byte, which is what Text::Reader requires.
  return capnp::Text::Reader(s.c_str(), s.size());
}

std::vector<std::byte> to_bytes(capnp::MessageBuilder& message) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const auto bytes = words.asBytes();
  std::vector<std::byte> out(bytes.size());
  std::memcpy(out.data(), bytes.begin(), bytes.size());
  return out;
}

decode_result failure(errc code, std::string detail) { return {make_error_code(code), std::move(detail)}; }

// message_size() plus which error it was, so the decoders can tell "too large" from "malformed".
message_size_result measure(std::span<const std::byte> prefix, std::size_t max_message_bytes, errc& why) {
  message_size_result r;
  const auto fail = [&](errc code, std::string what) {
    why = code;
    r.what = message_size_result::kind::error;
    r.error = std::move(what);
    return r;
  };
  if (prefix.size() < 4) {
    r.need_at_least = 4;
    return r;
  }
  // The table: u32 (segment count - 1), one u32 size in words per segment, padded to a whole word.
  const std::uint64_t segments = std::uint64_t{load_le32(prefix, 0)} + 1;
  if (segments > max_handshake_segments) {
    return fail(errc::bad_handshake, "the message announces " + std::to_string(segments) +
                                         " segments; at most " + std::to_string(max_handshake_segments) +
                                         " are allowed");
  }
  const std::uint64_t table_bytes = (segments + 2) / 2 * word_bytes;
  const auto too_large = [&](std::uint64_t at_least) {
    return fail(errc::handshake_too_large, "the message is at least " + std::to_string(at_least) +
                                               " bytes; at most " + std::to_string(max_message_bytes) +
                                               " are allowed");
  };
  if (table_bytes > max_message_bytes) return too_large(table_bytes);
  std::uint64_t total = table_bytes;
  const std::size_t known = std::min<std::uint64_t>(segments, (prefix.size() - 4) / 4);
  for (std::size_t i = 0; i < known; ++i) {
    // At most 511 * (2^32 - 1) * 8 in all: no overflow in 64 bits.
    total += std::uint64_t{load_le32(prefix, 4 + 4 * i)} * word_bytes;
    if (total > max_message_bytes) return too_large(total);
  }
  if (known < segments) {
    r.need_at_least = static_cast<std::size_t>(table_bytes);
    return r;
  }
  r.what = message_size_result::kind::complete;
  r.total_bytes = static_cast<std::size_t>(total);
  r.need_at_least = r.total_bytes;
  return r;
}

// Checks that `whole` is exactly one message and copies it to word-aligned memory, which
// FlatArrayMessageReader requires (a std::byte buffer from the network has no such guarantee).
decode_result aligned_copy(std::span<const std::byte> whole, kj::Array<capnp::word>& words) {
  errc why = errc::bad_handshake;
  const auto size = measure(whole, max_handshake_bytes, why);
  switch (size.what) {
    case message_size_result::kind::error:
      return failure(why, "malformed handshake: " + size.error);
    case message_size_result::kind::need_more:
      return failure(errc::bad_handshake, "malformed handshake: the message ends inside its segment table");
    case message_size_result::kind::complete:
      break;
  }
  if (whole.size() != size.total_bytes) {
    return failure(errc::bad_handshake,
                   "malformed handshake: the segment table announces " + std::to_string(size.total_bytes) +
                       " bytes but " + std::to_string(whole.size()) + " were given");
  }
  words = kj::heapArray<capnp::word>(size.total_bytes / word_bytes);
  std::memcpy(words.begin(), whole.data(), size.total_bytes);
  return {};
}

capnp::ReaderOptions reader_options(const kj::Array<capnp::word>& words) {
  capnp::ReaderOptions options;
  // An honest message is read about once: every object is visited a single time. A message whose
  // pointers share or loop over the same words (an amplification attack) runs out of budget.
  options.traversalLimitInWords = std::max<std::uint64_t>(words.size(), 64);
  options.nestingLimit = 16;
  return options;
}

// Copies a text field after checking its length; false (with `detail` set) if it is unacceptable.
bool copy_text(capnp::Text::Reader in, std::size_t limit, std::string_view field, std::string& out,
               std::string& detail) {
  if (in.size() > limit) {
    detail = "malformed handshake: " + std::string(field) + " is " + std::to_string(in.size()) +
             " bytes long; at most " + std::to_string(limit) + " are allowed";
    return false;
  }
  if (std::memchr(in.begin(), '\0', in.size()) != nullptr) {
    detail = "malformed handshake: " + std::string(field) + " contains a NUL byte";
    return false;
  }
  out.assign(in.begin(), in.size());
  return true;
}

std::string kj_detail(const kj::Exception& e) {
  return "malformed handshake: not a valid Cap'n Proto message (" + std::string(e.getDescription().cStr()) +
         ")";
}

}  // namespace

const char* to_string(rejection_code code) noexcept {
  switch (code) {
    case rejection_code::bad_request: return "badRequest";
    case rejection_code::unsupported_version: return "unsupportedVersion";
    case rejection_code::unauthorized: return "unauthorized";
    case rejection_code::bind_failed: return "bindFailed";
    case rejection_code::conflict: return "conflict";
    case rejection_code::bad_certificate: return "badCertificate";
    case rejection_code::internal: return "internal";
  }
  return "unknown";
}

std::vector<std::byte> encode(const handshake_request& request) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<schema::HandshakeRequest>();
  root.setVersion(request.version);
  root.setToken(text(request.token));
  auto socket = root.initSocket();
  const auto& in = request.socket;
  socket.setAddress(text(in.address));
  socket.setPort(in.port);
  if (in.http) {
    auto http = socket.initHttp();
    http.setDomainSuffix(text(in.http->domain_suffix));
    http.setPathPrefix(text(in.http->path_prefix));
  }
  if (in.tls) {
    auto tls = socket.initTls();
    tls.setCertificateChainPem(text(in.tls->certificate_chain_pem));
    tls.setPrivateKeyPem(text(in.tls->private_key_pem));
  }
  socket.setProxyProtocol(in.proxy_protocol);
  root.setSharedRing(request.shared_ring);
  return to_bytes(message);
}

std::vector<std::byte> encode(const handshake_response& response) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<schema::HandshakeResponse>();
  if (const auto* a = std::get_if<handshake_accepted>(&response)) {
    auto accepted = root.initAccepted();
    accepted.setRegistrationId(a->registration_id);
    accepted.setBoundAddress(text(a->bound_address));
    accepted.setSharedRing(a->shared_ring);
  } else {
    const auto& r = std::get<handshake_rejected>(response);
    auto rejected = root.initRejected();
    // rejection_code mirrors Rejected.Code value for value.
    rejected.setCode(static_cast<schema::Rejected::Code>(r.code));
    rejected.setMessage(text(r.message));
  }
  return to_bytes(message);
}

message_size_result message_size(std::span<const std::byte> prefix, std::size_t max_message_bytes) {
  errc why{};
  return measure(prefix, max_message_bytes, why);
}

decode_result decode_request(std::span<const std::byte> whole_message, handshake_request& out) {
  kj::Array<capnp::word> words;
  if (auto r = aligned_copy(whole_message, words); !r.ok()) return r;
  handshake_request decoded;
  std::string detail;
  try {
    capnp::FlatArrayMessageReader message(words, reader_options(words));
    const auto root = message.getRoot<schema::HandshakeRequest>();
    decoded.version = root.getVersion();
    if (decoded.version == 0) {
      return failure(errc::bad_handshake, "malformed handshake: the request has no version");
    }
    if (!copy_text(root.getToken(), max_token_bytes, "token", decoded.token, detail)) {
      return failure(errc::bad_handshake, std::move(detail));
    }
    if (!root.hasSocket()) {
      return failure(errc::bad_handshake, "malformed handshake: the request has no socket definition");
    }
    const auto socket = root.getSocket();
    auto& s = decoded.socket;
    if (!copy_text(socket.getAddress(), max_address_bytes, "socket.address", s.address, detail)) {
      return failure(errc::bad_handshake, std::move(detail));
    }
    s.port = socket.getPort();
    if (socket.hasHttp()) {
      const auto http = socket.getHttp();
      auto& h = s.http.emplace();
      if (!copy_text(http.getDomainSuffix(), max_domain_suffix_bytes, "socket.http.domainSuffix",
                     h.domain_suffix, detail) ||
          !copy_text(http.getPathPrefix(), max_path_prefix_bytes, "socket.http.pathPrefix", h.path_prefix,
                     detail)) {
        return failure(errc::bad_handshake, std::move(detail));
      }
    }
    if (socket.hasTls()) {
      const auto tls = socket.getTls();
      auto& t = s.tls.emplace();
      if (!copy_text(tls.getCertificateChainPem(), max_pem_bytes, "socket.tls.certificateChainPem",
                     t.certificate_chain_pem, detail) ||
          !copy_text(tls.getPrivateKeyPem(), max_pem_bytes, "socket.tls.privateKeyPem", t.private_key_pem,
                     detail)) {
        return failure(errc::bad_handshake, std::move(detail));
      }
    }
    s.proxy_protocol = socket.getProxyProtocol();
    decoded.shared_ring = root.getSharedRing();
  } catch (const kj::Exception& e) {
    return failure(errc::bad_handshake, kj_detail(e));
  }
  out = std::move(decoded);
  return {};
}

decode_result decode_response(std::span<const std::byte> whole_message, handshake_response& out) {
  kj::Array<capnp::word> words;
  if (auto r = aligned_copy(whole_message, words); !r.ok()) return r;
  handshake_response decoded;
  std::string detail;
  try {
    capnp::FlatArrayMessageReader message(words, reader_options(words));
    const auto root = message.getRoot<schema::HandshakeResponse>();
    switch (root.which()) {
      case schema::HandshakeResponse::ACCEPTED: {
        const auto in = root.getAccepted();
        handshake_accepted a;
        a.registration_id = in.getRegistrationId();
        a.shared_ring = in.getSharedRing();
        if (!copy_text(in.getBoundAddress(), max_address_bytes, "accepted.boundAddress", a.bound_address,
                       detail)) {
          return failure(errc::bad_handshake, std::move(detail));
        }
        decoded = std::move(a);
        break;
      }
      case schema::HandshakeResponse::REJECTED: {
        const auto in = root.getRejected();
        handshake_rejected r;
        const auto code = static_cast<std::uint16_t>(in.getCode());
        // A code added after this build still means "rejected"; report it as internal.
        r.code = code <= static_cast<std::uint16_t>(rejection_code::internal) ? static_cast<rejection_code>(code)
                                                                               : rejection_code::internal;
        if (!copy_text(in.getMessage(), max_message_text_bytes, "rejected.message", r.message, detail)) {
          return failure(errc::bad_handshake, std::move(detail));
        }
        decoded = std::move(r);
        break;
      }
      default:
        return failure(errc::bad_handshake, "malformed handshake: the response is neither accepted nor rejected");
    }
  } catch (const kj::Exception& e) {
    return failure(errc::bad_handshake, kj_detail(e));
  }
  out = std::move(decoded);
  return {};
}

std::string same_host_socket_name(std::string_view bound) {
  std::string name(1, '\0');
  name += "socketmaster/control/";
  name += bound;
  return name;
}

std::string read_token_file(const std::string& path) {
  std::ifstream f(path);
  std::string token;
  if (!f) throw std::runtime_error("cannot read the token file " + path);
  std::getline(f, token);  // an empty file leaves it empty
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) throw std::runtime_error("the token file " + path + " holds no token (its first line is empty)");
  if (token.size() > max_token_bytes)
    throw std::runtime_error("the token in " + path + " is longer than " + std::to_string(max_token_bytes) + " bytes");
  return token;
}

}  // namespace socketmaster
