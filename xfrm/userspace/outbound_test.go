package userspace

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/esp"
)

// fakeTUN is a tun.Device whose reads yield numbered IPv4/UDP packets
// (the number, from 1, in the first 8 bytes of the payload) of mixed
// sizes, in batches of mixed sizes, so that the sealers finish batches out
// of order. Writes are discarded. The tests below drive the outbound
// pipeline with it without a real TUN.
type fakeTUN struct {
	batch    int
	src, dst netip.Addr
	// limit, if not 0, is how many packets the reads yield before they
	// wait for Close; window, if not 0, is how far the reads may run
	// ahead of acked, the packets the test has received.
	limit, window uint64
	acked         atomic.Uint64
	// stopped makes the reads yield nothing more.
	stopped atomic.Bool
	// yielded is the number of packets read so far.
	yielded atomic.Uint64

	rnd       *mrand.Rand // used by Read only
	closed    chan struct{}
	closeOnce sync.Once
	events    chan tun.Event
}

func newFakeTUN(limit, window uint64) *fakeTUN {
	return &fakeTUN{
		batch: 128, limit: limit, window: window,
		src: netip.MustParseAddr("10.8.0.1"), dst: netip.MustParseAddr("10.9.0.1"),
		rnd:    mrand.New(mrand.NewPCG(1, 2)),
		closed: make(chan struct{}), events: make(chan tun.Event),
	}
}

func (f *fakeTUN) File() *os.File                   { return nil }
func (f *fakeTUN) Write([][]byte, int) (int, error) { return 0, nil }
func (f *fakeTUN) MTU() (int, error)                { return 1420, nil }
func (f *fakeTUN) Name() (string, error)            { return "fake0", nil }
func (f *fakeTUN) Events() <-chan tun.Event         { return f.events }
func (f *fakeTUN) BatchSize() int                   { return f.batch }

func (f *fakeTUN) Close() error {
	f.closeOnce.Do(func() {
		close(f.closed)
		close(f.events)
	})
	return nil
}

