# Sourced first by bench/shm.sh, tcp.sh and rma.sh (before their options are
# parsed): the defaults and parsing of the options they share, messages, size
# parsing and option checks. Expects bench_name, weft_tool (weft_perf or
# weft_rma_perf) and a usage function.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
iters=10000
repeats=3
outdir="$root/bench/results"
stat=best
plot=1
weft_var=${weft_tool^^}  # WEFT_PERF, WEFT_RMA_PERF
weft="${!weft_var:-$root/build/release/tools/$weft_tool}"

die() { echo "$bench_name.sh: $*" >&2; exit 2; }
log() { echo "[$bench_name.sh] $*" >&2; }

to_bytes() {  # 4K -> 4096, 1M -> 1048576
  local v=${1^^}
  case "$v" in
    *[0-9]K) echo $(( ${v%K} * 1024 )) ;;
    *[0-9]M) echo $(( ${v%M} * 1048576 )) ;;
    *[0-9]) echo $(( v )) ;;
    *) return 1 ;;
  esac
}

# common_opt OPTION [VALUE]: an option every script has (any other is an
# error); sets nargs to how many words it took
common_opt() {
  nargs=2
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -s|--sizes) sizes=${2:?} ;;
    -i|--iters) iters=${2:?} ;;
    -r|--repeats) repeats=${2:?} ;;
    --stat) stat=${2:?} ;;
    -o|--out) outdir=${2:?} ;;
    --weft) weft=${2:?} ;;
    --timeout) tmo=${2:?} ;;
    --no-plot) plot=0 nargs=1 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
}

# ---- option checks, called once the options are parsed
want_posint() {  # OPTION VALUE
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 wants a positive integer"
}
want_stat() { [[ "$stat" == best || "$stat" == median ]] || die "--stat is best or median"; }
want_ucx_dev() { [[ "$ucx_dev" =~ ^[A-Za-z0-9_.:,-]+$ ]] || die "bad --ucx-devices: $ucx_dev"; }

# parse_sizes LIST [MAX HINT]: size_list from the comma-separated LIST (K and
# M suffixes allowed); every size at least 1 B and, with MAX, at most MAX
# bytes (HINT follows the error message)
parse_sizes() {
  local s b max=${2:-} items
  size_list=()
  IFS=, read -ra items <<<"$1"
  for s in "${items[@]}"; do
    b=$(to_bytes "$s" 2>/dev/null) && ((b > 0)) && { [[ -z "$max" ]] || ((b <= max)); } ||
      die "bad size: $s${3:-}"
    size_list+=("$b")
  done
  ((${#size_list[@]})) || die "no sizes"
}
