#!/usr/bin/env bash
# weft RMA and atomics (weft_rma_perf) vs UCX's (ucx_perftest ucp_put_lat,
# ucp_put_bw, ucp_get, ucp_add, ucp_fadd), over shared memory and over TCP on
# loopback, measured in the same run. See usage() or run with --help.
# The companion of bench/shm.sh and bench/tcp.sh; parsing, tables and the
# plot are in bench/compare_rma.py.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_name=rma
weft_tool=weft_rma_perf
# shellcheck source=bench/common.sh
source "$here/common.sh"

sizes="8,4096,65536,1048576"
window=64
transports="shm,tcp"
tmo=90
ucx_dev=lo
# UCX's shared-memory transports for the shm comparison. Tried on this
# machine (UCX 1.13.1, Debian 12, 2 CPUs, idle) with UCX_TLS = "sm",
# "posix,cma" and "sysv,cma":
#  - `ucx_info -e -u ra -P intra` (kept in raw/ucx-lanes-shm.txt): RMA and
#    atomics go through a mapped segment whichever list is given (posix or
#    sysv lane: put short/bcopy, get bcopy, CPU atomics); cma gets no RMA
#    lane. ucx_perftest allocates its buffers with ucp_mem_map, in a segment
#    the peer maps, so a put or get is a memcpy by the initiator and an
#    atomic a CPU atomic: the target process takes no part. "sm" (UCX's alias
#    for all its shared-memory transports) has both a sysv and a posix lane
#    and uses the one the rkey names.
#  - ucx_perftest, 3 runs each (-O 64 for bandwidth and rate): put_lat 8 B
#    0.14-0.17 us, put_bw 1 MiB 25-34 GB/s (best 31-34), get 64 KiB 46-48
#    GB/s, get 1 MiB -O 1 31-41 us, fadd -O 1 0.032-0.033 us, for all three;
#    ucp_add flips between ~32 and 10-20 Mops from run to run under every
#    list (best 32-33 Mops each).
# No list is faster, so the default is "sm", which also needs no knowledge of
# which segment type UCX picks and is what bench/shm.sh uses (plus self,
# which only serves a process talking to itself); --ucx-shm-tls changes it.
ucx_shm_tls=sm

