package protect

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nlraw"
)

// lookupPort resolves the service names the tests use without
// /etc/services, so that the unit tests do not depend on the machine's.
func lookupPort(_ context.Context, network, service string) (int, error) {
	ports := map[string]map[string]int{
		"tcp": {"bgp": 179, "domain": 53},
		"udp": {"domain": 53, "isakmp": 500},
	}
	if p, ok := ports[network][service]; ok {
		return p, nil
	}
	return 0, errors.New("unknown service")
}

func TestParseTS(t *testing.T) {
	for _, c := range []struct {
		in        string
		subnet    string
		proto     uint8
		from, to  uint16
		wantError bool
	}{
		{in: "10.98.0.1/32", subnet: "10.98.0.1/32", to: 0xffff},
		{in: "10.98.0.0/16", subnet: "10.98.0.0/16", to: 0xffff},
		{in: "0.0.0.0/0", subnet: "0.0.0.0/0", to: 0xffff},
		{in: "10.98.0.1/32[udp/4501]", subnet: "10.98.0.1/32", proto: 17, from: 4501, to: 4501},
		{in: "10.98.0.1/32[udp]", subnet: "10.98.0.1/32", proto: 17, to: 0xffff},
		{in: "10.98.0.1/32[17/4501]", subnet: "10.98.0.1/32", proto: 17, from: 4501, to: 4501},
		{in: "fd98::1/128[tcp/bgp]", subnet: "fd98::1/128", proto: 6, from: 179, to: 179},
		{in: "fd00:2::/64[udp/domain]", subnet: "fd00:2::/64", proto: 17, from: 53, to: 53},
		{in: "10.98.0.1/32[0/isakmp]", subnet: "10.98.0.1/32", from: 500, to: 500},
		{in: "10.98.0.1/32[udp/4500-4503]", subnet: "10.98.0.1/32", proto: 17, from: 4500, to: 4503},
		{in: "10.98.0.1/32[udp/OPAQUE]", subnet: "10.98.0.1/32", proto: 17, from: 0xffff, to: 0},
		// Ranges become the smallest prefix that covers them, as
		// charon's to_subnet does.
		{in: "10.0.0.1..10.0.0.6", subnet: "10.0.0.0/29", to: 0xffff},
		{in: "10.0.0.0..10.0.0.255", subnet: "10.0.0.0/24", to: 0xffff},
		{in: "10.0.0.5..10.0.0.5", subnet: "10.0.0.5/32", to: 0xffff},
		{in: "fd00::1..fd00::1:0", subnet: "fd00::/111", to: 0xffff},
		{in: "10.0.0.6..10.0.0.1", wantError: true},
		{in: "10.0.0.1..fd00::1", wantError: true},
		{in: "10.98.0.1/32[udp/4501", wantError: true},
		{in: "10.98.0.1/32[nosuchproto/1]", wantError: true},
		{in: "10.98.0.1/32[udp/nosuchservice]", wantError: true},
		{in: "10.98.0.1/32[udp/5-4]", wantError: true},
		{in: "::ffff:10.0.0.1/128", wantError: true},
		{in: "dynamic", wantError: true},
	} {
		ts, err := parseTS(c.in, builtinProtocols)
		var from, to uint16
		if err == nil {
			from, to, err = ts.portRange(context.Background(), lookupPort)
		}
		if c.wantError {
			if err == nil {
				t.Errorf("%q: parsed as %s proto %d ports %d-%d, want an error", c.in, ts.subnet(), ts.proto, from, to)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got := ts.subnet().String(); got != c.subnet || ts.proto != c.proto || from != c.from || to != c.to {
			t.Errorf("%q: got %s proto %d ports %d-%d, want %s proto %d ports %d-%d", c.in, got, ts.proto, from, to, c.subnet, c.proto, c.from, c.to)
		}
	}
}

// TestICMPPortsRefused: charon prints ICMP type and code in the port
// field; a pair with UDP that needs them is refused, not guessed.
func TestICMPPortsRefused(t *testing.T) {
	ts, err := parseTS("10.98.0.1/32[icmp/8]", builtinProtocols)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ts.portRange(context.Background(), lookupPort); err == nil {
		t.Fatal("ICMP type/code resolved as ports")
	}
}

func TestPortMask(t *testing.T) {
	for _, c := range []struct{ from, to, port, mask uint16 }{
		{4501, 4501, 4501, 0xffff},
		{0, 0xffff, 0, 0},          // any port
		{0xffff, 0, 0, 0},          // OPAQUE
		{4500, 4503, 4500, 0xfffc}, // an aligned range, exactly
		{1000, 2000, 0, 0xf800},    // wider than the range, as charon installs it
		{1024, 2047, 1024, 0xfc00}, // aligned
		{4501, 4502, 4500, 0xfffc}, // straddles a boundary
		{0, 0, 0, 0xffff},          // port 0 exactly
		{0x8000, 0xffff, 0x8000, 0x8000},
	} {
		if p, m := portMask(c.from, c.to); p != c.port || m != c.mask {
			t.Errorf("portMask(%d, %d) = %d/%#04x, want %d/%#04x", c.from, c.to, p, m, c.port, c.mask)
		}
	}
}

func TestPolicySelectorAndCoverage(t *testing.T) {
	ctx := context.Background()
	local, remote := netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("10.98.1.1")
	for _, c := range []struct {
		l, r   string
		port   uint16
		want   string // "" when the pair's protocol excludes UDP
		covers bool
		tcp    *Flow // a TCP flow instead of UDP from port to port
	}{
		{"10.98.0.1/32", "10.98.1.1/32", 4501, "src 10.98.0.1/32 dst 10.98.1.1/32", true, nil},
		{"10.98.0.1/32", "10.98.1.1/32", 0, "src 10.98.0.1/32 dst 10.98.1.1/32", true, nil},
		{"10.98.0.1/32[udp/4501]", "10.98.1.1/32[udp/4501]", 4501, "src 10.98.0.1/32 dst 10.98.1.1/32 proto udp sport 4501 dport 4501", true, nil},
		{"10.98.0.1/32[udp/4501]", "10.98.1.1/32[udp/4501]", 0, "src 10.98.0.1/32 dst 10.98.1.1/32 proto udp sport 4501 dport 4501", false, nil},
		{"10.98.0.1/32[udp/4501]", "10.98.1.1/32", 4501, "src 10.98.0.1/32 dst 10.98.1.1/32 proto udp sport 4501", true, nil},
		{"10.98.0.1/32[udp/4502]", "10.98.1.1/32", 4501, "src 10.98.0.1/32 dst 10.98.1.1/32 proto udp sport 4502", false, nil},
		{"10.98.0.1/32[udp/4500-4503]", "10.98.1.1/32", 4501, "src 10.98.0.1/32 dst 10.98.1.1/32 proto udp sport 4500/0xfffc", true, nil},
		{"10.98.0.1/32", "10.98.1.1/32[udp]", 4501, "src 10.98.0.1/32 dst 10.98.1.1/32 proto udp", true, nil},
		{"10.98.0.0/16", "10.98.0.0/16", 4501, "src 10.98.0.0/16 dst 10.98.0.0/16", true, nil},
		{"10.98.0.2/32", "10.98.1.1/32", 4501, "src 10.98.0.2/32 dst 10.98.1.1/32", false, nil},
		{"10.98.0.1/32[tcp/bgp]", "10.98.1.1/32", 4501, "", false, nil},
		{"10.98.0.1/32[icmp]", "10.98.1.1/32", 4501, "", false, nil},
		// max(icmp, udp) is udp: charon installs a UDP policy.
		{"10.98.0.1/32[icmp]", "10.98.1.1/32[udp/4501]", 4501, "src 10.98.0.1/32 dst 10.98.1.1/32 proto udp dport 4501", true, nil},
		// BGP from the member's side: any local port to 179.
		{"10.98.0.1/32", "10.98.1.1/32", 0, "src 10.98.0.1/32 dst 10.98.1.1/32", true, &Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}},
		{"10.98.0.1/32[tcp]", "10.98.1.1/32[tcp/bgp]", 0, "src 10.98.0.1/32 dst 10.98.1.1/32 proto tcp dport 179", true, &Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}},
		{"10.98.0.1/32[tcp/bgp]", "10.98.1.1/32[tcp/bgp]", 0, "src 10.98.0.1/32 dst 10.98.1.1/32 proto tcp sport 179 dport 179", false, &Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}},
		{"10.98.0.1/32[udp/4501]", "10.98.1.1/32[udp/4501]", 0, "", false, &Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}},
		// ... and from the controller's: 179 to any port.
		{"10.98.0.1/32[tcp/bgp]", "10.98.1.1/32[tcp]", 0, "src 10.98.0.1/32 dst 10.98.1.1/32 proto tcp sport 179", true, &Flow{Proto: unix.IPPROTO_TCP, LocalPort: 179}},
	} {
		l, err := parseTS(c.l, builtinProtocols)
		if err != nil {
			t.Fatal(err)
		}
		r, err := parseTS(c.r, builtinProtocols)
		if err != nil {
			t.Fatal(err)
		}
		f := Flow{Proto: unix.IPPROTO_UDP, LocalPort: c.port, RemotePort: c.port}
		if c.tcp != nil {
			f = *c.tcp
		}
		sel, ok, err := policySelector(ctx, l, r, f.Proto, lookupPort)
		if err != nil {
			t.Errorf("%s / %s: %v", c.l, c.r, err)
			continue
		}
		got := ""
		if ok {
			got = sel.String()
		}
		if got != c.want {
			t.Errorf("%s / %s: selector %q, want %q", c.l, c.r, got, c.want)
		}
		if cov := ok && sel.covers(local, remote, f); cov != c.covers {
			t.Errorf("%s / %s flow %+v: covers = %v, want %v", c.l, c.r, f, cov, c.covers)
		}
		mirrored := Flow{Proto: f.Proto, LocalPort: f.RemotePort, RemotePort: f.LocalPort}
		if ok && sel.covers(local, remote, f) && !sel.mirror().covers(remote, local, mirrored) {
			t.Errorf("%s / %s: the inbound selector %s does not cover the mirrored flow", c.l, c.r, sel.mirror())
		}
	}
}

