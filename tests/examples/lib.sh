# Shared by the example tests: a fresh work directory, a cleanup that ends (by pid) every process
# the test started, the master on an ephemeral loopback port, and waiting for a line a process
# writes to a file, followed as it is written (tail -f), never by sleeping.
set -euo pipefail
: "${SOCKETMASTER:?} ${HELLO:?} ${EXAMPLES:?} ${WORK:?}"
rm -rf "$WORK"
mkdir -p "$WORK"
started=()
cleanup() {
  local status=$?
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ $status -ne 0 ]; then
    for f in "$WORK"/*.log "$WORK"/*.err; do [ -e "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }; done
  fi
  exit $status
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_line FILE PID REGEX [SECONDS] (pass a saved pid: $! changes with every process substitution): prints the first line of FILE matching REGEX (extended), as
# PID writes it; fails if PID ends or SECONDS pass first.
wait_line() {
  local file=$1 pid=$2 re=$3 limit=${4:-20} line fd follower
  touch "$file"
  exec {fd}< <(exec timeout "$limit" tail -n +1 -f --pid="$pid" "$file" 2>/dev/null)
  follower=$!
  while IFS= read -r -u "$fd" line; do
    if [[ $line =~ $re ]]; then
      kill "$follower" 2>/dev/null || true
      exec {fd}<&-
      printf '%s\n' "$line"
      return 0
    fi
  done
  exec {fd}<&-
  fail "no line matching '$re' in $file"
}

# wait_count FILE REGEX COUNT [SECONDS]: returns once COUNT lines of FILE (from its start) match
# REGEX, as they are written; fails if SECONDS pass first.
wait_count() {
  local file=$1 re=$2 want=$3 limit=${4:-30} line fd follower seen=0
  touch "$file"
  exec {fd}< <(exec timeout "$limit" tail -n +1 -f "$file" 2>/dev/null)
  follower=$!
  while IFS= read -r -u "$fd" line; do
    if [[ $line =~ $re ]] && ((++seen >= want)); then
      kill "$follower" 2>/dev/null || true
      exec {fd}<&-
      return 0
    fi
  done
  exec {fd}<&-
  fail "only $seen of $want lines matching '$re' in $file"
}

# start_master: the master on 127.0.0.1:0; sets $control.
start_master() {
  SOCKETMASTER_TOKEN= "$SOCKETMASTER" --control 127.0.0.1:0 >"$WORK/master.out" 2>"$WORK/master.err" &
  local pid=$!
  started+=($pid)
  control=$(wait_line "$WORK/master.out" $pid '^control ')
  control=${control#control }
}
