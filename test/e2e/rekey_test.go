package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpsa/mpsa/server"
)

// stream sends random data over TCP from a's LAN to b's until stop is
// closed, and reports how much was sent and whether b received exactly
// that.
type stream struct {
	name       string // "a -> b"
	sent, recv atomic.Int64
	done       chan error
	stop       chan struct{}
	stopOnce   sync.Once
}

// startStream starts the stream. When the test ends, however it ends, the
// connection is closed and both of its goroutines have returned.
func startStream(t *testing.T, a, b *node) *stream {
	t.Helper()
	conn, srv := connectLAN(t, a, b)
	s := &stream{name: a.name + " -> " + b.name, done: make(chan error, 2), stop: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	t.Cleanup(func() {
		s.halt()
		// Closing the ends makes a blocked Write or Read return at once.
		conn.Close()
		srv.Close()
		wg.Wait()
	})
	go func() {
		defer wg.Done()
		defer srv.Close()
		n, err := io.Copy(io.Discard, srv)
		s.recv.Store(n)
		s.done <- err
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		rand.Read(buf)
		for {
			select {
			case <-s.stop:
				conn.Close()
				s.done <- nil
				return
			default:
			}
			conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			n, err := conn.Write(buf)
			s.sent.Add(int64(n))
			if err != nil {
				conn.Close()
				s.done <- err
				return
			}
			time.Sleep(time.Millisecond) // a steady stream, not a flood
		}
	}()
	return s
}

func (s *stream) halt() { s.stopOnce.Do(func() { close(s.stop) }) }

func (s *stream) finish(t *testing.T) {
	t.Helper()
	s.halt()
	for range 2 {
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("TCP stream: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("TCP stream did not finish")
		}
	}
	if s.sent.Load() == 0 || s.recv.Load() != s.sent.Load() {
		t.Errorf("TCP stream: sent %d octets, received %d", s.sent.Load(), s.recv.Load())
	}
	t.Logf("TCP stream %s carried %d octets", s.name, s.recv.Load())
}

// pingResult is what a background ping reports.
type pingResult struct {
	sent, received int
	err            error
}

// pingBackground pings every 10 ms for count pings and reports the result;
// the caller fails the test on its error (a goroutine cannot). If the test
// ends first, ping is killed and waited for.
func pingBackground(t *testing.T, a, b *node, count int) <-chan pingResult {
	res := make(chan pingResult, 1)
	background(t, func(ctx context.Context) {
		var r pingResult
		r.sent, r.received, r.err = tryPing(ctx, a, b, count, "0.01")
		res <- r
	})
	return res
}

// background runs fn in a goroutine bound to the test: when the test
// ends, fn's context is cancelled and the cleanup waits for fn to return.
func background(t *testing.T, fn func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		fn(ctx)
	}()
}

// pingUntil pings from a's LAN to b's every 10 ms, in runs of 100 pings,
// until the returned function is called; that waits for the last run to
// end and returns the totals. If the test ends first, ping is killed and
// waited for.
func pingUntil(t *testing.T, a, b *node) func() pingResult {
	stop := make(chan struct{})
	res := make(chan pingResult, 1)
	background(t, func(ctx context.Context) {
		var total pingResult
		for {
			select {
			case <-stop:
				res <- total
				return
			default:
			}
			s, r, err := tryPing(ctx, a, b, 100, "0.01")
			total.sent += s
			total.received += r
			if err != nil {
				total.err = err
				res <- total
				return
			}
		}
	})
	return sync.OnceValue(func() pingResult {
		close(stop)
		return <-res
	})
}

// removalMargin is how long after rollover time 2 the old SPI may still be
// seen. mpsad removes it on a timer set to the new SA's arrival plus
// rollover time 2; what the test sees later than that is the timer firing
// late, the data plane's Remove (it waits for the batch in flight) and the
// poll (every 100 ms, a status request each) — each a few milliseconds,
// but on a loaded 2-core CI machine running four mpsad with userspace ESP
// at full speed, a TCP stream and ping, a thread may wait a second or
// more for a core. 3 s tolerates that and still fails a removal that
// comes a whole rollover period late, or never.
const removalMargin = 3 * time.Second

// rollover is what the test saw of one member across a rekey.
type rollover struct {
	// received is when the new SA arrived (the member's status);
	// removeAt when the member's lifecycle scheduled the old SA's removal.
	received, removeAt time.Time
	// outbound is when the test first saw the member send with the new
	// SPI.
	outbound time.Time
	// gone is when the test first saw the old SPI gone from both the
	// lifecycle's inbound SPIs and the data plane's SA table (its
	// counters), measured when that status answer arrived.
	gone time.Time
	// errors are the most in and out errors seen on any SPI.
	errors map[string]uint64
}

