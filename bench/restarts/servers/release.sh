# SPDX-License-Identifier: BSD-3-Clause
# The benchmark's release switch: while $W/bad exists, a new release never accepts and exits
# after 1.5 s; otherwise it is the Node server.
if [ -e "$W/bad" ]; then
    sleep 1.5
    exit 1
fi
exec node "$(dirname "$0")/server.js"
