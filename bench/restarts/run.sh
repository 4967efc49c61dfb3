#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# make bench-restarts: stock servers restarted under load, by afdt serve, by their own reloads and
# by a naive stop-and-start, side by side in one run; writes docs/RESTARTS.md and its plot.
#
#   bench/restarts/run.sh BUILD_DIR [SCENARIO_REGEX]
#
# Environment: RESTARTS (10 per scenario), RATE (requests/s per client, 4 clients), MODES
# ("close keepalive"), OUT (docs/RESTARTS.md; empty: only print), AFDT_EXTRA (more afdt serve
# options, e.g. --ready-timeout 1 to try an older afdt), AFDT (the afdt program; LEGACY=1 for one
# without --stop-signal and --convention). The raw results stay in RESULTS (BUILD_DIR/bench-restarts).
set -u
BUILD=$(cd "${1:-build}" && pwd)
ONLY=${2:-.}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/restarts
AFDT=${AFDT:-$BUILD/tools/afdt/afdt}
LOAD=$BUILD/bench/afdt-restarts-load
PROBE=$BUILD/bench/afdt-restarts-probe
RESTARTS=${RESTARTS:-10}
RATE=${RATE:-150}
MODES=${MODES:-close keepalive}
OUT=${OUT-$ROOT/docs/RESTARTS.md}
AFDT_EXTRA=${AFDT_EXTRA:-}
PORT=18480
PY=/usr/bin/python3
LEGACY=${LEGACY:-}

need() {
    local missing=""
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        echo "installing:$missing"
        apt-get -o DPkg::Lock::Timeout=600 install -y -q $missing >/dev/null || exit 1
    fi
}
need lighttpd nginx haproxy gunicorn python3-uvicorn nodejs gnuplot-nox curl
for f in "$AFDT" "$LOAD" "$PROBE"; do
    [ -x "$f" ] || { echo "$f missing: run make first" >&2; exit 1; }
done

W=$(mktemp -d /tmp/afdt-restarts.XXXXXX)
export W
RES=${RESULTS:-$BUILD/bench-restarts}
rm -rf "$RES"
mkdir -p "$RES" "$W/www"
printf 'ok\n' >"$W/www/index.html"
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$W"' EXIT

# --- configurations -------------------------------------------------------------------------
# lighttpd: socket-activated when run under afdt (it takes LISTEN_FDS), else it binds PORT.
lighttpd_conf() {
    cat <<EOF
server.document-root = "$W/www"
index-file.names = ("index.html")
server.bind = "127.0.0.1"
server.port = $PORT
server.errorlog = "$W/lighttpd.err"
server.systemd-socket-activation = "$1"
EOF
}
nginx_conf() {
    cat <<EOF
worker_processes 2;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    server { listen 127.0.0.1:$PORT; location / { return 200 "ok\n"; } }
}
EOF
}
haproxy_conf() {
    cat <<EOF
global
    stats socket $W/haproxy.sock mode 600 level admin expose-fd listeners
    pidfile $W/haproxy.pid
defaults
    mode http
    timeout client 10s
    timeout connect 5s
    timeout server 10s
    timeout http-keep-alive 10s
frontend fe
    bind $1
    http-request return status 200 content-type text/plain string "ok\n"
EOF
}
lighttpd_conf enable >"$W/lighttpd-afdt.conf"
lighttpd_conf disable >"$W/lighttpd.conf"
nginx_conf >"$W/nginx.conf"
haproxy_conf fd@3 >"$W/haproxy-afdt.cfg"
haproxy_conf "127.0.0.1:$PORT" >"$W/haproxy.cfg"
. "$HERE/lib.sh"
cp "$HERE/servers/app.py" "$HERE/servers/server.js" "$W/"

# The afdt serve line of each server (docs/SERVERS.md gives the same ones). LEGACY=1: for an afdt
# without --stop-signal and --convention.
afdt_line() {
    case ${LEGACY:+legacy-}$1 in
    lighttpd) echo "--stop-signal INT -- lighttpd -D -f $W/lighttpd-afdt.conf" ;;
    nginx) echo "--convention nginx --stop-signal QUIT -- nginx -c $W/nginx.conf -g 'daemon off;'" ;;
    haproxy) echo "--stop-signal USR1 -- haproxy -db -f $W/haproxy-afdt.cfg" ;;
    legacy-lighttpd) echo "-- lighttpd -D -f $W/lighttpd-afdt.conf" ;;
    legacy-nginx) echo "-- sh -c 'NGINX=\"3;\" exec nginx -c $W/nginx.conf -g \"daemon off;\"'" ;;
    legacy-haproxy) echo "-- haproxy -db -f $W/haproxy-afdt.cfg" ;;
    *gunicorn) echo "-- gunicorn -w 2 --chdir $W app:wsgi" ;;
    *uvicorn) echo "-- $PY -m uvicorn --fd 3 --app-dir $W app:asgi" ;;
    *node) echo "-- node $W/server.js" ;;
    *rollback) echo "-- sh $HERE/servers/release.sh" ;;
    esac
}
comm_of() {
    case $1 in
    uvicorn) echo python3 ;;
    gunicorn) echo gunicorn,python3 ;; # its USR2 re-executes python3
    rollback) echo node ;;
    *) echo "$1" ;;
    esac
}

