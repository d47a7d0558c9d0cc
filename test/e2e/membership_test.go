package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/server"
)

func pingOK(t *testing.T, a, b *node) {
	t.Helper()
	if s, r := ping(t, a, b, 3, "0.05"); r != s {
		t.Errorf("ping %s -> %s: %d of %d answered", a.name, b.name, r, s)
	}
}

// TestJoinAndLeave: a fourth member joins later and reaches the others
// with no change on them; then it leaves and, with rekey_on_leave, the
// others move to an SPI it never receives.
func TestJoinAndLeave(t *testing.T) {
	e := newEnv(t, envOptions{members: 4, late: map[int]bool{4: true}})
	first := e.mems[:3]
	spi := e.waitSPI(first...)
	before := map[string]string{}
	for _, m := range first {
		before[m.name] = fmt.Sprint(m.status(t).Groups[0].InboundSPIs)
	}
	m4 := e.mems[3]
	e.startNode(m4, e.lab.Group.MemberConf(3)+e.memberMPSA(3))
	if got := e.waitSPI(e.mems...); got != spi {
		t.Fatalf("joining changed the SPI from %s to %s (rekey_on_join is off)", spi, got)
	}
	for _, m := range first {
		if now := fmt.Sprint(m.status(t).Groups[0].InboundSPIs); now != before[m.name] {
			t.Errorf("%s changed when member4 joined: %s -> %s", m.name, before[m.name], now)
		}
		pingOK(t, m4, m)
		pingOK(t, m, m4)
	}

	// member4 leaves: its IKE SA is torn down.
	m4.charon.MustSwanctl(t, "--terminate", "--ike", e.lab.Group.ConnName())
	newSPI := e.waitSPINot(spi, first...)
	g4 := m4.status(t).Groups[0]
	if slices.Contains(g4.InboundSPIs, newSPI) || g4.OutboundSPI == newSPI {
		t.Fatalf("the departed member received the new SPI %s: %+v", newSPI, g4)
	}
	if g4.OutboundSPI != spi {
		t.Errorf("the departed member should keep the old SA until it expires; it sends with %q", g4.OutboundSPI)
	}
	if n := len(e.ctl.status(t).Groups[0].Members); n != 3 {
		t.Errorf("controller lists %d members after the leave", n)
	}
	pingOK(t, e.mems[0], e.mems[1])
}

// TestControllerAway: with the controller's mpsad stopped, members keep
// talking; when it comes back they receive its new group SA.
func TestControllerAway(t *testing.T) {
	e := newEnv(t, envOptions{members: 2})
	spi := e.waitSPI(e.mems...)
	e.stopMPSAD(e.ctl)
	pingOK(t, e.mems[0], e.mems[1])
	transferTCP(t, e.mems[1], e.mems[0], 256<<10)
	for _, m := range e.mems {
		if g := m.status(t).Groups[0]; g.OutboundSPI != spi {
			t.Fatalf("%s lost its SA while the controller was away: %+v", m.name, g)
		}
	}
	e.startMPSAD(e.ctl)
	got := e.waitSPI(e.mems...)
	if got == spi {
		t.Fatalf("the restarted controller's SPI equals the old one (%s)", spi)
	}
	pingOK(t, e.mems[0], e.mems[1])
}

