#!/usr/bin/env bash
# Debian packages for `make bench` (scripts/bench.sh): wg from
# wireguard-tools configures the wireguard-go baseline. iperf3 comes from
# 10-debian.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
install_missing wireguard-tools
