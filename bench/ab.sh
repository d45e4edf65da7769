#!/usr/bin/env bash
# A/B: two builds of weft (old and new library and tools), alternating in
# one run, over the measurements bench/shm.sh, bench/tcp.sh and bench/rma.sh
# make of weft. See --help.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rounds=5
limit=5
out=""
tmo=120
shm_sizes="8,64,4096,65536,1048576"
tcp_sizes="64,4096,65536,1048576"
rma_sizes="8,4096,65536,1048576"
parts="shm,tcp,rma"

usage() {
  cat <<EOF
usage: bench/ab.sh --old DIR --new DIR [options]

Runs weft_perf and weft_rma_perf from two builds, old and new alternating
(old, new, new, old, ...), so that load elsewhere on the machine falls on
both alike, over the sizes and tests bench/shm.sh, bench/tcp.sh and
bench/rma.sh measure. DIR is a build's tools directory (the one holding
weft_perf and weft_rma_perf, e.g. build/release/tools); each tool finds its
own libweft by its RPATH. Prints, per figure, the median of each side over
the rounds and the ratio (latency: old/new; bandwidth and rate: new/old; so
> 1 means the new build is faster), and flags figures worse by more than
the limit.

options:
  --old DIR          tools of the old build (required)
  --new DIR          tools of the new build (required)
  -r, --rounds N     rounds; each runs old and new once (default $rounds)
  --parts LIST       shm,tcp,rma (default $parts)
  --limit PCT        flag figures worse than this, in percent (default $limit)
  -o, --out FILE     also write the comparison as JSON to FILE
  --timeout S        bound on each tool run, in seconds (default $tmo)
  -h, --help         this text
Progress goes to stderr, the table to stdout. Exit status 0 when every run
produced numbers (regressions are reported, not failed on), 1 otherwise.
EOF
}

old="" new=""
while (($#)); do
  case "$1" in
    --old) old=${2?}; shift ;;
    --new) new=${2?}; shift ;;
    -r|--rounds) rounds=${2?}; shift ;;
    --parts) parts=${2?}; shift ;;
    --limit) limit=${2?}; shift ;;
    -o|--out) out=${2?}; shift ;;
    --timeout) tmo=${2?}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "ab.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $old && -n $new ]] || { echo "ab.sh: --old and --new are required (see --help)" >&2; exit 2; }
for d in "$old" "$new"; do
  for t in weft_perf weft_rma_perf; do
    [[ -x $d/$t ]] || { echo "ab.sh: $d/$t not found or not executable" >&2; exit 2; }
  done
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ab.sh: --rounds wants a positive integer" >&2; exit 2; }

raw=$(mktemp -d /tmp/weft-ab.XXXXXX)
trap 'rm -rf "$raw"' EXIT
failed=0

sizes() {  # comma list -> -s A -s B ...
  local v s
  IFS=, read -ra v <<<"$1"
  for s in "${v[@]}"; do printf -- '-s\n%s\n' "$s"; done
}

run_one() {  # output-file command...
  local f=$1
  shift
  if ! timeout -k 3 "$tmo" "$@" >"$f" 2>/dev/null </dev/null; then
    echo "ab.sh: failed: $*" >&2
    failed=1
  fi
}

run_side() {  # side round
  local side=$1 r=$2 dir p prov
  [[ $side == old ]] && dir=$old || dir=$new
  IFS=, read -ra P <<<"$parts"
  for p in "${P[@]}"; do
    case "$p" in
      shm) mapfile -t S < <(sizes "$shm_sizes")
           run_one "$raw/$side.$r.shm.json" "$dir/weft_perf" --spawn -q --json -p shm "${S[@]}" ;;
      tcp) mapfile -t S < <(sizes "$tcp_sizes")
           run_one "$raw/$side.$r.tcp.json" "$dir/weft_perf" --spawn -q --json -p tcp "${S[@]}" ;;
      rma) mapfile -t S < <(sizes "$rma_sizes")
           for prov in shm tcp; do
             run_one "$raw/$side.$r.rma-$prov.json" "$dir/weft_rma_perf" -q --json -p "$prov" "${S[@]}"
           done ;;
      *) echo "ab.sh: unknown part $p (shm, tcp, rma)" >&2; exit 2 ;;
    esac
  done
}

for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then order=(old new); else order=(new old); fi
  for side in "${order[@]}"; do
    echo "ab.sh: round $r/$rounds: $side" >&2
    run_side "$side" "$r"
  done
done

python3 "$here/ab.py" "$raw" "$limit" "$out" || failed=1
exit $failed
