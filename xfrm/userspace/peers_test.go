package userspace

import (
	"bytes"
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
	}, 0)
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
	if _, err := newPeerTable(nil, []xfrm.Peer{{Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.1")}, {Prefix: p("10.0.0.0/8"), Underlay: a("192.0.2.2")}}, 0); err == nil {
		t.Error("duplicate prefix accepted")
	}
}

func TestPeerTableNoAllocs(t *testing.T) {
	tbl, err := newPeerTable(nil, []xfrm.Peer{
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Underlay: netip.MustParseAddr("192.0.2.2")},
		{Prefix: netip.MustParsePrefix("fd02::/48"), Underlay: netip.MustParseAddr("192.0.2.2")},
	}, 4501)
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

// TestOpenBatchNoAllocs: the inbound path from received ESP to the batch
// handed to the TUN allocates nothing per packet.
func TestOpenBatchNoAllocs(t *testing.T) {
	s := testSuite
	sa, err := esp.NewSA(0x42, s, make([]byte, s.EncrKeyBytes()), make([]byte, s.IntegKeyBytes()))
	if err != nil {
		t.Fatal(err)
	}
	e := &saEntry{sa: sa, seal: []*esp.Crypter{sa.NewCrypter(nil)}, open: []*esp.Crypter{sa.NewCrypter(nil)}}
	b := &Backend{}
	b.sas.Store(&saSet{entries: []*saEntry{e}})
	tbl, err := newPeerTable([]netip.Prefix{netip.MustParsePrefix("fd01::/64")},
		[]xfrm.Peer{{Prefix: netip.MustParsePrefix("fd02::/64"), Underlay: netip.MustParseAddr("fd50::2")}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.peers.Store(tbl)
	inner := make([]byte, 1280)
	inner[0] = 0x60
	inner[6] = 6
	inner[8], inner[9], inner[23] = 0xfd, 0x02, 1
	inner[24], inner[25], inner[39] = 0xfd, 0x01, 1
	pkt, err := e.seal[0].AppendSeal(nil, inner, 1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	recvOff := inOff - esp.HeaderLen - esp.IVLen
	bufs := make([][]byte, n)
	sizes := make([]int, n)
	for i := range bufs {
		bufs[i] = make([]byte, inOff+2048)
		sizes[i] = len(pkt)
	}
	wbufs := make([][]byte, 0, n)
	allocs := testing.AllocsPerRun(50, func() {
		for i := range bufs {
			copy(bufs[i][recvOff:], pkt)
		}
		wbufs = b.openBatch(0, false, bufs, sizes, recvOff, wbufs[:0])
		if len(wbufs) != n {
			t.Fatalf("%d of %d packets accepted", len(wbufs), n)
		}
	})
	if allocs != 0 {
		t.Fatalf("openBatch allocates %.1f times per batch", allocs)
	}
	if !bytes.Equal(wbufs[0][inOff:], inner) {
		t.Fatal("inner packet not at inOff")
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
