package userspace

import (
	"net/netip"
	"testing"

	"github.com/mpsa/mpsa/xfrm"
)

func TestPeerTableLongestPrefix(t *testing.T) {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tbl, err := newPeerTable([]netip.Prefix{p("10.1.0.0/24"), p("fd01::/64")}, []xfrm.Peer{
		{Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.1")},
		{Prefix: p("10.2.0.0/16"), Underlay: a("192.0.2.2")},
		{Prefix: p("10.2.3.0/24"), Underlay: a("2001:db8::3")},
		{Prefix: p("fd02::/64"), Underlay: a("::ffff:192.0.2.4")},
	})
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
	if !tbl.accepts(a("10.2.3.4"), a("10.1.0.7")) {
		t.Error("policy refused a peer-to-local packet")
	}
	if tbl.accepts(a("10.2.3.4"), a("10.3.0.7")) {
		t.Error("policy accepted a packet to a non-local destination")
	}
	if tbl.accepts(a("172.16.0.1"), a("10.1.0.7")) {
		t.Error("policy accepted a packet from outside every peer prefix")
	}
	if _, err := newPeerTable(nil, []xfrm.Peer{{Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.1")}, {Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.2")}}); err == nil {
		t.Error("duplicate prefix accepted")
	}
}

func TestPeerTableNoAllocs(t *testing.T) {
	tbl, err := newPeerTable(nil, []xfrm.Peer{
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Underlay: netip.MustParseAddr("192.0.2.2")},
		{Prefix: netip.MustParsePrefix("fd02::/48"), Underlay: netip.MustParseAddr("192.0.2.2")},
	})
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
