#!/usr/bin/env bash
# Two hosts in network namespaces joined by a veth pair, on the benchmarking
# range 198.18.0.0/15, with delay, 1% loss and reordering: by netem where the
# kernel has it; otherwise (CONFIG_NET_SCH_NETEM unset, as on this project's
# machines) by nftables (random 1% drop; 30% of packets marked at random and
# routed over a second, rate-shaped veth pair: queueing delay and reordering).
#  1. 10k messages of mixed sizes arrive intact and in order.
#  2. The link is cut in the middle of a transfer: the sender's operations
#     complete with errors within WEFT_TCP_TIMEOUT_MS (plus a margin).
#  3. The links are cut while a client only waits on a receive directed at
#     the server: keep-alive finds the vanished host (peer_dead).
# Namespaces and processes are removed whatever happens. Exit 77 = skipped
# (namespaces cannot be created here).
set -uo pipefail
peer=$1
id=$$
ns1=weft_a_$id; ns2=weft_b_$id; v1=wva$id; v2=wvb$id; v3=wvc$id; v4=wvd$id
ip1=198.18.77.1; ip2=198.18.77.2; port=7471
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  ip netns del "$ns1" 2>/dev/null; ip netns del "$ns2" 2>/dev/null
  ip link del "$v1" 2>/dev/null; ip link del "$v3" 2>/dev/null
  true
}
trap cleanup EXIT
if ! ip netns add "$ns1" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces here (needs root and iproute2)"; exit 77
fi
ip netns add "$ns2" || exit 1
ip link add "$v1" type veth peer name "$v2" || exit 1
ip link set "$v1" netns "$ns1" && ip link set "$v2" netns "$ns2" || exit 1
ip -n "$ns1" addr add $ip1/24 dev "$v1" && ip -n "$ns2" addr add $ip2/24 dev "$v2" || exit 1
for n in "$ns1" "$ns2"; do ip -n "$n" link set lo up; done
ip -n "$ns1" link set "$v1" up && ip -n "$ns2" link set "$v2" up || exit 1
netem="delay 1ms 500us loss 1% reorder 5% 50%"
if tc -n "$ns1" qdisc add dev "$v1" root netem $netem 2>/dev/null; then
  tc -n "$ns2" qdisc add dev "$v2" root netem $netem || exit 1
  echo "namespaces $ns1 ($ip1) and $ns2 ($ip2): netem $netem"
else
  command -v nft >/dev/null || { echo "FAIL: neither netem nor nft (scripts/install-deps.sh installs nftables)"; exit 1; }
  ip link add "$v3" type veth peer name "$v4" || exit 1
  ip link set "$v3" netns "$ns1" && ip link set "$v4" netns "$ns2" || exit 1
  ip -n "$ns1" link set "$v3" up && ip -n "$ns2" link set "$v4" up || exit 1
  for pair in "$ns1 $v3 $ip2" "$ns2 $v4 $ip1"; do
    set -- $pair; n=$1; dev=$2; peer_ip=$3
    ip netns exec "$n" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv4.conf.$dev.rp_filter=0 || exit 1
    ip -n "$n" route add $peer_ip/32 dev "$dev" table 100 || exit 1
    ip -n "$n" rule add fwmark 1 table 100 || exit 1
    tc -n "$n" qdisc add dev "$dev" root tbf rate 40mbit burst 32kb latency 100ms || exit 1
    ip netns exec "$n" nft -f - <<NFT || exit 1
table inet weft {
  chain out {
    type route hook output priority mangle; policy accept;
    meta l4proto tcp numgen random mod 100 < 1 drop
    meta l4proto tcp numgen random mod 100 < 30 meta mark set 1
  }
}
NFT
  done
  ip netns exec "$ns1" sysctl -qw net.ipv4.conf.$v1.rp_filter=0
  ip netns exec "$ns2" sysctl -qw net.ipv4.conf.$v2.rp_filter=0
  echo "namespaces $ns1 ($ip1) and $ns2 ($ip2): no netem in this kernel; nftables drops 1% of tcp packets"
  echo "and routes 30% over a 40 Mbit/s shaped veth pair (queueing delay, reordering)"
fi

