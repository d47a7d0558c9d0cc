package userspace

import (
	"net/netip"
	"testing"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/esp"
)

func TestPeerTableLongestPrefix(t *testing.T) {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tbl, err := newPeerTable([]netip.Prefix{p("10.1.0.0/24"), p("fd01::/64")}, []xfrm.Peer{
		{Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.1")},
		{Prefix: p("10.2.0.0/16"), Underlay: a("192.0.2.2")},
		{Prefix: p("10.2.3.0/24"), Underlay: a("2001:db8::3")},
		{Prefix: p("fd02::/64"), Underlay: a("::ffff:192.0.2.4")},
	}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]string{
		"10.9.9.9": "192.0.2.1", "10.2.9.9": "192.0.2.2", "10.2.3.4": "2001:db8::3", "fd02::1": "192.0.2.4",
	} {
		d, ok := tbl.route(a(dst))
		if !ok || d.addr != a(want) {
			t.Errorf("route(%s) = %v, %v; want %s", dst, d, ok, want)
		}
	}
	if d, ok := tbl.route(a("192.168.1.1")); ok {
		t.Errorf("route to an address outside every peer prefix: %v", d.addr)
	}
	if d, _ := tbl.route(a("fd02::1")); d.family6 {
		t.Error("a v4-mapped underlay must be sent as IPv4")
	}
	if !tbl.toLocal(a("10.1.0.7")) || !tbl.toLocal(a("fd01::9")) {
		t.Error("policy refused a packet to a local prefix")
	}
	if tbl.toLocal(a("10.3.0.7")) {
		t.Error("policy accepted a packet to a non-local destination")
	}
	if _, err := newPeerTable(nil, []xfrm.Peer{{Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.1")}, {Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.2")}}, 0, nil); err == nil {
		t.Error("duplicate prefix accepted")
	}
}

func TestPeerTableNoAllocs(t *testing.T) {
	tbl, err := newPeerTable(nil, []xfrm.Peer{
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Underlay: netip.MustParseAddr("192.0.2.2")},
		{Prefix: netip.MustParsePrefix("fd02::/48"), Underlay: netip.MustParseAddr("192.0.2.2")},
	}, 4501, nil)
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 40)
	pkt[0] = 0x60
	pkt[24], pkt[25] = 0xfd, 0x02
	allocs := testing.AllocsPerRun(100, func() {
		_, dst, _ := addrs(pkt)
		if _, ok := tbl.route(dst); !ok {
			t.Fatal("no route")
		}
	})
	if allocs != 0 {
		t.Fatalf("route lookup allocates %.1f times", allocs)
	}
}

// TestDefaultMTUFits: an inner packet of DefaultMTU bytes fits a 1500-byte
// underlay in every supported suite over outer IPv6, and one byte more
// does not in the worst suite.
func TestDefaultMTUFits(t *testing.T) {
	worst := 0
	for _, integ := range []mpsa.IntegID{mpsa.IntegHMACSHA1_96, mpsa.IntegHMACSHA2_256, mpsa.IntegHMACSHA2_384, mpsa.IntegHMACSHA2_512} {
		s := mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, Integ: integ, PRF: mpsa.PRFHMACSHA2_256}
		sa, err := esp.NewSA(1, s, make([]byte, s.EncrKeyBytes()), make([]byte, s.IntegKeyBytes()))
		if err != nil {
			t.Fatal(err)
		}
		if n := 40 + DefaultMTU + sa.Overhead(DefaultMTU); n > 1500 {
			t.Errorf("%s: %d-byte inner packet makes a %d-byte outer IPv6 packet", s, DefaultMTU, n)
		}
		worst = max(worst, 40+DefaultMTU+1+sa.Overhead(DefaultMTU+1))
	}
	if worst <= 1500 {
		t.Errorf("DefaultMTU %d could be larger (worst case at +1 is %d bytes)", DefaultMTU, worst)
	}
}
