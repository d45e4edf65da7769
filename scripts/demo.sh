#!/usr/bin/env bash
# Installs what weft needs, builds it (release) and runs the demo: two
# processes exchanging messages over shm, then a latency/bandwidth table.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
echo
echo "== two processes exchange messages over shm =="
build/release/examples/hello_shm
echo
echo "== latency and bandwidth over shm (weft_perf --spawn) =="
build/release/tools/weft_perf --spawn -q -s 8 -s 64 -s 4K -s 64K -s 1M
