#!/usr/bin/env bash
# Go modules for the build and staticcheck for `make lint`.
# Go tools are pinned by their MODULE version (v0.8.2), never by a release
# name (2026.2.2): the module proxy refuses the latter with 403.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/deps.d/lib.sh
go=$(go_binary)
"$go" mod download
bin="$("$go" env GOPATH)/bin/staticcheck"
want=$(sed -n 's/^STATICCHECK_VERSION ?= //p' Makefile)
case "$want" in
v[0-9]*.[0-9]*.[0-9]*) ;;
*)
  echo "20-go-tools: STATICCHECK_VERSION=$want in the Makefile is not a module version (vX.Y.Z)" >&2
  exit 1
  ;;
esac
# staticcheck -version prints "staticcheck 2026.2.2 (0.8.2)".
if ! "$bin" -version 2>/dev/null | grep -qF "(${want#v})"; then
  echo "20-go-tools: installing honnef.co/go/tools/cmd/staticcheck@$want"
  "$go" install "honnef.co/go/tools/cmd/staticcheck@$want"
fi
"$bin" -version
