# Shared by bench/shm.sh, tcp.sh and rma.sh (sourced, not run, once their
# options are parsed and checked): choice of python, the results directory,
# the bookkeeping of servers and ports so that every process a benchmark
# starts is stopped, the peer tools, meta.tsv and the end of a run.
# Expects what common.sh sets (root, outdir, weft, weft_tool, weft_var, stat,
# plot, die, log, ...) and bench_name, here, size_list, iters, repeats, tmo.
# python: the first that has matplotlib, else the first that exists
py=""
for c in ${PYTHON:-} python3 /usr/bin/python3; do
  command -v "$c" >/dev/null 2>&1 || continue
  [[ -z "$py" ]] && py=$c
  if "$c" -c 'import matplotlib' >/dev/null 2>&1; then py=$c; break; fi
done
[[ -n "$py" ]] || die "python3 is needed to parse the results (scripts/install-deps.sh --bench)"
[[ -x "$weft" ]] || die "$weft_tool not found at $weft (build it, or pass --weft / set $weft_var)"

stamp=$(date +%Y%m%d-%H%M%S)
run_dir="$outdir/$bench_name-$stamp"
raw="$run_dir/raw"
mkdir -p "$raw" || die "cannot create $raw"
printf 'peer\ttest\tsize\trep\trc\tclient\tserver\n' >"$raw/status.tsv"
: >"$raw/problems.txt"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$raw/meta.tsv"; }
problem() { log "PROBLEM: $*"; echo "$*" >>"$raw/problems.txt"; }
record() {  # peer test size rep rc name
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6.client.txt" "$6.server.txt" \
    >>"$raw/status.tsv"
}

