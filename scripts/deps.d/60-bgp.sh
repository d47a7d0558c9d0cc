#!/usr/bin/env bash
# Debian packages for the BGP interop tests (bgp/): FRR's bgpd and vtysh
# (frr) as a member speaker against mpsad's route reflector and as a route
# reflector for mpsad's members, and BIRD 2 (bird2) as another route
# reflector. The tests run their own daemons in network namespaces, each
# with its own configuration, pid file and control socket; the system
# services these packages install are not used (they may stay disabled).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
install_missing frr bird2