func TestReadProtocols(t *testing.T) {
	p := filepath.Join(t.TempDir(), "protocols")
	if err := os.WriteFile(p, []byte("# comment\nudp\t17\tUDP\t# user datagram\nweird 200 WEIRD\nbad x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := readProtocols(p)
	for name, want := range map[string]uint8{"udp": 17, "UDP": 17, "weird": 200, "WEIRD": 200, "tcp": 6} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s: %d %v, want %d", name, got, ok, want)
		}
	}
	if _, ok := m["bad"]; ok {
		t.Error("a line without a number was read")
	}
	if m := readProtocols(filepath.Join(t.TempDir(), "none")); m["udp"] != 17 {
		t.Error("no builtin protocols without the file")
	}
}

// TestSelectorLayout checks the hand-written layout against the netlink
// package's structures and the kernel's sizes.
func TestSelectorLayout(t *testing.T) {
	if sizeofSelector != nl.SizeofXfrmSelector || sizeofPolicyID != nl.SizeofXfrmUserpolicyId ||
		sizeofPolicyInfo != nl.SizeofXfrmUserpolicyInfo || sizeofTmpl != nl.SizeofXfrmUserTmpl {
		t.Fatalf("sizes differ from the netlink package's: %d %d %d %d", nl.SizeofXfrmSelector, nl.SizeofXfrmUserpolicyId,
			nl.SizeofXfrmUserpolicyInfo, nl.SizeofXfrmUserTmpl)
	}
	for _, s := range []selector{
		{src: netip.MustParsePrefix("10.98.0.1/32"), dst: netip.MustParsePrefix("10.98.1.0/24"), proto: 17, sport: 4500, sportMask: 0xfffc, dport: 4501, dportMask: 0xffff},
		// The last 12 octets of fd00:2:: are zero: the family must come
		// from the selector, not from the address bytes.
		{src: netip.MustParsePrefix("fd98::1/128"), dst: netip.MustParsePrefix("fd00:2::/64")},
	} {
		b := s.encode()
		x := nl.DeserializeXfrmSelector(b)
		if x.Family != s.family() || int(x.PrefixlenS) != s.src.Bits() || int(x.PrefixlenD) != s.dst.Bits() || x.Proto != s.proto ||
			x.Sport != nl.Swap16(s.sport) || x.SportMask != nl.Swap16(s.sportMask) || x.Dport != nl.Swap16(s.dport) || x.DportMask != nl.Swap16(s.dportMask) ||
			!net.IP(x.Saddr[:s.src.Addr().BitLen()/8]).Equal(net.IP(s.src.Addr().AsSlice())) {
			t.Errorf("%s: encoded as %+v", s, x)
		}
		back, ok := decodeSelector(b)
		if !ok || !sameSelector(back, s) || back.src != s.src || back.dst != s.dst {
			t.Errorf("%s: decoded as %s (%v)", s, back, ok)
		}
	}
}

