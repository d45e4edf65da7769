#!/usr/bin/env bash
# weft tcp vs libfabric tcp (fi_pingpong) vs UCX over TCP (ucx_perftest) vs
# kernel TCP (sockperf ping-pong, iperf3), over loopback, measured in the same
# run. See usage() or run with --help. The companion of bench/shm.sh.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_name=tcp
weft_tool=weft_perf
# shellcheck source=bench/common.sh
source "$here/common.sh"

sizes="64,4096,65536,1048576"
peers="libfabric,ucx,sockperf,iperf3"
tmo=60
sock_time=1
iperf_time=1
ucx_dev=lo
host=127.0.0.1

usage() {
  cat <<EOF
usage: bench/tcp.sh [options]

Runs, in one go and over loopback, weft_perf over weft's tcp provider and its
peers, each size several times, and prints one-way latency and bandwidth per
size with each peer's ratio to weft (latency: peer/weft, bandwidth:
weft/peer; > 1 means weft is faster), then whether the targets are met:
  - 64 B one-way latency within 1.1x of sockperf's busy-polling figure and
    below libfabric tcp's (both fi_pingpong endpoint types);
  - 64 KiB and 1 MiB bandwidth at least libfabric tcp's.
Peers:
  libfabric  fi_pingpong -p tcp -e msg, and -e rdm (tcp;ofi_rxm)
  ucx        ucx_perftest tag_lat and tag_bw, UCX_TLS=tcp
  sockperf   sockperf ping-pong --tcp (kernel TCP), blocking sockets and
             --nonblocked (both sides busy-poll: kernel TCP's floor here);
             sizes 14 B to 1048575 B only (sockperf's limits)
  iperf3     iperf3 -N -l SIZE: a kernel TCP byte stream (receiver side), a
             ceiling for streaming bandwidth rather than a messaging peer

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
                      DIR/tcp-YYYYmmdd-HHMMSS/{results.json,table.txt,tcp.png,raw/}
      --peers LIST    peers to run: libfabric (= libfabric-msg,libfabric-rdm),
                      libfabric-msg, libfabric-rdm, ucx, sockperf, iperf3
                      (default $peers; weft always runs)
      --sockperf-time S  seconds of each sockperf run, of which sockperf spends
                      the first 0.4 warming up (default $sock_time)
      --iperf-time S  seconds of each iperf3 run (default $iperf_time)
      --ucx-devices L UCX_NET_DEVICES for UCX (default $ucx_dev: one TCP
                      connection, as the others use; "all" leaves it unset, and
                      UCX then stripes over every interface, eth0 included)
      --weft PATH     weft_perf binary (default \$WEFT_PERF or
                      build/release/tools/weft_perf)
      --timeout S     bound on every single tool run, in seconds (default $tmo)
      --no-plot       skip the PNG
  -h, --help          this text
environment: WEFT_PERF, FI_PINGPONG, UCX_PERFTEST, SOCKPERF, IPERF3 (tool
paths), PYTHON

Progress goes to stderr; the table to stdout (and table.txt). Needs python3;
the plot needs matplotlib (Debian: python3-matplotlib) and is skipped without
it. A missing peer tool is reported and the others still run (Debian:
scripts/install-deps.sh --bench). Units: latency in microseconds, one-way
(round trip / 2: weft_perf, fi_pingpong, ucx_perftest tag_lat and sockperf
all report it so), bandwidth in MB/s = 10^6 B/s. fi_pingpong has only a
ping-pong mode and prints a mean, so its bandwidth is compared with weft's
ping-pong bandwidth (size / one-way latency) and its latency, a mean, with
weft's median. weft_perf's streaming bandwidth (window 64) is compared with
ucx tag_bw and iperf3.
The exit status is 0 whenever weft_perf produced numbers, targets met or not.
EOF
}

while (($#)); do
  case "$1" in
    --peers) peers=${2?}; shift ;;
    --sockperf-time) sock_time=${2:?}; shift ;;
    --iperf-time) iperf_time=${2:?}; shift ;;
    --ucx-devices) ucx_dev=${2:?}; shift ;;
    *) common_opt "$@"; shift $(( nargs - 1 )) ;;
  esac
  shift
done

want_posint --iters "$iters"
want_posint --repeats "$repeats"
want_posint --timeout "$tmo"
want_posint --sockperf-time "$sock_time"
want_posint --iperf-time "$iperf_time"
((sock_time + 5 <= tmo && iperf_time + 5 <= tmo)) || die "--timeout must exceed the sockperf/iperf3 time by 5 s"
want_stat
want_ucx_dev
parse_sizes "$sizes"
run_fim=0 run_fir=0 run_ucx=0 run_sock=0 run_iperf=0
IFS=, read -ra _p <<<"$peers"
for p in "${_p[@]}"; do
  case "$p" in
    libfabric) run_fim=1 run_fir=1 ;;
    libfabric-msg) run_fim=1 ;;
    libfabric-rdm) run_fir=1 ;;
    ucx) run_ucx=1 ;;
    sockperf) run_sock=1 ;;
    iperf3) run_iperf=1 ;;
    weft|"") ;;
    *) die "unknown peer: $p (libfabric, libfabric-msg, libfabric-rdm, ucx, sockperf, iperf3)" ;;
  esac
done

# shellcheck source=bench/lib.sh
source "$here/lib.sh"

