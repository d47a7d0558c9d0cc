package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
)

// TestPacedRekey: a rekey sends push_burst pushes at once, then push_rate
// per second, until every member has the new SA; the status follows the
// fan-out.
func TestPacedRekey(t *testing.T) {
	const n, rate, burst = 300, 100, 20
	f := newFleet(t, fleetConf("push_rate = 100", "push_burst = 20"), n, nil)
	f.joinAll(0, n)
	g := f.group()
	if g.current != n || g.acked != n {
		t.Fatalf("after the joins: %d members on the current SA, %d acknowledged one; want %d", g.current, g.acked, n)
	}
	f.now = f.now.Add(time.Minute) // the bucket fills up again
	if _, err := g.rekey(f.now, "manual"); err != nil {
		t.Fatal(err)
	}
	if len(f.sent) != burst {
		t.Fatalf("the rekey sent %d pushes at once, want the burst, %d", len(f.sent), burst)
	}
	st := g.status(f.ctx).Fanout
	if st.Members != n || st.Current != 0 || st.Queued != n-burst {
		t.Fatalf("fan-out status at the rekey: %+v", st)
	}
	f.answer()
	start := f.now
	f.advance(start.Add(100 * time.Millisecond))
	if len(f.sent) != rate/10 {
		t.Fatalf("in 100 ms the controller sent %d pushes, want %d at push_rate %d/s", len(f.sent), rate/10, rate)
	}
	took := f.settle(f.now.Add(time.Hour)) + 100*time.Millisecond
	if want := time.Duration(n-burst) * time.Second / rate; took < want-10*time.Millisecond || took > want+10*time.Millisecond {
		t.Fatalf("the fan-out took %v, want %v", took, want)
	}
	st = g.status(f.ctx).Fanout
	if st.Current != n || st.Queued != 0 || st.PushSeconds != 2.8 || st.WindowSeconds != 30 || st.Warning != "" {
		t.Fatalf("fan-out status at the end: %+v", st)
	}
	if f.answered != 2*n {
		t.Fatalf("%d answers for two pushes to %d members: something was sent twice", f.answered, n)
	}
}

// TestPacedRekeyWarnsAboveWindow: a group that a push at push_rate cannot
// reach within the rollover window (the default rollover1 30 s and
// rollover2 1 m: 30 s) says so in the status, and in the log when it
// outgrows the window and at every rekey.
func TestPacedRekeyWarnsAboveWindow(t *testing.T) {
	var logs bytes.Buffer
	f := newFleet(t, fleetConf("push_rate = 10", "push_burst = 5"), 320, &logs)
	f.joinAll(0, 300)
	const warning = "longer than the rollover window 30s"
	if w := f.group().status(f.ctx).Fanout.Warning; w != "" || strings.Contains(logs.String(), warning) {
		t.Fatalf("300 members at 10/s take 29.5 s, within the window of 30 s; the status warns %q", w)
	}
	f.joinAll(300, 320)
	w := f.group().status(f.ctx).Fanout.Warning
	if !strings.Contains(w, "a push to all 320 members takes 31.5s at push_rate 10/s, "+warning) {
		t.Fatalf("320 members at 10/s: status warning %q", w)
	}
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Fatalf("the warning was logged %d times when the group outgrew the window, want once", n)
	}
	if _, err := f.group().rekey(f.now, "manual"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), warning); n != 2 {
		t.Fatalf("the warning was logged %d times after a rekey, want twice", n)
	}
}

