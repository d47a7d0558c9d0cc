#!/usr/bin/env bash
# Debian packages for the namespace, charon and kernel tests: charon and
# the namespace tools (lib.sh), iperf3 for the throughput tests, openssl for
# the ESP known-answer cross-check (xfrm/esp), kmod and qemu for the kernel
# data-plane tests in a guest (test/vm). (05-go.sh installs its own curl
# and unzip, when it downloads Go.)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
install_missing "${netns_packages[@]}" "${charon_packages[@]}" iperf3 openssl kmod qemu-system-x86
