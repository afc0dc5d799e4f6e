// TLS termination by the master, end to end: two domains share one port, each with its own
// certificate chosen by SNI (checked with curl --resolve and openssl s_client; TLS 1.0 and 1.1
// refused), a Host served with another certificate than the SNI gets 421, certificates that cannot
// work are refused at registration, and a WebSocket works over wss. Certificates are made by
// openssl at test time.
#include <doctest/doctest.h>

#include <string>
#include <tuple>
#include <vector>

#include "tests/e2e/e2e_support.hpp"

using namespace socketmaster::e2e;

namespace {

std::vector<std::string> https(const std::string& name, std::uint16_t port, const std::string& cafile,
                               std::string_view path = "/x") {
  const auto p = std::to_string(port);
  return {"--resolve", name + ":" + p + ":127.0.0.1", "--cacert", cafile, "https://" + name + ":" + p + std::string(path)};
}

// openssl s_client's account of the handshake (stdin is /dev/null: it connects, reports, leaves).
std::string s_client(std::uint16_t port, std::vector<std::string> extra) {
  std::vector<std::string> argv{"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return run(argv).out;
}

// a.test and b.test on one TLS port, each with its own certificate and service ("TLS A", "TLS B").
struct two_tls_domains {
  temp_dir dir;
  certificate cert_a = make_certificate(dir, "a.test");
  certificate cert_b = make_certificate(dir, "b.test");
  master_process m;
  go_service a{m, {"-port", "0", "-domain", "a.test", "-tls-cert", cert_a.cert, "-tls-key", cert_a.key, "-text", "TLS A"}};
  std::uint16_t port = a.accepted().port;
  go_service b{m, {"-port", std::to_string(port), "-domain", "b.test", "-tls-cert", cert_b.cert, "-tls-key", cert_b.key,
                   "-text", "TLS B"}};
};

}  // namespace

TEST_CASE("TLS: two domains share one port, each served with its own certificate chosen by SNI") {
  two_tls_domains t;
  const auto& [cert_a, cert_b, port] = std::tie(t.cert_a, t.cert_b, t.port);
  CHECK(t.b.accepted().port == port);

  // curl verifies each name against only that domain's certificate.
  auto ra = curl(https("a.test", port, cert_a.cert));
  CHECK(ra.status == 200);
  CHECK(ra.body.starts_with("TLS A\npath: /x\n"));
  auto rb = curl(https("b.test", port, cert_b.cert));
  CHECK(rb.status == 200);
  CHECK(rb.body.starts_with("TLS B\npath: /x\n"));
  // b.test is not served with a.test's certificate (curl: 60, peer certificate cannot be verified).
  CHECK(run(curl_argv(https("b.test", port, cert_a.cert))).status.code == 60);

  // The service sees plaintext, told it came over https.
  CHECK(curl(https("b.test", port, cert_b.cert, "/headers")).body.find("X-Forwarded-Proto: https\n") != std::string::npos);

  CHECK(s_client(port, {"-servername", "b.test"}).find("subject=CN = b.test") != std::string::npos);
  CHECK(s_client(port, {"-servername", "api.a.test"}).find("subject=CN = a.test") != std::string::npos);  // suffix rule
  // Without SNI the default is deterministic: the oldest registration's certificate.
  CHECK(s_client(port, {"-noservername"}).find("subject=CN = a.test") != std::string::npos);
  // TLS 1.2 and 1.3 (the master's minimum is 1.2).
  CHECK(s_client(port, {"-servername", "a.test", "-tls1_2"}).find("New, TLSv1.2,") != std::string::npos);
  CHECK(s_client(port, {"-servername", "a.test", "-tls1_3"}).find("New, TLSv1.3,") != std::string::npos);
  // TLS 1.1 and 1.0 are refused by the master with a protocol_version alert. The client's own
  // security level would stop it offering them at all, so it is lowered: the alert is the master's.
  for (const char* old_version : {"-tls1_1", "-tls1"}) {
    CAPTURE(old_version);
    const auto refused = run({"/bin/sh", "-c", "exec openssl s_client \"$@\" 2>&1 </dev/null", "s_client", "-connect",
                              "127.0.0.1:" + std::to_string(port), "-servername", "a.test", old_version, "-cipher",
                              "DEFAULT@SECLEVEL=0"});
    CHECK(refused.out.find("alert protocol version") != std::string::npos);
    CHECK(refused.out.find("New, TLSv1") == std::string::npos);
    CHECK(refused.status.code != 0);
  }
  // ALPN: http/1.1 is chosen even when h2 is offered first.
  CHECK(s_client(port, {"-servername", "a.test", "-alpn", "h2,http/1.1"}).find("ALPN protocol: http/1.1") !=
        std::string::npos);
}

TEST_CASE("TLS: a request for a host served with another certificate than the connection's SNI gets 421") {
  two_tls_domains t;
  const auto& [cert_a, cert_b, port] = std::tie(t.cert_a, t.cert_b, t.port);
  const auto p = std::to_string(port);
  t.b.accepted();

  // Verified as a.test, asking for b.test: b.test's service must not answer on a.test's certificate.
  auto args = https("a.test", port, cert_a.cert);
  args.insert(args.begin(), {"-H", "Host: b.test"});
  const auto fronted = curl(args);
  CHECK(fronted.status == 421);
  CHECK(fronted.body.find("TLS B") == std::string::npos);
  // A name below a.test is served with a.test's certificate: answered.
  args = https("a.test", port, cert_a.cert);
  args.insert(args.begin(), {"-H", "Host: api.a.test:" + p});
  const auto sub = curl(args);
  CHECK(sub.status == 200);
  CHECK(sub.body.starts_with("TLS A\n"));
  // The name with its port, and in capitals, is the same name.
  args = https("b.test", port, cert_b.cert);
  args.insert(args.begin(), {"-H", "Host: B.TEST:" + p});
  CHECK(curl(args).status == 200);
  // No SNI (an address, not a name): the default certificate, and the Host routes as usual.
  const auto by_address = curl({"-k", "-H", "Host: b.test", "https://127.0.0.1:" + p + "/x"});
  CHECK(by_address.status == 200);
  CHECK(by_address.body.starts_with("TLS B\n"));
}

TEST_CASE("TLS: a key that does not match the certificate, or no PEM at all, is rejected with badCertificate") {
  temp_dir dir;
  const auto cert_a = make_certificate(dir, "a.test");
  const auto cert_b = make_certificate(dir, "b.test");
  write_file(dir.file("junk.pem"), "not a certificate\n");
  master_process m;

  go_service mismatched(m, {"-port", "0", "-domain", "a.test", "-tls-cert", cert_a.cert, "-tls-key", cert_b.key});
  CHECK(mismatched.rejected().starts_with("badCertificate "));
  CHECK(mismatched.wait()->code == 2);
  go_service junk(m, {"-port", "0", "-domain", "a.test", "-tls-cert", dir.file("junk.pem"), "-tls-key", cert_a.key});
  CHECK(junk.rejected().starts_with("badCertificate "));

  // TLS and plain cannot share a port, either way round.
  go_service good(m, {"-port", "0", "-domain", "a.test", "-tls-cert", cert_a.cert, "-tls-key", cert_a.key});
  const auto port = good.accepted().port;
  go_service plain(m, {"-port", std::to_string(port), "-domain", "b.test"});
  CHECK(plain.rejected().starts_with("conflict "));
  go_service plain_first(m, {"-port", "0"});
  const auto plain_port = plain_first.accepted().port;
  go_service tls_second(m, {"-port", std::to_string(plain_port), "-domain", "a.test", "-tls-cert", cert_a.cert, "-tls-key",
                            cert_a.key});
  CHECK(tls_second.rejected().starts_with("conflict "));

  CHECK(curl(https("a.test", port, cert_a.cert)).status == 200);
}

TEST_CASE("TLS: a WebSocket over wss echoes through the master") {
  temp_dir dir;
  const auto cert = make_certificate(dir, "localhost");
  master_process m;
  go_service s(m, {"-port", "0", "-domain", "localhost", "-tls-cert", cert.cert, "-tls-key", cert.key});
  const auto port = s.accepted().port;
  CHECK(websocket_echo("wss://localhost:" + std::to_string(port) + "/ws", cert.cert).out == "ECHO OK\n");
}

TEST_CASE("TLS: a client arriving while the service is replaced completes its handshake, waits, and gets the new instance") {
  temp_dir dir;
  const auto cert = make_certificate(dir, "a.test");
  master_process m({"--grace", "30"});
  go_service first(m, {"-port", "0", "-domain", "a.test", "-tls-cert", cert.cert, "-tls-key", cert.key, "-text", "T1"});
  const auto r = first.accepted();
  CHECK(curl(https("a.test", r.port, cert.cert)).body.starts_with("T1\n"));

  kill_registered(m, first, r);
  auto mark = m.mark();
  background_run waiting(curl_argv(https("a.test", r.port, cert.cert, "/during")));
  m.wait_for_log("waits in the queue", mark);  // past the TLS handshake, with the departed one's certificate

  go_service second(m, {"-port", std::to_string(r.port), "-domain", "a.test", "-tls-cert", cert.cert, "-tls-key", cert.key,
                        "-text", "T2"});
  second.accepted();
  const auto out = waiting.finish();
  const auto responses = parse_curl(out.out);
  REQUIRE(responses.size() == 1);
  CHECK(responses[0].status == 200);
  CHECK(responses[0].body.starts_with("T2\npath: /during\n"));
}