// room waits until a read may yield packets and returns how many, or
// reports false once the device is closed.
func (f *fakeTUN) room(max int) (int, bool) {
	for {
		select {
		case <-f.closed:
			return 0, false
		default:
		}
		next := f.yielded.Load()
		n := uint64(max)
		if f.limit != 0 {
			n = min(n, f.limit-next)
		}
		if f.window != 0 {
			if end := f.acked.Load() + f.window; next < end {
				n = min(n, end-next)
			} else {
				n = 0
			}
		}
		if n > 0 && !f.stopped.Load() {
			return int(n), true
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	room, ok := f.room(len(bufs))
	if !ok {
		return 0, os.ErrClosed
	}
	n := min(room, 1+f.rnd.IntN(len(bufs)))
	for i := range n {
		// A third of the packets small, the rest up to an MTU: the
		// batches take very different times to seal.
		size := 8
		if f.rnd.IntN(3) != 0 {
			size = 100 + f.rnd.IntN(1300)
		}
		payload := make([]byte, size)
		binary.BigEndian.PutUint64(payload, f.yielded.Add(1))
		sizes[i] = copy(bufs[i][off:], ipv4UDP(f.src, f.dst, 9, payload))
	}
	return n, nil
}

// pipelineBackend is a Backend around a fakeTUN, without namespaces: the
// fake's packets go, sealed with a fresh SA, from an ESP-in-UDP socket on
// 127.0.0.1 to rx, a plain UDP socket there. Its outbound pipeline is not
// started: b.startOutbound does that.
type pipelineBackend struct {
	b   *Backend
	dev *fakeTUN
	rx  *net.UDPConn
	sa  xfrm.SA
	// open opens what rx receives (the test's own Crypter).
	open *esp.Crypter
}

func newPipelineBackend(t *testing.T, sealers int, dev *fakeTUN) *pipelineBackend {
	t.Helper()
	return newPipelineBackendConfig(t, Config{Sealers: sealers}, dev, quietLogger(t), nil)
}

// newPipelineBackendConfig is newPipelineBackend with a configuration
// (Sealers and SeqLeaseDir are used), a logger and, if not nil, the SA to
// install instead of a fresh one.
func newPipelineBackendConfig(t *testing.T, cfg Config, dev *fakeTUN, log *slog.Logger, sa *xfrm.SA) *pipelineBackend {
	t.Helper()
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	rc, err := rx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Room for every packet the window lets run ahead: none is lost.
	var sockErr error
	if err := rc.Control(func(fd uintptr) { sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) }); err != nil || sockErr != nil {
		testenv.Unavailable(t, "a large receive buffer needs CAP_NET_ADMIN: %v %v", err, sockErr)
	}
	s, err := openESPSocket(netip.MustParseAddr("127.0.0.1"), true, 0, 128, log)
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{cfg: Config{Sealers: cfg.Sealers, BatchSize: 128, SeqLeaseDir: cfg.SeqLeaseDir}, log: log, dev: dev, name: "fake0", closed: make(chan struct{})}
	if err := b.init(); err != nil {
		t.Fatal(err)
	}
	b.socks = []*espSocket{s}
	b.tx4 = &s.tx
	tbl, err := newPeerTable(nil, []xfrm.Peer{{Prefix: netip.MustParsePrefix("10.9.0.0/16"), Underlay: netip.MustParseAddr("127.0.0.1")}},
		uint16(rx.LocalAddr().(*net.UDPAddr).Port), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.peers.Store(tbl)
	p := &pipelineBackend{b: b, dev: dev, rx: rx}
	if sa != nil {
		p.sa = *sa
	} else {
		p.sa = xfrm.SA{SPI: 0x5000_0001, Suite: testSuite, EncrKey: make([]byte, testSuite.EncrKeyBytes()), IntegKey: make([]byte, testSuite.IntegKeyBytes())}
		rand.Read(p.sa.EncrKey)
		rand.Read(p.sa.IntegKey)
	}
	mine, err := esp.NewSA(p.sa.SPI, p.sa.Suite, p.sa.EncrKey, p.sa.IntegKey)
	if err != nil {
		t.Fatal(err)
	}
	p.open = mine.NewCrypter(nil)
	if err := b.InstallInbound(context.Background(), p.sa); err != nil {
		t.Fatal(err)
	}
	if err := b.SetOutbound(context.Background(), p.sa.SPI); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return p
}

// entry returns the backend's entry of the test's SA.
func (p *pipelineBackend) entry(t *testing.T) *saEntry {
	t.Helper()
	e := p.b.sas.Load().find(p.sa.SPI)
	if e == nil {
		t.Fatal("SA not installed")
	}
	return e
}

// backendGoroutines returns the stacks of the goroutines that run the
// backend's code, of any backend.
func backendGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "xfrm/userspace.(*Backend).") || strings.Contains(g, "xfrm/userspace.New.") {
			out = append(out, g)
		}
	}
	return out
}

// closeWithin closes b and fails the test unless Close returns within a
// generous bound and every goroutine of every backend then ends: the
// caller has closed any other backend of the test.
func closeWithin(t *testing.T, what string, bes ...*Backend) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, b := range bes {
			if err := b.Close(); err != nil {
				t.Errorf("%s: close: %v", what, err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: Close did not return within 20 s; goroutines:\n%s", what, strings.Join(backendGoroutines(), "\n\n"))
	}
	if !eventually(func() bool { return len(backendGoroutines()) == 0 }) {
		t.Fatalf("%s: goroutines of the backend still running after Close:\n%s", what, strings.Join(backendGoroutines(), "\n\n"))
	}
}

// TestOutboundPipelineOrder: with four sealers, batches of mixed sizes
// and packets of mixed sizes, every packet leaves once, sealed, in the
// order it was read: the n-th packet read carries sequence number n and
// arrives n-th. The counters count each packet once.
func TestOutboundPipelineOrder(t *testing.T) {
	testenv.NeedRoot(t)
	const total = 30000
	dev := newFakeTUN(total, 1024)
	p := newPipelineBackend(t, 4, dev)
	p.b.startOutbound()
	p.rx.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 2048)
	var bytes uint64
	for want := uint64(1); want <= total; want++ {
		n, err := p.rx.Read(buf)
		if err != nil {
			t.Fatalf("receiving packet %d: %v", want, err)
		}
		inner, seq, err := p.open.Open(buf[:n])
		if err != nil {
			t.Fatalf("packet %d: open: %v", want, err)
		}
		if got := binary.BigEndian.Uint64(inner[28:]); got != want || uint64(seq) != want {
			t.Fatalf("received packet %d with sequence number %d, want packet and sequence number %d", got, seq, want)
		}
		bytes += uint64(len(inner))
		dev.acked.Store(want)
	}
	e := p.entry(t)
	waitFor(t, "the sender to count the last batch", func() bool { return e.outPackets.Load() == total })
	if b, errs := e.outBytes.Load(), e.outErrors.Load(); b != bytes || errs != 0 {
		t.Errorf("OutBytes %d (want %d), OutErrors %d (want 0)", b, bytes, errs)
	}
	if d := p.b.Drops(); d != (Drops{}) {
		t.Errorf("drops %+v", d)
	}
	closeWithin(t, "pipeline", p.b)
}