// watchRollover polls the controller and every member from just before a
// rekey until the old SPI is gone from every member, and returns the new
// SPI and what it saw of each member.
func (e *env) watchRollover(old string) (string, map[*node]*rollover) {
	t := e.t
	t.Helper()
	var now string
	seen := map[*node]*rollover{}
	for _, m := range e.mems {
		seen[m] = &rollover{errors: map[string]uint64{}}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if now == "" {
			if cs, err := e.ctl.tryStatus(); err == nil && len(cs.Groups) == 1 && cs.Groups[0].SPI != old {
				now = cs.Groups[0].SPI
			}
		}
		done := now != ""
		var state []string
		for _, m := range e.mems {
			r := seen[m]
			if !r.gone.IsZero() {
				continue
			}
			done = false
			st, err := m.tryStatus()
			at := time.Now()
			if err != nil || len(st.Groups) != 1 {
				state = append(state, fmt.Sprintf("%s: %v", m.name, err))
				continue
			}
			g := st.Groups[0]
			oldIn := slices.Contains(g.InboundSPIs, old)
			for _, sa := range g.SAs {
				if sa.SPI == old && sa.RemoveAt != nil {
					r.removeAt = *sa.RemoveAt
				}
				if now != "" && sa.SPI == now {
					r.received = sa.Received
				}
			}
			for _, c := range g.Counters {
				if c.SPI == old {
					oldIn = true
				}
				r.errors[c.SPI+" in"] = max(r.errors[c.SPI+" in"], c.InErrors)
				r.errors[c.SPI+" out"] = max(r.errors[c.SPI+" out"], c.OutErrors)
			}
			if now != "" && g.OutboundSPI == now && r.outbound.IsZero() {
				r.outbound = at
			}
			if !r.received.IsZero() && !r.outbound.IsZero() && !oldIn {
				r.gone = at
			}
			state = append(state, fmt.Sprintf("%s: outbound %s, inbound %v, counters for %d SPIs", m.name, g.OutboundSPI, g.InboundSPIs, len(g.Counters)))
		}
		if done {
			return now, seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("old SPI %s not gone from every member within a minute (new SPI %q):\n%s", old, now, strings.Join(state, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dataPlaneDrops returns each member's data-plane drop counters.
func (e *env) dataPlaneDrops() map[*node]map[string]uint64 {
	e.t.Helper()
	out := map[*node]map[string]uint64{}
	for _, m := range e.mems {
		d := m.status(e.t).Groups[0].DataPlaneDrops
		if d == nil {
			e.t.Fatalf("%s reports no data-plane drop counters", m.name)
		}
		out[m] = d
	}
	return out
}

// lossWindow holds the loss counters of every member from the start of a
// window in which traffic must lose nothing.
type lossWindow struct {
	e                *env
	sender, receiver *node // of the TCP stream
	drops            map[*node]map[string]uint64
	net              map[*node]map[string]uint64
	tunDropped       map[*node]uint64
}

// startLossWindow reads the counters that any lost packet raises: the
// members' data-plane drops, and the kernel's TCP and TUN counters of
// every member. sender and receiver are the ends of the TCP stream.
func (e *env) startLossWindow(sender, receiver *node) *lossWindow {
	t := e.t
	t.Helper()
	w := &lossWindow{e: e, sender: sender, receiver: receiver, drops: e.dataPlaneDrops(),
		net: map[*node]map[string]uint64{}, tunDropped: map[*node]uint64{}}
	for _, m := range e.mems {
		w.net[m] = m.netStats(t)
		w.tunDropped[m] = m.linkStat(t, "mpsa0", "tx_dropped")
	}
	return w
}

// check fails the test if a packet was lost since startLossWindow; call it
// once the traffic has stopped. what names the window in messages.
func (w *lossWindow) check(what string) {
	t := w.e.t
	t.Helper()
	// Nothing dropped in the data plane, before an SA was found or on
	// one (sa_in_errors and sa_out_errors keep the count of SAs removed
	// meanwhile), and nothing dropped by the kernel at the TUN because
	// mpsad did not read it in time.
	drops := w.e.dataPlaneDrops()
	for _, m := range w.e.mems {
		if !maps.Equal(w.drops[m], drops[m]) {
			t.Errorf("%s dropped packets in the data plane during %s: before %v, after %v", m.name, what, w.drops[m], drops[m])
		}
		if tun := m.linkStat(t, "mpsa0", "tx_dropped") - w.tunDropped[m]; tun != 0 {
			t.Errorf("%s: mpsa0 dropped %d packets (TUN queue full) during %s", m.name, tun, what)
		}
	}
	// TCP lost nothing either. A segment lost anywhere on the path (in
	// a queue the data plane does not count too) makes the sender
	// retransmit it. The sender also retransmits without a loss: a tail
	// loss probe (TLP) resends the last segment when its ACK is late,
	// which a loaded machine makes common. Such a segment reaches the
	// receiver twice, and the receiver tells the sender with a D-SACK,
	// counted as TCPDSACKOldSent (or TCPDSACKOfoSent). So every
	// retransmission of the sender must be a duplicate at the receiver:
	// RetransSegs - D-SACKs sent = segments retransmitted because they
	// were lost = 0.
	delta := map[*node]map[string]uint64{}
	for _, m := range w.e.mems {
		n1 := m.netStats(t)
		d := map[string]uint64{}
		for k, v := range n1 {
			d[k] = v - w.net[m][k]
		}
		delta[m] = d
		t.Logf("%s during %s: Tcp RetransSegs +%d; TcpExt TCPLossProbes +%d, TCPLossProbeRecovery +%d, TCPTimeouts +%d, TCPFastRetrans +%d, TCPDSACKRecv +%d, TCPDSACKOldSent +%d, TCPDSACKOfoSent +%d",
			m.name, what, d["Tcp:RetransSegs"], d["TcpExt:TCPLossProbes"], d["TcpExt:TCPLossProbeRecovery"], d["TcpExt:TCPTimeouts"], d["TcpExt:TCPFastRetrans"],
			d["TcpExt:TCPDSACKRecv"], d["TcpExt:TCPDSACKOldSent"], d["TcpExt:TCPDSACKOfoSent"])
	}
	re := delta[w.sender]["Tcp:RetransSegs"]
	dup := delta[w.receiver]["TcpExt:TCPDSACKOldSent"] + delta[w.receiver]["TcpExt:TCPDSACKOfoSent"]
	if re > dup {
		t.Errorf("the TCP stream lost segments during %s: %s retransmitted %d, of which %s had received only %d already", what, w.sender.name, re, w.receiver.name, dup)
	}
}

// checkRekey runs traffic across a rekey that trigger causes, and checks
// that no packet is lost, every member moves to the new SPI, and the old
// SPI is gone from every member within rollover time 2 (and
// removalMargin) of the new SA's arrival there.
func checkRekey(t *testing.T, e *env, trigger func(old string)) {
	old := e.waitSPI(e.mems...)
	m1, m2, m3 := e.mems[0], e.mems[1], e.mems[2]
	r2 := duration(t, e.timers.Rollover2)
	// The rekey comes when trigger forces it, a second after the traffic
	// starts, or when the controller's rekey time comes, if that is
	// earlier. Ping every 10 ms from before the rekey until 2 s after
	// the last moment the old SPI may be removed, or until a second
	// before the next rekey, if that is earlier, so that the window has
	// one rekey.
	rekeyAt := time.Now().Add(time.Second)
	if next := e.ctl.status(t).Groups[0].NextRekey; next != nil && next.Before(rekeyAt) {
		rekeyAt = *next
	}
	end := rekeyAt.Add(min(r2+removalMargin+2*time.Second, duration(t, e.timers.RekeyTime)-time.Second))
	span := time.Until(end)
	pings := pingBackground(t, m1, m2, int(span/(10*time.Millisecond)))
	tcp := startStream(t, m2, m3)
	time.Sleep(time.Second)

	// The rekey window: from here until the traffic has stopped.
	w := e.startLossWindow(m2, m3)
	trigger(old)
	now, seen := e.watchRollover(old)

	var r pingResult
	select {
	case r = <-pings:
	case <-time.After(2 * time.Minute):
		t.Fatal("the background ping did not finish within 2 minutes")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	tcp.finish(t)

	if r.sent == 0 || r.received != r.sent {
		t.Errorf("ping every 10 ms across the rekey: %d of %d answered", r.received, r.sent)
	}
	t.Logf("rekey %s -> %s: %d of %d pings answered", old, now, r.received, r.sent)

	w.check("the rekey")
	for _, m := range e.mems {
		for k, v := range seen[m].errors {
			if v != 0 {
				t.Errorf("%s: SPI %s has %d errors", m.name, k, v)
			}
		}
	}

	// The old SPI went within rollover time 2 of the new SA's arrival,
	// from the lifecycle and from the data plane, on every member.
	for _, m := range e.mems {
		rs := seen[m]
		after := rs.gone.Sub(rs.received)
		t.Logf("%s: new SA at %s, old SPI seen gone %v later (rollover2 %v, margin %v)", m.name, rs.received.Format("15:04:05.000"), after.Round(time.Millisecond), r2, removalMargin)
		if after > r2+removalMargin {
			t.Errorf("%s: old SPI %s still there %v after the new SA arrived; rollover2 is %v", m.name, old, after.Round(time.Millisecond), r2)
		}
		if rs.removeAt.IsZero() {
			t.Errorf("%s: never saw the old SA scheduled for removal beside the new one", m.name)
		} else if !rs.removeAt.Equal(rs.received.Add(r2)) {
			t.Errorf("%s: old SA scheduled for removal at %s, want the new SA's arrival %s + rollover2 %v", m.name, rs.removeAt, rs.received, r2)
		}
		if rs.outbound.Before(rs.received) {
			t.Errorf("%s sent with the new SPI (seen at %s) before it arrived (%s)", m.name, rs.outbound, rs.received)
		}
		g := m.status(t).Groups[0]
		if g.OutboundSPI == old || slices.Contains(g.InboundSPIs, old) {
			t.Errorf("%s after the rekey: outbound %s, inbound %v; the old SPI %s is back", m.name, g.OutboundSPI, g.InboundSPIs, old)
		}
	}
}

// TestRekeyForcedUnderTraffic: mpsactl rekey with pings every 10 ms and a
// TCP stream running loses nothing.
func TestRekeyForcedUnderTraffic(t *testing.T) {
	e := newEnv(t, envOptions{members: 3})
	checkRekey(t, e, func(string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		spi, err := server.NewClient(e.ctl.sock()).Rekey(ctx, "lab")
		if err != nil || spi == "" {
			t.Fatalf("rekey: %q %v", spi, err)
		}
	})
	cs := e.ctl.status(t).Groups[0]
	if cs.Rekeys != 1 || cs.PreviousSPI == "" {
		t.Errorf("controller after a forced rekey: %d rekeys, previous %q", cs.Rekeys, cs.PreviousSPI)
	}
	// The same facts through Prometheus.
	body := e.ctl.scrape(t)
	for _, want := range [][2]string{
		{`mpsa_rekeys_total{group="lab",reason="manual"}`, "1"},
		{`mpsa_group_members{group="lab"}`, "3"},
		{`mpsa_group_sa_age_seconds{group="lab",spi="` + cs.SPI + `"}`, ""},
	} {
		if want[1] == "" {
			if !strings.Contains(body, want[0]) {
				t.Errorf("controller metrics lack %s", want[0])
			}
		} else if !metricLine(body, want[0], want[1]) {
			t.Errorf("controller metrics lack %s %s", want[0], want[1])
		}
	}
	mb := e.mems[0].scrape(t)
	if !strings.Contains(mb, `mpsa_sa_packets_total{direction="out",group="lab",spi="`+cs.SPI+`"}`) {
		t.Errorf("member metrics lack per-SPI packet counters for %s", cs.SPI)
	}
	// The data plane's drops are exported (that they did not rise across
	// the rekey is checked on the status above).
	for _, reason := range []string{"unknown_spi", "no_outbound_sa"} {
		if series := `mpsa_dataplane_dropped_total{group="lab",reason="` + reason + `"}`; !strings.Contains(mb, series) {
			t.Errorf("member metrics lack %s", series)
		}
	}
}

// TestRekeyLifetimeUnderTraffic: the controller's own rekey before the
// lifetime ends loses nothing either, and is counted as one.
func TestRekeyLifetimeUnderTraffic(t *testing.T) {
	tm := defaultTimers()
	tm.Lifetime, tm.RekeyTime = "40s", "8s"
	e := newEnv(t, envOptions{members: 3, timers: tm})
	const series = `mpsa_rekeys_total{group="lab",reason="lifetime"}`
	e.waitSPI(e.mems...)
	before := metricValue(t, e.ctl.scrape(t), series)
	checkRekey(t, e, func(string) {}) // the rekey comes by itself after 8 s
	if cs := e.ctl.status(t).Groups[0]; cs.Rekeys < 1 {
		t.Errorf("controller counted %d rekeys", cs.Rekeys)
	}
	if after := metricValue(t, e.ctl.scrape(t), series); after <= before {
		t.Errorf("%s went from %v to %v across the lifetime-driven rekey", series, before, after)
	}
}
