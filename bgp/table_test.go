package bgp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mpsa/mpsa/xfrm"
)

func peer(p, u string) xfrm.Peer {
	return xfrm.Peer{Prefix: netip.MustParsePrefix(p), Underlay: netip.MustParseAddr(u)}
}

func changesString(cs []PeerChange) string {
	s := ""
	for _, c := range cs {
		if c.Removed {
			s += fmt.Sprintf("-%s ", c.Peer.Prefix)
		} else {
			s += fmt.Sprintf("+%s ", c.Peer)
		}
	}
	return s
}

func TestPeerTable(t *testing.T) {
	now := time.Unix(1000, 0)
	var tb PeerTable
	if got := changesString(tb.SetStatic([]xfrm.Peer{peer("10.2.0.0/24", "192.0.2.2"), peer("10.0.0.0/8", "192.0.2.9")}, now)); got != "+10.0.0.0/8 via 192.0.2.9 +10.2.0.0/24 via 192.0.2.2 " {
		t.Errorf("static: %q", got)
	}
	// A learned route for the same prefix as a static one is shadowed:
	// no change of the effective table.
	ch := tb.Apply([]Change{
		{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Peer: addr("192.0.2.22"), Learned: now},
		{Prefix: netip.MustParsePrefix("10.3.0.0/24"), Peer: addr("192.0.2.3"), Learned: now},
		{Prefix: netip.MustParsePrefix("10.3.1.0/24"), Peer: addr("192.0.2.31"), Learned: now},
	})
	if got := changesString(ch); got != "+10.3.0.0/24 via 192.0.2.3 +10.3.1.0/24 via 192.0.2.31 " {
		t.Errorf("learned: %q", got)
	}
	// Longest prefix match across both kinds.
	for dst, want := range map[string]string{
		"10.2.0.5":  "192.0.2.2",  // static wins the exact prefix
		"10.3.0.5":  "192.0.2.3",  // learned /24 inside static /8
		"10.3.1.5":  "192.0.2.31", // learned /24
		"10.9.9.9":  "192.0.2.9",  // static /8
		"192.0.2.1": "",
	} {
		p, ok := tb.Lookup(addr(dst))
		if got := ""; ok {
			got = p.Underlay.String()
			if got != want {
				t.Errorf("lookup %s: %s, want %s", dst, got, want)
			}
		} else if want != "" {
			t.Errorf("lookup %s: none, want %s", dst, want)
		}
	}
	// Removing the static route uncovers the learned one.
	if got := changesString(tb.SetStatic([]xfrm.Peer{peer("10.0.0.0/8", "192.0.2.9")}, now.Add(time.Second))); got != "+10.2.0.0/24 via 192.0.2.22 " {
		t.Errorf("static removed: %q", got)
	}
	// A static route unchanged keeps its Since.
	routes := tb.Routes(nil)
	if routes[0].Prefix.String() != "10.0.0.0/8" || !routes[0].Since.Equal(now) {
		t.Errorf("static route %+v", routes[0])
	}
	// Withdrawing a learned route that a static one shadows changes nothing;
	// one that is in use is removed.
	tb.SetStatic([]xfrm.Peer{peer("10.0.0.0/8", "192.0.2.9"), peer("10.2.0.0/24", "192.0.2.2")}, now)
	ch = tb.Apply([]Change{
		{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Withdrawn: true},
		{Prefix: netip.MustParsePrefix("10.3.0.0/24"), Withdrawn: true},
		{Prefix: netip.MustParsePrefix("10.3.1.0/24"), Peer: addr("192.0.2.32"), Learned: now},
	})
	if got := changesString(ch); got != "-10.3.0.0/24 +10.3.1.0/24 via 192.0.2.32 " {
		t.Errorf("withdrawals: %q", got)
	}
	if got := fmt.Sprint(tb.Peers()); got != "[10.0.0.0/8 via 192.0.2.9 10.2.0.0/24 via 192.0.2.2 10.3.1.0/24 via 192.0.2.32]" {
		t.Errorf("peers %s", got)
	}
	// The status view marks a learned route a static one shadows.
	rs := tb.Routes([]Route{
		{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Peer: addr("192.0.2.22"), Origin: OriginBGP},
		{Prefix: netip.MustParsePrefix("10.3.1.0/24"), Peer: addr("192.0.2.32"), Origin: OriginBGP},
	})
	if len(rs) != 4 || rs[1].Origin != OriginStatic || rs[2].Origin != OriginBGP || !rs[2].Shadowed || rs[3].Shadowed {
		t.Errorf("routes %+v", rs)
	}
	if got := changesString(tb.ClearLearned()); got != "-10.3.1.0/24 " {
		t.Errorf("clear learned: %q", got)
	}
}
