#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Run every test of a build under valgrind memcheck; fail on any memory error, leak or test failure.
#
# usage: scripts/valgrind.sh BUILD_DIR [PROGRAM...]
# Each test runs as its own valgrind process (JOBS at a time).  The harness forks the test
# (no exec) and valgrind follows forks by itself, so the test's own children are checked too:
# a memcheck error or a definite/indirect leak in any of them makes that process exit 1, which
# fails the test.  Soak counts are lowered (valgrind is ~50x slower); set AFDT_SOAK_N etc. to
# override.
set -u
build=${1:?usage: scripts/valgrind.sh BUILD_DIR [PROGRAM...]}
shift
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
jobs=${JOBS:-2}
logs="$build/valgrind"
mkdir -p "$logs"
rm -f "$logs"/*.log "$logs"/*.rc

# Tests valgrind cannot run faithfully: it keeps descriptors for itself at the top of
# RLIMIT_NOFILE and fakes the limit a program sets, so the kernel never runs out of descriptors
# where these tests need it to.  Nor does it know pidfd_open(2) (valgrind 3.19 answers ENOSYS).
# And tests that a close waiting in the library's closer thread does not hold up the caller:
# valgrind runs one thread at a time and does not switch away from one blocked in close(2).
skip=${VALGRIND_SKIP:-'out_of_descriptors|without_room_for_the_descriptor|by_descriptor_limit|than_headroom|_by_pidfd|returns_at_once|stalled_by_a_lingering|wait_for_a_lingering'}

if [ $# -gt 0 ]; then
    progs="$*"
else
    progs=$(find "$build/tests" -maxdepth 1 -type f -name 'test_*' -perm -u+x | sort | xargs -n1 basename)
fi
[ -n "$progs" ] || { echo "no test programs in $build/tests"; exit 1; }

export AFDT_TEST_TIMEOUT=${AFDT_TEST_TIMEOUT:-900}
export AFDT_SOAK_N=${AFDT_SOAK_N:-20000}
export AFDT_SOAK_SYNC_N=${AFDT_SOAK_SYNC_N:-2000}
vg="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=1"
vg="$vg --suppressions=$here/tests/valgrind.supp"

start=$(date +%s)
skipped=0
: >"$logs/list"
for p in $progs; do
    for t in $("$build/tests/$p" --list); do
        if echo "$t" | grep -Eq "$skip"; then
            echo "skipped under valgrind: $p $t"
            skipped=$((skipped + 1))
        else
            echo "$p $t" >>"$logs/list"
        fi
    done
done
export VG_CMD="$vg" VG_BUILD="$build" VG_LOGS="$logs"
# Each line of the list becomes "sh -c SCRIPT vg PROGRAM TEST".
xargs -P "$jobs" -L 1 sh -c '
    $VG_CMD "$VG_BUILD/tests/$1" "$2" >"$VG_LOGS/$1.$2.log" 2>&1
    echo $? >"$VG_LOGS/$1.$2.rc"
' vg <"$logs/list"

status=0
total=0
bad=0
for p in $progs; do
    n=0
    failed=""
    for rc in "$logs/$p".*.rc; do
        [ -f "$rc" ] || continue
        n=$((n + 1))
        log=${rc%.rc}.log
        # With --quiet, valgrind prints only what it found, each line starting with ==PID==.
        if [ "$(cat "$rc")" -ne 0 ] || grep -q '^==[0-9]*==' "$log"; then
            failed="$failed $(basename "${rc%.rc}")"
        fi
    done
    total=$((total + n))
    if [ -n "$failed" ]; then
        status=1
        bad=$((bad + $(echo $failed | wc -w)))
        echo "$p: $n tests, FAILED:$failed"
        # CI keeps only what is printed: show why each one failed.
        for t in $failed; do
            echo "--- last lines of $logs/$t.log (exit $(cat "$logs/$t.rc"))"
            tail -n 30 "$logs/$t.log"
        done
    else
        echo "$p: $n tests, all clean"
    fi
done
echo "valgrind: $total tests, $bad failed, $skipped skipped, $(($(date +%s) - start)) s; logs in $logs"
exit $status
