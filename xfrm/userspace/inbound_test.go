package userspace

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"net/netip"
	"sync"
	"testing"

	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/esp"
)

// The inbound unit tests drive openBatch, the whole per-packet inbound
// path from received ESP to the batch for the TUN, without sockets or a
// TUN: packets sealed with the group's keys and their outer source
// addresses go in, the inner packets that would be written come out.

var (
	// peerA and peerB are two peers' underlay addresses, one of each
	// family; stranger is no peer's.
	peerA    = netip.MustParseAddr("192.0.2.1")
	peerB    = netip.MustParseAddr("2001:db8::2")
	stranger = netip.MustParseAddr("192.0.2.99")
	// Their LANs, and the local one every test packet goes to.
	lanA4, lanA6 = netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("fd01::/64")
	lanB4, lanB6 = netip.MustParsePrefix("10.0.2.0/24"), netip.MustParsePrefix("fd02::/64")
	local4       = netip.MustParsePrefix("10.0.9.0/24")
	local6       = netip.MustParsePrefix("fd09::/64")
)

// harnessPeers is the peer table of the inbound tests: peerA has lanA4
// and lanA6, peerB lanB4 and lanB6.
func harnessPeers() []xfrm.Peer {
	return []xfrm.Peer{
		{Prefix: lanA4, Underlay: peerA}, {Prefix: lanA6, Underlay: peerA},
		{Prefix: lanB4, Underlay: peerB}, {Prefix: lanB6, Underlay: peerB},
	}
}

// host returns the n-th address of p.
func host(p netip.Prefix, n int) netip.Addr {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a
}

type inboundHarness struct {
	t    testing.TB
	b    *Backend
	spi  uint32
	seal *esp.Crypter
	// lanes holds the receive buffers of each opener (inbound
	// goroutine index).
	lanes []*inboundLane
}

// inboundLane is one inbound goroutine's buffers.
type inboundLane struct {
	bufs  [][]byte
	sizes []int
	wbufs [][]byte
}

// grow makes room for batches of n packets.
func (l *inboundLane) grow(n int) {
	for len(l.bufs) < n {
		l.bufs = append(l.bufs, make([]byte, inOff+2048))
		l.sizes = append(l.sizes, 0)
	}
}

// newInboundHarness makes a Backend with openers inbound Crypters per SA
// (as with that many sockets), installs one SA and sets the peer table.
func newInboundHarness(t testing.TB, openers int) *inboundHarness {
	t.Helper()
	b := &Backend{cfg: Config{Sealers: 1}, log: quietLogger(t), closed: make(chan struct{}), socks: make([]*espSocket, openers)}
	if err := b.init(); err != nil {
		t.Fatal(err)
	}
	b.peers.Store(&peerTable{})
	h := &inboundHarness{t: t, b: b, spi: 0x7100_0001}
	sa := xfrm.SA{SPI: h.spi, Suite: testSuite, EncrKey: make([]byte, testSuite.EncrKeyBytes()), IntegKey: make([]byte, testSuite.IntegKeyBytes())}
	rand.Read(sa.EncrKey)
	rand.Read(sa.IntegKey)
	mine, err := esp.NewSA(sa.SPI, sa.Suite, sa.EncrKey, sa.IntegKey)
	if err != nil {
		t.Fatal(err)
	}
	h.seal = mine.NewCrypter(nil)
	if err := b.InstallInbound(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	h.setPeers(harnessPeers())
	for range openers {
		h.lanes = append(h.lanes, &inboundLane{})
	}
	return h
}

// setPeers replaces the peer table as SetPeers does, without routes.
func (h *inboundHarness) setPeers(peers []xfrm.Peer) {
	h.t.Helper()
	tbl, err := newPeerTable([]netip.Prefix{local4, local6}, peers, 0, h.b.slots)
	if err != nil {
		h.t.Fatal(err)
	}
	h.b.mu.Lock()
	h.b.publishPeers(tbl)
	h.b.mu.Unlock()
}

// innerPacket is an IPv4 or IPv6 UDP packet from src to dst whose payload
// is id.
func innerPacket(src, dst netip.Addr, id uint64) []byte {
	payload := binary.BigEndian.AppendUint64(nil, id)
	if src.Is4() {
		return ipv4UDP(src, dst, 9, payload)
	}
	p := make([]byte, 48+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(payload)))
	p[6], p[7] = 17, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	binary.BigEndian.PutUint16(p[40:], 9)
	binary.BigEndian.PutUint16(p[42:], 9)
	binary.BigEndian.PutUint16(p[44:], uint16(8+len(payload)))
	copy(p[48:], payload)
	return p
}

