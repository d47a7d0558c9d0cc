#!/usr/bin/env bash
# Debian packages for the packaging tests (packaging/test): rpm to inspect
# the .rpm (rpm -qpl, -qpR), charon-systemd because the .deb depends on it
# (it provides strongswan.service, which mpsad.service binds to), and
# systemd for systemd-analyze verify/security, groff-base to check the
# generated man pages.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
install_missing rpm charon-systemd systemd man-db groff-base