// TestCountsFollowMembers: the acknowledgement counts kept without a
// walk (members with an SA, members on the current SA, queued pushes)
// equal a recount after every step of a random run of joins, leaves,
// reconnects, lost datagrams, rekeys and time passing.
func TestCountsFollowMembers(t *testing.T) {
	const n = 60
	f := newFleet(t, fleetConf("push_rate = 50", "push_burst = 5"), n, nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	lost := map[int]bool{}
	f.lose = func(i int) bool { return lost[i] }
	up := map[int]bool{}
	for step := range 3000 {
		i := rnd.IntN(n)
		switch op := rnd.IntN(10); {
		case op < 3:
			f.join(i)
			up[i] = true
		case op < 5:
			f.leave(i)
			delete(up, i)
		case op == 5:
			// a reconnect: a newer IKE SA for the same control
			// address comes up, then the old one goes
			old := f.sas[i].UniqueID
			sa := f.sas[i]
			sa.UniqueID += uint32(n) * uint32(step+1)
			sa.InitiatorSPI++
			f.sas[i] = sa
			f.join(i)
			f.removeIKE(old)
			up[i] = true
		case op == 6:
			lost[i] = !lost[i]
		case op == 7:
			if _, err := f.group().rekey(f.now, "manual"); err != nil {
				t.Fatal(err)
			}
		default:
			f.advance(f.now.Add(time.Duration(rnd.IntN(3000)) * time.Millisecond))
		}
		f.answer()
		checkCounts(t, f, step, len(up))
	}
}

func checkCounts(t *testing.T, f *fleet, step, up int) {
	t.Helper()
	g := f.group()
	cur := g.group.Current().SPI()
	acked, current := 0, 0
	for _, m := range g.members {
		if m.acked != 0 {
			acked++
		}
		if m.acked == cur {
			current++
		}
	}
	queued := 0
	for _, m := range f.s.pacer.queue[f.s.pacer.head:] {
		if m.g == g {
			queued++
		}
	}
	if len(g.members) != up || g.acked != acked || g.current != current || g.queued != queued {
		t.Fatalf("step %d: %d members (want %d), counts acked %d current %d queued %d; recounted %d %d %d",
			step, len(g.members), up, g.acked, g.current, g.queued, acked, current, queued)
	}
	// Datagrams between the control addresses of a member's links reach
	// the group: its links are counted by pair, one route per member.
	links, counted := 0, 0
	for _, m := range g.members {
		links += len(m.links)
		counted += g.pairs[addrPair{ctlAddr, m.addr}]
		if gs := f.s.byPair[addrPair{ctlAddr, m.addr}]; len(gs) != 1 || gs[0] != g {
			t.Fatalf("step %d: member %s routed to %d groups", step, m.addr, len(gs))
		}
	}
	if counted != links || len(g.pairs) != len(g.members) || len(f.s.byPair) != len(g.members) {
		t.Fatalf("step %d: %d links, %d counted; %d pairs, %d routed, %d members", step, links, counted, len(g.pairs), len(f.s.byPair), len(g.members))
	}
}

// TestLeaveWhileQueued: a member that leaves while its push waits for the
// push rate is sent nothing.
func TestLeaveWhileQueued(t *testing.T) {
	f := newFleet(t, fleetConf("push_rate = 10", "push_burst = 1"), 3, nil)
	f.join(0)
	f.join(1)
	f.join(2)
	if len(f.sent) != 1 {
		t.Fatalf("%d pushes at once with push_burst 1", len(f.sent))
	}
	f.leave(2)
	f.settle(f.now.Add(time.Hour))
	for _, d := range f.sent {
		if memberIndex(d.Dst) == 2 {
			t.Fatal("a push went to a member that had left")
		}
	}
	if f.answered != 2 || f.group().queued != 0 {
		t.Fatalf("%d answers, %d queued; want 2 and 0", f.answered, f.group().queued)
	}
}

// TestManyMemberGroupsRoutedByLocalAddress: a member with many groups
// (as the scale harness's load generator runs one per simulated member)
// routes each datagram to the group of its control addresses, without
// asking the others.
func TestManyMemberGroupsRoutedByLocalAddress(t *testing.T) {
	const n = 50
	s, sent := manyGroups(t, "member", n, func(i int) string {
		return fmt.Sprintf("dataplane = userspace\n tun = t%d\n local_ts = 10.100.%d.0/24\n routes { r { prefixes = 10.200.%d.0/24\n peer = 192.0.2.200 } }", i, i, i)
	})
	ctx := context.Background()
	var sas []vici.IKESA
	for i := range n {
		sa := fleetSA(i) // here: the member's IKE SA to the controller
		sa.Conn, sa.Initiator = fmt.Sprintf("c%d", i), true
		sa.Children[0].LocalTS, sa.Children[0].RemoteTS = sa.Children[0].RemoteTS, sa.Children[0].LocalTS
		sas = append(sas, sa)
	}
	s.onUpdate(ctx, vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Changed: sas})
	if len(*sent) != n || len(s.byPair) != n {
		t.Fatalf("%d hellos, %d pairs of control addresses routed; want %d", len(*sent), len(s.byPair), n)
	}
	asked := countAsked(s)
	// The controller answers the hello of group 37 only.
	hello := (*sent)[0]
	for _, d := range *sent {
		if d.Src.Addr() == memberAddr(37) {
			hello = d
		}
	}
	h, err := mpsa.ParseHeader(hello.Data)
	if err != nil {
		t.Fatal(err)
	}
	h.Flags = mpsa.FlagResponse
	b, _ := (&mpsa.Message{Header: h, Payloads: []mpsa.Payload{mpsa.MPSAVendorID()}}).Marshal()
	if !s.onDatagram(ctx, Datagram{Src: netip.AddrPortFrom(ctlAddr, hello.Src.Port()), Dst: hello.Src.Addr(), Data: b}) {
		t.Fatal("the answer to group 37's hello was not claimed")
	}
	if *asked != 1 {
		t.Fatalf("the datagram was offered to %d groups, want 1", *asked)
	}
	for i, g := range s.groups {
		if up := g.(*memGroup).hello; up != (i == 37) {
			t.Fatalf("group %d: hello answered %v", i, up)
		}
	}
}

