#!/usr/bin/env bash
# Debian's stock kernel for the XFRM data-plane tests in qemu (test/vm).
# The package is downloaded and unpacked into a cache folder that survives
# between runs on the same machine; nothing is installed on the host.
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
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
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

debdir="$cache/debs"
mkdir -p "$debdir"
deb=$(ls "$debdir"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  echo "40-kernel: downloading $pkg"
  # apt-get download writes to the current directory; it runs as the
  # _apt user where it can, which needs a writable folder.
  (cd "$debdir" && apt-get download -qq "$pkg" 2>/dev/null) || (cd "$debdir" && apt-get update -qq && apt-get download -qq "$pkg")
  deb=$(ls "$debdir"/"${pkg}"_*.deb | head -n1)
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
