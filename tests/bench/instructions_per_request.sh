#!/usr/bin/env bash
# instructions_per_request: user-space instructions one request costs the master, the SDK service
# (hello) and the sidecar, counted by callgrind, so deterministic where timings are not.
#
#   bash tests/bench/instructions_per_request.sh [BUILD_DIR] [keep-alive|close]   (default build/release close)
#
# Each process in turn runs under `valgrind --tool=callgrind` while wrk (1 thread, 10 connections,
# 4 s) drives requests through it; the figure is the process's total instructions divided by the
# requests wrk completed (start-up included, a few hundred thousand instructions: compare figures
# from the same script, not with other tools). Why: on a shared 2-core machine timings of the same
# binary swing by 2x from minute to minute; instruction counts do not (issue 6 notes). Kernel work
# is not counted: proxy_cost.py measures CPU time and system calls.
# Needs valgrind and wrk; servers bind 127.0.0.1 on ephemeral ports and are stopped at the end.
set -euo pipefail
build=${1:-build/release}
mode=${2:-close}
case $mode in
  close) wrk_extra=(-H "Connection: close") ;;
  keep-alive) wrk_extra=() ;;
  *) echo "mode: keep-alive or close" >&2; exit 2 ;;
esac
for tool in valgrind wrk callgrind_annotate; do
  command -v "$tool" >/dev/null || { echo "instructions_per_request: $tool is missing (apt-get install valgrind wrk)" >&2; exit 2; }
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME LOG_PATTERN CMD...: runs CMD with output in $work/NAME.log until a line matches.
start() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  last_pid=$!
  # Follows the log as it is written (tail -f wakes on each write) and ends with the process, so
  # a server that dies before it is ready fails at once; 60 s at most.
  grep -q -m1 "$pattern" <(timeout 60 tail -n +1 --pid="$last_pid" -f "$work/$name.log") && return 0
  echo "instructions_per_request: $name did not start: $(tail -3 "$work/$name.log")" >&2
  exit 1
}
port_in() { grep -o "$1" "$work/$2.log" | head -1 | grep -o '[0-9]*$'; }
under_callgrind() { echo valgrind --tool=callgrind --callgrind-out-file="$work/$1.out"; }

# measure NAME PID URL: wrk against URL, then stops NAME (valgrind, PID) and, once callgrind has
# written its counts and exited, prints its figure.
measure() {
  local name=$1 pid=$2 url=$3 requests total
  requests=$(wrk -t1 -c10 -d4s "${wrk_extra[@]}" "$url" | grep -o '^ *[0-9]* requests' | grep -o '[0-9]*')
  kill -INT "$pid"
  wait "$pid" || true
  total=$(callgrind_annotate "$work/$name.out" 2>/dev/null | grep "PROGRAM TOTALS" | grep -o '^[0-9,]*' | tr -d ,)
  printf '%-22s %-10s %8d requests %8d instructions per request\n' "$name" "$mode" "$requests" $((total / requests))
}

run_case() {  # which of master, hello-sdk, sidecar runs under callgrind
  local target=$1 ctrl public backend target_pid=
  pids=()
  local m=() h=() c=()
  [[ $target == master ]] && m=($(under_callgrind master))
  [[ $target == hello-sdk ]] && h=($(under_callgrind hello-sdk))
  [[ $target == sidecar ]] && c=($(under_callgrind sidecar))
  start master "control port listening" "${m[@]}" "$build/server/socketmaster" --control 127.0.0.1:0 --drain-timeout 1
  [[ $target == master ]] && target_pid=$last_pid
  ctrl=127.0.0.1:$(port_in 'listening on 127.0.0.1:[0-9]*' master)
  if [[ $target == sidecar ]]; then
    start backend "^listening" "$build/examples/hello" --listen 127.0.0.1:0 --text hi
    backend=127.0.0.1:$(port_in '^listening [0-9.:]*' backend)
    start sidecar "listening on" "${c[@]}" "$build/client-sdk/socketmaster-connect" --master "$ctrl" --port 0 --http \
      --backend "$backend" --drain-timeout 1
    target_pid=$last_pid
    public=$(port_in 'listening on [^ ]*' sidecar)
  else
    start hello-sdk "^listening" "${h[@]}" "$build/examples/hello" --master "$ctrl" --port 0 --text hi --drain-timeout 1
    [[ $target == hello-sdk ]] && target_pid=$last_pid
    public=$(port_in '^listening [^ ]*' hello-sdk)
  fi
  measure "$target" "$target_pid" "http://127.0.0.1:$public/"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

for target in master hello-sdk sidecar; do run_case "$target"; done
