package protect

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trafficSelector is one traffic selector of a CHILD_SA as charon holds it:
// an address range, a protocol (0: any) and a port range. ports is the
// port part of VICI's text, resolved on demand (a selector of another
// protocol never needs it).
type trafficSelector struct {
	text     string
	from, to netip.Addr
	proto    uint8
	ports    string
}

// parseTS reads a traffic selector as VICI's list-sas prints it (charon's
// %R): "10.98.0.1/32", "10.0.0.1..10.0.0.6", then optionally "[PROTO]" or
// "[PROTO/PORTS]", PROTO a name from /etc/protocols or a number ("0": any),
// PORTS a number, a service name, "FROM-TO" or "OPAQUE".
func parseTS(s string, protocols map[string]uint8) (trafficSelector, error) {
	ts := trafficSelector{text: s}
	addr, rest, bracket := strings.Cut(strings.TrimSpace(s), "[")
	if bracket {
		inner, ok := strings.CutSuffix(rest, "]")
		if !ok || strings.ContainsAny(inner, "[]") {
			return ts, errors.New("unbalanced brackets")
		}
		proto, ports, _ := strings.Cut(inner, "/")
		p, err := protocolNumber(proto, protocols)
		if err != nil {
			return ts, err
		}
		ts.proto, ts.ports = p, ports
	}
	if from, to, ok := strings.Cut(addr, ".."); ok {
		a, err := netip.ParseAddr(from)
		if err != nil {
			return ts, err
		}
		b, err := netip.ParseAddr(to)
		if err != nil {
			return ts, err
		}
		if a.Is4() != b.Is4() || a.Zone() != "" || b.Zone() != "" || b.Less(a) {
			return ts, fmt.Errorf("invalid address range %s", addr)
		}
		ts.from, ts.to = a, b
		return ts, nil
	}
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		return ts, err
	}
	if p.Addr().Is4In6() {
		return ts, fmt.Errorf("IPv4-mapped address %s", addr)
	}
	p = p.Masked()
	ts.from, ts.to = p.Addr(), lastAddr(p)
	return ts, nil
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// subnet is the prefix charon installs for the selector (to_subnet): the
// common leading bits of the range's first and last address, so a range
// that is not a subnet becomes the smallest prefix that covers it.
func (ts trafficSelector) subnet() netip.Prefix {
	a, b := ts.from.AsSlice(), ts.to.AsSlice()
	n := 0
	for i := range a {
		x := a[i] ^ b[i]
		if x != 0 {
			n += bits.LeadingZeros8(x)
			break
		}
		n += 8
	}
	p, _ := ts.from.Prefix(n)
	return p
}

// portRange resolves the selector's ports: [0, 65535] when there is no
// port restriction, [65535, 0] for OPAQUE, the same number twice for a
// single port. A service name is looked up for the selector's protocol
// (charon printed it with getservbyport).
func (ts trafficSelector) portRange(ctx context.Context, lookupPort func(ctx context.Context, network, service string) (int, error)) (from, to uint16, err error) {
	switch {
	case ts.ports == "":
		return 0, 0xffff, nil
	case ts.ports == "OPAQUE":
		return 0xffff, 0, nil
	case ts.proto == unix.IPPROTO_ICMP || ts.proto == unix.IPPROTO_ICMPV6:
		return 0, 0, fmt.Errorf("ICMP type and code %q are not supported in a control child's selector", ts.ports)
	}
	if a, b, ok := strings.Cut(ts.ports, "-"); ok {
		f, err1 := strconv.ParseUint(a, 10, 16)
		t, err2 := strconv.ParseUint(b, 10, 16)
		if err1 != nil || err2 != nil || f > t {
			return 0, 0, fmt.Errorf("invalid port range %q", ts.ports)
		}
		return uint16(f), uint16(t), nil
	}
	if n, err := strconv.ParseUint(ts.ports, 10, 16); err == nil {
		return uint16(n), uint16(n), nil
	}
	var networks []string
	switch ts.proto {
	case unix.IPPROTO_UDP:
		networks = []string{"udp"}
	case unix.IPPROTO_TCP:
		networks = []string{"tcp"}
	case 0:
		// charon asked getservbyport for any protocol.
		networks = []string{"udp", "tcp"}
	default:
		return 0, 0, fmt.Errorf("cannot resolve the service name %q for protocol %d", ts.ports, ts.proto)
	}
	for _, nw := range networks {
		if n, err := lookupPort(ctx, nw, ts.ports); err == nil && n >= 0 && n <= 0xffff {
			return uint16(n), uint16(n), nil
		}
	}
	return 0, 0, fmt.Errorf("unknown service name %q (not in /etc/services)", ts.ports)
}

