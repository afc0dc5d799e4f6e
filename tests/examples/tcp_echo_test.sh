#!/usr/bin/env bash
# examples/tcp_echo.cpp through the real master: lines come back over a raw TCP route; after
# SIGTERM the connection already open is still served (drain), and the service exits 0 once the
# client closes it.
source "$(dirname "$0")/lib.sh"
: "${TCP_ECHO:?}"
start_master

"$TCP_ECHO" --master "$control" --address 127.0.0.1 --port 0 >"$WORK/tcp_echo.out" 2>"$WORK/tcp_echo.log" &
echo_pid=$!
started+=($echo_pid)
address=$(wait_line "$WORK/tcp_echo.out" $echo_pid '^listening ')
address=${address#listening }
port=${address##*:}

exec {conn}<>"/dev/tcp/127.0.0.1/$port"
printf 'hello through socketmaster\n' >&$conn
IFS= read -r -t 10 -u $conn line || fail "no echo"
[ "$line" = "hello through socketmaster" ] || fail "echo was '$line'"

# Drain: no new connections for it, but this one goes on until we close it.
kill -TERM $echo_pid
printf 'still here\n' >&$conn
IFS= read -r -t 10 -u $conn line || fail "no echo while draining"
[ "$line" = "still here" ] || fail "echo while draining was '$line'"
exec {conn}>&-
status=0
wait $echo_pid || status=$?
[ $status -eq 0 ] || fail "tcp_echo exited with $status after draining"
grep -q "drained" "$WORK/tcp_echo.log" || fail "tcp_echo did not log its drain"
echo "PASS: echo, drain with an open connection, clean exit"
