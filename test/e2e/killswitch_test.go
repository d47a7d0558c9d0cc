package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillSwitchUserspace: a member's mpsad stopped (SIGTERM), killed
// (SIGKILL) and restarted while its LAN keeps sending to another member's
// LAN. The member has a default route out of its underlay, as a CPE has
// towards the Internet, so that traffic the TUN no longer takes would leave
// there in plaintext; the kill switch's blackhole routes must drop it
// instead. A capture on the member's underlay sees no packet between the
// two LANs in clear, from start to end; while mpsad is down the pings go
// unanswered, and after each restart they are answered again over the
// shared SA.
func TestKillSwitchUserspace(t *testing.T) {
	e := newEnv(t, envOptions{members: 2})
	m1, m2 := e.mems[0], e.mems[1]
	e.waitSPI(m1, m2)
	// The CPE's default route: the controller's underlay address stands
	// for the Internet gateway.
	m1.ns.Run(t, "ip", "route", "add", "default", "via", e.ctl.peer.Underlay.String())
	// Anything with an inner LAN address on the underlay is plaintext:
	// ESP between members carries the underlay addresses outside.
	plain := startCapture(t, m1, fmt.Sprintf("ip and net %s and net %s", m1.lan, m2.lan))
	esp := startCapture(t, m1, "ip proto 50")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type result struct {
		sent, recv int
		err        error
	}
	// ping at 20 ms for the whole test, in rounds so that each phase can
	// be judged on its own.
	pingFor := func(d time.Duration) result {
		n := int(d / (20 * time.Millisecond))
		s, r, err := tryPing(ctx, m1, m2, n, "0.02")
		return result{s, r, err}
	}

	if r := pingFor(time.Second); r.err != nil || r.recv == 0 {
		t.Fatalf("before: %d of %d pings answered (%v)", r.recv, r.sent, r.err)
	}
	for _, stop := range []struct {
		name string
		sig  syscall.Signal
	}{{"stopped", syscall.SIGTERM}, {"killed", syscall.SIGKILL}} {
		m1.mpsad.Process.Signal(stop.sig)
		select {
		case <-m1.exited:
		case <-time.After(15 * time.Second):
			t.Fatalf("mpsad on %s did not exit on %v", m1.name, stop.sig)
		}
		m1.mpsad = nil
		// The TUN is gone: nothing protects the LAN's traffic but the
		// kill switch.
		if out := m1.ns.Run(t, "ip", "route", "show", m2.lan.String()); !strings.HasPrefix(out, "blackhole") && !strings.HasPrefix(out, "unreachable") {
			t.Errorf("mpsad %s: the route to %s is not a blackhole: %q", stop.name, m2.lan, out)
		}
		if r := pingFor(2 * time.Second); r.recv != 0 {
			t.Errorf("mpsad %s: %d of %d pings answered", stop.name, r.recv, r.sent)
		}
		e.startMPSAD(m1)
		e.waitSPI(m1, m2)
		waitFor(t, "pings answered again after mpsad restarted", func() (bool, string) {
			r := pingFor(500 * time.Millisecond)
			return r.recv > 0, fmt.Sprintf("%d of %d answered (%v)", r.recv, r.sent, r.err)
		})
	}
	cancel()
	if lines := plain.Stop(time.Second); len(lines) != 0 {
		t.Errorf("%d packets between the LANs left %s's underlay in plaintext, e.g.:\n%s", len(lines), m1.name, strings.Join(lines[:min(len(lines), 5)], "\n"))
	}
	if lines := esp.Stop(0); len(lines) == 0 {
		t.Errorf("no ESP on %s's underlay: the pings did not go over the shared SA at all", m1.name)
	}
}