usage() {
  cat <<EOF
usage: bench/rma.sh [options]

Runs, in one go, weft_rma_perf (weft's RMA and atomics; it forks its own
target) and ucx_perftest (UCX's UCP RMA and atomic tests, a server and a
client process) over each transport pair:
  shm  weft shm provider   vs UCX UCX_TLS=$ucx_shm_tls (shared memory)
  tcp  weft tcp provider   vs UCX UCX_TLS=tcp UCX_NET_DEVICES=$ucx_dev (loopback)
each measurement several times, keeps the best, and prints per transport a
table of test, size, weft's figure, UCX's figure and the ratio (latency:
ucx/weft; bandwidth and rate: weft/ucx; > 1 means weft is faster).

The tests (weft_rma_perf test = ucx_perftest test):
  put_lat        ping-pong of puts, one-way latency = ucp_put_lat
  put_bw         puts, window W in flight, MB/s     = ucp_put_bw -O W
  get_lat        one get at a time, time to completion = ucp_get -O 1
  get_bw         gets, window W in flight, MB/s     = ucp_get -O W
  atomic_add     64-bit non-fetching adds, window W, Mops = ucp_add -O W (8 B)
  fetch_add_lat  one 64-bit fetch-and-add at a time, us   = ucp_fadd -O 1 (8 B)

options:
  -s, --sizes LIST    comma-separated sizes in bytes, K and M suffixes allowed
                      (default $sizes); atomics always use 8 B
  -i, --iters N       latency iterations for small sizes (default $iters); both
                      tools use min(N, max(50, 2^27/size)) for latency and
                      clamp(2^30/max(size,64), 2000, 200000) operations for
                      bandwidth and rate, as weft_rma_perf does
  -r, --repeats N     runs of each measurement; the best is kept (default $repeats)
      --stat S        best (min latency, max bandwidth/rate) or median of the
                      repeats (default $stat)
  -w, --window N      operations in flight in bandwidth and rate tests, for both
                      tools (weft_rma_perf -w, ucx_perftest -O) (default $window)
  -o, --out DIR       results directory (default bench/results); each run writes
                      DIR/rma-YYYYmmdd-HHMMSS/{results.json,table.txt,rma.png,raw/}
      --transports L  shm, tcp or shm,tcp (default $transports)
      --ucx-shm-tls L UCX_TLS for the shm comparison (default $ucx_shm_tls;
                      e.g. "posix,cma", "sysv,cma")
      --ucx-devices L UCX_NET_DEVICES for the tcp comparison (default $ucx_dev;
                      "all" leaves it unset)
      --weft PATH     weft_rma_perf binary (default \$WEFT_RMA_PERF or
                      build/release/tools/weft_rma_perf)
      --timeout S     bound on every single tool run, in seconds (default $tmo)
      --no-plot       skip the PNG
  -h, --help          this text
environment: WEFT_RMA_PERF, UCX_PERFTEST (tool paths), PYTHON

Progress goes to stderr; the tables to stdout (and table.txt). Needs python3;
the plot needs matplotlib (Debian: python3-matplotlib) and is skipped with a
message without it. Peers are installed by scripts/install-deps.sh --bench.
Units: latency in microseconds (put_lat one-way = round trip / 2, as both
tools report it; get_lat and fetch_add_lat the mean time to completion of one
operation); bandwidth in MB/s = 10^6 B/s: ucx_perftest prints MiB/s (2^20),
converted here; rate in Mops = 10^6 operations/s. UCX figures are its
"overall" columns (means over the whole run), like weft_rma_perf's.
On tcp UCX has no native get or atomics (UCP emulates them with active
messages); with one get in flight ucp_get waited ~1 ms per get here, which the
table flags (NOTE) rather than count as weft's win.
A UCX test that fails or is not supported on a transport is shown as n/a, the
reason in raw/problems.txt; the other tests still run. Rows whose repeats
differ by more than 2x are marked: the machine was busy.
The exit status is 0 whenever weft_rma_perf produced numbers.
EOF
}

while (($#)); do
  case "$1" in
    -w|--window) window=${2:?}; shift ;;
    --transports) transports=${2:?}; shift ;;
    --ucx-shm-tls) ucx_shm_tls=${2:?}; shift ;;
    --ucx-devices) ucx_dev=${2:?}; shift ;;
    *) common_opt "$@"; shift $(( nargs - 1 )) ;;
  esac
  shift
done

want_posint --iters "$iters"
want_posint --repeats "$repeats"
[[ "$window" =~ ^[1-9][0-9]*$ ]] && ((window <= 1024)) || die "--window wants an integer from 1 to 1024"
want_posint --timeout "$tmo"
want_stat
want_ucx_dev
[[ "$ucx_shm_tls" =~ ^[A-Za-z0-9_,^-]+$ ]] || die "bad --ucx-shm-tls: $ucx_shm_tls"
parse_sizes "$sizes" 1073741824 " (1 B to 1 GiB)"
tr_list=()
IFS=, read -ra _t <<<"$transports"
for t in "${_t[@]}"; do
  case "$t" in
    shm|tcp) [[ " ${tr_list[*]-} " == *" $t "* ]] || tr_list+=("$t") ;;
    "") ;;
    *) die "unknown transport: $t (shm, tcp)" ;;
  esac