// packet seals innerPacket(src, dst, id) with sequence number seq.
func (h *inboundHarness) packet(src, dst netip.Addr, id uint64, seq uint32) []byte {
	h.t.Helper()
	p, err := h.seal.AppendSeal(nil, innerPacket(src, dst, id), seq)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// arrival is one received ESP packet and the address it came from.
type arrival struct {
	from netip.Addr
	pkt  []byte
}

// receive hands the arrivals, as one batch, to openBatch as inbound
// goroutine lane would, and returns the ids of the inner packets it
// delivers, in order.
func (h *inboundHarness) receive(lane int, in ...arrival) []uint64 {
	l := h.lanes[lane]
	recvOff := inOff - esp.HeaderLen - esp.IVLen
	l.grow(len(in))
	srcs := make([]netip.Addr, len(in))
	for i, a := range in {
		l.sizes[i] = copy(l.bufs[i][recvOff:], a.pkt)
		srcs[i] = a.from
	}
	l.wbufs = h.b.openBatch(lane, false, l.bufs[:len(in)], l.sizes[:len(in)], srcs, recvOff, l.wbufs[:0])
	var ids []uint64
	for _, w := range l.wbufs {
		inner := w[inOff:]
		ids = append(ids, binary.BigEndian.Uint64(inner[len(inner)-8:]))
	}
	return ids
}

// dropsSince returns how much each drop reason rose since before.
func dropsSince(b *Backend, before map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range b.DropCounts() {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func wantDrops(t *testing.T, what string, got map[string]uint64, want map[string]uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: drops %v, want %v", what, got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: drops %v, want %v", what, got, want)
			return
		}
	}
}

func wantIDs(t *testing.T, what string, got []uint64, want ...uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: delivered %v, want %v", what, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: delivered %v, want %v", what, got, want)
		}
	}
}

// TestReplayWindowModel compares the window with a plain model (a set of
// every number accepted and the highest one) over random sequences that
// mix in-order runs, reordering within and beyond the window, duplicates
// and large jumps, and checks the edges exactly.
func TestReplayWindowModel(t *testing.T) {
	var w replayWindow
	for _, c := range []struct {
		seq  uint32
		want bool
	}{
		{0, false}, // never sent
		{1, true}, {1, false}, {3, true}, {2, true}, {3, false},
		{5000, true}, {5000 - ReplayWindow, false}, {5000 - ReplayWindow + 1, true}, {5000 - ReplayWindow + 1, false},
		{4999, true}, {3, false},
		{1<<32 - 1, true}, {1<<32 - 1, false}, {1<<32 - 2, true}, {5001, false},
	} {
		if got := w.check(c.seq); got != c.want {
			t.Fatalf("check(%d) = %v, want %v", c.seq, got, c.want)
		}
	}

	r := mrand.New(mrand.NewPCG(5, 6))
	for trial := range 20 {
		var w replayWindow
		seen := map[uint32]bool{}
		var top uint32
		next := uint32(1)
		for range 20000 {
			var seq uint32
			switch x := r.IntN(100); {
			case x < 60: // in order, with small gaps
				next += uint32(1 + r.IntN(3))
				seq = next
			case x < 85: // late, mostly within the window
				seq = max(1, next-uint32(r.IntN(ReplayWindow+200)))
			case x < 95: // a duplicate of a recent one
				seq = max(1, next-uint32(r.IntN(50)))
			case x < 99: // a jump
				next += uint32(r.IntN(3 * ReplayWindow))
				seq = next
			default:
				seq = 0
			}
			want := seq != 0 && !seen[seq] && (seq > top || top-seq < ReplayWindow)
			if got := w.check(seq); got != want {
				t.Fatalf("trial %d: check(%d) with top %d = %v, want %v", trial, seq, top, got, want)
			}
			if want {
				seen[seq] = true
				top = max(top, seq)
			}
		}
	}
}

