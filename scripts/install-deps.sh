#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine: runs every
# script in scripts/deps.d in order. Each script is idempotent and quick when
# its dependencies are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
for s in scripts/deps.d/*.sh; do
  [ -e "$s" ] || continue
  [ "$(basename "$s")" = lib.sh ] && continue
  echo "deps: $s"
  bash "$s"
done