// TestParseLink reads link messages built as the kernel builds them: an
// XFRM interface with its if_id, a TUN device with its type.
func TestParseLink(t *testing.T) {
	msg := func(index int, name, kind string, data []byte) []byte {
		b := make([]byte, unix.SizeofIfInfomsg)
		b[4] = byte(index)
		b = nlraw.AppendAttr(b, unix.IFLA_IFNAME, append([]byte(name), 0))
		info := nlraw.AppendAttr(nil, unix.IFLA_INFO_KIND, append([]byte(kind), 0))
		if data != nil {
			info = nlraw.AppendAttr(info, unix.IFLA_INFO_DATA|unix.NLA_F_NESTED, data)
		}
		return nlraw.AppendAttr(b, unix.IFLA_LINKINFO|unix.NLA_F_NESTED, info)
	}
	xdata := nlraw.AppendAttr(nil, unix.IFLA_XFRM_LINK, []byte{2, 0, 0, 0})
	xdata = nlraw.AppendAttr(xdata, unix.IFLA_XFRM_IF_ID, []byte{42, 0, 0, 0})
	l, err := parseLink(msg(7, "xfrm-ctl", "xfrm", xdata))
	if err != nil || l.index != 7 || l.name != "xfrm-ctl" || l.kind != "xfrm" || l.ifID != 42 {
		t.Errorf("xfrm link: %+v, %v", l, err)
	}
	l, err = parseLink(msg(5, "ipsec0", "tun", nlraw.AppendAttr(nil, unix.IFLA_TUN_TYPE, []byte{unix.IFF_TUN})))
	if err != nil || l.index != 5 || l.name != "ipsec0" || l.kind != "tun" || l.tunType != unix.IFF_TUN {
		t.Errorf("tun link: %+v, %v", l, err)
	}
	if _, err := parseLink(make([]byte, 4)); err == nil {
		t.Error("a short link message parsed")
	}
}