// TestInboundReplayPerSender: two peers number their packets
// independently on one SA, both from 1, and all are delivered; a packet
// delivered before is dropped as a replay, whoever sends it again and
// whether in the same batch or a later one; packets that fail an earlier
// check (ICV, origin, unknown sender) do not move a window.
func TestInboundReplayPerSender(t *testing.T) {
	h := newInboundHarness(t, 1)
	dstA, dstB := host(local4, 1), host(local6, 1)
	fromA := func(id uint64, seq uint32) arrival {
		return arrival{peerA, h.packet(host(lanA4, 1), dstA, id, seq)}
	}
	fromB := func(id uint64, seq uint32) arrival {
		return arrival{peerB, h.packet(host(lanB6, 1), dstB, id, seq)}
	}
	before := h.b.DropCounts()
	// Both senders number from 1: one window per SA would drop B's.
	var in []arrival
	for seq := uint32(1); seq <= 10; seq++ {
		if seq != 5 {
			in = append(in, fromA(uint64(seq), seq))
		}
		in = append(in, fromB(100+uint64(seq), seq))
	}
	got := h.receive(0, in...)
	if len(got) != 19 {
		t.Fatalf("delivered %d of 19 packets of two senders: %v", len(got), got)
	}
	wantDrops(t, "two senders", dropsSince(h.b, before), nil)

	// Captured packets sent again: in a later batch, and twice in one.
	before = h.b.DropCounts()
	wantIDs(t, "replayed", h.receive(0, in[0], in[1], in[1], in[len(in)-1]))
	wantDrops(t, "replayed", dropsSince(h.b, before), map[string]uint64{DropReplay: 4})

	// Packets that fail a check before the window, with sequence numbers
	// far ahead: were they recorded, A's number 5, never seen, would
	// then be too old.
	far := uint32(10 + ReplayWindow + 100)
	bad := fromA(900, far)
	bad.pkt[len(bad.pkt)-1] ^= 1 // ICV
	// B's prefix from A
	spoofed := arrival{peerA, h.packet(host(lanB4, 7), dstA, 901, far+1)}
	unknown := arrival{stranger, h.packet(host(lanA4, 1), dstA, 902, far+2)}
	before = h.b.DropCounts()
	wantIDs(t, "failing other checks", h.receive(0, bad, spoofed, unknown))
	wantDrops(t, "failing other checks", dropsSince(h.b, before), map[string]uint64{DropSAInErrors: 1, DropOrigin: 1, DropUnknownPeer: 1})
	wantIDs(t, "late but new", h.receive(0, fromA(5, 5)), 5)

	// The windows stay when the peer table changes, and when a sender
	// leaves it and comes back.
	h.setPeers([]xfrm.Peer{{Prefix: lanB4, Underlay: peerB}, {Prefix: lanB6, Underlay: peerB}})
	wantIDs(t, "A gone", h.receive(0, fromA(11, 11)))
	h.setPeers(harnessPeers())
	before = h.b.DropCounts()
	wantIDs(t, "A back, replaying", h.receive(0, in[0], fromA(12, 12)), 12)
	wantDrops(t, "A back, replaying", dropsSince(h.b, before), map[string]uint64{DropReplay: 1})
}

