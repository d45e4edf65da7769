#!/usr/bin/env bash
# Installs every Debian package weft needs to build, test and benchmark.
# Usage: scripts/install-deps.sh [--bench]   (run as root on Debian 12)
set -euo pipefail
pkgs=(build-essential g++ cmake pkg-config git
      libgtest-dev libgmock-dev googletest libbenchmark-dev
      libhwloc-dev libfabric-dev libpmem2-dev iproute2 procps nftables
      clang libclang-rt-14-dev)
bench=(libfabric-bin ucx-utils sockperf iperf3 python3 python3-matplotlib)
if [[ "${1:-}" == "--bench" ]]; then pkgs+=("${bench[@]}"); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
