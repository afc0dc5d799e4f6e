// TLS termination: one OpenSSL context per registration's certificate on a TLS listener, and SNI
// selection among them with the same label-boundary suffix rule as HTTP routing. Without SNI (or
// with a name nobody registered) the default is deterministic: the oldest registration still present.
// TLS 1.2 and later; ALPN offers http/1.1 only.
//
// Concurrency: from the master's executor. Ownership: a connection keeps the selection state alive
// (shared) through its handshake, even if the registration leaves meanwhile.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/ssl/context.hpp>

namespace socketmaster::server {

class tls_contexts {
 public:
  tls_contexts();
  ~tls_contexts();

  // Whether `chain_pem` and `key_pem` parse and belong together; empty when fine, else a sentence.
  static std::string check(const std::string& chain_pem, const std::string& key_pem);

  // Adds a registration's certificate for `domain_suffix` (normalised; empty = any name).
  std::string add(std::uint64_t registration_id, std::string_view domain_suffix, const std::string& chain_pem,
                  const std::string& key_pem);
  void remove(std::uint64_t registration_id);
  bool empty() const;

  // The context a new connection's handshake starts with (the default certificate); SNI may switch
  // it. The returned pointer keeps what the handshake needs alive. Null when nothing is registered.
  std::shared_ptr<asio::ssl::context> handshake_context() const;

  // Whether a request for `host` may be answered on a connection whose handshake named `sni`: both
  // select the same certificate. Otherwise the answer is 421 (RFC 9110 7.4): the connection was
  // set up for another domain's certificate, and its client never checked one for `host`.
  bool serves_on(std::string_view sni, std::string_view host) const;

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace socketmaster::server
