#!/usr/bin/env bash
# Debian packages for the namespace, charon and kernel tests.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
install_missing iproute2 iputils-ping tcpdump iperf3 kmod \
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins \
  qemu-system-x86
