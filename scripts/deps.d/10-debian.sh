#!/usr/bin/env bash
# Debian packages for the namespace, charon and kernel tests.
set -euo pipefail
pkgs=(iproute2 iputils-ping tcpdump iperf3 kmod
      strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins
      qemu-system-x86)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