// TestReplaySlotsReused: the replay windows grow with the senders seen
// while the installed SAs lived, not with every sender ever seen. Over 20
// rekeys, 10 new peers join and leave during each SA's life (200 in all):
// a sender that left keeps its slot while an SA installed before it left
// is installed (back in the table, its window on that SA is as it left
// it), and its slot is reused once no such SA remains, with a fresh window.
func TestReplaySlotsReused(t *testing.T) {
	h := newInboundHarness(t, 1)
	ctx := context.Background()
	spi := h.spi
	newSA := func() uint32 {
		spi++
		sa := xfrm.SA{SPI: spi, Suite: testSuite, EncrKey: make([]byte, testSuite.EncrKeyBytes()), IntegKey: make([]byte, testSuite.IntegKeyBytes())}
		if err := h.b.InstallInbound(ctx, sa); err != nil {
			t.Fatal(err)
		}
		return spi
	}
	windows := func(spi uint32) int {
		e := h.b.sas.Load().find(spi)
		if p := e.windows.Load(); p != nil {
			return len(*p)
		}
		return 0
	}
	const perSA = 10
	old := h.spi
	for round := range 20 {
		for i := range perSA {
			x := netip.AddrFrom4([4]byte{198, 18, byte(round), byte(i + 1)})
			h.setPeers(append(harnessPeers(), xfrm.Peer{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(round), byte(i)}), 32), Underlay: x}))
			if i == 0 {
				// The sender that leaves first, back while old is
				// installed: its window on old is as it left it.
				e := h.b.sas.Load().find(old)
				slot := h.b.peers.Load().sender(x).slot
				if !e.window(slot).check(100) {
					t.Fatal("first packet refused")
				}
				h.setPeers(harnessPeers())
				h.setPeers(append(harnessPeers(), xfrm.Peer{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(round), byte(i)}), 32), Underlay: x}))
				if got := h.b.peers.Load().sender(x).slot; got != slot {
					t.Fatalf("round %d: back while the SA is installed, slot %d; want its slot %d", round, got, slot)
				}
				if e.window(slot).check(100) {
					t.Fatalf("round %d: a sender back in the table was replayed into its window", round)
				}
			}
		}
		h.setPeers(harnessPeers())
		next := newSA()
		if err := h.b.Remove(ctx, old); err != nil {
			t.Fatal(err)
		}
		old = next
	}
	// A new sender gets a freed slot, with a fresh window: its first
	// numbers are accepted; and the SA's windows stay within the two
	// peers and the senders of one SA's life.
	y := netip.MustParseAddr("198.19.0.1")
	h.setPeers(append(harnessPeers(), xfrm.Peer{Prefix: netip.MustParsePrefix("10.60.0.0/24"), Underlay: y}))
	slot := h.b.peers.Load().sender(y).slot
	if slot >= 2+perSA {
		t.Errorf("new sender after 200 others over 20 SAs got slot %d; want a freed one below %d", slot, 2+perSA)
	}
	if n := windows(old); n > 2+perSA {
		t.Errorf("after 200 senders over 20 SAs: %d windows per SA; want at most %d", n, 2+perSA)
	}
	if !h.b.sas.Load().find(old).window(slot).check(1) {
		t.Error("a new sender's first packet was refused in a reused slot")
	}
}

