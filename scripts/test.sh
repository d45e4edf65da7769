#!/usr/bin/env bash
# Installs what weft needs, builds it and runs the whole test suite twice:
# release build, then AddressSanitizer + UndefinedBehaviorSanitizer build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
rc=0
for preset in release asan; do
  echo "== $preset: configure and build =="
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "== $preset: tests =="
  ctest --preset "$preset" || rc=1
done
exit $rc