// TestControllerIKEAway: the controller's charon stops, and with it every
// member's IKE SA to the controller, while two members exchange pings
// every 10 ms and a TCP stream: the members show the controller down and
// lose no packet. When charon is back and the members' IKE SAs are up
// again, they say hello again and receive a new group SA (rekey_on_leave:
// the controller saw them leave), still without losing a packet.
func TestControllerIKEAway(t *testing.T) {
	e := newEnv(t, envOptions{members: 2})
	spi := e.waitSPI(e.mems...)
	m1, m2 := e.mems[0], e.mems[1]
	hellos := map[*node]int{}
	oldIKE := map[*node]string{}
	for _, m := range e.mems {
		hellos[m] = m.logCount(t, "saying hello")
		oldIKE[m] = m.status(t).Groups[0].Controller.IKESPIs
	}
	stopPing := pingUntil(t, m1, m2)
	tcp := startStream(t, m2, m1)
	time.Sleep(500 * time.Millisecond)
	w := e.startLossWindow(m2, m1)

	// SIGTERM: charon deletes its IKE SAs, telling the members, and exits.
	if err := e.ctl.charon.Stop(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the members to see the controller down", func() (bool, string) {
		var seen []string
		for _, m := range e.mems {
			c := m.status(t).Groups[0].Controller
			seen = append(seen, m.name+": "+c.State)
			if c.State != "down" {
				return false, strings.Join(seen, ", ")
			}
		}
		return true, ""
	})
	// The members keep the SA and keep talking while the controller is
	// away: the traffic runs on for a while, through the SA in force.
	away := map[*node]uint64{}
	for _, m := range e.mems {
		away[m] = outPackets(t, m, spi)
	}
	time.Sleep(2 * time.Second)
	for _, m := range e.mems {
		g := m.status(t).Groups[0]
		if g.OutboundSPI != spi {
			t.Fatalf("%s lost its SA while the controller's IKE SA was away: %+v", m.name, g)
		}
		if n := outPackets(t, m, spi) - away[m]; n < 100 {
			t.Errorf("%s sent %d packets with %s in 2 s while the controller was away", m.name, n, spi)
		}
	}

	// charon comes back; the members' IKE SAs are set up again (here by
	// hand: this configuration has no DPD or close_action to do it).
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := e.ctl.charon.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Once the controller's mpsad has resynced with the restarted charon,
	// it knows the members left.
	waitFor(t, "the controller's mpsad to resync with its restarted charon", func() (bool, string) {
		st, err := e.ctl.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.VICIConnected && len(st.Groups[0].Members) == 0, fmt.Sprintf("connected %v, %d members", st.VICIConnected, len(st.Groups[0].Members))
	})
	for _, m := range e.mems {
		m.charon.MustSwanctl(t, "--initiate", "--child", e.lab.Group.ChildName())
	}
	waitFor(t, "the members to say hello on their new IKE SAs and be answered", func() (bool, string) {
		var seen []string
		for _, m := range e.mems {
			c := m.status(t).Groups[0].Controller
			seen = append(seen, fmt.Sprintf("%s: %s on %s", m.name, c.State, c.IKESPIs))
			if c.State != "up" || c.IKESPIs == oldIKE[m] {
				return false, strings.Join(seen, ", ")
			}
		}
		return true, ""
	})
	for _, m := range e.mems {
		if n := m.logCount(t, "saying hello"); n <= hellos[m] {
			t.Errorf("%s logged %d hellos before the controller went away and %d now; want another", m.name, hellos[m], n)
		}
	}
	got := e.waitSPINot(spi, e.mems...)
	// The controller pushed it over the new IKE SAs, and each member
	// acknowledged it.
	waitFor(t, "every member to acknowledge the new group SA", func() (bool, string) {
		ms := e.ctl.status(t).Groups[0].Members
		if len(ms) != 2 {
			return false, fmt.Sprintf("%d members", len(ms))
		}
		for _, m := range ms {
			if m.AckedSPI != got {
				return false, fmt.Sprintf("%s acked %q", m.ID, m.AckedSPI)
			}
		}
		return true, ""
	})
	for _, m := range e.mems {
		if c := m.status(t).Groups[0].Controller; c.IKESPIs == oldIKE[m] {
			t.Errorf("%s still on the IKE SA %s", m.name, c.IKESPIs)
		}
	}
	// Until the rollover is over on both sides.
	time.Sleep(duration(t, e.timers.Rollover2) + time.Second)
	r := stopPing()
	if r.err != nil {
		t.Fatal(r.err)
	}
	tcp.finish(t)
	if r.sent == 0 || r.received != r.sent {
		t.Errorf("ping every 10 ms while the controller's IKE SA was away and back: %d of %d answered", r.received, r.sent)
	}
	t.Logf("controller's charon away and back, SPI %s -> %s: %d of %d pings answered", spi, got, r.received, r.sent)
	w.check("the controller's absence")
}

