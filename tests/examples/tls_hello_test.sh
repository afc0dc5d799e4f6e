#!/usr/bin/env bash
# examples/tls_hello.sh: two services with self-signed certificates made at run time share one TLS
# port; the master picks each certificate by SNI, so each domain verifies against its own
# certificate only, and each answers with its own text.
source "$(dirname "$0")/lib.sh"
start_master

start_tls() {  # domain text port → sets $cert and $address
  local out="$WORK/$1.out" pid
  bash "$EXAMPLES/tls_hello.sh" --domain "$1" --cert-dir "$WORK" --hello "$HELLO" -- \
    --master "$control" --address 127.0.0.1 --port "$3" --text "$2" >"$out" 2>"$WORK/$1.log" &
  pid=$!
  started+=($pid)
  cert=$(wait_line "$out" $pid '^certificate ')
  cert=${cert#certificate }
  address=$(wait_line "$out" $pid '^listening ')
  address=${address#listening }
}
start_tls a.test "From A" 0
cert_a=$cert port=${address##*:}
start_tls b.test "From B" "$port"
cert_b=$cert
[ "${address##*:}" = "$port" ] || fail "b.test registered on $address, not port $port"

get() {  # domain cafile
  curl -sS --max-time 10 --cacert "$2" --resolve "$1:$port:127.0.0.1" "https://$1:$port/hi"
}
body=$(get a.test "$cert_a") || fail "https://a.test failed"
[[ $body == "From A"* ]] || fail "a.test answered '$body'"
body=$(get b.test "$cert_b") || fail "https://b.test failed"
[[ $body == "From B"* ]] || fail "b.test answered '$body'"
# SNI chose a.test's certificate: b.test's does not verify it.
if get a.test "$cert_b" >/dev/null 2>&1; then fail "a.test verified against b.test's certificate"; fi
echo "PASS: two TLS services on port $port, each with its own certificate"
