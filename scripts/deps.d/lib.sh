# Sourced by the deps scripts (install-deps.sh runs only *.sh files that
# are not this one) and by scripts/demo.sh.

# Debian packages that both the tests (10-debian.sh) and the demo
# (scripts/demo.sh) need: namespaces and their tools, and charon with
# kernel-libipsec and swanctl.
#
# charon: strongswan-charon is the daemon; strongswan-swanctl the CLI and
# the vici plugin; libcharon-extra-plugins holds kernel-libipsec (userspace
# ESP in charon, for hosts whose kernel has no ESP, like this project's CI);
# libstrongswan-standard-plugins holds the gcm and openssl plugins, without
# which charon still proposes AES-GCM for the control child (its default
# ESP proposal) but kernel-libipsec cannot create it ("unsupported AEAD
# algorithm AES_GCM_16"), and the child fails with NO_PROPOSAL_CHOSEN;
# libstrongswan-extra-plugins holds curve25519 and chapoly for the rest of
# charon's default proposals. libstrongswan Recommends the standard plugins,
# but these scripts install with --no-install-recommends: name them.
# procps: sysctl, which tests use inside namespaces (rp_filter). netbase:
# /etc/protocols and /etc/services, without which ip, swanctl and charon
# know no protocol or service names ("udp", "[tcp/bgp]"): the tests write
# traffic selectors and policies with them (a minimal Debian has none).
netns_packages=(iproute2 iputils-ping tcpdump procps netbase)
charon_packages=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins)

# install_missing installs the Debian packages given that are not
# installed yet, with one apt-get update first when there are any. Not as
# root it cannot: it says what is missing and fails.
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root (sudo) to install them" >&2
    return 1
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# go_binary prints the go command to use: go on PATH, else the one
# 05-go.sh installs at /usr/local/go.
go_binary() {
  command -v go 2>/dev/null || echo /usr/local/go/bin/go
}