// TestManyControllerGroupsOneLocalAddress: a controller whose groups all
// share one local control address hands a member's datagram to the
// member's group alone, whatever the number of groups.
func TestManyControllerGroupsOneLocalAddress(t *testing.T) {
	const n = 50
	s, sent := manyGroups(t, "controller", n, func(int) string { return "" })
	ctx := context.Background()
	var sas []vici.IKESA
	for i := range n {
		sa := fleetSA(i) // member i in group i, every group on ctlAddr
		sa.Conn = fmt.Sprintf("c%d", i)
		sas = append(sas, sa)
	}
	s.onUpdate(ctx, vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Changed: sas})
	if len(*sent) != n || len(s.byPair) != n {
		t.Fatalf("%d pushes, %d pairs of control addresses routed; want %d", len(*sent), len(s.byPair), n)
	}
	asked := countAsked(s)
	for _, d := range *sent {
		if d.Dst != memberAddr(n-1) {
			continue
		}
		if !s.onDatagram(ctx, response(t, d)) {
			t.Fatal("the last member's answer was not claimed")
		}
	}
	if *asked != 1 {
		t.Fatalf("the datagram was offered to %d groups, want 1", *asked)
	}
	for i, g := range s.groups {
		if acked := g.(*ctlGroup).acked; acked != 0 != (i == n-1) {
			t.Fatalf("group %d: %d members acknowledged", i, acked)
		}
	}
}

// manyGroups is a server of role with n groups, group i called g<i> on
// connection c<i> with control child ctl and the settings more(i), and
// the datagrams it sends.
func manyGroups(t *testing.T, role string, n int, more func(i int) string) (*Server, *[]Datagram) {
	t.Helper()
	var conf strings.Builder
	fmt.Fprintf(&conf, "mpsa {\n role = %s\n groups {\n", role)
	for i := range n {
		fmt.Fprintf(&conf, " g%d { connection = c%d\n control_child = ctl\n %s }\n", i, i, more(i))
	}
	conf.WriteString(" }\n}\n")
	sent := new([]Datagram)
	s := testServer(t, Options{Config: loadConfig(t, conf.String()), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NewDataPlane: func(context.Context, *swanctl.Group, netip.Addr, *slog.Logger) (xfrm.DataPlane, error) {
			return &recorder{keys: map[uint32]xfrm.SA{}}, nil
		}})
	s.out = sendFunc(func(b []byte, src netip.Addr, dst netip.AddrPort) error {
		*sent = append(*sent, Datagram{Src: netip.AddrPortFrom(src, dst.Port()), Dst: dst.Addr(), Data: bytes.Clone(b)})
		return nil
	})
	if err := s.applyConfig(context.Background(), s.cfg); err != nil {
		t.Fatal(err)
	}
	return s, sent
}

