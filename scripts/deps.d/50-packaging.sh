#!/usr/bin/env bash
# Debian packages for the packaging tests (packaging/test): rpm to inspect
# the .rpm (rpm -qpl, -qpR), charon-systemd because the .deb depends on it
# (it provides strongswan.service, which mpsad.service binds to), and
# systemd for systemd-analyze verify/security, groff-base to check the
# generated man pages.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# The .deb's own dependencies (pkgbuild.DebDepends), which the install
# test requires before it installs the package with dpkg.
install_missing rpm systemd man-db groff-base charon-systemd strongswan-swanctl libstrongswan-standard-plugins procps
