package scale

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/mpsa/mpsa/xfrm/groupid"
)

// The addresses of the two namespaces. The controller and the farm share
// one veth link (192.0.2.0/24); every control address is a host address
// on lo, as the notes on kernel-libipsec ask: a traffic selector equal to
// the IKE peer would be routed into ipsec0 and break IKE.
var (
	ctlUnderlay  = netip.MustParseAddr("192.0.2.1")
	farmUnderlay = netip.MustParseAddr("192.0.2.2")
	ctlControl   = netip.MustParseAddr("10.97.0.1")
	// memberNet holds the members' control addresses, 10.98.0.1 for
	// member 1 and upwards; it is the controller's remote_ts.
	memberNet = netip.MustParsePrefix("10.98.0.0/16")
)

// MaxMembers is the most members the harness runs: the load generator's
// groups, one per member, each need a kernel identity of their own
// (xfrm/groupid's slots; MemberConn), and the address plan holds more.
const MaxMembers = groupid.Slots

// Names in the generated configurations.
const (
	// GroupName is the MPSA group on the controller.
	GroupName = "scale"
	// ctlConn and ctlChild are the controller's connection and control
	// child, which every member's IKE SA is an instance of.
	ctlConn  = "mpsa"
	ctlChild = "mpsa-ctl"
	ctlID    = "controller.mpsa.test"
	// controlPort is mpsad's control port (the default).
	controlPort = 4501
	// metricsListen is the controller mpsad's metrics endpoint inside its
	// namespace.
	metricsListen = "127.0.0.1:9474"
)

// MemberControl is the control address of member i (1-based).
func MemberControl(i int) netip.Addr {
	b := memberNet.Addr().As4()
	return netip.AddrFrom4([4]byte{b[0], b[1], byte(i >> 8), byte(i)})
}

// MemberConn is the farm's connection name of member i (1 to
// MaxMembers), and also the name of its group in the load generator:
// "m<i>-" and three (now and then four) letters or digits chosen so that
// the group's kernel identity (xfrm/groupid) is slot i-1. mpsad refuses two
// groups with one identity, and names such as m1 to m10000 would share
// some by chance (2^15 slots). The slot is the name's 32-bit FNV-1a hash
// modulo 2^15, so the last letter is computed rather than searched: the
// hash's low 15 bits before the last multiplication must equal slot/prime
// mod 2^15, which XOR with the last byte reaches when bits 8-14 already
// agree and the byte needed is a letter or digit.
func MemberConn(i int) string {
	const (
		alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
		offset   = 2166136261
		prime    = 16777619
		mask     = groupid.Slots - 1
	)
	prefix := fmt.Sprintf("m%d-", i)
	h0 := uint32(offset)
	for j := range len(prefix) {
		h0 = (h0 ^ uint32(prefix[j])) * prime
	}
	// prime's inverse mod 2^32 by Newton's iteration (each step doubles
	// the correct low bits, from 3 for an odd number).
	inv := uint32(prime)
	for range 5 {
		inv *= 2 - prime*inv
	}
	want := (uint32(i-1) * inv) & mask
	// Two free letters suffice for most i (about 7 pairs of the 3,844
	// fit); a third is added for the others.
	last := func(h uint32) (byte, bool) {
		x := (h ^ want) & mask
		return byte(x), x < 256 && strings.IndexByte(alphabet, byte(x)) >= 0
	}
	for _, c0 := range []byte(alphabet) {
		for _, c1 := range []byte(alphabet) {
			h := ((h0^uint32(c0))*prime ^ uint32(c1)) * prime
			if c, ok := last(h); ok {
				return prefix + string([]byte{c0, c1, c})
			}
		}
	}
	for _, c0 := range []byte(alphabet) {
		for _, c1 := range []byte(alphabet) {
			for _, c2 := range []byte(alphabet) {
				h := (((h0^uint32(c0))*prime^uint32(c1))*prime ^ uint32(c2)) * prime
				if c, ok := last(h); ok {
					return prefix + string([]byte{c0, c1, c2, c})
				}
			}
		}
	}
	panic(fmt.Sprintf("scale: no name of member %d has slot %d", i, i-1))
}

// memberChild is the control child of member i's connection.
func memberChild(i int) string { return MemberConn(i) + "-ctl" }

// memberID is the IKE identity of member i.
func memberID(i int) string { return fmt.Sprintf("m%d.farm.mpsa.test", i) }

