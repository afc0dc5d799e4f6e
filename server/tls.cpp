// See tls.hpp.
#include "tls.hpp"

#include <algorithm>
#include <cstring>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "route_table.hpp"

namespace socketmaster::server {

namespace {

std::string openssl_error(const char* what) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  char buf[256] = {};
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  return std::string(what) + (e ? std::string(": ") + buf : std::string());
}

// Loads chain and key into `ctx`; empty on success, else a sentence.
std::string load(SSL_CTX* ctx, const std::string& chain_pem, const std::string& key_pem) {
  ERR_clear_error();
  BIO* chain = BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size()));
  X509* leaf = PEM_read_bio_X509_AUX(chain, nullptr, nullptr, nullptr);
  if (!leaf) {
    BIO_free(chain);
    return openssl_error("the certificate chain is not a PEM certificate");
  }
  std::string problem;
  if (SSL_CTX_use_certificate(ctx, leaf) != 1) problem = openssl_error("the certificate was refused");
  X509_free(leaf);
  SSL_CTX_clear_chain_certs(ctx);
  while (problem.empty()) {
    X509* extra = PEM_read_bio_X509(chain, nullptr, nullptr, nullptr);
    if (!extra) {
      ERR_clear_error();  // end of the chain
      break;
    }
    if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
      X509_free(extra);
      problem = openssl_error("an intermediate certificate was refused");
    }
  }
  BIO_free(chain);
  if (!problem.empty()) return problem;
  BIO* keybio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(keybio, nullptr, nullptr, nullptr);
  BIO_free(keybio);
  if (!key) return openssl_error("the private key is not a PEM private key (encrypted keys are not supported)");
  const int used = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (used != 1) return openssl_error("the private key was refused");
  if (SSL_CTX_check_private_key(ctx) != 1) return openssl_error("the private key does not match the certificate");
  return {};
}

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
                void*) {
  static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, http11, sizeof http11, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;  // a client that offers only other protocols still gets http/1.1 bytes
}

}  // namespace

struct tls_contexts::state {
  struct entry {
    std::uint64_t id;
    std::string suffix;
    std::shared_ptr<asio::ssl::context> context;
  };
  std::vector<entry> entries;  // by registration id, oldest first

  // The best certificate for `name`: longest matching suffix, oldest first among equals.
  const entry* choose(std::string_view name) const {
    const entry* best = nullptr;
    const std::string host = normalize_host(name);
    for (const auto& e : entries)
      if (domain_matches(host, e.suffix) && (!best || e.suffix.size() > best->suffix.size())) best = &e;
    return best;
  }

  static int on_servername(SSL* ssl, int*, void* arg) {
    auto* st = static_cast<state*>(arg);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return SSL_TLSEXT_ERR_NOACK;
    const entry* e = st->choose(name);
    if (e && SSL_get_SSL_CTX(ssl) != e->context->native_handle()) SSL_set_SSL_CTX(ssl, e->context->native_handle());
    return SSL_TLSEXT_ERR_OK;
  }
};

tls_contexts::tls_contexts() : state_(std::make_shared<state>()) {}
tls_contexts::~tls_contexts() = default;

std::string tls_contexts::check(const std::string& chain_pem, const std::string& key_pem) {
  asio::ssl::context ctx(asio::ssl::context::tls_server);
  return load(ctx.native_handle(), chain_pem, key_pem);
}

std::string tls_contexts::add(std::uint64_t registration_id, std::string_view domain_suffix, const std::string& chain_pem,
                              const std::string& key_pem) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (auto problem = load(native, chain_pem, key_pem); !problem.empty()) return problem;
  SSL_CTX_set_alpn_select_cb(native, select_alpn, nullptr);
  // Every context carries the SNI callback: the handshake may start on any of them.
  SSL_CTX_set_tlsext_servername_callback(native, &state::on_servername);
  SSL_CTX_set_tlsext_servername_arg(native, state_.get());
  state_->entries.push_back({registration_id, std::string(domain_suffix), std::move(ctx)});
  return {};
}

void tls_contexts::remove(std::uint64_t registration_id) {
  std::erase_if(state_->entries, [&](const state::entry& e) { return e.id == registration_id; });
}

bool tls_contexts::empty() const { return state_->entries.empty(); }

bool tls_contexts::serves_on(std::string_view sni, std::string_view host) const {
  return state_->choose(sni) == state_->choose(host);
}

std::shared_ptr<asio::ssl::context> tls_contexts::handshake_context() const {
  if (state_->entries.empty()) return nullptr;
  // Aliasing pointer: owns the whole selection state (the SNI callback's argument) while pointing at
  // the default context, so a handshake in progress survives the registry changing meanwhile.
  auto holder = std::make_shared<std::pair<std::shared_ptr<state>, std::shared_ptr<asio::ssl::context>>>(
      state_, state_->entries.front().context);
  return std::shared_ptr<asio::ssl::context>(holder, holder->second.get());
}

}  // namespace socketmaster::server