# --- starting, restarting, stopping ---------------------------------------------------------
up() { # wait until PORT answers HTTP
    for _ in $(seq 200); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" && return 0
        sleep 0.05
    done
    echo "server did not come up" >&2
    return 1
}
gone() { # wait until no process of ours listens on PORT and pid $1 (if any) is gone
    for _ in $(seq 600); do
        if ! { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; } &&
            ! ss -Hltn "sport = :$PORT" | grep -q .; then
            return 0
        fi
        sleep 0.05
    done
}

# The restart command each method runs (the probe times it).
restart_cmd() { # SERVER METHOD
    case $2 in
    afdt) echo "$AFDT restart --control $W/ctl" ;;
    naive) echo "sh $HERE/naive.sh $1" ;;
    *) echo "sh $HERE/native.sh $1 $2" ;;
    esac
}
start() { # SERVER METHOD
    rm -f "$W/bad" "$W"/*.pid*
    case $2 in
    afdt)
        # shellcheck disable=SC2046
        eval "set -- $(afdt_line "$1")"
        $AFDT serve --control "$W/ctl" --listen "http=tcp:127.0.0.1:$PORT" $AFDT_EXTRA "$@" \
            >>"$W/afdt.log" 2>&1 &
        echo $! >"$W/pid"
        ;;
    sf) start_native haproxy-sf ;;
    upgrade) start_native nginx-daemon ;;
    mw) start_native haproxy-mw ;;
    *) start_native "$1" ;;
    esac
    up
}
stop() { # SERVER METHOD
    local pid
    pid=$(cat "$W/pid")
    case $2 in
    afdt) $AFDT stop --control "$W/ctl" >/dev/null 2>&1 ;;
    sf) kill -USR1 $(cat "$W/haproxy.pid") 2>/dev/null ;;
    upgrade | usr2) kill -"$(stop_sig "$1")" $(cat "$W/$1.pid") 2>/dev/null ;;
    *) kill -"$(stop_sig "$1")" "$pid" 2>/dev/null ;;
    esac
    gone "$pid"
}

# --- one scenario ---------------------------------------------------------------------------
scenario() { # SERVER METHOD MODE
    local s=$1 m=$2 mode=$3 tag="$1 $2 $3" base
    base=$RES/$1.$2.$3
    echo "$tag" | grep -Eq -- "$ONLY" || return 0
    echo "== $tag"
    start "$s" "$m" || { stop "$s" "$m"; return 0; }
    $LOAD "$PORT" 4 "$RATE" "$mode" "$base.load" &
    local load=$!
    sleep 1.5
    local cmd
    cmd=$(restart_cmd "$s" "$m")
    local n=$RESTARTS
    if [ "$s" = rollback ]; then
        touch "$W/bad"
        n=$((RESTARTS < 5 ? RESTARTS : 5))
    fi
    for i in $(seq "$n"); do
        local t0 t1 r
        t0=$(date +%s%6N)
        # shellcheck disable=SC2086
        r=$($PROBE "$PORT" "$(comm_of "$s")" -- $cmd 2>>"$W/native.log" | tail -n 1)
        t1=$(date +%s%6N)
        echo "$t0 $t1 $r" >>"$base.restarts"
        echo "   restart $i: $r"
        sleep 0.3
    done
    [ "$s" = rollback ] && sleep 2
    sleep 1
    kill -TERM $load
    wait $load
    stop "$s" "$m"
}

cd "$W" || exit 1
export AFDT W PORT HERE PY
for mode in $MODES; do
    for s in lighttpd nginx haproxy gunicorn uvicorn node; do
        scenario $s afdt "$mode"
        case $s in
        nginx) scenario nginx reload "$mode"; scenario nginx upgrade "$mode" ;;
        haproxy) scenario haproxy sf "$mode"; scenario haproxy mw "$mode" ;;
        gunicorn) scenario gunicorn hup "$mode"; scenario gunicorn usr2 "$mode" ;;
        esac
        [ "$mode" = close ] && scenario $s naive "$mode" # a refused connection is no keep-alive matter
    done
done
scenario rollback afdt close
$PY "$HERE/report.py" "$RES" "$W/plot" "$(git -C "$ROOT" rev-parse --short HEAD)" "$AFDT_EXTRA" >"$W/report.md"
cat "$W/report.md"
if [ -n "$OUT" ]; then
    sed -n '/^<!-- results -->/q;p' "$OUT" 2>/dev/null >"$W/head.md" || true
    [ -s "$W/head.md" ] || echo "# Restarts under load" >"$W/head.md"
    { cat "$W/head.md"; echo "<!-- results -->"; echo "## The run"; echo; cat "$W/report.md"; } >"$OUT"
    gnuplot -e "dir='$W/plot'" "$HERE/restarts.gp" >"$(dirname "$OUT")/restarts.png"
fi
