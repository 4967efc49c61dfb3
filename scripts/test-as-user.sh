#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Run `make test` a second time as an unprivileged user, from a copy of the tree that user owns.
# The kernel treats root differently (descriptors in flight, RLIMIT_NOFILE, file permissions):
# here per-user limits apply for real, and tests that need root skip (exit 77, with a message).
#
# usage (as root): scripts/test-as-user.sh [USER]   (default afdt-ci, created if missing)
set -eu
user=${1:-afdt-ci}
[ "$(id -u)" -eq 0 ] || { echo "test-as-user.sh: run it as root (it creates and becomes $user)"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
id "$user" >/dev/null 2>&1 ||
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$user"
copy=$(mktemp -d /tmp/afdt-as-user-XXXXXX)
trap 'rm -rf "$copy"' EXIT
# The tracked files as they are in the working tree (no build directories, nothing of root's).
(cd "$here" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$copy"
chown -R "$user:" "$copy"
chmod 0755 "$copy"
start=$(date +%s)
# setpriv keeps the environment (CI makes the build -Werror); HOME is the copy, PATH has none of
# root's own directories (a command search meeting one fails with EACCES), no groups.
HOME=$copy PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    setpriv --reuid="$user" --regid="$user" --clear-groups sh -c 'cd "$HOME" && make test' ||
    status=$?
echo "test-as-user.sh: make test as $user took $(($(date +%s) - start)) s"
exit "${status:-0}"
