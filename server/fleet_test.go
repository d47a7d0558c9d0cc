package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/vici"
)

// A fleet is a controller's engine with many simulated members, for the
// scale tests and benchmarks: each member is an IKE SA with its control
// child, and answers every request the controller sends it with a
// response (what a member's mpsad does once it has installed the SA),
// unless the fleet's lose says otherwise. The wire is in memory and the
// clock injected, as in engine_test.go; only the controller is real.
type fleet struct {
	tb  testing.TB
	ctx context.Context
	now time.Time
	s   *Server
	// sent are the controller's datagrams not delivered yet.
	sent []Datagram
	// sas are the members' IKE SAs, member i at index i.
	sas []vici.IKESA
	// lose, if set, loses the controller's datagrams to the members it
	// returns true for.
	lose func(member int) bool
	// busy is the time spent in the controller's code (wall clock on
	// the calling goroutine).
	busy time.Duration
	// answered counts the responses delivered.
	answered int
}

// fleetConf is a controller with the default timers (rollover1 30 s,
// rollover2 1 m) and extra global settings.
func fleetConf(globals ...string) string { return fleetConfWith("", globals...) }

// fleetConfWith is fleetConf with extra settings of the group.
func fleetConfWith(group string, globals ...string) string {
	return "mpsa {\n role = controller\n " + strings.Join(globals, "\n ") + "\n groups { g { connection = c\n control_child = ctl\n " + group + " } } }"
}

// newFleet returns a controller configured by conf whose n members are
// known but not joined. Logs at info level go to log (io.Discard if nil):
// they are formatted as in production.
func newFleet(tb testing.TB, conf string, n int, log io.Writer) *fleet {
	tb.Helper()
	if log == nil {
		log = io.Discard
	}
	f := &fleet{tb: tb, ctx: context.Background(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), sas: make([]vici.IKESA, n)}
	for i := range f.sas {
		f.sas[i] = fleetSA(i)
	}
	m, err := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	if err != nil {
		tb.Fatal(err)
	}
	f.s = testServer(tb, Options{Config: loadConfig(tb, conf), Logger: slog.New(slog.NewTextHandler(log, nil)),
		Now: func() time.Time { return f.now }, Rand: rand.NewChaCha8([32]byte{7}), Metrics: m})
	f.s.out = f
	if err := f.s.applyConfig(f.ctx, f.s.cfg); err != nil {
		tb.Fatal(err)
	}
	// Connected to charon, which has no member yet.
	f.s.onUpdate(f.ctx, vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}})
	return f
}

// Send is the controller's wire: datagrams to members queue in sent.
func (f *fleet) Send(b []byte, src netip.Addr, dst netip.AddrPort) error {
	f.sent = append(f.sent, Datagram{Src: netip.AddrPortFrom(src, dst.Port()), Dst: dst.Addr(), Data: append([]byte(nil), b...)})
	return nil
}

// memberAddr is member i's control address: 10.64.0.0/10 and up.
func memberAddr(i int) netip.Addr {
	i += 64 << 16
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// memberIndex is the member of a control address.
func memberIndex(a netip.Addr) int {
	b := a.As4()
	return int(b[1])<<16 | int(b[2])<<8 | int(b[3]) - 64<<16
}

// fleetSA is member i's IKE SA as the controller's charon lists it.
func fleetSA(i int) vici.IKESA {
	return vici.IKESA{Conn: "c", UniqueID: uint32(i + 1), State: vici.IKEEstablished, RemoteID: fmt.Sprintf("member%d", i),
		LocalHost: netip.MustParseAddr("192.0.2.1"), RemoteHost: netip.MustParseAddr("198.18.0.1"),
		InitiatorSPI: uint64(i+1) << 8, ResponderSPI: uint64(i+1)<<8 | 1,
		Children: []vici.ChildSA{{Name: "ctl", UniqueID: uint32(i + 1), State: vici.ChildInstalled, Mode: "TUNNEL", Protocol: "ESP",
			LocalTS: []netip.Prefix{netip.PrefixFrom(ctlAddr, 32)}, RemoteTS: []netip.Prefix{netip.PrefixFrom(memberAddr(i), 32)}}}}
}

// timed runs fn, the controller's code, and adds its time to busy.
func (f *fleet) timed(fn func()) {
	t0 := time.Now()
	fn()
	f.busy += time.Since(t0)
}

// join brings member i's control child up, as one VICI event.
func (f *fleet) join(i int) {
	u := vici.Update{Cause: vici.CauseEvent, Snapshot: vici.Snapshot{Connected: true}, Changed: f.sas[i : i+1]}
	f.timed(func() { f.s.onUpdate(f.ctx, u) })
}

// leave takes member i's IKE SA down, as one VICI event.
func (f *fleet) leave(i int) { f.removeIKE(f.sas[i].UniqueID) }

// removeIKE takes the IKE SA with unique id ike down, as one VICI event.
func (f *fleet) removeIKE(ike uint32) {
	u := vici.Update{Cause: vici.CauseEvent, Snapshot: vici.Snapshot{Connected: true}, Removed: []uint32{ike}}
	f.timed(func() { f.s.onUpdate(f.ctx, u) })
}

// answer delivers the members' answers to what the controller sent, until
// it sends nothing more at this instant.
func (f *fleet) answer() {
	for len(f.sent) > 0 {
		sent := f.sent
		f.sent = nil
		for _, d := range sent {
			i := memberIndex(d.Dst)
			if f.lose != nil && f.lose(i) {
				continue
			}
			r := response(f.tb, d)
			f.answered++
			f.timed(func() { f.s.onDatagram(f.ctx, r) })
		}
	}
}

// response is a member's answer to a request: the same IKE SPIs and
// message ID, the response flag, and the I flag of the member, which
// initiated its IKE SA.
func response(tb testing.TB, d Datagram) Datagram {
	h, err := mpsa.ParseHeader(d.Data)
	if err != nil {
		tb.Fatal(err)
	}
	h.Flags = mpsa.FlagResponse | mpsa.FlagInitiator
	b, err := (&mpsa.Message{Header: h}).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return Datagram{Src: netip.AddrPortFrom(d.Dst, d.Src.Port()), Dst: d.Src.Addr(), Data: b}
}

// advance moves the clock to at and fires the deadlines due.
func (f *fleet) advance(at time.Time) {
	f.now = at
	f.timed(func() { f.s.onTimers(f.ctx) })
}

// settle answers and follows the controller's deadlines (the pacer's
// tokens, retransmissions) until nothing but the group's rekey is due
// before limit, and returns the simulated time it took.
func (f *fleet) settle(limit time.Time) time.Duration {
	start := f.now
	for {
		f.answer()
		next, ok := f.s.sched.next()
		if !ok || next.After(limit) || !next.Before(f.group().group.NextRekey()) {
			return f.now.Sub(start)
		}
		f.advance(next)
	}
}

// joinAll brings members [from, to) up and settles.
func (f *fleet) joinAll(from, to int) {
	for i := from; i < to; i++ {
		f.join(i)
		f.answer()
	}
	f.settle(f.now.Add(time.Hour))
}

func (f *fleet) group() *ctlGroup { return f.s.groups[0].(*ctlGroup) }
