#!/usr/bin/env bash
# tls_hello.sh: hello behind TLS that the master terminates, with a self-signed certificate made now.
#
#   tls_hello.sh --domain a.test [--cert-dir DIR] -- --master 127.0.0.1:9999 --port 8443 --text "From A"
#
# Makes DIR/<domain>.pem and DIR/<domain>.key (EC P-256, CN and subjectAltName = the domain, valid one
# day; DIR defaults to a new temporary directory), prints "certificate DIR/<domain>.pem", then runs
# hello with --domain, --tls-cert, --tls-key and the flags after "--" (it prints "listening ADDR").
# Several of these on the same --port share it: the master picks each certificate by SNI. Try:
#   curl --cacert DIR/a.test.pem --resolve a.test:8443:127.0.0.1 https://a.test:8443/
set -euo pipefail

domain= cert_dir= hello=
while [ $# -gt 0 ]; do
  case $1 in
    --domain) domain=$2; shift 2 ;;
    --cert-dir) cert_dir=$2; shift 2 ;;
    --hello) hello=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "tls_hello.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$domain" ] || { echo "tls_hello.sh: --domain is required" >&2; exit 2; }
if [ -z "$hello" ]; then
  here=$(cd "$(dirname "$0")" && pwd)
  for candidate in "$here/../build/release/examples/hello" "$(command -v hello || true)"; do
    [ -x "$candidate" ] && { hello=$candidate; break; }
  done
  [ -n "$hello" ] || { echo "tls_hello.sh: no hello binary; pass --hello PATH" >&2; exit 2; }
fi
cert_dir=${cert_dir:-$(mktemp -d)}
cert=$cert_dir/$domain.pem key=$cert_dir/$domain.key
if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain" \
    -keyout "$key" -out "$cert" 2>/dev/null
fi
echo "certificate $cert"
exec "$hello" --domain "$domain" --tls-cert "$cert" --tls-key "$key" "$@"