done
((${#tr_list[@]})) || die "no transports"

# shellcheck source=bench/lib.sh
source "$here/lib.sh"

# the iteration counts of weft_rma_perf (tools/weft_rma_perf.cpp lat_iters,
# bw_ops), so that UCX does the same amount of work
rma_lat_iters() { clamp_div $(( 1 << 27 )) "$1" 50 "$iters"; }
bw_ops() { clamp_div $(( 1 << 30 )) $(( $1 < 64 ? 64 : $1 )) 2000 200000; }
warm_of() { clamp_div "$1" 10 10 1000; }

# why a run failed, in one line: UCX's error lines if any, else the last lines
why_failed() {  # name rc
  local f detail
  for f in "$raw/$1.client.txt" "$raw/$1.server.txt"; do
    detail=$(grep -E 'ERROR|[Ee]rror|not supported|[Uu]nsupported|[Ff]ailed' "$f" 2>/dev/null |
      sed -e 's/^\(\[[^]]*\][[:space:]]*\)*//' -e 's/[[:space:]]\{2,\}/ /g' | tail -n2 | paste -sd'|' - | sed 's/|/ | /g')
    [[ -n "$detail" ]] && break
  done
  if [[ -z "$detail" ]]; then
    detail=$(grep -v '^[[:space:]]*$' "$raw/$1.client.txt" 2>/dev/null | tail -n2 | paste -sd'|' - |
      sed 's/|/ | /g')
  fi
  local t="exit $2"; (($2 == 124 || $2 == 137)) && t+=" (timed out after ${tmo}s)"
  echo "$t${detail:+: $detail}"
}

# ---- tools
meta benchmark rma
meta_run
meta window "$window"
meta transports "$(IFS=,; echo "${tr_list[*]}")"
meta ucx_shm_tls "$ucx_shm_tls"
meta ucx_net_devices "$ucx_dev"
meta_weft
meta_weft_build

ucx_env_of() {  # transport -> the env command prefix for UCX, in ucx_env
  if [[ $1 == shm ]]; then
    ucx_env=(env "UCX_TLS=$ucx_shm_tls")
  else
    ucx_tcp_env
  fi
}

# ucx_perftest and the tests it knows (ucp_fadd is missing from old versions)
run_ucx=1
declare -A ucx_has=()
tool_check run_ucx ucx "$ucx_bin" "${UCX_PERFTEST:-ucx_perftest} not found (Debian package ucx-utils)" \
  "ucx: ${UCX_PERFTEST:-ucx_perftest} not found (install ucx-utils: scripts/install-deps.sh --bench); UCX not measured, its column is n/a" \
  version_of ucx_info -v
if ((run_ucx)); then
  help=$("$ucx_bin" -h 2>&1)
  for t in ucp_put_lat ucp_put_bw ucp_get ucp_add ucp_fadd; do
    if grep -qE "^[[:space:]]*$t -" <<<"$help"; then
      ucx_has[$t]=1
    else
      problem "ucx: this ucx_perftest has no test $t; its rows are n/a"
    fi
  done
  # the lanes UCX picks for RMA and atomics on each transport, for the record
  for tr in "${tr_list[@]}"; do
    ucx_env_of "$tr"
    if [[ $tr == shm ]]; then
      "${ucx_env[@]}" ucx_info -e -u ra -P intra >"$raw/ucx-lanes-shm.txt" 2>&1
    else
      "${ucx_env[@]}" ucx_info -e -u ra -P inter >"$raw/ucx-lanes-tcp.txt" 2>&1
    fi
  done
fi

log "results in $run_dir"
log "transports ${tr_list[*]}; sizes ${size_list[*]}; window $window; $repeats repeats; weft=$weft; python=$py"

weft_tmo=$(( tmo < 30 ? tmo : 30 ))  # weft_rma_perf's own stall timeout
t_start=$SECONDS

# one UCX measurement: transport weft-test ucx-test size iterations outstanding kind
# (kind: lat, bw or rate: which column goes to the progress line)
ucx_one() {
  local tr=$1 wt=$2 ut=$3 s=$4 n=$5 o=$6 kind=$7
  local name="ucx-$tr-$wt-$s-r$rep" w v col unit
  if [[ -z "${ucx_has[$ut]-}" ]]; then
    return
  fi
  w=$(warm_of "$n")
  next_port
  local oopt=()
  [[ -n "$o" ]] && oopt=(-O "$o")
  client_server "$name" 30 \
    "${ucx_env[@]}" "$ucx_bin" -t "$ut" -s "$s" -n "$n" -w "$w" "${oopt[@]}" -p "$port" -- \
    "${ucx_env[@]}" "$ucx_bin" -t "$ut" -s "$s" -n "$n" -w "$w" "${oopt[@]}" -p "$port" -f -v localhost
  record "ucx-$tr" "$wt" "$s" "$rep" "$rc" "$name"
  case $kind in
    lat) col=4 unit="us" ;;
    bw) col=6 unit="MiB/s" ;;
    rate) col=8 unit="msg/s" ;;
  esac
  v=$(awk -F, -v c="$col" 'NF == 8 && $1 ~ /^ *[0-9]+$/ && $c ~ /^[0-9.]+$/ { l = $c } END { print l }' \
    "$raw/$name.client.txt")
  if [[ -n "$v" ]]; then
    log "rep $rep/$repeats $tr: ucx $ut${o:+ -O $o} $s B x$n: $v $unit"
  else
    local why
    why=$(why_failed "$name" "$rc")
    log "rep $rep/$repeats $tr: ucx $ut${o:+ -O $o} $s B: n/a ($why)"
    problem "ucx $tr $wt ($ut${o:+ -O $o}) $s B rep $rep: n/a: $why (raw/$name.client.txt)"
  fi
}