// TestCheckChild covers what Verify refuses from VICI's report alone.
func TestCheckChild(t *testing.T) {
	good := Child{Name: "mpsa-ctl", ReqID: 3, Protocol: "ESP", Mode: "TUNNEL", EncrAlg: "AES_GCM_16",
		Local: netip.MustParseAddr("10.98.0.1"), Remote: netip.MustParseAddr("10.98.1.1")}
	if err := checkChild(good); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]func(*Child){
		"AH":                func(c *Child) { c.Protocol, c.EncrAlg = "AH", "" },
		"NULL":              func(c *Child) { c.EncrAlg = "NULL" },
		"NULL_AES_GMAC":     func(c *Child) { c.EncrAlg = "NULL_AES_GMAC" },
		"no encryption":     func(c *Child) { c.EncrAlg = "" },
		"no protocol":       func(c *Child) { c.Protocol = "" },
		"mark in":           func(c *Child) { c.MarkIn = 42 },
		"mark out":          func(c *Child) { c.MarkOut = 42 },
		"families":          func(c *Child) { c.Remote = netip.MustParseAddr("fd98::1") },
		"no remote address": func(c *Child) { c.Remote = netip.Addr{} },
		"reqid 0":           func(c *Child) { c.ReqID = 0 },
		"same addresses":    func(c *Child) { c.Remote = c.Local },
	} {
		cc := good
		c(&cc)
		err := checkChild(cc)
		if !errors.Is(err, ErrUnprotected) {
			t.Errorf("%s: %v, want an ErrUnprotected", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
