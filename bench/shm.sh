#!/usr/bin/env bash
# weft shm vs libfabric shm (fi_pingpong) vs UCX shared memory (ucx_perftest),
# measured in the same run. See usage() or run with --help.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
bench_name=shm
# shellcheck source=bench/common.sh
source "$here/common.sh"

sizes="8,64,4096,65536,1048576"
iters=10000
repeats=3
outdir="$root/bench/results"
stat=best
peers="libfabric,ucx"
tmo=60
weft="${WEFT_PERF:-$root/build/release/tools/weft_perf}"
plot=1

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
    -h|--help) usage; exit 0 ;;
    -s|--sizes) sizes=${2:?}; shift ;;
    -i|--iters) iters=${2:?}; shift ;;
    -r|--repeats) repeats=${2:?}; shift ;;
    --stat) stat=${2:?}; shift ;;
    -o|--out) outdir=${2:?}; shift ;;
    --peers) peers=${2?}; shift ;;
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
[[ "$stat" == best || "$stat" == median ]] || die "--stat is best or median"
size_list=()
IFS=, read -ra _s <<<"$sizes"
for s in "${_s[@]}"; do
  b=$(to_bytes "$s" 2>/dev/null) && ((b > 0)) || die "bad size: $s"
  size_list+=("$b")
done
((${#size_list[@]})) || die "no sizes"
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

# client_server NAME SERVER_CMD... -- CLIENT_CMD...: runs one server/client
# pair bounded by --timeout; sets rc to the client's exit status
client_server() {
  local name=$1; shift
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
  stop_server "$spid"
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
meta date "$(date -Iseconds)"
meta host "$(hostname)"
meta nproc "$(nproc)"
meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
meta kernel "$(uname -r)"
meta sizes "$(IFS=,; echo "${size_list[*]}")"
meta iters "$iters"
meta repeats "$repeats"
meta weft_git "$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
meta tool.weft.path "$weft"
meta tool.weft.available yes
if ((run_fi)); then
  if [[ -n "$fi_bin" ]]; then
    meta tool.libfabric.available yes
    meta tool.libfabric.path "$fi_bin"
    meta tool.libfabric.version "$(fi_info --version 2>/dev/null | sed -n 's/^libfabric: *//p')"
    if ! fi_info -p shm >/dev/null 2>&1; then
      problem "libfabric: fi_info -p shm lists no shm provider; fi_pingpong will probably fail"
    fi
  else
    run_fi=0
    meta tool.libfabric.available no
    meta tool.libfabric.note "${FI_PINGPONG:-fi_pingpong} not found (Debian package libfabric-bin)"
    problem "libfabric: ${FI_PINGPONG:-fi_pingpong} not found (install libfabric-bin); libfabric not measured"
  fi
else
  meta tool.libfabric.available no
  meta tool.libfabric.note "left out with --peers"
fi
if ((run_ucx)); then
  if [[ -n "$ucx_bin" ]]; then
    meta tool.ucx.available yes
    meta tool.ucx.path "$ucx_bin"
    meta tool.ucx.version "$(version_of ucx_info -v)"
  else
    run_ucx=0
    meta tool.ucx.available no
    meta tool.ucx.note "${UCX_PERFTEST:-ucx_perftest} not found (Debian package ucx-utils)"
    problem "ucx: ${UCX_PERFTEST:-ucx_perftest} not found (install ucx-utils); UCX not measured"
  fi
else
  meta tool.ucx.available no
  meta tool.ucx.note "left out with --peers"
fi

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
  log "rep $rep/$repeats: weft_perf --spawn, all sizes"
  timeout -k 3 "$tmo" "$weft" --spawn -q --json -i "$iters" "${weft_sizes[@]}" \
    >"$raw/$name.client.txt" 2>"$raw/$name.server.txt" </dev/null
  rc=$?
  : >>"$raw/$name.server.txt"
  record weft all all "$rep" "$rc" "$name"
  if ((rc == 0)); then
    weft_ok=1
  else
    log "weft_perf failed (exit $rc): $(tail -n2 "$raw/$name.server.txt" | tr '\n' ' ')"
  fi

  for s in "${size_list[@]}"; do
    n=$(lat_iters "$s")
    if ((run_fi)); then
      name="fi-$s-r$rep"
      next_port
      client_server "$name" \
        "$fi_bin" -p shm -e rdm -S "$s" -I "$n" -B "$port" -- \
        "$fi_bin" -p shm -e rdm -S "$s" -I "$n" -P "$port" localhost
      record libfabric pingpong "$s" "$rep" "$rc" "$name"
      v=$(awk 'NF == 8 && $7 ~ /^[0-9.]+$/ { l = $7 } END { print l }' "$raw/$name.client.txt")
      log "rep $rep/$repeats: fi_pingpong  $s B x$n: ${v:-FAILED (exit $rc)}${v:+ us}"
    fi
    if ((run_ucx)); then
      name="ucx-lat-$s-r$rep"
      next_port
      w=$(( n / 10 > 10 ? n / 10 : 10 ))
      client_server "$name" \
        env UCX_TLS=sm,self "$ucx_bin" -t tag_lat -s "$s" -n "$n" -w "$w" -p "$port" -- \
        env UCX_TLS=sm,self "$ucx_bin" -t tag_lat -s "$s" -n "$n" -w "$w" -p "$port" -f -v localhost
      record ucx tag_lat "$s" "$rep" "$rc" "$name"
      v=$(awk -F, 'NF == 8 && $2 ~ /^[0-9.]+$/ { l = $2 } END { print l }' "$raw/$name.client.txt")
      log "rep $rep/$repeats: ucx tag_lat  $s B x$n: ${v:-FAILED (exit $rc)}${v:+ us}"

      name="ucx-bw-$s-r$rep"
      next_port
      m=$(bw_msgs "$s")
      w=$(( m / 10 > 10 ? m / 10 : 10 ))
      client_server "$name" \
        env UCX_TLS=sm,self "$ucx_bin" -t tag_bw -s "$s" -n "$m" -w "$w" -p "$port" -- \
        env UCX_TLS=sm,self "$ucx_bin" -t tag_bw -s "$s" -n "$m" -w "$w" -p "$port" -f -v localhost
      record ucx tag_bw "$s" "$rep" "$rc" "$name"
      v=$(awk -F, 'NF == 8 && $6 ~ /^[0-9.]+$/ { l = $6 } END { print l }' "$raw/$name.client.txt")
      log "rep $rep/$repeats: ucx tag_bw   $s B x$m: ${v:-FAILED (exit $rc)}${v:+ MiB/s}"
    fi
  done
done
meta seconds "$(( SECONDS - t_start ))"
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
log "measured in $(( SECONDS - t_start )) s; comparing"

args=("$run_dir" --stat "$stat")
((plot)) || args+=(--no-plot)
"$py" "$here/compare.py" "${args[@]}"
prc=$?
((prc == 0)) || die "compare.py failed (exit $prc); raw outputs are in $raw"
log "table: $run_dir/table.txt"
log "json:  $run_dir/results.json"
[[ -f "$run_dir/shm.png" ]] && log "plot:  $run_dir/shm.png"
((weft_ok)) || { log "weft_perf produced no numbers"; exit 1; }
exit 0
