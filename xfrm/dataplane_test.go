package xfrm

import (
	"net/netip"
	"strings"
	"testing"
)

func TestUncovered(t *testing.T) {
	peer := func(p, u string) Peer {
		return Peer{Prefix: netip.MustParsePrefix(p), Underlay: netip.MustParseAddr(u)}
	}
	peers := []Peer{peer("10.98.0.0/16", "192.0.2.3"), peer("10.2.0.0/24", "192.0.2.2"), peer("0.0.0.0/0", "192.0.2.4"), peer("fd02::/64", "192.0.2.2")}
	ctl := []netip.Addr{netip.MustParseAddr("10.98.1.1"), netip.MustParseAddr("10.98.0.1")}
	kept, err := Uncovered(peers, ctl)
	if len(kept) != 2 || kept[0] != peers[1] || kept[1] != peers[3] {
		t.Errorf("kept %v, want %v and %v", kept, peers[1], peers[3])
	}
	if err == nil || !strings.Contains(err.Error(), "10.98.0.0/16 (via 192.0.2.3) contains 10.98.1.1") || !strings.Contains(err.Error(), "0.0.0.0/0 (via 192.0.2.4)") {
		t.Errorf("error %v, want both prefixes named", err)
	}
	// An IPv4-mapped IPv6 address counts as the IPv4 address.
	if kept, err := Uncovered(peers[:2], []netip.Addr{netip.MustParseAddr("::ffff:10.98.1.1")}); len(kept) != 1 || kept[0] != peers[1] || err == nil {
		t.Errorf("with a mapped address: kept %v, error %v; want %v kept and 10.98.0.0/16 named", kept, err, peers[1])
	}
	if kept, err := Uncovered(peers[1:2], ctl); err != nil || len(kept) != 1 {
		t.Errorf("nothing covered: %v, %v", kept, err)
	}
	if kept, err := Uncovered(peers, nil); err != nil || len(kept) != len(peers) {
		t.Errorf("no protected address: %v, %v", kept, err)
	}
}

// TestProtectedTable: Protect asks for the table to be applied again only
// when the addresses change and a table was given; Table leaves out the
// covering peers.
func TestProtectedTable(t *testing.T) {
	var pt ProtectedTable
	ctl := []netip.Addr{netip.MustParseAddr("::ffff:10.98.0.1"), netip.MustParseAddr("10.1.0.1")}
	if pt.Protect(ctl) {
		t.Error("re-apply asked before any table")
	}
	peers := []Peer{{Prefix: netip.MustParsePrefix("10.98.0.0/16"), Underlay: netip.MustParseAddr("192.0.2.3")}, {Prefix: netip.MustParsePrefix("10.2.0.0/24"), Underlay: netip.MustParseAddr("192.0.2.2")}}
	pt.Set(nil, peers)
	if _, kept, err := pt.Table(); len(kept) != 1 || err == nil {
		t.Errorf("Table: %v, %v; want the covering peer left out and named", kept, err)
	}
	if pt.Protect([]netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("10.1.0.1")}) {
		t.Error("re-apply asked for the same addresses in another form")
	}
	if !pt.Protect(nil) {
		t.Error("no re-apply asked after the addresses changed")
	}
	if _, kept, err := pt.Table(); len(kept) != 2 || err != nil {
		t.Errorf("Table with nothing protected: %v, %v", kept, err)
	}
}
