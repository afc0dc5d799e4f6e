#!/bin/bash
# What the shared ring buys a bulk body (issue 6): the same master binary with the ring (A) and
# with --max-shared-ring-bytes 0 (B), each with its own SDK hello, and hello --listen directly (D),
# alternating 1 GiB curl transfers; CPU per GiB of each master and service from /proc/PID/stat.
#   tests/bench/shared_ring_ab.sh [BUILD_DIR (build/release)] [ROUNDS (5)]
# Loopback only, ephemeral public ports; control ports are picked free by the masters.
set -euo pipefail
build=$(cd "${1:-build/release}" && pwd)
rounds=${2:-5}
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

start() {  # name, command...: waits for its first line naming an address; echoes the address
  local name=$1; shift
  "$@" > "$dir/$name" 2>&1 & pids+=($!)
  echo $! > "$dir/$name.pid"
  for _ in $(seq 100); do
    if grep -qE "listening on|^listening" "$dir/$name"; then break; fi
    sleep 0.05
  done
}
address() { grep -oE "(control port listening on |^listening )[^ ]+" "$dir/$1" | head -1 | awk '{print $NF}'; }

start master_a "$build/server/socketmaster" --control 127.0.0.1:0
start master_b "$build/server/socketmaster" --control 127.0.0.1:0 --max-shared-ring-bytes 0
start hello_a "$build/examples/hello" --master "$(address master_a)" --port 0
start hello_b "$build/examples/hello" --master "$(address master_b)" --port 0
start hello_d "$build/examples/hello" --listen 127.0.0.1:0
port() { address "$1" | grep -oE "[0-9]+$"; }
cpu_ms() { awk '{print ($14 + $15) * 10}' "/proc/$1/stat"; }

echo "1 GiB per transfer; ms of CPU per GiB; A = with the shared ring, B = without, D = direct"
for r in $(seq "$rounds"); do
  for x in A B D; do
    case $x in
      A) p=$(port hello_a); m=$(cat "$dir/master_a.pid"); s=$(cat "$dir/hello_a.pid") ;;
      B) p=$(port hello_b); m=$(cat "$dir/master_b.pid"); s=$(cat "$dir/hello_b.pid") ;;
      D) p=$(port hello_d); m=""; s=$(cat "$dir/hello_d.pid") ;;
    esac
    m0=${m:+$(cpu_ms "$m")}; s0=$(cpu_ms "$s")
    rate=$(curl -s -o /dev/null -w "%{speed_download}" "http://127.0.0.1:$p/bytes/1073741824")
    m1=${m:+$(cpu_ms "$m")}; s1=$(cpu_ms "$s")
    printf "round %d %s %6d MB/s  master %5s ms  service %4d ms\n" "$r" "$x" "$(( ${rate%.*} / 1000000 ))" \
      "${m:+$(( m1 - m0 ))}" "$(( s1 - s0 ))"
  done
done
# Each master says, when its registration ends, how much payload came through a ring.
kill "$(cat "$dir/hello_a.pid")" "$(cat "$dir/hello_b.pid")"
for _ in $(seq 100); do
  if grep -q "ended" "$dir/master_a" && grep -q "ended" "$dir/master_b"; then break; fi
  sleep 0.05
done
grep -h "ended\|shared ring is not used" "$dir"/master_a "$dir"/master_b | sed 's/^[^ ]* //' || true