// TestInboundOriginBinding: a peer's packet is delivered only when its
// inner source lies in that peer's own prefixes: not in another peer's,
// not outside every prefix, for IPv4 and IPv6, over outer IPv4 and IPv6.
// ESP from an address that is no peer's is dropped even with a valid ICV.
func TestInboundOriginBinding(t *testing.T) {
	h := newInboundHarness(t, 1)
	seq := uint32(0)
	send := func(from, src, dst netip.Addr) (delivered bool, drops map[string]uint64) {
		seq++
		before := h.b.DropCounts()
		ids := h.receive(0, arrival{from, h.packet(src, dst, uint64(seq), seq)})
		return len(ids) == 1, dropsSince(h.b, before)
	}
	for _, c := range []struct {
		name       string
		from, src  netip.Addr
		dst        netip.Addr
		wantReason string // "" when delivered
	}{
		{"A's IPv4 from A", peerA, host(lanA4, 5), host(local4, 1), ""},
		{"A's IPv6 from A", peerA, host(lanA6, 5), host(local6, 1), ""},
		{"B's IPv6 from B (outer IPv6)", peerB, host(lanB6, 5), host(local6, 1), ""},
		{"B's IPv4 from B (outer IPv6)", peerB, host(lanB4, 5), host(local4, 1), ""},
		{"B's IPv4 from A", peerA, host(lanB4, 5), host(local4, 1), DropOrigin},
		{"B's IPv6 from A", peerA, host(lanB6, 5), host(local6, 1), DropOrigin},
		{"A's IPv4 from B", peerB, host(lanA4, 5), host(local4, 1), DropOrigin},
		{"A's IPv6 from B", peerB, host(lanA6, 5), host(local6, 1), DropOrigin},
		{"no peer's IPv4 from A", peerA, netip.MustParseAddr("172.16.0.1"), host(local4, 1), DropOrigin},
		{"no peer's IPv6 from B", peerB, netip.MustParseAddr("fd77::1"), host(local6, 1), DropOrigin},
		{"the local LAN as source, from A", peerA, host(local4, 7), host(local4, 1), DropOrigin},
		{"A's IPv4 from a stranger", stranger, host(lanA4, 5), host(local4, 1), DropUnknownPeer},
		{"A's IPv4 from A, not to a local prefix", peerA, host(lanA4, 5), host(lanB4, 1), DropSAInErrors},
	} {
		delivered, drops := send(c.from, c.src, c.dst)
		switch {
		case c.wantReason == "" && (!delivered || len(drops) != 0):
			t.Errorf("%s: delivered %v, drops %v; want it delivered", c.name, delivered, drops)
		case c.wantReason != "" && (delivered || len(drops) != 1 || drops[c.wantReason] != 1):
			t.Errorf("%s: delivered %v, drops %v; want it dropped as %s", c.name, delivered, drops, c.wantReason)
		}
	}
	// Overlapping prefixes: a more specific prefix of B inside A's does
	// not take A's addresses outside it from A.
	h.setPeers([]xfrm.Peer{{Prefix: netip.MustParsePrefix("10.0.0.0/16"), Underlay: peerA}, {Prefix: lanB4, Underlay: peerB}})
	if ok, drops := send(peerA, host(lanA4, 5), host(local4, 1)); !ok {
		t.Errorf("A's /16 from A: dropped (%v)", drops)
	}
	if ok, _ := send(peerA, host(lanB4, 5), host(local4, 1)); !ok {
		t.Errorf("an address of A's /16 that B's /24 covers, from A: dropped; it is A's prefix too")
	}
	if ok, drops := send(peerB, host(lanA4, 5), host(local4, 1)); ok || drops[DropOrigin] != 1 {
		t.Errorf("A's address from B: delivered %v, drops %v", ok, drops)
	}
}

// TestInboundReplayConcurrent: four inbound goroutines receive the same
// packets of one sender at once (as over several sockets); each packet is
// delivered exactly once and every copy is counted as a replay. Run it
// with -race.
func TestInboundReplayConcurrent(t *testing.T) {
	const lanes, n = 4, 3000
	h := newInboundHarness(t, lanes)
	pkts := make([]arrival, n)
	for i := range pkts {
		pkts[i] = arrival{peerA, h.packet(host(lanA4, 1), host(local4, 1), uint64(i+1), uint32(i+1))}
	}
	delivered := make([][]uint64, lanes)
	var wg sync.WaitGroup
	for lane := range lanes {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(lane), 7))
			for off := 0; off < n; {
				k := min(n-off, 1+r.IntN(64))
				delivered[lane] = append(delivered[lane], h.receive(lane, pkts[off:off+k]...)...)
				off += k
			}
		})
	}
	wg.Wait()
	seen := map[uint64]int{}
	for _, ids := range delivered {
		for _, id := range ids {
			seen[id]++
		}
	}
	for id := uint64(1); id <= n; id++ {
		if seen[id] != 1 {
			t.Fatalf("packet %d delivered %d times", id, seen[id])
		}
	}
	if d := h.b.Drops(); d.Replay != (lanes-1)*n {
		t.Fatalf("%d replays counted, want %d", d.Replay, (lanes-1)*n)
	}
}

