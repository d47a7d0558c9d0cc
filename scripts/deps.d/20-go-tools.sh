#!/usr/bin/env bash
# Go modules for the build and staticcheck for `make lint`.
set -euo pipefail
cd "$(dirname "$0")/../.."
go mod download
bin="$(go env GOPATH)/bin/staticcheck"
want=$(sed -n 's/^STATICCHECK_VERSION ?= //p' Makefile)
if ! "$bin" -version 2>/dev/null | grep -q "$want"; then
  go install "honnef.co/go/tools/cmd/staticcheck@$want"
fi
