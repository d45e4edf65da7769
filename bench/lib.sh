# Shared by bench/shm.sh and bench/tcp.sh (sourced, not run): choice of
# python, the results directory, and the bookkeeping of servers and ports so
# that every process a benchmark starts is stopped. Expects: outdir,
# bench_name, weft; log and die functions.
# python: the first that has matplotlib, else the first that exists
py=""
for c in ${PYTHON:-} python3 /usr/bin/python3; do
  command -v "$c" >/dev/null 2>&1 || continue
  [[ -z "$py" ]] && py=$c
  if "$c" -c 'import matplotlib' >/dev/null 2>&1; then py=$c; break; fi
done
[[ -n "$py" ]] || die "python3 is needed to parse the results (scripts/install-deps.sh --bench)"
[[ -x "$weft" ]] || die "weft_perf not found at $weft (build it, or pass --weft / set WEFT_PERF)"

stamp=$(date +%Y%m%d-%H%M%S)
run_dir="$outdir/$bench_name-$stamp"
raw="$run_dir/raw"
mkdir -p "$raw" || die "cannot create $raw"
printf 'peer\ttest\tsize\trep\trc\tclient\tserver\n' >"$raw/status.tsv"
: >"$raw/problems.txt"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$raw/meta.tsv"; }
problem() { log "PROBLEM: $*"; echo "$*" >>"$raw/problems.txt"; }

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
