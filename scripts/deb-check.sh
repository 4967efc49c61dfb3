#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# CI for the Debian packages (as root): make deb (lintian clean), install the three packages,
# run debian/tests/* against them as autopkgtest would (each in its own AUTOPKGTEST_TMP, from
# the tree's root), verify the example systemd units as installed, purge the packages, and
# check that every path they installed that was not there before is gone.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(libafdt0 libafdt-dev afdt)
make deb
debs=()
for p in "${pkgs[@]}"; do debs+=("$(ls build-deb/"${p}"_*.deb)"); done
apt-get purge -y -qq "${pkgs[@]}" >/dev/null 2>&1 || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# What the packages hold, and which of those paths already exist (directories like /usr/bin).
for d in "${debs[@]}"; do dpkg-deb --fsys-tarfile "$d" | tar -t; done | sed 's|^\./|/|; s|/$||' |
    grep -v '^$' | sort -u >"$work/paths"
while read -r p; do [ -e "$p" ] || [ -L "$p" ] || echo "$p"; done <"$work/paths" >"$work/new"

apt-get install -y -qq "${debs[@]/#/./}" >/dev/null
for p in "${pkgs[@]}"; do dpkg -L "$p"; done | sort -u >"$work/listed"
missing=$(comm -23 "$work/new" "$work/listed")
[ -z "$missing" ] || { echo "installed but not known to dpkg -L: $missing" >&2; exit 1; }

for t in $(sed -n 's/^Tests: *//p' debian/tests/control); do
    mkdir "$work/$t"
    echo "-- autopkgtest $t"
    AUTOPKGTEST_TMP="$work/$t" "debian/tests/$t"
done

# The example units as installed, against the installed afdt; any complaint fails.
command -v systemd-analyze >/dev/null || apt-get install -y -qq systemd >/dev/null
units=(/usr/share/doc/afdt/examples/*.service /usr/share/doc/afdt/examples/*.socket)
out=$(systemd-analyze verify "${units[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
[ -z "$out" ] || { echo "systemd-analyze verify: $out" >&2; exit 1; }

apt-get purge -y -qq "${pkgs[@]}" >/dev/null
left=$(while read -r p; do [ ! -e "$p" ] && [ ! -L "$p" ] || echo "$p"; done <"$work/new")
[ -z "$left" ] || { echo "left behind after purge:" $left >&2; exit 1; }
echo "packages: built, lintian clean, installed, $(wc -l <"$work/new") new paths, tests passed, purged, nothing left"
