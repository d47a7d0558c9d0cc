#!/usr/bin/env bash
# Debian's stock kernel for the XFRM data-plane tests in qemu (test/vm).
# The package is downloaded and unpacked into a cache folder that survives
# between runs on the same machine; nothing is installed on the host. A
# cached .deb is unpacked only when its version and SHA-256 are those apt's
# index gives the package (apt-cache show); otherwise it is downloaded again.
#
#   MPSA_KERNEL_CACHE   cache folder (default /var/cache/mpsa-test/kernel)
#
# The result is $MPSA_KERNEL_CACHE/current, a symlink to the unpacked tree
# (boot/vmlinuz-VERSION, lib/modules/VERSION with modules.dep), and
# $MPSA_KERNEL_CACHE/current/VERSION, a file holding the kernel version.
set -euo pipefail
cache=${MPSA_KERNEL_CACHE:-/var/cache/mpsa-test/kernel}
mkdir -p "$cache"

# kernel_package prints the versioned package behind linux-image-amd64, or
# nothing when apt does not know it (yet).
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | sed -n 1p
}

pkg=$(kernel_package)
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(kernel_package)
fi
if [ -z "$pkg" ]; then
  echo "40-kernel: cannot resolve the package behind linux-image-amd64" >&2
  exit 1
fi
version=${pkg#linux-image-}
tree="$cache/$pkg"

if [ -f "$tree/.complete" ]; then
  ln -sfn "$pkg" "$cache/current"
  echo "40-kernel: $pkg cached in $tree"
  exit 0
fi

# The version and SHA-256 apt's index gives the package: a cached .deb is
# used only when it has both, so the cache cannot decide what is installed.
info=$(apt-cache show --no-all-versions "$pkg")
want_version=$(sed -n 's/^Version: //p' <<<"$info" | sed -n 1p)
want_sha256=$(sed -n 's/^SHA256: //p' <<<"$info" | sed -n 1p)
if [ -z "$want_version" ] || [ -z "$want_sha256" ]; then
  echo "40-kernel: apt-cache show $pkg gives no Version or SHA256" >&2
  exit 1
fi
# verified_deb prints the .deb in the cache that is $pkg $want_version with
# the index's SHA-256, if there is one.
verified_deb() {
  local f
  for f in "$debdir/${pkg}"_*.deb; do
    [ -f "$f" ] || continue
    [ "$(dpkg-deb -f "$f" Version 2>/dev/null)" = "$want_version" ] || continue
    echo "$want_sha256  $f" | sha256sum -c --quiet >/dev/null 2>&1 || continue
    echo "$f"
    return 0
  done
}

debdir="$cache/debs"
mkdir -p "$debdir"
deb=$(verified_deb)
if [ -z "$deb" ]; then
  for f in "$debdir/${pkg}"_*.deb; do
    [ -f "$f" ] || continue
    echo "40-kernel: $f is not $pkg $want_version with the SHA-256 apt's index gives it: downloading it again"
    rm -f "$f"
  done
  echo "40-kernel: downloading $pkg $want_version"
  # apt-get download writes to the current directory; it runs as the
  # _apt user where it can, which needs a writable folder. It checks the
  # download against the index itself.
  (cd "$debdir" && apt-get download -qq "$pkg=$want_version" 2>/dev/null) ||
    (cd "$debdir" && apt-get update -qq && apt-get download -qq "$pkg=$want_version")
  deb=$(verified_deb)
  if [ -z "$deb" ]; then
    echo "40-kernel: the downloaded $pkg is not $want_version with SHA-256 $want_sha256" >&2
    exit 1
  fi
fi

tmp="$tree.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
dpkg-deb -x "$deb" "$tmp"
depmod -b "$tmp" "$version"
echo "$version" > "$tmp/VERSION"
touch "$tmp/.complete"
rm -rf "$tree"
mv "$tmp" "$tree"
ln -sfn "$pkg" "$cache/current"
# Keep only the current package's .deb.
find "$debdir" -name 'linux-image-*.deb' ! -name "${pkg}_*" -delete
echo "40-kernel: $pkg unpacked in $tree"
