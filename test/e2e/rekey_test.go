package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpsa/mpsa/server"
)

// stream sends random data over TCP from a's LAN to b's until stop is
// closed, and reports how much was sent and whether b received exactly
// that.
type stream struct {
	sent, recv atomic.Int64
	done       chan error
	stop       chan struct{}
}

func startStream(t *testing.T, a, b *node) *stream {
	t.Helper()
	conn, srv := connectLAN(t, a, b)
	s := &stream{done: make(chan error, 2), stop: make(chan struct{})}
	go func() {
		defer srv.Close()
		n, err := io.Copy(io.Discard, srv)
		s.recv.Store(n)
		s.done <- err
	}()
	go func() {
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

func (s *stream) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
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
	t.Logf("TCP stream carried %d octets across the rekey", s.recv.Load())
}

// pingResult is what a background ping reports.
type pingResult struct {
	sent, received int
	err            error
}

// pingBackground pings every 10 ms for count pings and reports the result;
// the caller fails the test on its error (a goroutine cannot).
func pingBackground(a, b *node, count int) <-chan pingResult {
	res := make(chan pingResult, 1)
	go func() {
		var r pingResult
		r.sent, r.received, r.err = tryPing(a, b, count, "0.01")
		res <- r
	}()
	return res
}

// checkRekey runs traffic across a rekey that trigger causes, and checks
// that no packet is lost, every member moves to the new SPI, and the old
// SPI is gone from every member after rollover time 2.
func checkRekey(t *testing.T, e *env, trigger func(old string)) {
	old := e.waitSPI(e.mems...)
	m1, m2, m3 := e.mems[0], e.mems[1], e.mems[2]
	// 2000 pings every 10 ms: 20 s of traffic, across the rekey and both
	// rollover times.
	pings := pingBackground(m1, m2, 2000)
	tcp := startStream(t, m2, m3)
	time.Sleep(time.Second)
	trigger(old)
	now := e.waitSPINot(old, e.mems...)
	// After rollover time 2 (4 s), the old SA is gone everywhere.
	waitFor(t, "the old SPI to be removed", func() (bool, string) {
		for _, m := range e.mems {
			g := m.status(t).Groups[0]
			if len(g.InboundSPIs) != 1 || g.InboundSPIs[0] != now {
				return false, m.name + ": " + g.OutboundSPI + " in " + fmt.Sprint(g.InboundSPIs)
			}
		}
		return true, ""
	})
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
	for _, m := range e.mems {
		for _, c := range m.status(t).Groups[0].Counters {
			if c.InErrors != 0 {
				t.Errorf("%s: SPI %s has %d inbound errors", m.name, c.SPI, c.InErrors)
			}
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
}

// TestRekeyLifetimeUnderTraffic: the controller's own rekey before the
// lifetime ends loses nothing either.
func TestRekeyLifetimeUnderTraffic(t *testing.T) {
	tm := defaultTimers()
	tm.Lifetime, tm.RekeyTime = "40s", "8s"
	e := newEnv(t, envOptions{members: 3, timers: tm})
	checkRekey(t, e, func(string) {}) // the rekey comes by itself after 8 s
	if cs := e.ctl.status(t).Groups[0]; cs.Rekeys < 1 {
		t.Errorf("controller counted %d rekeys", cs.Rekeys)
	}
}