// countingGroup is a group whose datagrams are counted.
type countingGroup struct {
	group
	asked *int
}

func (c countingGroup) onDatagram(ctx context.Context, now time.Time, d Datagram) bool {
	*c.asked++
	return c.group.onDatagram(ctx, now, d)
}

// countAsked wraps every group the server routes datagrams to, so that
// the count returned says to how many groups the datagrams went.
func countAsked(s *Server) *int {
	n := new(int)
	for _, gs := range s.byPair {
		for i, g := range gs {
			gs[i] = countingGroup{g, n}
		}
	}
	return n
}

// sendFunc is a test's control wire.
type sendFunc func(b []byte, src netip.Addr, dst netip.AddrPort) error

func (f sendFunc) Send(b []byte, src netip.Addr, dst netip.AddrPort) error { return f(b, src, dst) }

// TestPutCacheOnlyWhilePushesWait: the encoded MPSA_PUT, which holds SK_d
// and the nonce, is kept while a rekey's pushes wait for the push rate,
// and wiped once the last has left; a single push wipes it at once.
func TestPutCacheOnlyWhilePushesWait(t *testing.T) {
	f := newFleet(t, fleetConf("push_rate = 10", "push_burst = 5"), 20, nil)
	f.joinAll(0, 20)
	g := f.group()
	if g.put.n != nil {
		t.Fatal("the encoded MPSA_PUT is kept after the joins' pushes left")
	}
	f.advance(f.now.Add(time.Second)) // the bucket fills: a burst goes at once
	if _, err := g.rekey(f.now, "manual"); err != nil {
		t.Fatal(err)
	}
	if g.queued == 0 || g.put.n == nil {
		t.Fatalf("%d pushes wait, cache %v", g.queued, g.put.n != nil)
	}
	data := g.put.n.Data
	f.settle(f.now.Add(time.Minute))
	if g.queued != 0 || g.put.n != nil || slices.ContainsFunc(data, func(b byte) bool { return b != 0 }) || g.current != 20 {
		t.Fatalf("after the fan-out: %d waiting, cache %v, its old bytes wiped %v, %d members on the SA", g.queued, g.put.n != nil,
			!slices.ContainsFunc(data, func(b byte) bool { return b != 0 }), g.current)
	}
}

// TestMovedMemberDropsOldRetransmission: a member that moves to a new IKE
// SA while a push to it is unanswered loses that push's retransmission
// deadline with the old session; the new session's push, waiting for the
// push rate, sets its own when it leaves.
func TestMovedMemberDropsOldRetransmission(t *testing.T) {
	f := newFleet(t, fleetConf("push_rate = 1", "push_burst = 1"), 1, nil)
	f.lose = func(int) bool { return true }
	f.join(0)
	f.answer()
	m := f.group().members[memberAddr(0)]
	if m.retx.pos == 0 || m.pending == 0 {
		t.Fatalf("no retransmission pending for the unanswered push (pending %08x)", m.pending)
	}
	moved := fleetSA(0)
	moved.UniqueID, moved.InitiatorSPI, moved.ResponderSPI = 100, 0x9900, 0x9901
	f.s.onUpdate(f.ctx, vici.Update{Cause: vici.CauseEvent, Snapshot: vici.Snapshot{Connected: true}, Changed: []vici.IKESA{moved}})
	if m.cur().ike != 100 || !m.queued || m.retx.pos != 0 {
		t.Fatalf("after the move: IKE SA %d, queued %v, old retransmission still set %v", m.cur().ike, m.queued, m.retx.pos != 0)
	}
	f.advance(f.now.Add(time.Second))
	if m.queued || m.retx.pos == 0 || len(f.sent) != 1 {
		t.Fatalf("the new session's push: queued %v, retransmission set %v, %d sent", m.queued, m.retx.pos != 0, len(f.sent))
	}
}
