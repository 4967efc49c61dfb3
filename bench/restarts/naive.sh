# SPDX-License-Identifier: BSD-3-Clause
# A naive restart: stop SERVER gracefully, wait for it to exit, start it again.
#   naive.sh SERVER
. "$(dirname "$0")/lib.sh"
pid=$(cat "$W/pid")
kill -"$(stop_sig "$1")" "$pid"
wait_gone "$pid"
start_native "$1"
