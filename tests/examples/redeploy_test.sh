#!/usr/bin/env bash
# examples/redeploy.sh under load: while client loops keep requesting (new connections with curl,
# and kept-alive ones), hello v1 is replaced by v2 and then v2 by v3. No request may fail, every
# version must have answered, and each old version must have exited after draining.
source "$(dirname "$0")/lib.sh"
start_master
pid_file=$WORK/app.pid
deploy() {  # version port → prints the script's output
  bash "$EXAMPLES/redeploy.sh" --master "$control" --address 127.0.0.1 --port "$2" --path /app --text "$1" \
    --hello "$HELLO" --pid-file "$pid_file" --log "$WORK/hello.log" --timeout 30
}
out=$(deploy v1 0) || fail "first deploy: $out"
read -r _ v1_pid address <<<"$out"
started+=($v1_pid)
port=${address##*:}
url=http://127.0.0.1:$port/app/x

# The load: each loop appends one line per answer ("v1", "v2", ...) or per failure.
: >"$WORK/answers"
: >"$WORK/failures"
load() {  # mode
  while [ ! -e "$WORK/stop" ]; do
    if [ "$1" = keepalive ]; then
      # Five requests over one kept-alive connection.
      if body=$(curl -sS --fail --max-time 10 "$url" "$url" "$url" "$url" "$url" 2>&1); then
        grep -o '^v[0-9]' <<<"$body" >>"$WORK/answers"
      else
        echo "keepalive: $body" >>"$WORK/failures"
      fi
    else
      if body=$(curl -sS --fail --max-time 10 "$url" 2>&1); then
        head -n1 <<<"$body" >>"$WORK/answers"
      else
        echo "new connection: $body" >>"$WORK/failures"
      fi
    fi
  done
}
loops=()
for mode in new new new keepalive; do
  load $mode &
  loops+=($!)
  started+=($!)
done

# Waits until the loops have had `count` answers from `version`.
answers_from() { wait_count "$WORK/answers" "^$1\$" "$2" 30; }
answers_from v1 50
out=$(deploy v2 "$port") || fail "redeploy to v2: $out"
grep -q "^drained $v1_pid$" <<<"$out" || fail "v1 did not drain: $out"
v2_pid=$(awk '/^deployed/ {print $2}' <<<"$out")
started+=($v2_pid)
answers_from v2 50
out=$(deploy v3 "$port") || fail "redeploy to v3: $out"
grep -q "^drained $v2_pid$" <<<"$out" || fail "v2 did not drain: $out"
v3_pid=$(awk '/^deployed/ {print $2}' <<<"$out")
started+=($v3_pid)
answers_from v3 50
touch "$WORK/stop"
wait "${loops[@]}"

total=$(wc -l <"$WORK/answers")
if [ -s "$WORK/failures" ]; then
  cat "$WORK/failures" >&2
  fail "$(wc -l <"$WORK/failures") failed requests out of $((total + $(wc -l <"$WORK/failures")))"
fi
kill -0 "$v1_pid" 2>/dev/null && fail "v1 still running"
kill -0 "$v2_pid" 2>/dev/null && fail "v2 still running"
echo "PASS: $total requests, none failed, across two redeploys ($(sort "$WORK/answers" | uniq -c | tr -s ' ' | tr '\n' ','))"
