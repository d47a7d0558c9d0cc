#!/usr/bin/env bash
# Debian packages for the packaging tests (packaging/test): rpm to inspect
# the .rpm (rpm -qpl, -qpR), charon-systemd because the .deb depends on it
# (it provides strongswan.service, which mpsad.service binds to), and
# systemd for systemd-analyze verify/security, groff-base to check the
# generated man pages.
set -euo pipefail
pkgs=(rpm charon-systemd systemd man-db groff-base)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
