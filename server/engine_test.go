package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/protect"
)

// These tests drive the engine's controller and member logic directly,
// with an in-memory wire between them, a recording data plane and an
// injected clock. The real transport, charon and data planes are in
// test/e2e.

type delivery struct {
	to *Server
	d  Datagram
}

// wire carries datagrams between servers by control address.
type wire struct {
	at    map[netip.Addr]*Server
	queue []delivery
	// drop, if set, loses datagrams it returns true for.
	drop func(Datagram) bool
	// ifIndex is the interface datagrams arrive on.
	ifIndex int
}

type port struct {
	w *wire
}

func (p port) Send(b []byte, src netip.Addr, dst netip.AddrPort) error {
	to := p.w.at[dst.Addr()]
	if to == nil {
		return fmt.Errorf("no host %s", dst.Addr())
	}
	p.w.queue = append(p.w.queue, delivery{to, Datagram{Src: netip.AddrPortFrom(src, dst.Port()), Dst: dst.Addr(), IfIndex: p.w.ifIndex, Data: bytes.Clone(b)}})
	return nil
}

func (w *wire) drain(ctx context.Context) {
	for len(w.queue) > 0 {
		d := w.queue[0]
		w.queue = w.queue[1:]
		if w.drop != nil && w.drop(d.d) {
			continue
		}
		d.to.onDatagram(ctx, d.d)
	}
}

// recorder is a data plane that records what it is told.
type recorder struct {
	mu       sync.Mutex
	calls    []string
	keys     map[uint32]xfrm.SA
	failNext error
	failures int // how many installs fail with failNext
}

func (r *recorder) InstallInbound(_ context.Context, sa xfrm.SA) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures > 0 {
		r.failures--
		return r.failNext
	}
	r.calls = append(r.calls, fmt.Sprintf("install %08x", sa.SPI))
	r.keys[sa.SPI] = xfrm.SA{SPI: sa.SPI, Suite: sa.Suite, EncrKey: bytes.Clone(sa.EncrKey), IntegKey: bytes.Clone(sa.IntegKey)}
	return nil
}
func (r *recorder) SetOutbound(_ context.Context, spi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("outbound %08x", spi))
	return nil
}
func (r *recorder) Remove(_ context.Context, spi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("remove %08x", spi))
	return nil
}
func (r *recorder) SetPeers(_ context.Context, local []netip.Prefix, peers []xfrm.Peer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("peers %v %v", local, peers))
	return nil
}
func (r *recorder) Counters(context.Context) ([]xfrm.Counters, error) { return nil, nil }
func (r *recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "close")
	return nil
}