// TestOutboundRemoveInFlight: removing the outbound SA while batches are
// being sealed makes Seal fail on the zeroed SA for some of them. Nothing
// crashes and every packet read is counted once: sent or failed on the
// SA, or dropped for want of an outbound SA.
func TestOutboundRemoveInFlight(t *testing.T) {
	testenv.NeedRoot(t)
	for round := range 5 {
		dev := newFakeTUN(0, 0)
		p := newPipelineBackend(t, 4, dev)
		p.b.startOutbound()
		e := p.entry(t)
		go func() { // drain the receiver so that sends never wait
			buf := make([]byte, 2048)
			for {
				if _, err := p.rx.Read(buf); err != nil {
					return
				}
			}
		}()
		waitFor(t, "traffic", func() bool { return e.outPackets.Load() > 2000 })
		if err := p.b.Remove(context.Background(), p.sa.SPI); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "packets without an outbound SA", func() bool { return p.b.Drops().NoOutbound > 0 })
		dev.stopped.Store(true)
		// Once the reads yield no more, the batches in flight are sent
		// or fail; every packet read is then counted once. Checked
		// twice, apart, in case the first check fell between a read's
		// start and its first packet.
		counted := func() bool {
			return e.outPackets.Load()+e.outErrors.Load()+p.b.Drops().NoOutbound == dev.yielded.Load()
		}
		ok := eventually(counted)
		time.Sleep(50 * time.Millisecond)
		if !ok || !counted() {
			t.Fatalf("round %d: %d packets read; sent %d, failed %d, dropped without an SA %d", round, dev.yielded.Load(), e.outPackets.Load(), e.outErrors.Load(), p.b.Drops().NoOutbound)
		}
		t.Logf("round %d: %d packets read; sent %d, failed %d (sealed or sent after the removal), dropped %d", round, dev.yielded.Load(), e.outPackets.Load(), e.outErrors.Load(), p.b.Drops().NoOutbound)
		// The removed SA's failures stay counted in DropCounts.
		if dc := p.b.DropCounts(); dc[DropSAOutErrors] != e.outErrors.Load() || dc[DropNoOutbound] != p.b.Drops().NoOutbound {
			t.Fatalf("round %d: DropCounts %v; want %s %d and %s %d", round, dc, DropSAOutErrors, e.outErrors.Load(), DropNoOutbound, p.b.Drops().NoOutbound)
		}
		closeWithin(t, fmt.Sprintf("round %d", round), p.b)
	}
}

// TestOutboundCloseUnderTraffic: Close while the pipeline is full returns
// and leaves no goroutine behind, however far the batches in flight got.
func TestOutboundCloseUnderTraffic(t *testing.T) {
	testenv.NeedRoot(t)
	for round := range 10 {
		dev := newFakeTUN(0, 0)
		p := newPipelineBackend(t, 4, dev)
		p.b.startOutbound()
		e := p.entry(t)
		waitFor(t, "traffic", func() bool { return e.outPackets.Load() > 1000 })
		// Nothing receives (the kernel drops what overflows rx); the
		// rounds close at different points of the pipeline's work.
		time.Sleep(time.Duration(round) * time.Millisecond)
		closeWithin(t, fmt.Sprintf("round %d", round), p.b)
	}
}

