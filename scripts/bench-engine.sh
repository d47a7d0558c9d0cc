#!/usr/bin/env bash
# The engine at scale, by simulation (docs/scale.md, "Simulation"): the
# controller's real engine with 1,000, 10,000 and 100,000 simulated members
# on an in-memory wire with an injected clock (server/scale_bench_test.go),
# and the VICI watcher's cost per event and memory per IKE SA
# (vici/watcher_bench_test.go). Prints go test's lines, then one table.
#
# No root, no charon, no network. The figures are wall-clock and CPU time
# on this machine: on a shared machine run it when it is quiet, or several
# times (COUNT=3), and look at the spread.
#
# Environment: COUNT (runs of each benchmark, default 1), REKEYS (rekeys
# per size, default 5), JOINS (joins and leaves per size, default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
COUNT=${COUNT:-1}
REKEYS=${REKEYS:-5}
JOINS=${JOINS:-20000}

if ! command -v "$GO" >/dev/null; then
  echo "bench-engine: no Go ($GO): sudo bash scripts/deps.d/05-go.sh installs the toolchain this project pins (sudo make deps installs it with the rest)" >&2
  exit 1
fi

out=$(mktemp /tmp/mpsa-bench-engine.XXXXXX)
log=$(mktemp /tmp/mpsa-bench-engine-log.XXXXXX)
trap 'rm -f "$out" "$log"' EXIT

echo "bench-engine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $("$GO" env GOVERSION), load average $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # PACKAGE BENCH BENCHTIME
  # go test's whole output goes to a log, shown when it fails (a grep in
  # the pipe would hide its failure and its words).
  if ! "$GO" test -run '^$' -count "$COUNT" -bench "$2" -benchtime "$3" -benchmem "$1" >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench-engine: go test -bench $2 $1 failed (its output is above)" >&2
    exit 1
  fi
  if ! grep '^Benchmark' "$log" | tee -a "$out"; then
    echo "bench-engine: go test -bench $2 $1 printed no Benchmark line (renamed?)" >&2
    exit 1
  fi
}
run ./server 'RekeyFanout' "${REKEYS}x"
run ./server 'JoinLeave' "${JOINS}x"
run ./server 'EngineMemory' 1x
run ./server 'Resync' 1s
run ./server 'FleetAnswer' 1s
run ./vici 'WatcherEvent' 1s
run ./vici 'WatcherState' 1x

# metric NAME-REGEX N UNIT: the median of UNIT over the lines of NAME at N.
metric() {
  grep -E "^Benchmark$1/N=$2(/|-)" "$out" | awk -v u="$3" '{ for (i = 2; i < NF; i++) if ($(i+1) == u) print $i }' |
    sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'
}
echo
echo "| members | rekey: controller s | rekey: process CPU s | per member ns | fan-out at push_rate s | join ns | ack ns | leave ns | engine B/member | watcher B/IKE SA | watcher event ns |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for n in 1000 10000 100000; do
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$n" \
    "$(metric RekeyFanout "$n" ctl-s/rekey)" "$(metric RekeyFanout "$n" cpu-s/rekey)" "$(metric RekeyFanout "$n" ns/member)" \
    "$(metric RekeyFanout "$n" sim-s/rekey)" "$(metric JoinLeave "$n" ns/join)" "$(metric JoinLeave "$n" ns/ack)" \
    "$(metric JoinLeave "$n" ns/leave)" "$(metric EngineMemory "$n" B/member)" "$(metric WatcherState "$n" B/ike-sa)" \
    "$(grep -E "^BenchmarkWatcherEvent/N=$n/deltas" "$out" | awk '{ print $3 }' | sort -g | head -1)"
done
echo
echo "simulated member's answer (included in the process CPU): $(grep '^BenchmarkFleetAnswer' "$out" | awk '{ print $3 " ns" }' | head -1) per datagram"
for n in 1000 10000 100000; do
  echo "VICI resync that finds nothing changed, $n IKE SAs: $(metric Resync "$n" ns/ike-sa) ns per IKE SA"
done