// portMask is charon's ts2ports: a single port with a full mask; a range
// as the value and mask of the leading bits its ends share (0/0 for any
// port, and for OPAQUE), which may cover more ports than the range.
func portMask(from, to uint16) (port, mask uint16) {
	if from == to {
		return from, 0xffff
	}
	for bit := 15; bit >= 0; bit-- {
		b := uint16(1) << bit
		if from&b != to&b {
			return from & mask, mask
		}
		mask |= b
	}
	return from & mask, mask
}

// protocolNumber resolves a protocol as charon printed it
// (getprotobynumber's official name, or the number).
func protocolNumber(s string, protocols map[string]uint8) (uint8, error) {
	if n, err := strconv.ParseUint(s, 10, 8); err == nil {
		return uint8(n), nil
	}
	if n, ok := protocols[s]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (not in /etc/protocols)", s)
}

// builtinProtocols is used when /etc/protocols cannot be read (charon then
// prints numbers, but a name from another host's charon is still read
// right for the usual protocols).
var builtinProtocols = map[string]uint8{
	"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
	"ipv6-icmp": 58, "sctp": 132, "udplite": 136,
}

// readProtocols reads /etc/protocols (names and aliases to numbers), the
// database charon's getprotobynumber read.
func readProtocols(path string) map[string]uint8 {
	m := make(map[string]uint8, len(builtinProtocols))
	for k, v := range builtinProtocols {
		m[k] = v
	}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		n, err := strconv.ParseUint(fs[1], 10, 8)
		if err != nil {
			continue
		}
		for i, name := range fs {
			if i != 1 {
				m[name] = uint8(n)
			}
		}
	}
	return m
}

// selector is an XFRM policy selector (struct xfrm_selector), ports and
// masks in host order.
type selector struct {
	src, dst         netip.Prefix
	sport, sportMask uint16
	dport, dportMask uint16
	proto            uint8
	ifindex          int32 // read back only; charon sets it for a child's interface option
}

func (s selector) family() uint16 {
	if s.src.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// String prints the selector as `ip xfrm policy` does.
func (s selector) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "src %s dst %s", s.src, s.dst)
	if s.proto != 0 {
		fmt.Fprintf(&b, " proto %s", protoName(s.proto))
	}
	port := func(name string, v, mask uint16) {
		switch mask {
		case 0:
		case 0xffff:
			fmt.Fprintf(&b, " %s %d", name, v)
		default:
			fmt.Fprintf(&b, " %s %d/0x%04x", name, v, mask)
		}
	}
	port("sport", s.sport, s.sportMask)
	port("dport", s.dport, s.dportMask)
	return b.String()
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "ipv6-icmp"
	}
	return strconv.Itoa(int(p))
}

// mirror is the selector of the other direction.
func (s selector) mirror() selector {
	return selector{
		src: s.dst, dst: s.src,
		sport: s.dport, sportMask: s.dportMask,
		dport: s.sport, dportMask: s.sportMask,
		proto: s.proto,
	}
}

// matchesPort reports whether a port matches a selector's value and mask;
// port 0 stands for every port, which only an empty mask matches.
func matchesPort(port, v, mask uint16) bool {
	if port == 0 {
		return mask == 0
	}
	return port&mask == v
}

// covers reports whether the selector matches every packet of flow f
// from src to dst (its ports 0: any port).
func (s selector) covers(src, dst netip.Addr, f Flow) bool {
	return (s.proto == 0 || s.proto == f.Proto) &&
		s.src.Contains(src) && s.dst.Contains(dst) &&
		matchesPort(f.LocalPort, s.sport, s.sportMask) && matchesPort(f.RemotePort, s.dport, s.dportMask)
}

// policySelector is charon's ts2selector for the outbound policy of the
// pair (src the local selector, dst the remote one): the more specific of
// the two protocols, each side's prefix and port mask. ok is false when
// the pair's protocol is neither proto nor any, so that its policy cannot
// match the flow (ports are then not resolved).
func policySelector(ctx context.Context, src, dst trafficSelector, proto uint8, lookupPort func(context.Context, string, string) (int, error)) (sel selector, ok bool, err error) {
	sel.proto = max(src.proto, dst.proto)
	if sel.proto != 0 && sel.proto != proto {
		return selector{}, false, nil
	}
	sel.src, sel.dst = src.subnet(), dst.subnet()
	for _, side := range []struct {
		ts         trafficSelector
		port, mask *uint16
	}{{src, &sel.sport, &sel.sportMask}, {dst, &sel.dport, &sel.dportMask}} {
		from, to, err := side.ts.portRange(ctx, lookupPort)
		if err != nil {
			return selector{}, false, fmt.Errorf("traffic selector %s: %w", side.ts.text, err)
		}
		*side.port, *side.mask = portMask(from, to)
	}
	return sel, true, nil
}
