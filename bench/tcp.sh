#!/usr/bin/env bash
# weft tcp vs libfabric tcp (fi_pingpong) vs UCX over TCP (ucx_perftest) vs
# kernel TCP (sockperf ping-pong, iperf3), over loopback, measured in the same
# run. See usage() or run with --help. The companion of bench/shm.sh.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
bench_name=tcp
# shellcheck source=bench/common.sh
source "$here/common.sh"

sizes="64,4096,65536,1048576"
iters=10000
repeats=3
outdir="$root/bench/results"
stat=best
peers="libfabric,ucx,sockperf,iperf3"
tmo=60
weft="${WEFT_PERF:-$root/build/release/tools/weft_perf}"
plot=1
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
    -h|--help) usage; exit 0 ;;
    -s|--sizes) sizes=${2:?}; shift ;;
    -i|--iters) iters=${2:?}; shift ;;
    -r|--repeats) repeats=${2:?}; shift ;;
    --stat) stat=${2:?}; shift ;;
    -o|--out) outdir=${2:?}; shift ;;
    --peers) peers=${2?}; shift ;;
    --sockperf-time) sock_time=${2:?}; shift ;;
    --iperf-time) iperf_time=${2:?}; shift ;;
    --ucx-devices) ucx_dev=${2:?}; shift ;;
    --weft) weft=${2:?}; shift ;;
    --timeout) tmo=${2:?}; shift ;;
    --no-plot) plot=0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

