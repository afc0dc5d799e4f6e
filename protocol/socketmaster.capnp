# The socketmaster handshake: the first bytes on every control connection from a service to the
# master. This file is a public wire contract; clients in any language build against it.
#
# Exchange: the service connects and sends exactly one HandshakeRequest; the master answers with
# exactly one HandshakeResponse. Both are single Cap'n Proto messages in the standard UNPACKED
# stream framing (the segment table, then the segments; see
# https://capnproto.org/encoding.html#serialization-over-a-stream). No byte follows a message until
# the other side has read it: after an `accepted` response, the same connection carries a yamux
# session (the master is the yamux client and opens one stream per public connection). After a
# `rejected` response the master closes the connection.
#
# The master reads at most 1 MiB for a request by default (its --max-handshake-bytes) and rejects a
# request with more than 511 segments. Text fields have limits of their own (protocol/handshake.hpp):
# token 1024 bytes, address 255, domainSuffix 253, pathPrefix 4096, each PEM 256 KiB.
#
# Evolving: fields may be added with new ordinals (old readers ignore them, unset fields read as
# their defaults); existing ordinals, types and meanings never change. A breaking change bumps
# HandshakeRequest.version instead.
#
# From text, for tests and other languages:
#   echo '(version = 1, socket = (port = 8000, http = (pathPrefix = "/a")))' |
#     capnp encode socketmaster.capnp HandshakeRequest

@0xcd7abba6c2499616;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("socketmaster::schema");

# What a service asks the master for: one public socket whose connections the master forwards to
# the service as yamux streams over this connection.
struct HandshakeRequest {
  version @0 :UInt32;            # 1 for this contract; 0 (unset) is a malformed request
  token @1 :Text;                # shared secret; empty when the master has none
  socket @2 :SocketDefinition;   # required
  sharedRing @3 :Bool;           # over a Unix socket only: the request's first byte carries (as
                                 # SCM_RIGHTS) a memfd sealed against shrinking, 4 KiB of control
                                 # and then a ring through which the service would send bulk
                                 # payload (protocol/shared_ring.hpp); the master says in
                                 # Accepted.sharedRing whether it reads it
}

# The public socket the master should listen on (or share) for this service.
struct SocketDefinition {
  address @0 :Text;              # interface (an IP literal) for the public listener; empty = all
  port @1 :UInt16;               # 0 = the master picks a free port and reports it
  http @2 :HttpRoute;            # unset = raw TCP
  tls @3 :TlsCertificate;        # unset = the master does not terminate TLS
  proxyProtocol @4 :Bool;        # every stream starts with a PROXY protocol v2 header
}

# Set for an HTTP service: the master routes requests on a shared port by Host and path, so several
# services may use the same address and port with different routes.
struct HttpRoute {
  domainSuffix @0 :Text;         # matched against the Host header's end; empty = any
  pathPrefix @1 :Text;           # matched against the request path's start at a segment
                                 # boundary; empty = any, else it starts with '/' (no spaces, ? or #)
}

# Set when the master terminates TLS for this service with the given certificate and key.
struct TlsCertificate {
  certificateChainPem @0 :Text;  # leaf first, then intermediates, PEM
  privateKeyPem @1 :Text;        # the leaf's private key, PEM; never logged
}

# The master's answer: exactly one of the two.
struct HandshakeResponse {
  union {
    accepted @0 :Accepted;
    rejected @1 :Rejected;
  }
}

# The registration is live; yamux starts on this connection right after this message.
struct Accepted {
  registrationId @0 :UInt64;     # names this registration in the master's logs and admin API
  boundAddress @1 :Text;         # the public listener's address and actual port, e.g. "[::]:8000"
  sharedRing @2 :Bool;           # the master maps the offered ring: the service may send RingData
                                 # frames (yamux type 0x80, a Data frame whose payload is the
                                 # ring's next span); false = ordinary Data frames only
}

# The registration failed; the master closes the connection after this message.
struct Rejected {
  code @0 :Code;
  message @1 :Text;              # a sentence a person can act on

  enum Code {
    badRequest @0;               # the request was malformed or a field was out of range
    unsupportedVersion @1;       # the master does not speak the requested version
    unauthorized @2;             # the token is missing or wrong
    bindFailed @3;               # the master could not listen on the requested address and port
    conflict @4;                 # the port is already served with another address, kind (HTTP or
                                 # raw TCP) or TLS setting (the same route joins a pool instead)
    badCertificate @5;           # the certificate chain or key could not be loaded or do not match
    internal @6;                 # the master failed; retrying later may help
  }
}
