#!/usr/bin/env bash
# The Go toolchain, when the machine has none recent enough for go.mod.
# CI machines come with Go at /usr/local/go; a fresh Debian 12 without it gets
# the official toolchain from the Go module proxy (golang.org/toolchain, the
# zip `go` itself downloads for GOTOOLCHAIN), pinned by version and SHA-256,
# unpacked to /usr/local/go. The Makefile puts /usr/local/go/bin on PATH.
#
#   MPSA_GO_CACHE   download cache (default /var/cache/mpsa-test/go)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/deps.d/lib.sh

go_version=1.26.8
go_sha256=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
# The oldest Go go.mod accepts, as "1.N".
need=$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' go.mod)

# recent_enough says whether the go binary $1 is at least $need.
recent_enough() {
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  [ "$(printf '%s\n%s\n' "$need" "$v" | sort -V | head -n1)" = "$need" ]
}

for g in "$(command -v go || true)" /usr/local/go/bin/go; do
  if [ -n "$g" ] && recent_enough "$g"; then
    echo "05-go: $("$g" env GOVERSION) at $g"
    exit 0
  fi
done

if [ -e /usr/local/go ]; then
  echo "05-go: /usr/local/go holds a Go older than $need; remove it or put Go $need or newer on PATH" >&2
  exit 1
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "05-go: no Go $need here; install it for $(uname -m) from https://go.dev/dl" >&2
  exit 1
fi

install_missing ca-certificates curl unzip
cache=${MPSA_GO_CACHE:-/var/cache/mpsa-test/go}
mkdir -p "$cache"
mod="v0.0.1-go$go_version.linux-amd64"
zip="$cache/$mod.zip"
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
if ! echo "$go_sha256  $zip" | sha256sum -c --quiet >/dev/null 2>&1; then
  echo "05-go: downloading go$go_version from $proxy"
  curl -sSf --retry 3 -o "$zip.part" "$proxy/golang.org/toolchain/@v/$mod.zip"
  if ! echo "$go_sha256  $zip.part" | sha256sum -c --quiet; then
    rm -f "$zip.part"
    echo "05-go: $mod.zip does not have the pinned SHA-256 $go_sha256" >&2
    exit 1
  fi
  mv "$zip.part" "$zip"
fi
tmp=$(mktemp -d /usr/local/.go-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
unzip -q "$zip" -d "$tmp"
# The module zip has the tree under golang.org/toolchain@$mod/; its
# executables lose their mode bits in the zip.
chmod -R a+rX "$tmp"
chmod a+x "$tmp/golang.org/toolchain@$mod"/bin/* "$tmp/golang.org/toolchain@$mod"/pkg/tool/*/*
mv "$tmp/golang.org/toolchain@$mod" /usr/local/go
echo "05-go: installed $(/usr/local/go/bin/go env GOVERSION) at /usr/local/go"
