#!/usr/bin/env bash
# weft shm vs libfabric shm (fi_pingpong) vs UCX shared memory (ucx_perftest),
# measured in the same run. See usage() or run with --help.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_name=shm
weft_tool=weft_perf
# shellcheck source=bench/common.sh
source "$here/common.sh"

sizes="8,64,4096,65536,1048576"
peers="libfabric,ucx"
tmo=60

usage() {
  cat <<EOF
usage: bench/shm.sh [options]

Runs, in one go, weft_perf over weft's shm provider, fi_pingpong over
libfabric's shm provider (-p shm -e rdm) and ucx_perftest over UCX shared
memory (UCX_TLS=sm,self; tag_lat and tag_bw), each size several times, and
prints one-way latency and bandwidth per size with each peer's ratio to weft
(latency: peer/weft, bandwidth: weft/peer; > 1 means weft is faster), then
whether the targets are met:
  - 64 B one-way latency below libfabric shm's and within 1.2x of UCX's;
  - 1 MiB bandwidth at least libfabric shm's.

options:
  -s, --sizes LIST    comma-separated sizes in bytes, K and M suffixes allowed
                      (default $sizes)
  -i, --iters N       latency iterations for small sizes (default $iters); big
                      sizes use fewer (2^28/size, at least 100), as weft_perf does;
                      ucx tag_bw sends min(10*N, max(1000, 2^31/size)) messages
  -r, --repeats N     runs of each measurement; the best is kept (default $repeats)
      --stat S        best (min latency, max bandwidth) or median of the repeats
                      (default $stat)
  -o, --out DIR       results directory (default bench/results); each run writes
                      DIR/shm-YYYYmmdd-HHMMSS/{results.json,table.txt,shm.png,raw/}
      --peers LIST    peers to run: libfabric,ucx (default both; weft always runs)
      --weft PATH     weft_perf binary (default \$WEFT_PERF or
                      build/release/tools/weft_perf)
      --timeout S     bound on every single tool run, in seconds (default $tmo)
environment: WEFT_PERF, FI_PINGPONG, UCX_PERFTEST (tool paths), PYTHON
      --no-plot       skip the PNG
  -h, --help          this text

Progress goes to stderr; the table to stdout (and table.txt). Needs python3;
the plot needs matplotlib (Debian: python3-matplotlib) and is skipped without
it. A missing peer tool is reported and the others still run. Units: latency
in microseconds, one-way (round trip / 2), bandwidth in MB/s = 10^6 B/s.
fi_pingpong has only a ping-pong mode, so its bandwidth is compared with
weft's ping-pong bandwidth (size / one-way latency); weft_perf's streaming
bandwidth (window 64) is compared with ucx tag_bw.
The exit status is 0 whenever weft_perf produced numbers, targets met or not.
EOF
}

while (($#)); do
  case "$1" in
    --peers) peers=${2?}; shift ;;
    *) common_opt "$@"; shift $(( nargs - 1 )) ;;
  esac
  shift
done

want_posint --iters "$iters"
want_posint --repeats "$repeats"
want_posint --timeout "$tmo"
want_stat
parse_sizes "$sizes"
run_fi=0 run_ucx=0
IFS=, read -ra _p <<<"$peers"
for p in "${_p[@]}"; do
  case "$p" in
    libfabric) run_fi=1 ;;
    ucx) run_ucx=1 ;;
    weft|"") ;;
    *) die "unknown peer: $p (libfabric, ucx)" ;;
  esac
done

# shellcheck source=bench/lib.sh
source "$here/lib.sh"

# ---- tools
meta_run
meta_weft
tool_check run_fi libfabric "$fi_bin" "${FI_PINGPONG:-fi_pingpong} not found (Debian package libfabric-bin)" \
  "libfabric: ${FI_PINGPONG:-fi_pingpong} not found (install libfabric-bin); libfabric not measured" fi_version
if ((run_fi)) && ! fi_info -p shm >/dev/null 2>&1; then
  problem "libfabric: fi_info -p shm lists no shm provider; fi_pingpong will probably fail"
fi
tool_check run_ucx ucx "$ucx_bin" "${UCX_PERFTEST:-ucx_perftest} not found (Debian package ucx-utils)" \
  "ucx: ${UCX_PERFTEST:-ucx_perftest} not found (install ucx-utils); UCX not measured" version_of ucx_info -v
ucx_env=(env "UCX_TLS=sm,self")

log "results in $run_dir"
log "sizes ${size_list[*]}; $repeats repeats; weft=$weft; python=$py"

t_start=$SECONDS

# Repeats are the outer loop so that load from elsewhere on the machine
# spreads over every tool alike.
for ((rep = 1; rep <= repeats; rep++)); do
  name="weft-r$rep"
  log "rep $rep/$repeats: weft_perf --spawn, all sizes"
  timeout -k 3 "$tmo" "$weft" --spawn -q --json -i "$iters" "${weft_sizes[@]}" \
    >"$raw/$name.client.txt" 2>"$raw/$name.server.txt" </dev/null
  rc=$?
  weft_perf_done "$name"

  for s in "${size_list[@]}"; do
    n=$(lat_iters "$s")
    ((run_fi)) && fi_run "fi-$s-r$rep" libfabric "$s" "$n" "fi_pingpong " us -p shm -e rdm
    ((run_ucx)) && ucx_tag_runs "$s" "$n" "  "
  done
done
finish compare.py
