#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# make deb: build the Debian packages (debian/) from a copy of this tree in OUT (build-deb/),
# so that dpkg-buildpackage, which writes its results next to the tree, dirties nothing here.
# The .deb, .changes and .buildinfo files are left in OUT; lintian must find nothing in them.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build-deb}
AFDT_DEPS_EXTRA="debhelper dpkg-dev lintian" sh "$root/scripts/deps.sh"
version=$(dpkg-parsechangelog -l "$root/debian/changelog" -S Version)
upstream=$(sed -n 's/^project(afdt VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
if [ "${version%%-*}" != "$upstream" ]; then
    echo "debian/changelog is at $version but CMakeLists.txt at $upstream: add a changelog entry" >&2
    exit 1
fi
rm -rf "$out"
src="$out/libafdt-$version"
mkdir -p "$src"
tar -C "$root" --exclude=./.git --exclude='./build*' --exclude='./_install*' -cf - . | tar -C "$src" -xf -
jobs=$(nproc 2>/dev/null || echo 2)
# nocheck unless DEB_BUILD_OPTIONS is set (even empty): `make test` is where the suite runs.
opts="parallel=$jobs ${DEB_BUILD_OPTIONS-nocheck}"
(cd "$src" && DEB_BUILD_OPTIONS="$opts" dpkg-buildpackage -us -uc -b)
rm -rf "$src"
lintian --fail-on error,warning --info "$out"/*.changes
echo "packages in $out:"
ls "$out"/*.deb
