#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install to a fresh prefix (not the configured one) and build a program
# against it with pkg-config and with CMake's find_package.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cmake --install "$root/build" --prefix "$prefix" >/dev/null
libdir=$(dirname "$(find "$prefix" -name libafdt.pc)")
export PKG_CONFIG_PATH="$libdir"
export LD_LIBRARY_PATH="$(dirname "$libdir")"
test -f "$prefix/include/afdt.h"
src="$root/examples/pingpong.c"
cc -Wall -Wextra -Werror -o "$work/pp-pc" "$src" $(pkg-config --cflags --libs libafdt)
"$work/pp-pc"
mkdir "$work/cm"
cat > "$work/cm/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.16)
project(use_afdt C)
find_package(afdt REQUIRED)
add_executable(pp "$src")
target_link_libraries(pp PRIVATE afdt::afdt)
CM
cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cm/build" >/dev/null
"$work/cm/build/pp"
echo "install check: pkg-config and find_package builds both ran"