# ---- processes: every server we start is remembered and stopped on exit
servers=()
cleanup() {
  local pid
  for pid in "${servers[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill "$pid" 2>/dev/null
  done
  for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null; done
  servers=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

have_ss=0; command -v ss >/dev/null 2>&1 && have_ss=1
listening() { ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }
in_use() { ss -Htan "( sport = :$1 or dport = :$1 )" 2>/dev/null | grep -q .; }
port=$(( 20000 + $$ % 20000 ))
next_port() {  # a port nobody listens on or talks from (TIME_WAIT included)
  local n
  for n in $(seq 100); do
    port=$(( port + 1 )); ((port > 60000)) && port=20000
    ((have_ss)) && in_use "$port" && continue
    return 0
  done
}
wait_listen() {  # port pid: wait (<= 5 s) until the server listens
  local i
  for i in $(seq 50); do
    kill -0 "$2" 2>/dev/null || return 1
    if ((have_ss)); then listening "$1" && return 0; elif ((i >= 5)); then return 0; fi
    sleep 0.1
  done
  return 1
}
stop_server() {  # pid [grace]: give it GRACE tenths of a second (default 30) to finish, then stop it
  local i grace=${2:-30}
  for ((i = 0; i < grace; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && kill "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  local keep=() p
  for p in "${servers[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done
  servers=("${keep[@]}")
}

# client_server NAME GRACE SERVER_CMD... -- CLIENT_CMD...: runs one server/client
# pair on $port, each bounded by --timeout; sets rc to the client's exit
# status. GRACE: how long (tenths of a second) a server that stops by itself
# may take to do so after the client; 0 for servers that run until stopped.
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

# ---- iteration counts
clamp_div() {  # N D LO HI: N / D, raised to LO, then lowered to HI
  local n=$(( $1 / $2 )); ((n < $3)) && n=$3; ((n > $4)) && n=$4; echo $n
}
# those of weft_perf (shm.sh, tcp.sh): latency iterations and ucx tag_bw messages
lat_iters() { clamp_div $(( 1 << 28 )) "$1" 100 "$iters"; }
bw_msgs() { clamp_div $(( 1 << 31 )) "$1" 1000 $(( 10 * iters )); }

# ---- peer tools
version_of() { "$@" 2>/dev/null | head -n1 | grep -o '[0-9][0-9.]*[0-9]' | head -n1; }
fi_version() { fi_info --version 2>/dev/null | sed -n 's/^libfabric: *//p'; }
fi_bin=$(command -v "${FI_PINGPONG:-fi_pingpong}" || true)
ucx_bin=$(command -v "${UCX_PERFTEST:-ucx_perftest}" || true)

# tool_check FLAGVAR KEY BIN NOTE PROBLEM VERSION_CMD...: records the peer tool
# KEY in meta.tsv; when FLAGVAR is set but BIN is empty (tool missing), clears
# FLAGVAR and records NOTE (tool.KEY.note) and PROBLEM (problems.txt)
tool_check() {
  local -n flag=$1
  local key=$2 bin=$3 note=$4 prob=$5; shift 5
  if ((!flag)); then
    meta "tool.$key.available" no
    meta "tool.$key.note" "left out with --peers"
  elif [[ -z "$bin" ]]; then
    flag=0
    meta "tool.$key.available" no
    meta "tool.$key.note" "$note"
    problem "$prob"
  else
    meta "tool.$key.available" yes
    meta "tool.$key.path" "$bin"
    meta "tool.$key.version" "$("$@")"
  fi
}

# ---- meta.tsv
meta_run() {  # the machine and the settings every script has
  meta date "$(date -Iseconds)"
  meta host "$(hostname)"
  meta nproc "$(nproc)"
  meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
  meta kernel "$(uname -r)"
  meta sizes "$(IFS=,; echo "${size_list[*]}")"
  meta iters "$iters"
  meta repeats "$repeats"
}
meta_weft() {  # the weft tool and the tree it comes from
  meta weft_git "$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
  meta tool.weft.path "$weft"
  meta tool.weft.available yes
}
# what the weft tool runs: its mtime and libweft's, checked again by finish (a
# rebuild in the middle of a run mixes two builds)
weft_stamp() { stat -c '%y' "$weft" ${weft_lib:+"$weft_lib"} 2>/dev/null | tr '\n' ' '; }
weft_stamped=0
meta_weft_build() {
  weft_stamped=1
  weft_lib=$(ldd "$weft" 2>/dev/null | awk '/libweft/ { print $3; exit }')
  weft_built=$(weft_stamp)
  meta tool.weft.built "$weft_built"
  [[ -n "$weft_lib" ]] && meta tool.weft.lib "$weft_lib"
}

# ---- runs (rep: the repeat; ucx_env: the env command prefix for UCX)
weft_sizes=()
for s in "${size_list[@]}"; do weft_sizes+=(-s "$s"); done
weft_ok=0

weft_perf_done() {  # name: records a weft_perf run (rc); fails when it failed
  : >>"$raw/$1.server.txt"
  record weft all all "$rep" "$rc" "$1"
  if ((rc == 0)); then
    weft_ok=1
    return 0
  fi
  log "weft_perf failed (exit $rc): $(tail -n2 "$raw/$1.server.txt" | tr '\n' ' ')"
  return 1
}

# fi_run NAME PEER SIZE ITERS LABEL UNIT FI_ARGS...: one fi_pingpong ping-pong
fi_run() {
  local name=$1 peer=$2 s=$3 n=$4 label=$5 unit=$6 v; shift 6
  next_port
  client_server "$name" 30 \
    "$fi_bin" "$@" -S "$s" -I "$n" -B "$port" -- \
    "$fi_bin" "$@" -S "$s" -I "$n" -P "$port" localhost
  record "$peer" pingpong "$s" "$rep" "$rc" "$name"
  v=$(awk 'NF == 8 && $7 ~ /^[0-9.]+$/ { l = $7 } END { print l }' "$raw/$name.client.txt")
  log "rep $rep/$repeats: $label $s B x$n: ${v:-FAILED (exit $rc)}${v:+ $unit}"
}

# ucx_tag_runs SIZE ITERS GAP: ucx_perftest tag_lat (ITERS iterations), then
# tag_bw (bw_msgs messages); GAP pads the test's name in the progress lines
ucx_tag_runs() {
  ucx_tag_run lat tag_lat "$1" "$2" 2 "us" "$3"
  ucx_tag_run bw tag_bw "$1" "$(bw_msgs "$1")" 6 "MiB/s" " $3"
}
ucx_tag_run() {  # what test size count csv-column unit gap
  local name="ucx-$1-$3-r$rep" t=$2 s=$3 n=$4 w v
  next_port
  w=$(( n / 10 > 10 ? n / 10 : 10 ))
  client_server "$name" 30 \
    "${ucx_env[@]}" "$ucx_bin" -t "$t" -s "$s" -n "$n" -w "$w" -p "$port" -- \
    "${ucx_env[@]}" "$ucx_bin" -t "$t" -s "$s" -n "$n" -w "$w" -p "$port" -f -v localhost
  record ucx "$t" "$s" "$rep" "$rc" "$name"
  v=$(awk -F, -v c="$5" 'NF == 8 && $c ~ /^[0-9.]+$/ { l = $c } END { print l }' "$raw/$name.client.txt")
  log "rep $rep/$repeats: ucx $t$7$s B x$n: ${v:-FAILED (exit $rc)}${v:+ $6}"
}

ucx_tcp_env() {  # ucx_env for UCX over TCP (--ucx-devices: ucx_dev)
  ucx_env=(env UCX_TLS=tcp)
  if [[ "$ucx_dev" != all ]]; then ucx_env+=("UCX_NET_DEVICES=$ucx_dev"); fi
}

# finish COMPARE_SCRIPT: the end of a run: the last meta.tsv lines (and the
# rebuild check after meta_weft_build), the comparison, the exit status
finish() {
  meta seconds "$(( SECONDS - t_start ))"
  if ((weft_stamped)); then
    [[ "$(weft_stamp)" == "$weft_built" ]] ||
      problem "$weft_tool or libweft was rebuilt during the run ($weft_built -> $(weft_stamp)): the weft figures may mix two builds"
  fi
  meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
  log "measured in $(( SECONDS - t_start )) s; comparing"

  local args=("$run_dir" --stat "$stat") prc
  ((plot)) || args+=(--no-plot)
  "$py" "$here/$1" "${args[@]}"
  prc=$?
  ((prc == 0)) || die "$1 failed (exit $prc); raw outputs are in $raw"
  log "table: $run_dir/table.txt"
  log "json:  $run_dir/results.json"
  [[ -f "$run_dir/$bench_name.png" ]] && log "plot:  $run_dir/$bench_name.png"
  ((weft_ok)) || { log "$weft_tool produced no numbers"; exit 1; }
  exit 0
}