func (r *recorder) Flush(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "flush")
	return nil
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func loadConfig(t testing.TB, src string) *swanctl.Config {
	t.Helper()
	root, err := swanctl.Reader{}.Parse("test.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := swanctl.Decode(root)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const (
	ctlConf = `mpsa {
  role = controller
  groups { g { connection = c
    control_child = ctl
    lifetime = 1h
    rekey_time = 50m
    rollover1 = 1s
    rollover2 = 2s } } }`
	memConf = `mpsa {
  role = member
  groups { g { connection = c
    control_child = ctl
    dataplane = userspace
    local_ts = 10.1.1.0/24
    routes { m2 { prefixes = 10.1.2.0/24
                  peer = 192.0.2.12 } } } } }`
)

// peersCall is the member's peer table of memConf as the recorder shows it.
const peersCall = "peers [10.1.1.0/24] [10.1.2.0/24 via 192.0.2.12]"

var (
	ctlAddr = netip.MustParseAddr("10.98.0.1")
	memAddr = netip.MustParseAddr("10.98.1.1")
)

func snapshot(local, remote netip.Addr, initiator bool, spiI, spiR uint64) vici.Snapshot {
	return vici.Snapshot{Connected: true, IKESAs: []vici.IKESA{{
		Conn: "c", UniqueID: 7, State: vici.IKEEstablished, Initiator: initiator,
		LocalHost: netip.MustParseAddr("192.0.2.11"), RemoteID: "member1", InitiatorSPI: spiI, ResponderSPI: spiR,
		Children: []vici.ChildSA{{Name: "ctl", State: vici.ChildInstalled,
			LocalTS: []netip.Prefix{netip.PrefixFrom(local, 32)}, RemoteTS: []netip.Prefix{netip.PrefixFrom(remote, 32)}}},
	}}}
}

type bench struct {
	t        *testing.T
	ctx      context.Context
	now      time.Time
	w        *wire
	ctl, mem *Server
	dp       *recorder
	logs     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newBench(t *testing.T) *bench {
	b := &bench{t: t, ctx: context.Background(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		w: &wire{at: map[netip.Addr]*Server{}}, dp: &recorder{keys: map[uint32]xfrm.SA{}}, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clock := func() time.Time { return b.now }
	m, err := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	if err != nil {
		t.Fatal(err)
	}
	b.ctl = testServer(t, Options{Config: loadConfig(t, ctlConf), Logger: log.With("side", "controller"), Now: clock,
		Rand: rand.NewChaCha8([32]byte{1}), Metrics: m})
	b.mem = testServer(t, Options{Config: loadConfig(t, memConf), Logger: log.With("side", "member"), Now: clock,
		NewDataPlane: func(context.Context, *swanctl.Group, netip.Addr, *slog.Logger) (xfrm.DataPlane, error) {
			return b.dp, nil
		}})
	for addr, s := range map[netip.Addr]*Server{ctlAddr: b.ctl, memAddr: b.mem} {
		b.w.at[addr] = s
		s.out = port{b.w}
		if err := s.applyConfig(b.ctx, s.cfg); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func (b *bench) up() {
	b.ctl.onUpdate(b.ctx, vici.Update{Snapshot: snapshot(ctlAddr, memAddr, false, 0x1111, 0x2222)})
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)})
	b.w.drain(b.ctx)
}

func (b *bench) advance(d time.Duration) {
	b.now = b.now.Add(d)
	b.ctl.onTimers(b.ctx)
	b.mem.onTimers(b.ctx)
	b.w.drain(b.ctx)
}

func (b *bench) ctlGroup() *ctlGroup { return b.ctl.groups[0].(*ctlGroup) }

func (b *bench) expectCalls(want ...string) {
	b.t.Helper()
	got := b.dp.take()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		b.t.Fatalf("data plane calls\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEngineDistributesAndRekeys(t *testing.T) {
	b := newBench(t)
	b.up()
	first := b.ctlGroup().group.Current().SPI()
	b.expectCalls(
		peersCall,
		fmt.Sprintf("install %08x", first),
		fmt.Sprintf("outbound %08x", first),
	)
	// the member holds exactly the keys KEYMAT gives for the controller's SA
	put := b.ctlGroup().group.PutAt(b.now)
	want, _ := mpsa.DeriveKeys(put)
	if got := b.dp.keys[first]; !bytes.Equal(got.EncrKey, want.Encr) || !bytes.Equal(got.IntegKey, want.Integ) || got.Suite != put.Suite {
		t.Fatal("the member installed other keys than KEYMAT of the controller's SA")
	}
	st := b.ctlStatus()
	if len(st.Members) != 1 || st.Members[0].AckedSPI != spiString(first) || st.Members[0].ID != "member1" {
		t.Fatalf("controller status %+v", st.Members)
	}

	// forced rekey: new SA inbound at once, outbound after 1 s, old gone after 2 s
	spi, err := b.ctlGroup().rekey(b.now, metrics.RekeyManual)
	if err != nil {
		t.Fatal(err)
	}
	b.w.drain(b.ctx)
	second := b.ctlGroup().group.Current().SPI()
	if spi != spiString(second) {
		t.Fatalf("rekey reported %s, current is %08x", spi, second)
	}
	b.expectCalls(fmt.Sprintf("install %08x", second))
	b.advance(999 * time.Millisecond)
	b.expectCalls()
	b.advance(time.Millisecond)
	b.expectCalls(fmt.Sprintf("outbound %08x", second))
	b.advance(time.Second)
	b.expectCalls(fmt.Sprintf("remove %08x", first))
	if ms := b.memStatus(); ms.OutboundSPI != spiString(second) || len(ms.InboundSPIs) != 1 {
		t.Fatalf("member status %+v", ms)
	}
	b.checkNoKeysInLogs(put)
}

// TestEngineRetransmitsUntilInstalled: the member's data plane fails on
// the first push and on the push that answers its hello; the member does
// not acknowledge, the controller retransmits, and that try installs the
// SA.
func TestEngineRetransmitsUntilInstalled(t *testing.T) {
	b := newBench(t)
	b.dp.failNext, b.dp.failures = errors.New("simulated netlink failure"), 2
	b.up()
	spi := b.ctlGroup().group.Current().SPI()
	if c := b.dp.take(); len(c) != 1 || c[0] != peersCall {
		t.Fatalf("after a failed install: %v", c)
	}
	st := b.ctlStatus()
	if st.Members[0].AckedSPI != "" || st.Members[0].PendingSPI != spiString(spi) {
		t.Fatalf("member acknowledged an SA it failed to install: %+v", st.Members[0])
	}
	b.advance(time.Second) // the controller's first retransmission
	b.expectCalls(fmt.Sprintf("install %08x", spi), fmt.Sprintf("outbound %08x", spi))
	st = b.ctlStatus()
	if st.Members[0].AckedSPI != spiString(spi) {
		t.Fatalf("after the retransmission: %+v", st.Members[0])
	}
	if !strings.Contains(b.logs.String(), "simulated netlink failure") {
		t.Fatal("the data-plane failure was not logged")
	}
	if ms := b.memStatus(); ms.DataPlaneError != "simulated netlink failure" {
		t.Fatalf("status does not show the data-plane failure: %q", ms.DataPlaneError)
	}
}

// TestEngineLostDatagrams: the controller's first push and the member's
// first hello are lost; retransmissions get the SA through, and a
// duplicate push is acknowledged without reinstalling.
func TestEngineLostDatagrams(t *testing.T) {
	b := newBench(t)
	lost := 0
	b.w.drop = func(Datagram) bool {
		if lost < 2 {
			lost++
			return true
		}
		return false
	}
	b.up()
	b.expectCalls(peersCall)
	// Both requests wait for their first retransmission, 1 s less up to
	// 25 % of jitter on the injected clock (not on the wall clock).
	if c, m := b.ctl.nextDeadline(), b.mem.nextDeadline(); c > time.Second || c < 750*time.Millisecond || m > time.Second || m < 750*time.Millisecond {
		t.Fatalf("next deadlines: controller %v, member %v; want 0.75-1s", c, m)
	}
	b.advance(time.Second)
	spi := b.ctlGroup().group.Current().SPI()
	b.expectCalls(fmt.Sprintf("install %08x", spi), fmt.Sprintf("outbound %08x", spi))
	b.advance(time.Minute)
	b.expectCalls()
	st := b.ctlStatus()
	if st.Members[0].AckedSPI != spiString(spi) || st.Members[0].PendingSPI != "" {
		t.Fatalf("controller: %+v", st.Members[0])
	}
}

// TestEngineDropsForeignDatagrams: wrong IKE SPIs, unknown sources and
// garbage are dropped and counted by reason, and change nothing.
func TestEngineDropsForeignDatagrams(t *testing.T) {
	b := newBench(t)
	b.up()
	b.dp.take()
	spi := b.ctlGroup().group.Current().SPI()
	hello := func(spiI uint64) []byte {
		m, _ := (&mpsa.Message{Header: mpsa.Header{SPIi: spiI, SPIr: 0x2222, Exchange: 37, Flags: mpsa.FlagInitiator, MessageID: 99}, Payloads: []mpsa.Payload{mpsa.MPSAVendorID()}}).Marshal()
		return m
	}
	for _, d := range []Datagram{
		{Src: netip.AddrPortFrom(memAddr, 4501), Dst: ctlAddr, Data: hello(0x9999)},
		{Src: netip.AddrPortFrom(netip.MustParseAddr("10.98.9.9"), 4501), Dst: ctlAddr, Data: hello(0x1111)},
		{Src: netip.AddrPortFrom(memAddr, 4501), Dst: ctlAddr, Data: []byte("garbage")},
		{Src: netip.AddrPortFrom(memAddr, 4501), Dst: netip.MustParseAddr("10.98.0.2"), Data: hello(0x1111)},
	} {
		// A datagram from a member's control address goes to its group
		// (which drops it); the others match no group.
		claimed := d.Src.Addr() == memAddr && d.Dst == ctlAddr
		if got := b.ctl.onDatagram(b.ctx, d); got != claimed {
			t.Errorf("datagram from %s to %s: handled by a group %v, want %v", d.Src, d.Dst, got, claimed)
		}
	}
	if n := len(b.w.queue); n != 0 {
		t.Fatalf("%d answers to foreign datagrams", n)
	}
	g := b.ctlGroup().drops.snapshot()
	top := b.ctl.drops.snapshot()
	if g[metrics.DropSPIMismatch] != 1 || g[metrics.DropMalformed] != 1 || top[metrics.DropNoControlChild] != 2 {
		t.Fatalf("group drops %v, daemon drops %v", g, top)
	}
	if b.ctlGroup().group.Current().SPI() != spi {
		t.Fatal("a foreign datagram changed the SA")
	}
}

// TestEngineCounterModeRefused: a member refuses a GCM SA unless
// insecure_counter_mode_lab_only is set, and does not acknowledge it.
func TestEngineCounterModeRefused(t *testing.T) {
	b := newBench(t)
	cfg := loadConfig(t, strings.Replace(ctlConf, "control_child = ctl", "control_child = ctl\n    esp_proposal = aes128gcm16\n    insecure_counter_mode_lab_only = yes", 1))
	b.ctl.shutdown()
	b.ctl.cfg = cfg
	if err := b.ctl.applyConfig(b.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	b.up()
	if c := b.dp.take(); len(c) != 1 || c[0] != peersCall {
		t.Fatalf("member installed a counter-mode SA without insecure_counter_mode_lab_only: %v", c)
	}
	if !strings.Contains(b.logs.String(), "counter-mode SA refused") {
		t.Fatal("refusal not logged")
	}
}

func (b *bench) ctlStatus() GroupStatus { return b.ctlGroup().status(b.ctx) }

func (b *bench) memStatus() GroupStatus { return b.mem.groups[0].(*memGroup).status(b.ctx) }

// checkNoKeysInLogs: no nonce, SK_d or derived key appears in the debug
// log, in hex, base64 or as a Go byte slice.
func (b *bench) checkNoKeysInLogs(puts ...*mpsa.Put) {
	b.t.Helper()
	var secrets [][]byte
	for _, p := range puts {
		secrets = append(secrets, p.Nonce, p.SKd)
	}
	for _, sa := range b.dp.keys {
		secrets = append(secrets, sa.EncrKey, sa.IntegKey)
	}
	logs := b.logs.String()
	if len(logs) < 1000 {
		b.t.Fatalf("suspiciously short debug log (%d octets)", len(logs))
	}
	for _, s := range secrets {
		part := s[:8]
		for _, form := range []string{hex.EncodeToString(part), strings.ToUpper(hex.EncodeToString(part)),
			base64.StdEncoding.EncodeToString(s)[:10], strings.Trim(fmt.Sprint(part), "[]"),
			// slog's text handler writes []byte as a quoted string
			strings.Trim(strconv.Quote(string(part)), `"`), string(part)} {
			if strings.Contains(logs, form) {
				b.t.Fatalf("key material %q appears in the log", form)
			}
		}
	}
}

// TestEngineReconnectKeepsOneMember: while a member reconnects, charon
// has two IKE SAs with its control address; the controller keeps one
// member, on the newer IKE SA, and never counts a leave.
func TestEngineReconnectKeepsOneMember(t *testing.T) {
	b := newBench(t)
	b.up()
	old := snapshot(ctlAddr, memAddr, false, 0x1111, 0x2222).IKESAs[0]
	newer := snapshot(ctlAddr, memAddr, false, 0x3333, 0x4444).IKESAs[0]
	newer.UniqueID = old.UniqueID + 1
	b.ctl.onUpdate(b.ctx, vici.Update{Snapshot: vici.Snapshot{Connected: true, IKESAs: []vici.IKESA{old, newer}}})
	g := b.ctlGroup()
	if len(g.members) != 1 {
		t.Fatalf("%d members for one control address", len(g.members))
	}
	m := g.members[memAddr]
	if m.sess.ID() != (mpsa.SessionID{SPIi: 0x3333, SPIr: 0x4444}) || m.cur().ike != newer.UniqueID {
		t.Fatalf("member on IKE SA %d (%v), want the newer one", m.cur().ike, m.sess.ID())
	}
	if next := g.group.NextRekey(); !next.Equal(g.group.Current().RekeyAt) {
		t.Fatalf("a reconnect scheduled a rekey at %v (the SA's own is at %v)", next, g.group.Current().RekeyAt)
	}
}

// trustingVerifier proves every control child as kernel policies would
// (no interface, no port to hold datagrams to): the engine tests have no
// kernel state to check. xfrm/protect is tested on its own, and the e2e
// tests run mpsad with it for real.
type trustingVerifier struct{}

func (trustingVerifier) Verify(context.Context, protect.Child, bool) (protect.Proof, error) {
	return protect.Proof{How: "trusted by the test"}, nil
}

// testServer is New for the engine tests: the trusting verifier, and a
// charon that has said which plugins it has (without it every control
// child is refused).
func testServer(tb testing.TB, o Options) *Server {
	tb.Helper()
	o.Verifier = trustingVerifier{}
	s, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	s.charon = &vici.Charon{Plugins: []string{"charon", "kernel-netlink"}}
	return s
}

// warnDP is a recorder with warnings, as the kernel data plane has them.
type warnDP struct{ *recorder }

func (warnDP) Warnings() []string {
	return []string{"outbound SA 00001234 to 192.0.2.12 used 3/4 of its sequence numbers"}
}

// TestDataPlaneWarningsInStatus: a data plane's warnings reach the
// member's status.
func TestDataPlaneWarningsInStatus(t *testing.T) {
	b := newBench(t)
	b.up()
	g := b.mem.groups[0].(*memGroup)
	g.dp = warnDP{b.dp}
	if w := b.memStatus().DataPlaneWarnings; len(w) != 1 || !strings.Contains(w[0], "3/4 of its sequence numbers") {
		t.Fatalf("warnings %q", w)
	}
}

// flakyReader is a source of randomness that fails while fail is set.
type flakyReader struct {
	r    io.Reader
	fail bool
}

func (f *flakyReader) Read(b []byte) (int, error) {
	if f.fail {
		return 0, errors.New("simulated entropy failure")
	}
	return f.r.Read(b)
}

// TestRekeyFailureBacksOff: a rekey that fails is tried again after 1 s,
// then after doubling waits up to a minute (not every second forever),
// and once it works the group SA is pushed as at any rekey.
func TestRekeyFailureBacksOff(t *testing.T) {
	logs := &syncBuffer{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rnd := &flakyReader{r: rand.NewChaCha8([32]byte{3})}
	s := testServer(t, Options{Config: loadConfig(t, ctlConf), Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Now: func() time.Time { return now }, Rand: rnd})
	s.out = discard{}
	ctx := context.Background()
	if err := s.applyConfig(ctx, s.cfg); err != nil {
		t.Fatal(err)
	}
	g := s.groups[0].(*ctlGroup)
	spi := g.group.Current().SPI()
	rnd.fail = true
	now = g.group.NextRekey()
	var waits []time.Duration
	for range 9 {
		s.onTimers(ctx)
		waits = append(waits, g.rekeyAt.at.Sub(now))
		now = g.rekeyAt.at
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits after failed rekeys %v, want %v", waits, want)
	}
	if n := strings.Count(logs.String(), "rekey failed"); n != 9 {
		t.Fatalf("%d failures logged, want 9", n)
	}
	rnd.fail = false
	s.onTimers(ctx)
	if g.group.Current().SPI() == spi || g.rekeyWait != 0 || !g.rekeyAt.at.Equal(g.group.NextRekey()) {
		t.Fatalf("after entropy came back: SPI %08x (was %08x), wait %v", g.group.Current().SPI(), spi, g.rekeyWait)
	}
}

// TestPushEncodingFailureRetried: when the MPSA_PUT cannot be encoded
// (the push at the join, and the one the member's hello asks for), the
// push stays due and is tried again; the member gets the SA.
func TestPushEncodingFailureRetried(t *testing.T) {
	b := newBench(t)
	g := b.ctlGroup()
	failures := 2
	g.encodePut = func(now time.Time) (*mpsa.Notify, uint32, error) {
		if failures > 0 {
			failures--
			return nil, 0, errors.New("simulated encoding failure")
		}
		return g.putNotify(now)
	}
	b.up()
	spi := g.group.Current().SPI()
	if st := b.ctlStatus(); len(st.Members) != 1 || st.Members[0].AckedSPI != "" || failures != 0 {
		t.Fatalf("after the failures: %+v, %d failures left", st.Members, failures)
	}
	b.advance(time.Second)
	if st := b.ctlStatus(); st.Members[0].AckedSPI != spiString(spi) {
		t.Fatalf("the push was not tried again: %+v", st.Members[0])
	}
}

// TestMemberTeardownStopsDeadlines: a member group torn down, by a
// reload that removes it or at shutdown, leaves no deadline on the
// server's heap and no route to itself: its SA lifecycle, its request
// for the control child, its grace check and its drop log's flush.
func TestMemberTeardownStopsDeadlines(t *testing.T) {
	for _, how := range []string{"retire", "close"} {
		t.Run(how, func(t *testing.T) {
			b := newBench(t)
			b.up()
			// Another IKE SA without its control child: the grace check
			// and the request to charon are due; a forged datagram is
			// held back in the drop log.
			noChild := withoutControl(true, "")
			noChild.IKESAs[0].UniqueID = 9
			b.mem.onUpdate(b.ctx, vici.Update{Cause: vici.CauseEvent, Snapshot: vici.Snapshot{Connected: true}, Changed: noChild.IKESAs})
			g := b.mem.groups[0].(*memGroup)
			for range 2 {
				g.drops.drop(b.now, metrics.DropMalformed)
			}
			for _, d := range []*deadline{&g.timer, &g.retry, &g.check, &g.drops.flushAt} {
				if d.pos == 0 {
					t.Fatalf("a deadline of the group is not set before the teardown")
				}
			}
			if how == "retire" {
				g.retire(b.ctx, nil)
			} else {
				g.close()
			}
			// The server's own deadline to stop following charon's
			// log, now that no group lacks its control child, is all
			// that may remain.
			n := len(b.mem.sched.h)
			if b.mem.logOff.pos != 0 {
				n--
			}
			if n != 0 || len(b.mem.byPair) != 0 {
				t.Fatalf("after %s: %d deadlines of the group on the heap, %d routes", how, n, len(b.mem.byPair))
			}
		})
	}
}

// protectDP is a recorder that is an xfrm.Protector.
type protectDP struct{ *recorder }

func (p protectDP) Protect(_ context.Context, addrs []netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, fmt.Sprintf("protect %v", addrs))
	return nil
}

// TestMemberProtectsControlAddresses: a member's data plane is told the
// control addresses before its first peer table, so that no peer prefix
// containing one is installed, and not again while they stay the same.
func TestMemberProtectsControlAddresses(t *testing.T) {
	b := newBench(t)
	b.mem.opts.NewDataPlane = func(context.Context, *swanctl.Group, netip.Addr, *slog.Logger) (xfrm.DataPlane, error) {
		return protectDP{b.dp}, nil
	}
	b.up()
	calls := b.dp.take()
	if len(calls) < 2 || calls[0] != fmt.Sprintf("protect [%s %s]", memAddr, ctlAddr) || calls[1] != peersCall {
		t.Fatalf("data plane calls %q, want protect before the first peer table", calls)
	}
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)})
	for _, c := range b.dp.take() {
		if strings.HasPrefix(c, "protect") {
			t.Fatalf("protected again with the same addresses: %q", c)
		}
	}
}
