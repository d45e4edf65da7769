#!/usr/bin/env bash
# Installs weft into a private prefix and uses it as a new user would:
#  * a CMake project (tests/integration/consumer) with find_package(weft) and
#    target_link_libraries(consumer weft::weft), nothing else: no C++
#    standard, no flags of its own;
#  * the same program built with the flags pkg-config gives, and no others;
#  * the installed tools run from the prefix with no LD_LIBRARY_PATH.
set -euo pipefail
build_dir=$1; src_dir=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
# nothing from the caller's environment may supply what the package must
unset CXXFLAGS CPPFLAGS LDFLAGS LD_LIBRARY_PATH PKG_CONFIG_PATH CMAKE_PREFIX_PATH

step() {  # step NAME COMMAND...: runs it quietly, shows its output if it fails
  local name=$1; shift
  if ! "$@" > "$tmp/log" 2>&1; then
    echo "install test: FAILED: $name:"; cat "$tmp/log"; exit 1
  fi
}

step "install" cmake --install "$build_dir" --prefix "$prefix"

# 1. find_package(weft) + weft::weft; the executable finds libweft through the
#    RPATH CMake gives it in its build tree
step "configure the find_package consumer" \
  cmake -S "$src_dir/tests/integration/consumer" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix"
step "build the find_package consumer" cmake --build "$tmp/build"
step "run the find_package consumer" "$tmp/build/consumer"
grep -q "consumer: ok" "$tmp/log"
echo "find_package consumer: ok"

# 2. pkg-config: its flags and no others (a private prefix is not on the
#    loader's path: LD_LIBRARY_PATH for this program only)
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(find "$prefix" -name weft.pc -printf '%h\n' | head -1)
libdir=$(pkg-config --variable=libdir weft)
[[ "$(realpath "$libdir")" == "$(realpath "$prefix")"/* ]] || { echo "install test: FAILED: weft.pc's libdir $libdir is outside $prefix"; exit 1; }
# shellcheck disable=SC2046  # pkg-config's words are meant to split
step "build the pkg-config consumer" \
  g++ $(pkg-config --cflags weft) "$src_dir/tests/integration/consumer/consumer.cpp" -o "$tmp/consumer_pc" \
  $(pkg-config --libs weft)
step "run the pkg-config consumer" env LD_LIBRARY_PATH="$libdir" "$tmp/consumer_pc"
grep -q "consumer: ok" "$tmp/log"
echo "pkg-config consumer: ok"

# 3. the installed tools, as installed
for t in weft_info weft_perf weft_rma_perf; do
  step "ldd $t" ldd "$prefix/bin/$t"
  if ! grep -q "libweft.so.0 => $prefix/" "$tmp/log"; then
    echo "install test: FAILED: installed $t does not load the libweft installed with it:"; cat "$tmp/log"; exit 1
  fi
done
step "run weft_info" "$prefix/bin/weft_info"
grep -q "shm" "$tmp/log" || { echo "install test: FAILED: weft_info lists no shm provider:"; cat "$tmp/log"; exit 1; }
step "run weft_perf --help" "$prefix/bin/weft_perf" --help
step "run weft_rma_perf --help" "$prefix/bin/weft_rma_perf" --help
echo "installed tools: ok"
echo "install test: ok"
