#!/usr/bin/env bash
# Debian packages for `make bench` (scripts/bench.sh): wg from
# wireguard-tools configures the wireguard-go baseline. iperf3 comes from
# 10-debian.sh.
set -euo pipefail
pkgs=(wireguard-tools iperf3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