// outPackets is how many packets m has sent with spi.
func outPackets(t *testing.T, m *node, spi string) uint64 {
	t.Helper()
	for _, c := range m.status(t).Groups[0].Counters {
		if c.SPI == spi {
			return c.OutPackets
		}
	}
	t.Fatalf("%s has no counters for %s", m.name, spi)
	return 0
}

// TestCharonRestart: charon restarts under a member's mpsad and under the
// controller's; mpsad reconnects, resyncs and carries on.
func TestCharonRestart(t *testing.T) {
	e := newEnv(t, envOptions{members: 2})
	spi := e.waitSPI(e.mems...)
	m1 := e.mems[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oldIKE := m1.status(t).Groups[0].Controller.IKESPIs
	if err := m1.charon.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "member1's mpsad to follow its restarted charon", func() (bool, string) {
		st, err := m1.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		c := st.Groups[0].Controller
		return st.VICIConnected && c.State == "up" && c.IKESPIs != oldIKE, c.State + " " + c.IKESPIs
	})
	// member1 came back on a new IKE SA with the same control address: a
	// reconnect, not a leave, so the SA in force stays; every member has it.
	if got := e.waitSPI(e.mems...); got != spi {
		t.Errorf("member1's charon restart changed the SPI from %s to %s; a reconnect is no leave", spi, got)
	}
	pingOK(t, e.mems[0], e.mems[1])

	if err := e.ctl.charon.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the controller's mpsad to reconnect to its charon", func() (bool, string) {
		st, err := e.ctl.tryStatus()
		return err == nil && st.VICIConnected, ""
	})
	// The members' IKE SAs died with the controller's charon; bring them
	// back as an operator (or DPD) would.
	for _, m := range e.mems {
		m.charon.MustSwanctl(t, "--initiate", "--child", e.lab.Group.ChildName())
	}
	e.waitSPI(e.mems...)
	if n := len(e.ctl.status(t).Groups[0].Members); n != 2 {
		t.Errorf("controller lists %d members after its charon restarted", n)
	}
	pingOK(t, e.mems[1], e.mems[0])
}

