#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# The supervisor demo (`make demo-supervisor`): an unmodified socket-activated HTTP server run
# by `afdt serve`, restarted twice and the supervisor itself upgraded once, under continuous
# load, with no failed request.  Usage: sh examples/supervisor_demo.sh [BUILD_DIR]
set -eu
build=${1:-build}
afdt=$build/tools/afdt/afdt
server=$build/examples/afdt-activated-http
load=$build/examples/afdt-http-load
for f in "$afdt" "$server" "$load"; do
    [ -x "$f" ] || { echo "demo: $f is missing: build first (make)" >&2; exit 1; }
done
dir=$(mktemp -d "${TMPDIR:-/tmp}/afdt-demo-XXXXXX")
ctl=$dir/control.sock
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

step() { printf '\n== %s\n' "$*"; }
# Show a command as a user would type it, then run it.
show() { printf '$ %s\n' "$*" | sed "s|$dir|\$DIR|g; s|$build/tools/afdt/||g; s|$build/examples/||g"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
wait_serving() {
    i=0
    until "$afdt" status --control "$ctl" 2>/dev/null | grep -q " serving "; do
        i=$((i + 1))
        [ $i -lt 100 ] || fail "no generation is serving after 10 s"
        sleep 0.1
    done
}

echo "DIR=$dir"
step "1. The supervisor opens the socket and runs the server, which knows nothing of libafdt"
show "$afdt" serve --control "$ctl" --listen http=tcp:127.0.0.1:0 -- "$server" "&"
"$afdt" serve --control "$ctl" --listen http=tcp:127.0.0.1:0 -- "$server" &
old=$!
pids="$pids $old"
wait_serving
port=$("$afdt" status --control "$ctl" --json | sed -n 's/.*"port":\([0-9]*\).*/\1/p')
[ -n "$port" ] || fail "no port in the status"

step "2. Continuous load on 127.0.0.1:$port: 4 threads, a new connection per request"
show "$load" "$port" 4 "&"
"$load" "$port" 4 >"$dir/load.out" &
loadpid=$!
pids="$pids $loadpid"
sleep 1

step "3. Restart the server twice (each new generation must say READY=1 before the old one goes)"
for i in 1 2; do
    show "$afdt" restart --control "$ctl"
    "$afdt" restart --control "$ctl" || fail "restart $i"
    sleep 1
done

step "4. Upgrade the supervisor: a new afdt serve takes the socket over from the running one"
show "$afdt" serve --control "$ctl" --listen "http=tcp:127.0.0.1:$port" -- "$server" "&"
"$afdt" serve --control "$ctl" --listen "http=tcp:127.0.0.1:$port" -- "$server" &
new=$!
pids="$pids $new"
if wait "$old"; then rc=0; else rc=$?; fi
[ "$rc" -eq 0 ] || fail "the old supervisor exited with status $rc"
echo "demo: the old supervisor (pid $old) exited with status 0"
wait_serving
sleep 1
show "$afdt" status --control "$ctl"
"$afdt" status --control "$ctl"

step "5. Stop the load and count"
kill -INT "$loadpid"
if wait "$loadpid"; then rc=0; else rc=$?; fi
cat "$dir/load.out"

step "6. Stop the supervisor: its server drains and it exits 0"
show "$afdt" stop --control "$ctl"
"$afdt" stop --control "$ctl"
if wait "$new"; then src=0; else src=$?; fi
[ "$src" -eq 0 ] || fail "the supervisor exited with status $src"
[ ! -e "$ctl" ] || fail "the control socket was left behind"

[ "$rc" -eq 0 ] || fail "requests failed during the restarts"
failed=$(sed -n 's/.* ok, \([0-9]*\) failed$/\1/p' "$dir/load.out")
[ "$failed" = 0 ] || fail "$failed requests failed"
printf '\ndemo: PASS: 2 restarts and 1 supervisor upgrade under load, 0 failed requests\n'