// TestOutboundNoAllocs: routing, sealing and sending a batch allocates
// nothing.
func TestOutboundNoAllocs(t *testing.T) {
	testenv.NeedRoot(t)
	dev := newFakeTUN(0, 0)
	p := newPipelineBackend(t, 1, dev)
	b := p.b
	out := p.entry(t)
	go func() { // drain the receiver
		buf := make([]byte, 2048)
		for {
			if _, err := p.rx.Read(buf); err != nil {
				return
			}
		}
	}()
	e := newOutElem(64)
	var batch [][]byte
	for i := range 64 {
		batch = append(batch, ipv4UDP(dev.src, dev.dst, 9, make([]byte, 100+20*i)))
	}
	allocs := testing.AllocsPerRun(50, func() {
		for i, pkt := range batch {
			e.sizes[i] = copy(e.bufs[i][outOff:], pkt)
		}
		if !b.routeBatch(e, len(batch)) {
			t.Fatal("nothing routed")
		}
		e.seal(out.seal[0])
		b.sendElem(e)
	})
	if allocs != 0 {
		t.Fatalf("a batch allocates %.1f times", allocs)
	}
	if c := out.outPackets.Load(); c < 50*64 || out.outErrors.Load() != 0 {
		t.Fatalf("sent %d, failed %d", c, out.outErrors.Load())
	}
}

// TestOutboundOrderOnWire: with four sealers, TCP transfers (TSO
// super-packets, large batches) and numbered UDP datagrams (small batches)
// at once, in both inner families, the ESP packets of each outer family
// leave every member with strictly increasing sequence numbers. Both
// encapsulations.
func TestOutboundOrderOnWire(t *testing.T) {
	for _, enc := range encapsulations {
		t.Run(enc.name, func(t *testing.T) {
			g := newGroupConfig(t, 2, Config{ESPInUDPPort: enc.port, Sealers: 4})
			g.setPeers(4, 6)
			sa := g.newSA(0x6000_0001, testSuite)
			g.install(sa)
			g.setOutbound(sa.SPI)
			m1, m2 := g.members[0], g.members[1]
			for _, m := range g.members {
				if m.be.cfg.Sealers != 4 {
					t.Fatalf("member %d: %d sealers, want 4", m.i, m.be.cfg.Sealers)
				}
				m.cap = startCapture(t, m, enc.port, g.key)
			}
			flows := []*udpFlow{startFlow(t, m1, m2, 4, 6100), startFlow(t, m2, m1, 6, 6101)}
			payload := markedPayload(4 << 20)
			for _, dir := range [][2]*member{{m1, m2}, {m2, m1}} {
				for _, fam := range []int{4, 6} {
					tcpTransfer(t, dir[0], dir[1], fam, payload)
				}
			}
			progress(t, flows, "transfers done")
			for _, m := range g.members {
				m.cap.syncThrough(t, m, g.members[m.i%2])
				checked, reordered, ex := m.cap.order()
				_, bad, _, _ := m.cap.snapshot()
				t.Logf("member %d: %d sequence numbers checked", m.i, checked)
				if reordered != 0 {
					t.Errorf("member %d: %d of %d ESP packets left out of order: %v", m.i, reordered, checked, ex)
				}
				// Two transfers of 4 MiB (about 6000 packets) leave
				// each member; the capture may miss some.
				if checked < 3000 {
					t.Errorf("member %d: only %d sequence numbers checked", m.i, checked)
				}
				if bad != 0 {
					t.Errorf("member %d: %d ESP packets do not open", m.i, bad)
				}
				if c := g.counters(m, sa.SPI); c.OutErrors != 0 || c.InErrors != 0 {
					t.Errorf("member %d: counters %+v", m.i, c)
				}
				if d := m.be.Drops(); d != (Drops{}) {
					t.Errorf("member %d: drops %+v", m.i, d)
				}
			}
		})
	}
}

