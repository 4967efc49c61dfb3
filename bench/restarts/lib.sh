# SPDX-License-Identifier: BSD-3-Clause
# bench/restarts: how each server is started on its own and stopped gracefully (sourced by
# run.sh, naive.sh and native.sh; needs W, PORT and PY).

# Starts SERVER binding PORT itself, in the background; its pid goes to $W/pid.
start_native() {
    case $1 in
    lighttpd) lighttpd -D -f "$W/lighttpd.conf" & ;;
    nginx) nginx -c "$W/nginx.conf" -g 'daemon off;' & ;;
    # For the binary upgrade: nginx refuses USR2 unless its master is a daemon, and re-executes
    # its argv[0], which must be a path.
    nginx-daemon) /usr/sbin/nginx -c "$W/nginx.conf" ;;
    haproxy-sf) haproxy -D -p "$W/haproxy.pid" -f "$W/haproxy.cfg" ;;
    haproxy-mw) haproxy -W -p "$W/haproxy.pid" -f "$W/haproxy.cfg" & ;;
    haproxy) haproxy -db -f "$W/haproxy.cfg" & ;;
    gunicorn) gunicorn -w 2 --chdir "$W" -p "$W/gunicorn.pid" -b "127.0.0.1:$PORT" app:wsgi & ;;
    uvicorn) $PY -m uvicorn --host 127.0.0.1 --port "$PORT" --app-dir "$W" app:asgi & ;;
    node) PORT=$PORT node "$W/server.js" & ;;
    esac >>"$W/native.log" 2>&1
    echo "${!:-}" >"$W/pid" # daemons: their pid files say
}

# The signal on which SERVER finishes what it has and exits.
stop_sig() {
    case $1 in
    lighttpd) echo INT ;; nginx) echo QUIT ;; haproxy*) echo USR1 ;; *) echo TERM ;;
    esac
}

# Waits (up to 10 s) while pid $1 lives.
wait_gone() {
    for _ in $(seq 1000); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.01
    done
}
