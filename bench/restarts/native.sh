# SPDX-License-Identifier: BSD-3-Clause
# A server's own reload, the way its documentation gives it.
#   native.sh SERVER METHOD
. "$(dirname "$0")/lib.sh"
# Waits until pid file $1 names a master other than $2 with at least $3 children.
new_master() {
    for _ in $(seq 1000); do
        new=$(cat "$1" 2>/dev/null)
        if [ -n "$new" ] && [ "$new" != "$2" ] && [ "$(pgrep -c -P "$new")" -ge "$3" ]; then
            return 0
        fi
        sleep 0.01
    done
    return 1
}
case $1.$2 in
nginx.reload) nginx -c "$W/nginx.conf" -s reload 2>>"$W/native.log" ;;
nginx.upgrade | gunicorn.usr2)
    # The documented binary upgrade: USR2 starts a new master on the same sockets; once its
    # workers run, the old master is told to finish.
    old=$(cat "$W/$1.pid")
    kill -USR2 "$old"
    new_master "$W/$1.pid" "$old" 2 && kill -"$(stop_sig "$1")" "$old"
    ;;
haproxy.sf)
    haproxy -D -p "$W/haproxy.pid" -f "$W/haproxy.cfg" -x "$W/haproxy.sock" \
        -sf $(cat "$W/haproxy.pid") 2>>"$W/native.log"
    ;;
haproxy.mw) kill -USR2 "$(cat "$W/pid")" ;;
gunicorn.hup) kill -HUP "$(cat "$W/gunicorn.pid")" ;;
esac