// TestForgedControlDatagrams: a host without an IKE SA sends forged hellos
// and MPSA_PUTs to the control port: to the controller with its own
// source and with a member's control address as source, and to a member
// with the controller's control address as source (and the real IKE SPIs
// of the member's IKE SA, as anyone on the path can read them). Nothing
// answers, on the wire or through the control children; nothing changes;
// and each datagram is counted as dropped exactly once.
func TestForgedControlDatagrams(t *testing.T) {
	e := newEnv(t, envOptions{members: 2})
	spi := e.waitSPI(e.mems...)
	// The attacker sits on the same bridge as everyone else.
	attacker := e.lab.AddHost(t, "att")
	att := attacker.NS
	att.Run(t, "ip", "route", "add", "10.98.0.0/16", "via", e.ctl.peer.Underlay.String())
	m1 := e.mems[0]
	// Allow spoofed sources to reach mpsad, so that mpsad's own check is
	// what stops them.
	for _, n := range []*node{e.ctl, m1} {
		n.ns.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
	}

	hello, _ := (&mpsa.Message{Header: mpsa.Header{SPIi: 1, SPIr: 2, Exchange: 37, Flags: mpsa.FlagInitiator}, Payloads: []mpsa.Payload{mpsa.MPSAVendorID()}}).Marshal()
	put := &mpsa.Put{SPI: 0x0badcafe, Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256},
		Nonce: make([]byte, 32), SKd: make([]byte, 32), Lifetime: 3600, Rollover1: 1, Rollover2: 2}
	n, _ := put.Notify()
	forgedPut, _ := (&mpsa.Message{Header: mpsa.Header{SPIi: 1, SPIr: 2, Exchange: 37}, Payloads: []mpsa.Payload{n}}).Marshal()
	// The same MPSA_PUT as the controller would send it to member1: a
	// request from the IKE SA's responder, with its SPIs.
	before1 := m1.status(t)
	var ikeI, ikeR uint64
	if _, err := fmt.Sscanf(before1.Groups[0].Controller.IKESPIs, "%x_i %x_r", &ikeI, &ikeR); err != nil {
		t.Fatalf("member1's IKE SPIs %q: %v", before1.Groups[0].Controller.IKESPIs, err)
	}
	ctlPut, _ := (&mpsa.Message{Header: mpsa.Header{SPIi: ikeI, SPIr: ikeR, Exchange: 37, MessageID: 7}, Payloads: []mpsa.Payload{n}}).Marshal()
	beforeCtl := e.ctl.status(t)

	// What leaves the controller and member1 on the control port, on
	// their link and through their control children (charon's ipsec0),
	// and what arrives on their link.
	type capture struct {
		n    *node
		link string
		out  bool
		c    *nettest.Capture
	}
	var caps []*capture
	for _, n := range []*node{e.ctl, m1} {
		for _, c := range []*capture{{n, "eth0", true, nil}, {n, "ipsec0", true, nil}, {n, "eth0", false, nil}} {
			dir := "in"
			if c.out {
				dir = "out"
			}
			c.c = startCaptureOn(t, n, c.link, "-Q", dir, "udp port 4501")
			caps = append(caps, c)
		}
	}

	// Each forged datagram: from, to, message. The attacker sends from
	// addresses it does not have with IP_TRANSPARENT.
	att.Run(t, "ip", "route", "add", m1.peer.Control.String()+"/32", "via", m1.peer.Underlay.String())
	// Each is dropped once: a datagram from an address that is no
	// control child's peer as no_control_child; one that spoofs a
	// control address as not_protected, because it came in on eth0 and
	// the control child's proof is charon's TUN (kernel-libipsec):
	// mpsad found that itself, no control_interface is configured.
	const notCtl, notProt = "no_control_child", "not_protected"
	forgeries := []struct {
		src, dst netip.Addr
		msg      []byte
		why      string
	}{
		// From the attacker's own address, to the controller and to
		// member1 (at its underlay address).
		{attacker.Peer.Underlay, e.ctl.peer.Control, hello, notCtl},
		{attacker.Peer.Underlay, e.ctl.peer.Control, forgedPut, notCtl},
		{attacker.Peer.Underlay, m1.peer.Underlay, forgedPut, notCtl},
		// Spoofing member1 toward the controller. (Not toward member1
		// itself: its kernel drops a packet from its own address
		// before any socket sees it.)
		{m1.peer.Control, e.ctl.peer.Control, hello, notProt},
		{m1.peer.Control, e.ctl.peer.Control, forgedPut, notProt},
		// Spoofing the controller toward member1's control address.
		{e.ctl.peer.Control, m1.peer.Control, hello, notProt},
		{e.ctl.peer.Control, m1.peer.Control, forgedPut, notProt},
		{e.ctl.peer.Control, m1.peer.Control, ctlPut, notProt},
	}
	want := map[*node]map[string]uint64{e.ctl: {}, m1: {}}
	for _, f := range forgeries {
		to := m1
		if f.dst == e.ctl.peer.Control {
			to = e.ctl
		}
		want[to][f.why]++
	}
	toCtl, toM1 := 0, 0
	var answers int
	if err := att.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) }); err != nil {
				return err
			}
			return serr
		}}
		socks := map[netip.Addr]*net.UDPConn{}
		for _, f := range forgeries {
			c := socks[f.src]
			if c == nil {
				pc, err := lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(f.src, 4501).String())
				if err != nil {
					return err
				}
				c = pc.(*net.UDPConn)
				defer c.Close()
				socks[f.src] = c
			}
			if _, err := c.WriteToUDPAddrPort(f.msg, netip.AddrPortFrom(f.dst, 4501)); err != nil {
				return fmt.Errorf("send from %s to %s: %w", f.src, f.dst, err)
			}
			if f.dst == e.ctl.peer.Control {
				toCtl++
			} else {
				toM1++
			}
		}
		// An answer to the attacker's own address would come back
		// here; answers to spoofed ones would go to their owners,
		// which the captures see.
		deadline := time.Now().Add(2 * time.Second)
		buf := make([]byte, 2048)
		for _, c := range socks {
			c.SetReadDeadline(deadline)
			if _, _, err := c.ReadFromUDP(buf); err == nil {
				answers++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if answers != 0 {
		t.Errorf("forged datagrams got %d answers", answers)
	}

	// Each datagram is dropped once, for the reason above, and nothing
	// else is counted.
	totals := func(st server.Status) map[string]uint64 {
		sum := map[string]uint64{}
		for _, ds := range []map[string]uint64{st.Drops, st.Groups[0].Drops} {
			for r, v := range ds {
				sum[r] += v
			}
		}
		return sum
	}
	rose := func(before, after map[string]uint64) map[string]uint64 {
		d := map[string]uint64{}
		for r, v := range after {
			if v != before[r] {
				d[r] = v - before[r]
			}
		}
		return d
	}
	for _, c := range []struct {
		n      *node
		before server.Status
	}{{e.ctl, beforeCtl}, {m1, before1}} {
		b := totals(c.before)
		// Wait until all are counted (or 10 s), then a little longer
		// for any counted twice.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if maps.Equal(rose(b, totals(c.n.status(t))), want[c.n]) {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
		if got := rose(b, totals(c.n.status(t))); !maps.Equal(got, want[c.n]) {
			t.Errorf("%s: drops rose by %v, want %v", c.n.name, got, want[c.n])
		}
	}

	for _, c := range caps {
		lines := c.c.Stop(0)
		switch {
		case c.out && len(lines) != 0:
			t.Errorf("%s sent on %s from or to the control port while forged datagrams came in:\n%s", c.n.name, c.link, strings.Join(lines, "\n"))
		case !c.out && c.n == e.ctl && len(lines) != toCtl, !c.out && c.n == m1 && len(lines) != toM1:
			t.Errorf("%d datagrams for the control port arrived on %s's %s, want the %d sent:\n%s", len(lines), c.n.name, c.link, map[*node]int{e.ctl: toCtl, m1: toM1}[c.n], strings.Join(lines, "\n"))
		}
	}

	cs := e.ctl.status(t)
	if cs.Groups[0].SPI != spi || len(cs.Groups[0].Members) != 2 || cs.Groups[0].Rekeys != beforeCtl.Groups[0].Rekeys {
		t.Fatalf("the controller changed: %+v", cs.Groups[0])
	}
	for i, m := range cs.Groups[0].Members {
		if was := beforeCtl.Groups[0].Members[i]; m.AckedSPI != spi || m.PendingSPI != "" || m.IKESPIs != was.IKESPIs {
			t.Errorf("the controller's member %s changed: %+v, was %+v", m.ID, m, was)
		}
	}
	g := m1.status(t).Groups[0]
	if g.OutboundSPI != spi || !slices.Equal(g.InboundSPIs, []string{spi}) || g.Controller.State != "up" || g.Controller.IKESPIs != before1.Groups[0].Controller.IKESPIs {
		t.Fatalf("member1 changed: %+v", g)
	}
}

// TestShutdownCleansUp: SIGTERM makes a member's mpsad remove its TUN
// device and the routes through it, and leave the kill switch: the route
// to the other member's LAN is a blackhole now (TestKillSwitchUserspace
// shows that it drops the traffic). The other member's SA is untouched.
func TestShutdownCleansUp(t *testing.T) {
	e := newEnv(t, envOptions{members: 2})
	spi := e.waitSPI(e.mems...)
	m1 := e.mems[0]
	if out := m1.ns.Run(t, "ip", "route", "show", "dev", "mpsa0"); !strings.Contains(out, e.mems[1].lan.String()) {
		t.Fatalf("no route to member2's LAN through mpsa0 before the stop: %q", out)
	}
	e.stopMPSAD(m1)
	if out, err := m1.ns.Command("ip", "link", "show", "mpsa0").CombinedOutput(); err == nil {
		t.Fatalf("mpsa0 still exists after mpsad stopped: %s", out)
	}
	if out := m1.ns.Run(t, "ip", "route", "show", e.mems[1].lan.String()); !strings.HasPrefix(out, "blackhole ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("after the stop, the route to member2's LAN is not the kill switch's blackhole alone:\n%s", out)
	}
	if g := e.mems[1].status(t).Groups[0]; g.OutboundSPI != spi {
		t.Fatalf("member2 changed: %+v", g)
	}
}
