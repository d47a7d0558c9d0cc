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
# Say what is missing and why before apt-get runs, which can take a while
# on a fresh machine; apt's own output goes to a file, shown only if it
# fails.
missing=()
for p in "${netns_packages[@]}" "${charon_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get (a minute or two) ..."
  echo "  the demo runs strongSwan's charon with kernel-libipsec and swanctl in network namespaces (iproute2), and shows the traffic with ping and tcpdump"
  aptlog=$(mktemp /tmp/mpsa-demo-apt.XXXXXX)
  if ! install_missing "${missing[@]}" >"$aptlog" 2>&1; then
    echo "installing the packages failed; apt-get said:" >&2
    tail -n 20 "$aptlog" >&2
    rm -f "$aptlog"
    exit 1
  fi
  # The services of the new packages that were disabled again (lib.sh).
  grep '^services: ' "$aptlog" || true
  rm -f "$aptlog"
fi
# Go builds mpsad and mpsactl: a machine without Go 1.26 gets the official
# toolchain at /usr/local/go (05-go.sh says which Go it uses).
bash scripts/deps.d/05-go.sh
echo "building mpsad and mpsactl ..."
make -s build
GO=$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)
exec "$GO" run ./test/demo --bin bin