# Repeats are the outer loop so that load from elsewhere on the machine
# spreads over every tool alike.
for ((rep = 1; rep <= repeats; rep++)); do
  for tr in "${tr_list[@]}"; do
    name="weft-$tr-r$rep"
    log "rep $rep/$repeats $tr: weft_rma_perf -p $tr, all tests and sizes"
    timeout -k 3 "$tmo" "$weft" -p "$tr" -w "$window" -i "$iters" --timeout "$weft_tmo" -q --json \
      "${weft_sizes[@]}" >"$raw/$name.client.txt" 2>"$raw/$name.server.txt" </dev/null
    rc=$?
    record "weft-$tr" all all "$rep" "$rc" "$name"
    if ((rc == 0)) && grep -q '"results"' "$raw/$name.client.txt"; then
      weft_ok=1
      v=$(sed -n 's/.*"test": "\([a-z_]*\)", "size": \([0-9]*\), "lat_us": \([0-9.]*\), "mbps": \([0-9.]*\), "mops": \([0-9.]*\).*/\1 \2 \3 \4 \5/p' \
        "$raw/$name.client.txt" |
        awk '{ if ($1 ~ /lat$/) f = sprintf("%.3f us", $3); else if ($1 == "atomic_add") f = sprintf("%.2f Mops", $5);
               else f = sprintf("%.0f MB/s", $4); printf "%s%s %s %s", (NR > 1 ? ", " : ""), $1, $2, f }')
      [[ -n "$v" ]] && log "rep $rep/$repeats $tr: weft: $v"
    else
      why=$(grep -v '^[[:space:]]*$' "$raw/$name.server.txt" | tail -n2 | paste -sd'|' - | sed 's/|/ | /g')
      t="exit $rc"; ((rc == 124 || rc == 137)) && t+=" (timed out after ${tmo}s)"
      log "weft_rma_perf -p $tr failed ($t): $why"
      problem "weft $tr rep $rep: no result: $t${why:+: $why} (raw/$name.server.txt)"
    fi

    ((run_ucx)) || continue
    ucx_env_of "$tr"
    for s in "${size_list[@]}"; do
      n=$(rma_lat_iters "$s")
      m=$(bw_ops "$s")
      ucx_one "$tr" put_lat ucp_put_lat "$s" "$n" "" lat
      ucx_one "$tr" put_bw ucp_put_bw "$s" "$m" "$window" bw
      ucx_one "$tr" get_lat ucp_get "$s" "$n" 1 lat
      ucx_one "$tr" get_bw ucp_get "$s" "$m" "$window" bw
    done
    ucx_one "$tr" atomic_add ucp_add 8 "$(bw_ops 8)" "$window" rate
    ucx_one "$tr" fetch_add_lat ucp_fadd 8 "$iters" 1 lat
  done
done
finish compare_rma.py
