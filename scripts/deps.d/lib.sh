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
#
# Debian starts and enables the services of the packages it installs
# (frr, bird, charon as strongswan-starter and as charon-systemd's
# strongswan.service): the tests and the demo run their own daemons in
# namespaces, and would leave a developer's machine with a second charon
# and routing daemons running. So apt-get runs under a policy-rc.d that
# lets nothing start (exit 101), and on a machine that runs systemd the
# .service units the newly installed packages ship and Debian enabled are
# disabled again, each named.
#
#   MPSA_DEPS_SYSROOT   for the scripts' tests only: where policy-rc.d is
#                       written (usr/sbin) and run/systemd/system looked for
install_missing() {
  local missing=() p before
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root (sudo) to install them" >&2
    return 1
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq || return
  before=$(installed_packages)
  install_without_starting "${missing[@]}" || return
  disable_new_services "$before"
}

# installed_packages lists the installed packages, one a line, sorted.
installed_packages() {
  dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' 2>/dev/null | awk '$1 == "ii" { print $2 }' | LC_ALL=C sort
}

# install_without_starting runs apt-get install with a policy-rc.d that
# forbids starting any service (invoke-rc.d and deb-systemd-invoke ask it);
# one that was there before is put back afterwards.
install_without_starting() (
  policy=${MPSA_DEPS_SYSROOT:-}/usr/sbin/policy-rc.d
  saved=""
  if [ -e "$policy" ] || [ -L "$policy" ]; then
    saved=$(mktemp "$policy.mpsa-saved.XXXXXX") && mv -f "$policy" "$saved" || exit 1
  fi
  trap 'rm -f "$policy"; [ -z "$saved" ] || mv -f "$saved" "$policy"' EXIT
  printf '#!/bin/sh\n# mpsa, scripts/deps.d/lib.sh: no service starts while it installs packages\nexit 101\n' >"$policy" &&
    chmod 755 "$policy" || exit 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
)

# disable_new_services BEFORE: on a machine that runs systemd (as PID 1),
# disables the enabled .service units of the packages installed since
# BEFORE (installed_packages' list), and says which.
disable_new_services() {
  local p u units=() enabled=()
  [ -d "${MPSA_DEPS_SYSROOT:-}/run/systemd/system" ] || return 0
  while read -r p; do
    [ -n "$p" ] || continue
    while read -r u; do
      units+=("$u")
    done < <(dpkg -L "$p" 2>/dev/null | sed -n 's|^/\(usr/\)\{0,1\}lib/systemd/system/\([^/]*\.service\)$|\2|p')
  done < <(LC_ALL=C comm -13 <(printf '%s\n' "$1") <(installed_packages))
  for u in "${units[@]}"; do
    if [ "$(systemctl is-enabled "$u" 2>/dev/null)" = enabled ] && [[ " ${enabled[*]} " != *" $u "* ]]; then
      enabled+=("$u")
    fi
  done
  [ ${#enabled[@]} -gt 0 ] || return 0
  echo "services: not started, and disabled again (systemctl enable --now UNIT starts one): ${enabled[*]}"
  if ! systemctl disable --quiet "${enabled[@]}"; then
    echo "services: systemctl disable ${enabled[*]} failed: they start at the next boot" >&2
  fi
}

# go_binary prints the go command to use: go on PATH, else the one
# 05-go.sh installs at /usr/local/go.
go_binary() {
  command -v go 2>/dev/null || echo /usr/local/go/bin/go
}
