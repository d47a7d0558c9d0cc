#!/usr/bin/env bash
# Data-plane throughput: the userspace ESP backend, with raw ESP and with ESP
# in UDP (UDP GSO/GRO), against wireguard-go, on
# the same pair of network namespaces joined by a veth, with iperf3 (TCP, 1
# and 4 streams). Prints Mbit/s and packets/s (frames leaving the sender's
# underlay veth) for each, and the ratio userspace/wireguard-go.
# packets/s is the inner packet rate (throughput / MTU); frames/s counts
# what leaves the sender's veth: with raw ESP every ESP packet counts once,
# while the UDP GSO super-frames of ESP in UDP and of wireguard-go count
# once each, however many packets they carry. ESP in UDP uses port 4502,
# mpsad's default encap_port (4501 is its control port).
#
# Needs root, iperf3, wg (wireguard-tools) and Go, each installed here if
# missing (Debian's packages; Go by scripts/deps.d/05-go.sh). wireguard-go is built from the Go module proxy at the
# version this module already requires for its TUN library.
#
# Environment: DURATION (seconds per run, default 10), SUITE (ESP proposal,
# default aes256-sha256), MTU (inner MTU for both, default 1420).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
DURATION=${DURATION:-10}
SUITE=${SUITE:-aes256-sha256}
MTU=${MTU:-1420}

[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces)" >&2; exit 1; }
. scripts/deps.d/lib.sh   # the working directory is the repository root (above)
install_missing "${netns_packages[@]}" iperf3 wireguard-tools
bash scripts/deps.d/05-go.sh
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go

work=$(mktemp -d /tmp/mpsa-bench.XXXXXX)
nsA="mpsab-$$-a"
nsB="mpsab-$$-b"
pids=() # started by this script; `ip netns exec` execs, so these are the programs' own PIDs
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$nsA" 2>/dev/null || true
  ip netns del "$nsB" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "bench: building usnode and wireguard-go"
CGO_ENABLED=0 "$GO" build -o "$work/usnode" ./xfrm/userspace/internal/usnode
wgver=$("$GO" list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)
GOBIN="$work" CGO_ENABLED=0 "$GO" install "golang.zx2c4.com/wireguard@$wgver"
mv "$work/wireguard" "$work/wireguard-go"

# Two namespaces: underlay veth uA/uB (192.168.77.0/24), a LAN address on a
# veth pair inside each (10.77.1.1, 10.77.2.1).
ip netns add "$nsA"
ip netns add "$nsB"
A() { ip netns exec "$nsA" "$@"; }
B() { ip netns exec "$nsB" "$@"; }
ip link add uA netns "$nsA" type veth peer name uB netns "$nsB"
for ns in "$nsA" "$nsB"; do ip -n "$ns" link set lo up; done
A ip addr add 192.168.77.1/24 dev uA; A ip link set uA up
B ip addr add 192.168.77.2/24 dev uB; B ip link set uB up
A ip link add lan0 type veth peer name lan0p; A ip link set lan0 up; A ip link set lan0p up
B ip link add lan0 type veth peer name lan0p; B ip link set lan0 up; B ip link set lan0p up
A ip addr add 10.77.1.1/24 dev lan0
B ip addr add 10.77.2.1/24 dev lan0

B iperf3 -s -B 10.77.2.1 -D --pidfile "$work/iperf3.pid" >/dev/null
sleep 0.5
iperf_pid=$(cat "$work/iperf3.pid")
pids+=("$iperf_pid")

txpackets() { A cat /sys/class/net/uA/statistics/tx_packets; }

# run LABEL STREAMS: one iperf3 run from A's LAN to B's LAN; sets $mbps and $pps.
run() {
  local label=$1 streams=$2 before after out
  before=$(txpackets)
  out=$(A iperf3 -c 10.77.2.1 -B 10.77.1.1 -t "$DURATION" -P "$streams" -f m)
  after=$(txpackets)
  mbps=$(echo "$out" | awk '/receiver/ { v = $(NF-2) } END { print v }')
  pps=$(( (after - before) / DURATION ))
  inpps=$(awk -v m="$mbps" -v mtu="$MTU" 'BEGIN { printf "%d", m * 1e6 / 8 / mtu }')
  printf "%-14s %d stream(s)  %8s Mbit/s  %8d packets/s (inner, MTU-sized)  %8d frames/s on the veth\n" "$label" "$streams" "$mbps" "$inpps" "$pps"
}

