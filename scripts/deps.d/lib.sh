# Sourced by the deps scripts (install-deps.sh runs only *.sh files that
# are not this one).

# Debian packages that both the tests (10-debian.sh) and the demo
# (scripts/demo.sh) need: namespaces and their tools, and charon with
# kernel-libipsec and swanctl.
netns_packages=(iproute2 iputils-ping tcpdump)
charon_packages=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins)

# install_missing installs the Debian packages given that are not
# installed yet, with one apt-get update first when there are any.
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}
