#!/usr/bin/env bash
# redeploy.sh: replaces the running hello with a new one without failing a request.
#   1. starts the new version with the same master, port and route;
#   2. waits for its "listening" line: from then on the master gives it work;
#   3. sends SIGTERM to the old version: it sends GoAway (the master routes nothing new to it),
#      finishes what is in flight and exits; this script waits for that.
# The running version's pid is kept in --pid-file; when there is none, this is the first deploy.
#
#   redeploy.sh --master 127.0.0.1:9999 --port 8000 --path /a --text "From A, v2"
#
# Flags: --master ADDR, --port N, --path P, --domain D, --address A, --text T (passed to hello);
# --hello PATH (default: hello next to this script's build, or on PATH), --pid-file F, --log F
# (hello's output, appended), --timeout S (for each wait, default 30).
# Prints "deployed <pid> <address>", then "drained <old pid>" when it replaced one. Exits non-zero
# if the new version does not come up (the old one is left running) or the old one does not exit.
set -euo pipefail

master=${SOCKETMASTER_ADDR:-127.0.0.1:9999} port= path= domain= address= text="Hello from socketmaster"
hello= pid_file= log= timeout=30
while [ $# -gt 0 ]; do
  case $1 in
    --master) master=$2 ;; --port) port=$2 ;; --path) path=$2 ;; --domain) domain=$2 ;;
    --address) address=$2 ;; --text) text=$2 ;; --hello) hello=$2 ;; --pid-file) pid_file=$2 ;;
    --log) log=$2 ;; --timeout) timeout=$2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "redeploy.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
[ -n "$port" ] || { echo "redeploy.sh: --port is required" >&2; exit 2; }
if [ -z "$hello" ]; then
  here=$(cd "$(dirname "$0")" && pwd)
  for candidate in "$here/../build/release/examples/hello" "$(command -v hello || true)"; do
    [ -x "$candidate" ] && { hello=$candidate; break; }
  done
  [ -n "$hello" ] || { echo "redeploy.sh: no hello binary; pass --hello PATH" >&2; exit 2; }
fi
route=${domain}${path}
pid_file=${pid_file:-${TMPDIR:-/tmp}/hello-${port}${route//\//_}.pid}
log=${log:-${pid_file%.pid}.log}

old=
if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then old=$(cat "$pid_file"); fi

# 1. The new version, detached from this script: its stdout and stderr are appended to the log.
args=(--master "$master" --port "$port" --text "$text")
[ -n "$path" ] && args+=(--path "$path")
[ -n "$domain" ] && args+=(--domain "$domain")
[ -n "$address" ] && args+=(--address "$address")
touch "$log"
offset=$(($(stat -c %s "$log") + 1))
"$hello" "${args[@]}" >>"$log" 2>&1 </dev/null &
new=$!

# 2. Its "listening ADDR" line, followed in the log as it is written (no polling here).
exec {lines}< <(exec timeout "$timeout" tail -c +"$offset" -f --pid="$new" "$log" 2>/dev/null)
follower=$!
listening=
while IFS= read -r -u "$lines" line; do
  case $line in listening\ *) listening=${line#listening }; break ;; esac
done
kill "$follower" 2>/dev/null || true
exec {lines}<&-
if [ -z "$listening" ]; then
  echo "redeploy.sh: the new version did not register (see $log); the old one keeps running" >&2
  kill -TERM "$new" 2>/dev/null || true
  exit 1
fi
echo "$new" >"$pid_file"
echo "deployed $new $listening"

# 3. The old version drains and exits.
if [ -n "$old" ]; then
  kill -TERM "$old"
  if ! timeout "$timeout" tail --pid="$old" -f /dev/null; then
    echo "redeploy.sh: the old version ($old) did not exit within $timeout s" >&2
    exit 1
  fi
  echo "drained $old"
fi