// charonSettings are the strongswan.conf settings of both charons: an IKE
// SA table sized for thousands of SAs (the default has one row per
// segment, so every look-up walks a list of all SAs).
var charonSettings = []string{
	"ikesa_table_size = 4096",
	"ikesa_table_segments = 16",
	"threads = 16",
}

// ctlCharonSettings are the controller charon's further settings. Every
// member of the farm comes from the same address, as members behind one
// NAT would, so the per-address defences against half-open IKE SAs must
// allow N of them at once: with the defaults (cookie_threshold_ip = 3,
// block_threshold = 5) charon answers most of the simultaneous
// IKE_SA_INITs with a COOKIE or drops them, and the members retransmit
// after 4 s and more (100 members take 4-11 s instead of a fraction of a
// second).
var ctlCharonSettings = []string{
	"cookie_threshold_ip = 100000",
	"cookie_threshold = 100000",
	"block_threshold = 100000",
}

// ikeProposals and espProposals are those of the packaged example
// (packaging/examples): ESP with CBC and HMAC, which kernel-libipsec
// carries without the gcm plugin.
const (
	ikeProposals = "aes256-sha256-x25519"
	espProposals = "aes256-sha256"
)

// secrets renders the PSK shared by every IKE SA, without identities: it
// matches any pair.
func secrets(psk string) string {
	return fmt.Sprintf("secrets {\n  ike-all {\n    secret = %q\n  }\n}\n", psk)
}

// controllerSwanctl renders the controller's connections: one connection
// that any member may instantiate, its control child narrowed by charon to
// each member's control address, as in production.
func controllerSwanctl(psk string) string {
	var b strings.Builder
	b.WriteString("# controller, generated by github.com/mpsa/mpsa/test/scale\n")
	b.WriteString("connections {\n")
	fmt.Fprintf(&b, "  %s {\n    version = 2\n", ctlConn)
	fmt.Fprintf(&b, "    local_addrs = %s\n    remote_addrs = %%any\n", ctlUnderlay)
	fmt.Fprintf(&b, "    proposals = %s\n", ikeProposals)
	fmt.Fprintf(&b, "    local {\n      auth = psk\n      id = %s\n    }\n", ctlID)
	b.WriteString("    remote {\n      auth = psk\n    }\n")
	fmt.Fprintf(&b, "    children {\n      %s {\n", ctlChild)
	fmt.Fprintf(&b, "        local_ts = %s\n", hostPrefix(ctlControl))
	fmt.Fprintf(&b, "        remote_ts = %s\n", memberNet)
	fmt.Fprintf(&b, "        esp_proposals = %s\n", espProposals)
	b.WriteString("      }\n    }\n  }\n}\n")
	b.WriteString(secrets(psk))
	return b.String()
}

// BGP mode: the group's AS, the prefixes each member advertises, and the
// controller's policy, one rule for the whole farm (a fleet of CPEs with
// one identity pattern), which the next hop check (the farm's IKE
// address) completes.
const (
	bgpASN = 64512
	// BGPPrefixes is how many prefixes each member advertises.
	BGPPrefixes = 4
	// bgpDeferral is the reflector's deferral_time: above the time every
	// member takes to come back after a restart of the controller's
	// mpsad (docs/bgp.md).
	bgpDeferral = "2m"
)

// MemberPrefixes are the BGPPrefixes /26 prefixes of member i (1-based):
// four /26 of 10.x.y.0/24, x.y = i.
func MemberPrefixes(i int) []netip.Prefix {
	base := [4]byte{10, byte(i >> 8), byte(i), 0}
	out := make([]netip.Prefix, 0, BGPPrefixes)
	for k := range BGPPrefixes {
		base[3] = byte(k * 64)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(base), 26))
	}
	return out
}

// bgpSection is the controller group's bgp { }.
func bgpSection() string {
	return fmt.Sprintf("            bgp {\n                asn = %d\n                deferral_time = %s\n"+
		"                policy {\n                    farm {\n                        identity = m*.farm.mpsa.test\n"+
		"                        prefixes = 10.0.0.0/8 le 26\n                    }\n                }\n            }\n", bgpASN, bgpDeferral)
}

