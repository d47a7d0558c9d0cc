package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestAddressFamilies: the shared SA carries IPv6 over IPv6 and IPv4 over
// IPv6 (the IPv4 underlay cases run in the other tests), with the control
// exchange over IPv6 control addresses in one of them.
func TestAddressFamilies(t *testing.T) {
	for _, c := range []struct {
		name string
		o    envOptions
	}{
		{"IPv6 over IPv6", envOptions{members: 2, underlay6: true, lan6: true, control6: true}},
		{"IPv4 over IPv6", envOptions{members: 2, underlay6: true}},
		{"IPv6 over IPv4", envOptions{members: 2, lan6: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.o)
			spi := e.waitSPI(e.mems...)
			a, b := e.mems[0], e.mems[1]
			lines := trafficCaptured(t, a, b, "ip proto 50 or ip6 proto 50")
			want := fmt.Sprintf("%s > %s: ESP(spi=%s,", a.peer.Underlay, b.peer.Underlay, spi)
			if n := countContaining(lines, want); n < 10 {
				t.Errorf("%d ESP packets %q on %s's link; want the traffic there:\n%s", n, want, a.name, strings.Join(lines[:min(len(lines), 5)], "\n"))
			}
		})
	}
}

// TestESPInUDP: with encap = yes the members carry the shared SA in UDP
// to port 4502 (and, through the controller, get it over the same control
// exchange): ping and TCP both ways, UDP from port 4502 to port 4502
// between their underlay addresses, and no plain ESP.
func TestESPInUDP(t *testing.T) {
	e := newEnv(t, envOptions{members: 2, encap: true})
	e.waitSPI(e.mems...)
	a, b := e.mems[0], e.mems[1]
	lines := trafficCaptured(t, a, b, "udp port 4502 or ip proto 50 or ip6 proto 50")
	if n := countContaining(lines, "ESP("); n != 0 {
		t.Errorf("%d plain ESP packets on %s's link with encap = yes", n, a.name)
	}
	want := fmt.Sprintf("%s.4502 > %s.4502: UDP", a.peer.Underlay, b.peer.Underlay)
	if n := countContaining(lines, want); n < 10 {
		t.Errorf("%d datagrams %q on %s's link; want the traffic there:\n%s", n, want, a.name, strings.Join(lines[:min(len(lines), 5)], "\n"))
	}
}

// trafficCaptured pings and transfers 512 KiB over TCP between a and b both
// ways and returns what tcpdump saw on a's link with filter meanwhile.
func trafficCaptured(t *testing.T, a, b *node, filter string) []string {
	t.Helper()
	cp := startCapture(t, a, filter)
	pingOK(t, a, b)
	pingOK(t, b, a)
	transferTCP(t, a, b, 512<<10)
	transferTCP(t, b, a, 512<<10)
	return cp.Stop(0)
}

// countContaining counts the lines that contain s.
func countContaining(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}
