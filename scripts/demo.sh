#!/usr/bin/env bash
# make demo: a controller and three CPEs in network namespaces on this
# machine, real charon, traffic over the shared SA, a rekey under traffic.
# Needs root. Installs the Debian packages it needs if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root (network namespaces, TUN devices, charon): run it with sudo" >&2
  exit 1
fi
. scripts/deps.d/lib.sh
install_missing "${netns_packages[@]}" "${charon_packages[@]}" >/dev/null
echo "building mpsad and mpsactl ..."
make -s build
GO=$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)
exec "$GO" run ./test/demo --bin bin