wait_ping() {
  for _ in $(seq 1 50); do
    A ping -c 1 -W 1 -I 10.77.1.1 10.77.2.1 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "bench: no connectivity through the $1 tunnel" >&2
  return 1
}

declare -A result

# --- userspace ESP ---
keys=$(od -An -tx1 -N80 /dev/urandom | tr -d ' \n')
case "$SUITE" in
  aes128-*) ek=${keys:0:32} ;;
  aes192-*) ek=${keys:0:48} ;;
  *) ek=${keys:0:64} ;;
esac
case "$SUITE" in
  *sha1) ik=${keys:64:40} ;;
  *sha384) ik=${keys:64:96} ;;
  *sha512) ik=${keys:64:96}${keys:0:32} ;;
  *) ik=${keys:64:64} ;;
esac
printf "%s %s\n" "$ek" "$ik" >"$work/keys"
chmod 600 "$work/keys"
# userspace MODE PORT: both usnode processes, raw ESP (PORT 0) or ESP in UDP.
userspace() {
  local mode=$1 port=$2
  ip netns exec "$nsA" "$work/usnode" -mtu "$MTU" -suite "$SUITE" -keyfile "$work/keys" -local 192.168.77.1 \
    -udp-port "$port" -lan 10.77.1.0/24 -peer 10.77.2.0/24=192.168.77.2 2>"$work/usA.log" &
  usA=$!; pids+=("$usA")
  ip netns exec "$nsB" "$work/usnode" -mtu "$MTU" -suite "$SUITE" -keyfile "$work/keys" -local 192.168.77.2 \
    -udp-port "$port" -lan 10.77.2.0/24 -peer 10.77.1.0/24=192.168.77.1 2>"$work/usB.log" &
  usB=$!; pids+=("$usB")
  wait_ping "$mode"
  echo "$mode ($SUITE, MTU $MTU):"
  for s in 1 4; do
    run "$mode" "$s"
    result[$mode$s]=$mbps; result[${mode}pps$s]=$pps
  done
  kill "$usA" "$usB"; wait "$usA" "$usB" || true
  grep -h "^spi\|^drops" "$work/usA.log" "$work/usB.log" | sed 's/^/  /'
}
userspace esp 0
userspace esp-in-udp 4502

# --- wireguard-go ---
umask 077
wg genkey >"$work/wgA.key"; wg pubkey <"$work/wgA.key" >"$work/wgA.pub"
wg genkey >"$work/wgB.key"; wg pubkey <"$work/wgB.key" >"$work/wgB.pub"
# Distinct names: wireguard-go's UAPI socket, /var/run/wireguard/NAME.sock,
# is shared by all namespaces.
ip netns exec "$nsA" env LOG_LEVEL=error "$work/wireguard-go" -f wgA >"$work/wgA.log" 2>&1 &
wgA=$!; pids+=("$wgA")
ip netns exec "$nsB" env LOG_LEVEL=error "$work/wireguard-go" -f wgB >"$work/wgB.log" 2>&1 &
wgB=$!; pids+=("$wgB")
for _ in $(seq 1 50); do A ip link show wgA >/dev/null 2>&1 && B ip link show wgB >/dev/null 2>&1 && break; sleep 0.1; done
A wg set wgA private-key "$work/wgA.key" listen-port 51820 peer "$(cat "$work/wgB.pub")" allowed-ips 10.77.2.0/24 endpoint 192.168.77.2:51820
B wg set wgB private-key "$work/wgB.key" listen-port 51820 peer "$(cat "$work/wgA.pub")" allowed-ips 10.77.1.0/24 endpoint 192.168.77.1:51820
A ip link set wgA mtu "$MTU" up
B ip link set wgB mtu "$MTU" up
A ip route add 10.77.2.0/24 dev wgA src 10.77.1.1
B ip route add 10.77.1.0/24 dev wgB src 10.77.2.1
wait_ping wireguard-go
echo "wireguard-go ($wgver, MTU $MTU):"
for s in 1 4; do
  run wireguard-go "$s"
  result[wg$s]=$mbps; result[wgpps$s]=$pps
done

echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $("$GO" env GOVERSION)"
for mode in esp esp-in-udp; do
  for s in 1 4; do
    awk -v u="${result[$mode$s]}" -v w="${result[wg$s]}" -v s="$s" -v m="$mode" \
      'BEGIN { printf "ratio userspace %s/wireguard-go, %d stream(s): %.2f (%s vs %s Mbit/s)\n", m, s, (w > 0 ? u / w : 0), u, w }'
  done
done