// controllerMPSA renders the controller mpsad's mpsa section. The SA lives
// an hour, so nothing rekeys during a run but the harness; members switch
// to a new SA after rollover1 and drop the old one after rollover2. With
// bgp the group has a route reflector.
func controllerMPSA(dir, statusSocket string, bgp bool) string {
	var b strings.Builder
	b.WriteString("\nmpsa {\n    role = controller\n")
	fmt.Fprintf(&b, "    vici = unix://%s/charon.vici\n", dir)
	b.WriteString("    control_interface = ipsec0     # charon runs kernel-libipsec here\n")
	fmt.Fprintf(&b, "    status_socket = %s\n", statusSocket)
	fmt.Fprintf(&b, "    metrics_listen = %s\n", metricsListen)
	b.WriteString("    log_level = info\n")
	fmt.Fprintf(&b, "    groups {\n        %s {\n", GroupName)
	fmt.Fprintf(&b, "            connection = %s\n            control_child = %s\n", ctlConn, ctlChild)
	b.WriteString("            esp_proposal = aes256-sha256\n")
	b.WriteString("            lifetime = 1h\n            rekey_time = 50m\n")
	b.WriteString("            rollover1 = 1s\n            rollover2 = 2s\n")
	b.WriteString("            rekey_on_join = no\n            rekey_on_leave = yes\n")
	if bgp {
		b.WriteString(bgpSection())
	}
	b.WriteString("        }\n    }\n}\n")
	return b.String()
}

// farmSwanctl renders the farm charon's n connections, one per member:
// its own identity and control address, the same underlay and controller
// for all; each initiates its control child when loaded.
func farmSwanctl(n int, psk string) string {
	var b strings.Builder
	b.WriteString("# member farm, generated by github.com/mpsa/mpsa/test/scale\n")
	b.WriteString("connections {\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  %s {\n    version = 2\n", MemberConn(i))
		fmt.Fprintf(&b, "    local_addrs = %s\n    remote_addrs = %s\n", farmUnderlay, ctlUnderlay)
		fmt.Fprintf(&b, "    proposals = %s\n", ikeProposals)
		fmt.Fprintf(&b, "    local {\n      auth = psk\n      id = %s\n    }\n", memberID(i))
		fmt.Fprintf(&b, "    remote {\n      auth = psk\n      id = %s\n    }\n", ctlID)
		fmt.Fprintf(&b, "    children {\n      %s {\n", memberChild(i))
		fmt.Fprintf(&b, "        local_ts = %s\n", hostPrefix(MemberControl(i)))
		fmt.Fprintf(&b, "        remote_ts = %s\n", hostPrefix(ctlControl))
		fmt.Fprintf(&b, "        esp_proposals = %s\n", espProposals)
		b.WriteString("        start_action = start\n")
		b.WriteString("      }\n    }\n  }\n")
	}
	b.WriteString("}\n")
	b.WriteString(secrets(psk))
	return b.String()
}

// farmLAN is the LAN every farm member claims (local_ts may repeat across
// groups); member i routes one peer host, 100.65.x.y with x.y = i, to a
// peer underlay in TEST-NET-2 (routes must differ across groups). The
// recording data plane carries no traffic: they only make each group a
// complete member configuration.
const (
	farmLAN  = "100.64.0.0/16"
	farmPeer = "198.51.100.1"
)

// farmMPSA renders the load generator's mpsa section: the member role with
// one group per farm connection, all on one control port.
func farmMPSA(n int, dir, statusSocket string) string {
	var b strings.Builder
	b.WriteString("\nmpsa {\n    role = member\n")
	fmt.Fprintf(&b, "    vici = unix://%s/charon.vici\n", dir)
	b.WriteString("    control_interface = ipsec0\n")
	fmt.Fprintf(&b, "    status_socket = %s\n", statusSocket)
	b.WriteString("    log_level = warn\n")
	b.WriteString("    groups {\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "        %s {\n            connection = %s\n            control_child = %s\n", MemberConn(i), MemberConn(i), memberChild(i))
		fmt.Fprintf(&b, "            local_ts = %s\n", farmLAN)
		fmt.Fprintf(&b, "            routes {\n                peer {\n                    prefixes = 100.65.%d.%d/32\n", byte(i>>8), byte(i))
		fmt.Fprintf(&b, "                    peer = %s\n                }\n            }\n        }\n", farmPeer)
	}
	b.WriteString("    }\n}\n")
	return b.String()
}

// hostPrefix is a as a single-address prefix.
func hostPrefix(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}
