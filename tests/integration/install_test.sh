#!/usr/bin/env bash
# Installs weft into a temporary prefix and builds a tiny program against it,
# once with find_package(weft) and once with pkg-config; runs both.
set -euo pipefail
build_dir=$1; src_dir=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build_dir" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src_dir/tests/integration/consumer" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/build" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/build/consumer" | tee "$tmp/out1"
grep -q "consumer: ok" "$tmp/out1"
libdir=$(find "$tmp/prefix" -name weft.pc -printf '%h\n' | head -1)
PKG_CONFIG_PATH="$libdir" g++ $(PKG_CONFIG_PATH="$libdir" pkg-config --cflags weft) \
  "$src_dir/tests/integration/consumer/consumer.cpp" -o "$tmp/consumer_pc" \
  $(PKG_CONFIG_PATH="$libdir" pkg-config --libs weft)
LD_LIBRARY_PATH="$(dirname "$libdir")" "$tmp/consumer_pc" | grep -q "consumer: ok"
echo "install test: ok"
