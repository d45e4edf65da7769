#!/usr/bin/env bash
# Builds the wire-decoder fuzzer with clang (libFuzzer + ASan + UBSan) and
# runs it for a bounded time. Usage: tests/fuzz/run.sh SECONDS [WORKDIR]
set -euo pipefail
secs=${1:-20}
src=$(cd "$(dirname "$0")/../.." && pwd)
work=${2:-$(mktemp -d)}
mkdir -p "$work/corpus"
clangxx=$(command -v clang++ || command -v clang++-14 || true)
if [[ -z "$clangxx" ]]; then
  echo "fuzz: clang++ not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
"$clangxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src/src" "$src/tests/fuzz/fuzz_wire.cpp" "$src/src/prov/tcp/wire.cpp" -o "$work/fuzz_wire"
# seeds: a valid msg header and a valid hello
printf 'W\x01\x03\x01\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' \
  > "$work/corpus/msg"
"$work/fuzz_wire" -max_total_time="$secs" -max_len=512 -timeout=5 "$work/corpus" 2>&1 | tail -n 5
echo "fuzz: ${secs}s without a crash"
