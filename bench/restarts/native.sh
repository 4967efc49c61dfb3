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
nginx.upgrade)
    # The documented binary upgrade: USR2 starts a new master on the same sockets (nginx.pid is
    # its, the old one's is nginx.pid.oldbin); once its workers run, the old master finishes.
    old=$(cat "$W/nginx.pid")
    kill -USR2 "$old"
    new_master "$W/nginx.pid" "$old" 2 && kill -QUIT "$old"
    ;;
gunicorn.usr2)
    # The same for gunicorn: the new master writes gunicorn.pid.2, and takes gunicorn.pid over
    # once the old one is gone.
    old=$(cat "$W/gunicorn.pid")
    kill -USR2 "$old"
    new_master "$W/gunicorn.pid.2" "$old" 2 && kill -TERM "$old"
    wait_gone "$old"
    new_master "$W/gunicorn.pid" "$old" 0
    ;;
haproxy.sf)
    haproxy -D -p "$W/haproxy.pid" -f "$W/haproxy.cfg" -x "$W/haproxy.sock" \
        -sf $(cat "$W/haproxy.pid") 2>>"$W/native.log"
    ;;
haproxy.mw) kill -USR2 "$(cat "$W/pid")" ;;
gunicorn.hup) kill -HUP "$(cat "$W/gunicorn.pid")" ;;
esac
