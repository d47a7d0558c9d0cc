#!/usr/bin/env bash
# make scale: mpsad with real charon at the scale of a fleet (test/scale).
# A controller namespace runs charon and mpsad as in production; a member
# farm runs ONE charon initiating N IKE SAs to it and ONE load generator
# (mpsad's own engine in the member role, over a recording data plane)
# answering for all N. For each N it measures the join, `mpsactl rekey`
# and a restart of the controller's mpsad until all N acknowledged, the
# controller mpsad's CPU and peak RSS, datagrams sent, retransmitted and
# lost, and charon's own time; the last line is machine-readable
# ("scale: members=N join_acked_s=... rekey_acked_s=... ..."). See
# docs/scale.md.
#
# Needs root and Go. Installs with apt-get, when missing: iproute2,
# iputils-ping, tcpdump, strongswan-charon, strongswan-swanctl,
# libcharon-extra-plugins (kernel-libipsec), libstrongswan-extra-plugins,
# libstrongswan-standard-plugins (the openssl and gcm plugins that
# charon's default proposals need), and gnuplot-nox when there is a plot
# to draw.
#
# Environment: N (member counts, spaces between, default 1000), BGP (1:
# the BGP mode, a route reflector and 4 prefixes per member), REPEAT
# (runs of each count, default 1), PLOT (the PNG of the rekey times
# against N, drawn with two counts or more: the median of the runs and
# their range; default docs/scale-rekey.png; PLOT= draws none), LOGS (a directory that
# receives the logs of charon, mpsad and the load generator; default
# none).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
N=${N:-1000}
REPEAT=${REPEAT:-1}
BGP=${BGP:-}
PLOT=${PLOT-docs/scale-rekey.png}
LOGS=${LOGS:-}

if [ "$(id -u)" != 0 ]; then
  echo "make scale needs root (network namespaces, TUN devices, charon): run it with sudo" >&2
  exit 1
fi
. scripts/deps.d/lib.sh
pkgs=("${netns_packages[@]}" "${charon_packages[@]}" libstrongswan-standard-plugins)
set -- $N
if [ $# -ge 2 ]; then
  pkgs+=(gnuplot-nox)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scale: installing ${missing[*]} with apt-get"
  install_missing "${missing[@]}"
fi

# Go, when the machine has none recent enough (05-go.sh: the pinned
# toolchain at /usr/local/go, as the demo installs it).
bash scripts/deps.d/05-go.sh
if ! command -v "$GO" >/dev/null; then
  GO=/usr/local/go/bin/go
fi

work=$(mktemp -d /tmp/mpsa-scale-bin.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "scale: building mpsad, mpsactl and the harness (mpsa-scale)"
CGO_ENABLED=0 "$GO" build -o "$work/" ./cmd/mpsad ./cmd/mpsactl ./test/scale/cmd/mpsa-scale
echo "scale: machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
args=(run -members "$N" -repeat "$REPEAT" -bin "$work")
if [ $# -ge 2 ] && [ -n "$PLOT" ]; then
  args+=(-plot "$PLOT")
fi
if [ -n "$LOGS" ]; then
  args+=(-logs "$LOGS")
fi
if [ -n "$BGP" ] && [ "$BGP" != 0 ]; then
  args+=(-bgp)
fi
"$work/mpsa-scale" "${args[@]}"
