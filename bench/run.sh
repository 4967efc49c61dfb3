#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Run afdt-bench, then write docs/PERFORMANCE.md and docs/perf.png from its output (`make bench`).
# Usage: bench/run.sh [BUILD_DIR]; BENCH_ARGS overrides afdt-bench's arguments.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bench/afdt-bench
args=${BENCH_ARGS:-all --reps 15 --dur 0.3 --warmup 0.1}
if [ ! -x "$bin" ]; then
    echo "run.sh: $bin is not built (run make first)" >&2
    exit 1
fi
# gnuplot draws the figure; install it the way the build's dependencies are.
AFDT_DEPS_EXTRA=gnuplot-nox sh scripts/deps.sh

# Other work on the machine skews the figures: record how busy it was.
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Ahead of other work in the scheduler where allowed (root); elsewhere nice
# warns and runs it as it is.
niceness=$(nice -n -10 nice 2>/dev/null || nice)
echo "running: $bin $args, then the one-client placements (niceness $niceness)"
# The main run, then the one-client points again with each placement forced
# ("apart" needs two CPUs).
placed=${BENCH_PLACED_ARGS:-sweep --conc 1 --reps 7 --dur 0.3 --warmup 0.1}
places="same"
[ "$(nproc)" -ge 2 ] && places="same apart"
cmds="nice -n -10 $bin $args"
: >"$tmp/results.tsv"
for run in main $places; do
    if [ "$run" = main ]; then
        # shellcheck disable=SC2086 # args is a list of words on purpose
        set -- $args
    else
        # shellcheck disable=SC2086
        set -- $placed --place "$run"
        cmds="$cmds; nice -n -10 $bin $*"
    fi
    { nice -n -10 "$bin" "$@" 2>&1; echo $? >"$tmp/rc"; } | tee -a "$tmp/results.tsv"
    if [ "$(cat "$tmp/rc")" != 0 ]; then
        echo "run.sh: afdt-bench failed" >&2
        exit 1
    fi
done

mkdir -p docs
awk -v datfile="$tmp/perf.dat" \
    -v nproc="$(nproc)" \
    -v cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" \
    -v kernel="$(uname -sr)" \
    -v libevent="$(pkg-config --modversion libevent)" \
    -v loadavg="$loadavg" \
    -v niceness="$niceness" \
    -v date="$(date -u '+%Y-%m-%d %H:%M UTC')" \
    -v rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -v make_cmd="make bench" \
    -v bench_cmd="$cmds" \
    -v png="perf.png" \
    -f bench/report.awk "$tmp/results.tsv" >"$tmp/PERFORMANCE.md"
gnuplot -e "datfile='$tmp/perf.dat'; outfile='docs/perf.png'" bench/perf.gp
mv "$tmp/PERFORMANCE.md" docs/PERFORMANCE.md
echo "wrote docs/PERFORMANCE.md and docs/perf.png"
