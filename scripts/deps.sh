#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Install the Debian packages the build, tests and demo need, if any is missing.
set -eu
pkgs="build-essential cmake pkg-config libevent-dev curl"
[ "${AFDT_DEPS_EXTRA:-}" ] && pkgs="$pkgs $AFDT_DEPS_EXTRA"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
