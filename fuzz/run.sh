#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Run each libFuzzer target for a bounded time on a copy of its committed corpus; fail if any
# finds a crash, a hang or a broken invariant.  Usage: fuzz/run.sh BUILD_DIR SECONDS
set -eu
build=$1
seconds=$2
src=$(cd "$(dirname "$0")" && pwd)
status=0
for target in frame server; do
    work=$build/fuzz-run/$target
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts"
    # A copy: what a run adds stays out of the source tree until someone merges it.
    cp "$src/corpus/$target"/* "$work/corpus/"
    echo "== fuzz_$target for ${seconds}s ($(ls "$work/corpus" | wc -l) seed inputs)"
    if "$build/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" \
        >"$work/log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' \
            "$work/log" || true
    else
        tail -n 60 "$work/log"
        echo "fuzz_$target FAILED: reproducer in $work/artifacts/ (full log: $work/log)"
        status=1
    fi
done
exit $status