// TestCloseUnderTraffic: closing the backends of a group while TCP and
// UDP traffic runs through them at full speed returns, and no goroutine
// of either backend is left.
func TestCloseUnderTraffic(t *testing.T) {
	for _, enc := range encapsulations {
		t.Run(enc.name, func(t *testing.T) {
			g := newGroupConfig(t, 2, Config{ESPInUDPPort: enc.port, Sealers: 4})
			g.setPeers(4, 6)
			sa := g.newSA(0x7000_0001, testSuite)
			g.install(sa)
			g.setOutbound(sa.SPI)
			m1, m2 := g.members[0], g.members[1]
			stop := make(chan struct{})
			var wg sync.WaitGroup
			defer wg.Wait()
			defer close(stop)
			for _, fam := range []int{4, 6} {
				for _, dir := range [][2]*member{{m1, m2}, {m2, m1}} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						blast(dir[0], dir[1], fam, stop)
					}()
				}
			}
			waitFor(t, "traffic both ways", func() bool {
				return g.counters(m1, sa.SPI).OutPackets > 5000 && g.counters(m2, sa.SPI).OutPackets > 5000
			})
			closeWithin(t, "group", m1.be, m2.be)
		})
	}
}

// blast sends full-size UDP datagrams from one member's LAN address to
// another's as fast as it can, until stop; errors (the tunnel going away)
// only end it.
func blast(from, to *member, fam int, stop <-chan struct{}) {
	var conn *net.UDPConn
	if err := from.ns.Do(func() (err error) {
		conn, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lanHost(from, fam), 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(lanHost(to, fam), 9)))
		return err
	}); err != nil {
		return
	}
	defer conn.Close()
	msg := make([]byte, 1300)
	for {
		select {
		case <-stop:
			return
		default:
		}
		if _, err := conn.Write(msg); err != nil {
			// ENOBUFS or no route once the TUN is gone: keep trying
			// until told to stop, but do not spin.
			time.Sleep(time.Millisecond)
		}
	}
}

// TestRemoveWaitsForKeyUsers: Remove zeroes an SA's keys only once no
// sealer or inbound goroutine is using them (esp.SA.Zero leaves that to
// the data plane: a Seal under it could send a packet encrypted with a
// half-wiped key), and once it has begun nothing starts using them.
func TestRemoveWaitsForKeyUsers(t *testing.T) {
	b := &Backend{cfg: Config{Sealers: 1}, log: quietLogger(t), closed: make(chan struct{})}
	k := xfrm.SA{SPI: 0x8000_0001, Suite: testSuite, EncrKey: make([]byte, testSuite.EncrKeyBytes()), IntegKey: make([]byte, testSuite.IntegKeyBytes())}
	rand.Read(k.EncrKey)
	rand.Read(k.IntegKey)
	mine, err := esp.NewSA(k.SPI, k.Suite, k.EncrKey, k.IntegKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.InstallInbound(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	e := b.sas.Load().find(k.SPI)
	if !e.acquire() {
		t.Fatal("acquire failed on an installed SA")
	}
	removed := make(chan error, 1)
	go func() { removed <- b.Remove(context.Background(), k.SPI) }()
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) while a sealer held the keys", err)
	case <-time.After(100 * time.Millisecond):
	}
	inner := ipv4UDP(netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("10.9.0.1"), 9, []byte("sealed while Remove waits"))
	pkt, err := e.seal[0].AppendSeal(nil, inner, 1)
	if err != nil {
		t.Fatalf("Seal while the keys are held: %v", err)
	}
	if got, _, err := mine.NewCrypter(nil).Open(pkt); err != nil || string(got) != string(inner) {
		t.Fatalf("packet sealed while Remove waited does not open intact: %v", err)
	}
	e.release()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Remove did not return after the keys were released")
	}
	if e.acquire() {
		t.Fatal("acquire succeeded on a removed SA")
	}
	if _, err := e.seal[0].AppendSeal(nil, inner, 2); !errors.Is(err, esp.ErrZeroed) {
		t.Fatalf("Seal on a removed SA: %v, want esp.ErrZeroed", err)
	}
}