# ---- tools
sock_bin=$(command -v "${SOCKPERF:-sockperf}" || true)
iperf_bin=$(command -v "${IPERF3:-iperf3}" || true)
meta benchmark tcp
meta_run
meta address "$host (loopback)"
meta sockperf_seconds "$sock_time"
meta iperf3_seconds "$iperf_time"
[[ "$ucx_dev" != all ]] && meta ucx_net_devices "$ucx_dev"
meta_weft
meta_weft_build

# peer_tool FLAGVAR KEY BIN DEBIAN_PACKAGE VERSION_CMD...: tool_check with
# this script's messages for a missing tool
peer_tool() {
  local key=$2 pkg=$4
  tool_check "$1" "$key" "$3" "not found (Debian package $pkg)" \
    "$key: tool not found (install $pkg); not measured" "${@:5}"
}
peer_tool run_fim libfabric-msg "$fi_bin" libfabric-bin fi_version
peer_tool run_fir libfabric-rdm "$fi_bin" libfabric-bin fi_version
peer_tool run_ucx ucx "$ucx_bin" ucx-utils version_of ucx_info -v
peer_tool run_sock sockperf "$sock_bin" sockperf version_of "$sock_bin" --version
peer_tool run_iperf iperf3 "$iperf_bin" iperf3 version_of "$iperf_bin" --version
if ((run_fim || run_fir)) && ! fi_info -p tcp >/dev/null 2>&1; then
  problem "libfabric: fi_info -p tcp lists no tcp provider; fi_pingpong will probably fail"
fi
sock_ok() { (($1 >= 14 && $1 <= 1048575)); }  # sockperf ping-pong -m limits
if ((run_sock)); then
  skipped=()
  for s in "${size_list[@]}"; do sock_ok "$s" || skipped+=("$s"); done
  ((${#skipped[@]})) && meta tool.sockperf.note \
    "sizes ${skipped[*]} not measured: sockperf ping-pong takes 14 to 1048575 bytes"
fi
ucx_tcp_env

log "results in $run_dir"
log "sizes ${size_list[*]}; $repeats repeats; weft=$weft; python=$py"

t_start=$SECONDS

# Repeats are the outer loop so that load from elsewhere on the machine
# spreads over every tool alike.
for ((rep = 1; rep <= repeats; rep++)); do
  name="weft-r$rep"
  next_port
  log "rep $rep/$repeats: weft_perf --spawn -p tcp -P $port, all sizes"
  timeout -k 3 "$tmo" "$weft" --spawn -p tcp -P "$port" -q --json -i "$iters" "${weft_sizes[@]}" \
    >"$raw/$name.client.txt" 2>"$raw/$name.server.txt" </dev/null
  rc=$?
  if weft_perf_done "$name"; then
    v=$(sed -n 's/.*"size": \([0-9]*\), "latency_us": {"median": \([0-9.]*\).*"bandwidth_MBps": \([0-9.]*\).*/\1 B \2 us \3 MB\/s/p' \
      "$raw/$name.client.txt" | paste -sd, - | sed 's/,/, /g')
    [[ -n "$v" ]] && log "rep $rep/$repeats: weft_perf: $v"
  fi

  for s in "${size_list[@]}"; do
    n=$(lat_iters "$s")
    for ep in msg rdm; do
      [[ $ep == msg ]] && ((!run_fim)) && continue
      [[ $ep == rdm ]] && ((!run_fir)) && continue
      fi_run "fi-$ep-$s-r$rep" "libfabric-$ep" "$s" "$n" "fi_pingpong -e $ep" "us (mean)" -p tcp -e "$ep"
    done
    ((run_ucx)) && ucx_tag_runs "$s" "$n" "    "
    if ((run_sock)) && sock_ok "$s"; then
      smax=$(( s > 65507 ? s : 65507 ))
      for mode in blocking busy; do
        sopt=() copt=() peer=sockperf
        if [[ $mode == busy ]]; then
          sopt=(--nonblocked --timeout 0) copt=(--nonblocked) peer=sockperf-busy
        fi
        name="sockperf-$mode-$s-r$rep"
        next_port
        client_server "$name" 0 \
          "$sock_bin" server --tcp -i "$host" -p "$port" -m "$smax" "${sopt[@]}" -- \
          "$sock_bin" ping-pong --tcp -i "$host" -p "$port" -m "$s" -t "$sock_time" "${copt[@]}"
        record "$peer" ping-pong "$s" "$rep" "$rc" "$name"
        v=$(sed 's/\x1b\[[0-9;]*m//g' "$raw/$name.client.txt" | awk '/percentile 50.000 =/ { l = $NF } END { print l }')
        log "rep $rep/$repeats: sockperf $mode $s B ${sock_time}s: ${v:-FAILED (exit $rc)}${v:+ us (median)}"
      done
    fi
    if ((run_iperf)); then
      name="iperf3-$s-r$rep"
      next_port
      client_server "$name" 30 \
        "$iperf_bin" -s -1 -B "$host" -p "$port" -- \
        "$iperf_bin" -c "$host" -p "$port" -N -l "$s" -t "$iperf_time" -J
      record iperf3 stream "$s" "$rep" "$rc" "$name"
      v=$("$py" -c 'import json,sys
try: print("%.0f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 8e6))
except Exception: pass' "$raw/$name.client.txt" 2>/dev/null)
      log "rep $rep/$repeats: iperf3 -l $s ${iperf_time}s: ${v:-FAILED (exit $rc)}${v:+ MB/s}"
    fi
  done
done
finish compare.py
