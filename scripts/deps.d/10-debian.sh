#!/usr/bin/env bash
# Debian packages for the namespace, charon and kernel tests.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
install_missing "${netns_packages[@]}" "${charon_packages[@]}" iperf3 kmod qemu-system-x86