// TestOpenBatchNoAllocs: the inbound path from received ESP to the batch
// handed to the TUN allocates nothing per packet, with the sender lookup,
// origin check and replay window included.
func TestOpenBatchNoAllocs(t *testing.T) {
	h := newInboundHarness(t, 1)
	const n, runs = 16, 50
	inner := innerPacket(host(lanB6, 1), host(local6, 1), 1)
	var batches [][]arrival
	seq := uint32(0)
	for range runs + 1 { // AllocsPerRun's warm-up run too
		var in []arrival
		for range n {
			seq++
			p, err := h.seal.AppendSeal(nil, inner, seq)
			if err != nil {
				t.Fatal(err)
			}
			in = append(in, arrival{peerB, p})
		}
		batches = append(batches, in)
	}
	l := h.lanes[0]
	l.grow(n)
	recvOff := inOff - esp.HeaderLen - esp.IVLen
	srcs := make([]netip.Addr, n)
	run := 0
	allocs := testing.AllocsPerRun(runs, func() {
		for i, a := range batches[run] {
			l.sizes[i] = copy(l.bufs[i][recvOff:], a.pkt)
			srcs[i] = a.from
		}
		run++
		l.wbufs = h.b.openBatch(0, false, l.bufs[:n], l.sizes[:n], srcs, recvOff, l.wbufs[:0])
		if len(l.wbufs) != n {
			t.Fatalf("%d of %d packets accepted (drops %v)", len(l.wbufs), n, h.b.DropCounts())
		}
	})
	if allocs != 0 {
		t.Fatalf("openBatch allocates %.1f times per batch", allocs)
	}
	if !bytes.Equal(l.wbufs[0][inOff:], inner) {
		t.Fatal("inner packet not at inOff")
	}
}

// BenchmarkOpenBatch measures the inbound path per batch of 64 packets of
// 1400 bytes from one sender: sender lookup, ICV and decryption, origin
// check and replay window.
func BenchmarkOpenBatch(b *testing.B) {
	h := newInboundHarness(b, 1)
	const n = 64
	inner := make([]byte, 1400)
	copy(inner, innerPacket(host(lanA4, 1), host(local4, 1), 0))
	seq := uint32(0)
	l := h.lanes[0]
	l.grow(n)
	recvOff := inOff - esp.HeaderLen - esp.IVLen
	srcs := make([]netip.Addr, n)
	pkt := make([]byte, 0, 2048)
	b.SetBytes(n * int64(len(inner)))
	for b.Loop() {
		b.StopTimer()
		for i := range n {
			seq++
			var err error
			if pkt, err = h.seal.AppendSeal(pkt[:0], inner, seq); err != nil {
				b.Fatal(err)
			}
			l.sizes[i] = copy(l.bufs[i][recvOff:], pkt)
			srcs[i] = peerA
		}
		b.StartTimer()
		l.wbufs = h.b.openBatch(0, false, l.bufs[:n], l.sizes[:n], srcs, recvOff, l.wbufs[:0])
		if len(l.wbufs) != n {
			b.Fatalf("%d of %d delivered", len(l.wbufs), n)
		}
	}
}

// BenchmarkInboundChecks measures what the sender, origin and replay
// checks add per packet, without the cryptography: the sender's lookup by
// outer address, the origin lookup of the inner source and the window.
func BenchmarkInboundChecks(b *testing.B) {
	h := newInboundHarness(b, 1)
	tbl := h.b.peers.Load()
	e := h.b.sas.Load().find(h.spi)
	src := host(lanB6, 1)
	seq := uint32(0)
	for b.Loop() {
		seq++
		snd := tbl.sender(peerB)
		if snd == nil || !snd.owns(src) || !e.window(snd.slot).check(seq) {
			b.Fatal("refused")
		}
	}
}