# Waits (up to $2 x 50 ms) for the client $cli to end after the cut at
# $cut, which must fail with exit 3 and a line matching $3; prints how long
# it took as phase $1.
await_client_error() {
  local phase=$1 polls=$2 want=$3 what=$4 rc took
  for i in $(seq 1 "$polls"); do kill -0 $cli 2>/dev/null || break; sleep 0.05; done
  if kill -0 $cli 2>/dev/null; then
    cat /tmp/weft_cli_$id.log; rm -f /tmp/weft_cli_$id.log
    echo "FAIL: phase $phase: $what still waits $((polls / 20)) s after the cut"; exit 1
  fi
  wait $cli; rc=$?
  took=$(( ($(date +%s%N) - cut) / 1000000 ))
  cat /tmp/weft_cli_$id.log
  if [[ $rc -ne 3 ]] || ! grep -q "$want" /tmp/weft_cli_$id.log; then
    rm -f /tmp/weft_cli_$id.log; echo "FAIL: phase $phase: expected '$want' after the cut (exit $rc)"; exit 1
  fi
  rm -f /tmp/weft_cli_$id.log
  echo "phase $phase: $what failed ${took} ms after the cut (timeout $WEFT_TCP_TIMEOUT_MS ms)"
  if (( took > 8000 )); then echo "FAIL: phase $phase: it took longer than the timeout allows"; exit 1; fi
}

# 1. 10k mixed messages through delay, loss and reordering
export WEFT_PEER_TIMEOUT_S=150
ip netns exec "$ns2" "$peer" server --bind $ip2 --port $port --count 10000 > /tmp/weft_srv_$id.log 2>&1 &
pids+=($!); srv=$!
for i in $(seq 1 100); do grep -q listening /tmp/weft_srv_$id.log 2>/dev/null && break; sleep 0.05; done
start=$(date +%s)
ip netns exec "$ns1" "$peer" client --bind $ip1 --server $ip2 --port $port --count 10000; crc=$?
wait $srv; src=$?
cat /tmp/weft_srv_$id.log; rm -f /tmp/weft_srv_$id.log
echo "phase 1: client exit $crc, server exit $src, $(( $(date +%s) - start )) s"
if [[ $crc -ne 0 || $src -ne 0 ]]; then echo "FAIL: 10k messages over a lossy link"; exit 1; fi
if ip -n "$ns1" link show "$v3" >/dev/null 2>&1; then
  slow=$(ip -n "$ns1" -s link show "$v3" | awk '/TX:/{getline; print $2}')
  echo "packets sent over the slow (reordering) path: $slow"
  if [[ -z "$slow" || "$slow" -lt 100 ]]; then echo "FAIL: the reordering path carried no traffic"; exit 1; fi
fi

# 2. cut the link in the middle of a transfer
export WEFT_TCP_TIMEOUT_MS=2000
ip netns exec "$ns2" "$peer" server --bind $ip2 --port $((port+1)) --count 100000000 > /dev/null 2>&1 &
pids+=($!)
sleep 0.3
ip netns exec "$ns1" "$peer" client --bind $ip1 --server $ip2 --port $((port+1)) --count 100000000 --large \
  > /tmp/weft_cli_$id.log 2>&1 &
cli=$!; pids+=($cli)
sleep 1.5
ip -n "$ns1" link set "$v1" down
cut=$(date +%s%N)
await_client_error 2 200 "send error" "the sender"

# 3. cut both links while the client only waits on a receive directed at
#    the server: nothing is unacknowledged, so only keep-alive finds that
#    the host is gone (without it: the 60 s idle close)
ip -n "$ns1" link set "$v1" up
ip netns exec "$ns2" "$peer" server --bind $ip2 --port $((port+2)) --count 10 --stay > /dev/null 2>&1 &
pids+=($!)
sleep 0.3
ip netns exec "$ns1" "$peer" client --bind $ip1 --server $ip2 --port $((port+2)) --count 10 --then-wait \
  > /tmp/weft_cli_$id.log 2>&1 &
cli=$!; pids+=($cli)
for i in $(seq 1 400); do grep -q "waiting on a receive" /tmp/weft_cli_$id.log 2>/dev/null && break; sleep 0.05; done
if ! grep -q "waiting on a receive" /tmp/weft_cli_$id.log; then
  cat /tmp/weft_cli_$id.log; rm -f /tmp/weft_cli_$id.log; echo "FAIL: the client never got to its receive"; exit 1
fi
ip -n "$ns1" link set "$v1" down
ip -n "$ns1" link show "$v3" >/dev/null 2>&1 && ip -n "$ns1" link set "$v3" down
cut=$(date +%s%N)
await_client_error 3 300 "receive error.*peer" "a receive directed at the vanished host"
echo "netns test: ok"
