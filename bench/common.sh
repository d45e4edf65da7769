# Sourced first by bench/shm.sh, tcp.sh and rma.sh (before their options are
# parsed): messages and size parsing. Expects bench_name.
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