[[ "$iters" =~ ^[1-9][0-9]*$ ]] || die "--iters wants a positive integer"
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || die "--repeats wants a positive integer"
[[ "$tmo" =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a positive integer"
[[ "$sock_time" =~ ^[1-9][0-9]*$ ]] || die "--sockperf-time wants a positive integer"
[[ "$iperf_time" =~ ^[1-9][0-9]*$ ]] || die "--iperf-time wants a positive integer"
((sock_time + 5 <= tmo && iperf_time + 5 <= tmo)) || die "--timeout must exceed the sockperf/iperf3 time by 5 s"
[[ "$stat" == best || "$stat" == median ]] || die "--stat is best or median"
[[ "$ucx_dev" =~ ^[A-Za-z0-9_.:,-]+$ ]] || die "bad --ucx-devices: $ucx_dev"
size_list=()
IFS=, read -ra _s <<<"$sizes"
for s in "${_s[@]}"; do
  b=$(to_bytes "$s" 2>/dev/null) && ((b > 0)) || die "bad size: $s"
  size_list+=("$b")
done
((${#size_list[@]})) || die "no sizes"
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

# client_server NAME GRACE SERVER_CMD... -- CLIENT_CMD...: runs one server/client
# pair bounded by --timeout; sets rc to the client's exit status. GRACE: how
# long (tenths of a second) a server that stops by itself may take to do so
# after the client; 0 for servers that run until stopped (sockperf).
client_server() {
  local name=$1 grace=$2; shift 2
  local scmd=() ccmd=()
  while [[ "$1" != "--" ]]; do scmd+=("$1"); shift; done
  shift; ccmd=("$@")
  timeout -k 3 "$tmo" "${scmd[@]}" >"$raw/$name.server.txt" 2>&1 </dev/null &
  local spid=$!
  servers+=("$spid")
  if ! wait_listen "$port" "$spid"; then
    log "$name: server did not come up on port $port"
  fi
  timeout -k 3 "$tmo" "${ccmd[@]}" >"$raw/$name.client.txt" 2>&1 </dev/null
  rc=$?
  stop_server "$spid" "$grace"
}

record() {  # peer test size rep rc name
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6.client.txt" "$6.server.txt" \
    >>"$raw/status.tsv"
}

lat_iters() { local n=$(( (1 << 28) / $1 )); ((n < 100)) && n=100; ((n > iters)) && n=$iters; echo $n; }
bw_msgs() {
  local n=$(( (1 << 31) / $1 )); ((n < 1000)) && n=1000; ((n > 10 * iters)) && n=$(( 10 * iters ))
  echo $n
}

# ---- tools
version_of() { "$@" 2>/dev/null | head -n1 | grep -o '[0-9][0-9.]*[0-9]' | head -n1; }
fi_bin=$(command -v "${FI_PINGPONG:-fi_pingpong}" || true)
ucx_bin=$(command -v "${UCX_PERFTEST:-ucx_perftest}" || true)
sock_bin=$(command -v "${SOCKPERF:-sockperf}" || true)
iperf_bin=$(command -v "${IPERF3:-iperf3}" || true)
meta benchmark tcp
meta date "$(date -Iseconds)"
meta host "$(hostname)"
meta nproc "$(nproc)"
meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
meta kernel "$(uname -r)"
meta sizes "$(IFS=,; echo "${size_list[*]}")"
meta iters "$iters"
meta repeats "$repeats"
meta address "$host (loopback)"
meta sockperf_seconds "$sock_time"
meta iperf3_seconds "$iperf_time"
[[ "$ucx_dev" != all ]] && meta ucx_net_devices "$ucx_dev"
meta weft_git "$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
meta tool.weft.path "$weft"
meta tool.weft.available yes
# what weft_perf runs: its mtime and libweft's, checked again at the end (a
# rebuild in the middle of a run mixes two builds)
weft_lib=$(ldd "$weft" 2>/dev/null | awk '/libweft/ { print $3; exit }')
weft_stamp() { stat -c '%y' "$weft" ${weft_lib:+"$weft_lib"} 2>/dev/null | tr '\n' ' '; }
weft_built=$(weft_stamp)
meta tool.weft.built "$weft_built"
[[ -n "$weft_lib" ]] && meta tool.weft.lib "$weft_lib"

# tool_check FLAGVAR KEY BIN DEBIAN_PACKAGE VERSION_CMD...: records the tool
# in meta.tsv, or clears FLAGVAR when it is missing
tool_check() {
  local -n flag=$1
  local key=$2 bin=$3 pkg=$4; shift 4
  if ((!flag)); then
    meta "tool.$key.available" no
    meta "tool.$key.note" "left out with --peers"
  elif [[ -z "$bin" ]]; then
    flag=0
    meta "tool.$key.available" no
    meta "tool.$key.note" "not found (Debian package $pkg)"
    problem "$key: tool not found (install $pkg); not measured"
  else
    meta "tool.$key.available" yes
    meta "tool.$key.path" "$bin"
    meta "tool.$key.version" "$("$@")"
  fi
}
fi_version() { fi_info --version 2>/dev/null | sed -n 's/^libfabric: *//p'; }
tool_check run_fim libfabric-msg "$fi_bin" libfabric-bin fi_version
tool_check run_fir libfabric-rdm "$fi_bin" libfabric-bin fi_version
tool_check run_ucx ucx "$ucx_bin" ucx-utils version_of ucx_info -v
tool_check run_sock sockperf "$sock_bin" sockperf version_of "$sock_bin" --version
tool_check run_iperf iperf3 "$iperf_bin" iperf3 version_of "$iperf_bin" --version
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
ucx_env=(env UCX_TLS=tcp)
[[ "$ucx_dev" != all ]] && ucx_env+=("UCX_NET_DEVICES=$ucx_dev")

log "results in $run_dir"
log "sizes ${size_list[*]}; $repeats repeats; weft=$weft; python=$py"

weft_sizes=()
for s in "${size_list[@]}"; do weft_sizes+=(-s "$s"); done
weft_ok=0
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
  : >>"$raw/$name.server.txt"
  record weft all all "$rep" "$rc" "$name"
  if ((rc == 0)); then
    weft_ok=1
    v=$(sed -n 's/.*"size": \([0-9]*\), "latency_us": {"median": \([0-9.]*\).*"bandwidth_MBps": \([0-9.]*\).*/\1 B \2 us \3 MB\/s/p' \
      "$raw/$name.client.txt" | paste -sd, - | sed 's/,/, /g')
    [[ -n "$v" ]] && log "rep $rep/$repeats: weft_perf: $v"
  else
    log "weft_perf failed (exit $rc): $(tail -n2 "$raw/$name.server.txt" | tr '\n' ' ')"
  fi

  for s in "${size_list[@]}"; do
    n=$(lat_iters "$s")
    for ep in msg rdm; do
      [[ $ep == msg ]] && ((!run_fim)) && continue
      [[ $ep == rdm ]] && ((!run_fir)) && continue
      name="fi-$ep-$s-r$rep"
      next_port
      client_server "$name" 30 \
        "$fi_bin" -p tcp -e "$ep" -S "$s" -I "$n" -B "$port" -- \
        "$fi_bin" -p tcp -e "$ep" -S "$s" -I "$n" -P "$port" localhost
      record "libfabric-$ep" pingpong "$s" "$rep" "$rc" "$name"
      v=$(awk 'NF == 8 && $7 ~ /^[0-9.]+$/ { l = $7 } END { print l }' "$raw/$name.client.txt")
      log "rep $rep/$repeats: fi_pingpong -e $ep $s B x$n: ${v:-FAILED (exit $rc)}${v:+ us (mean)}"
    done
    if ((run_ucx)); then
      name="ucx-lat-$s-r$rep"
      next_port
      w=$(( n / 10 > 10 ? n / 10 : 10 ))
      client_server "$name" 30 \
        "${ucx_env[@]}" "$ucx_bin" -t tag_lat -s "$s" -n "$n" -w "$w" -p "$port" -- \
        "${ucx_env[@]}" "$ucx_bin" -t tag_lat -s "$s" -n "$n" -w "$w" -p "$port" -f -v localhost
      record ucx tag_lat "$s" "$rep" "$rc" "$name"
      v=$(awk -F, 'NF == 8 && $2 ~ /^[0-9.]+$/ { l = $2 } END { print l }' "$raw/$name.client.txt")
      log "rep $rep/$repeats: ucx tag_lat    $s B x$n: ${v:-FAILED (exit $rc)}${v:+ us}"

      name="ucx-bw-$s-r$rep"
      next_port
      m=$(bw_msgs "$s")
      w=$(( m / 10 > 10 ? m / 10 : 10 ))
      client_server "$name" 30 \
        "${ucx_env[@]}" "$ucx_bin" -t tag_bw -s "$s" -n "$m" -w "$w" -p "$port" -- \
        "${ucx_env[@]}" "$ucx_bin" -t tag_bw -s "$s" -n "$m" -w "$w" -p "$port" -f -v localhost
      record ucx tag_bw "$s" "$rep" "$rc" "$name"
      v=$(awk -F, 'NF == 8 && $6 ~ /^[0-9.]+$/ { l = $6 } END { print l }' "$raw/$name.client.txt")
      log "rep $rep/$repeats: ucx tag_bw     $s B x$m: ${v:-FAILED (exit $rc)}${v:+ MiB/s}"
    fi
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
meta seconds "$(( SECONDS - t_start ))"
[[ "$(weft_stamp)" == "$weft_built" ]] ||
  problem "weft_perf or libweft was rebuilt during the run ($weft_built -> $(weft_stamp)): the weft figures may mix two builds"
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
log "measured in $(( SECONDS - t_start )) s; comparing"

args=("$run_dir" --stat "$stat")
((plot)) || args+=(--no-plot)
"$py" "$here/compare.py" "${args[@]}"
prc=$?
((prc == 0)) || die "compare.py failed (exit $prc); raw outputs are in $raw"
log "table: $run_dir/table.txt"
log "json:  $run_dir/results.json"
[[ -f "$run_dir/tcp.png" ]] && log "plot:  $run_dir/tcp.png"
((weft_ok)) || { log "weft_perf produced no numbers"; exit 1; }
exit 0
