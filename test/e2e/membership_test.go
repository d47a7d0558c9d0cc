package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/mpsa"
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

// TestForgedControlDatagrams: a host without an IKE SA sends a forged
// hello and a forged MPSA_PUT to the control port, with its own source and
// with a member's control address as source: nothing answers, nothing
// changes, and the drops are counted.
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
	nettest.AddrAdd(t, att, "lo", m1.peer.Control.String()+"/32")

	hello, _ := (&mpsa.Message{Header: mpsa.Header{SPIi: 1, SPIr: 2, Exchange: 37, Flags: mpsa.FlagInitiator}, Payloads: []mpsa.Payload{mpsa.MPSAVendorID()}}).Marshal()
	put := &mpsa.Put{SPI: 0x0badcafe, Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256},
		Nonce: make([]byte, 32), SKd: make([]byte, 32), Lifetime: 3600, Rollover1: 1, Rollover2: 2}
	n, _ := put.Notify()
	forgedPut, _ := (&mpsa.Message{Header: mpsa.Header{SPIi: 1, SPIr: 2, Exchange: 37}, Payloads: []mpsa.Payload{n}}).Marshal()

	ctlDrops := e.ctl.status(t).Drops["not_protected"]
	m1Drops := m1.status(t).Drops["not_protected"]
	var answers int
	if err := att.Do(func() error {
		ctl := net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.ctl.peer.Control, 4501))
		// The member's control address is local here: send to its underlay.
		mem := net.UDPAddrFromAddrPort(netip.AddrPortFrom(m1.peer.Underlay, 4501))
		for _, src := range []netip.Addr{attacker.Peer.Underlay, m1.peer.Control} {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 4501)))
			if err != nil {
				return err
			}
			c.WriteToUDP(hello, ctl)
			c.WriteToUDP(forgedPut, ctl)
			c.WriteToUDP(forgedPut, mem)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 2048)
			if _, _, err := c.ReadFromUDP(buf); err == nil {
				answers++
			}
			c.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if answers != 0 {
		t.Fatalf("forged datagrams got %d answers", answers)
	}
	cs := e.ctl.status(t)
	if cs.Groups[0].SPI != spi || len(cs.Groups[0].Members) != 2 {
		t.Fatalf("the controller changed: %+v", cs.Groups[0])
	}
	if cs.Drops["not_protected"] < ctlDrops+2 {
		t.Errorf("controller counted %d drops for the wrong interface (was %d); want the forged datagrams counted: %v", cs.Drops["not_protected"], ctlDrops, cs.Drops)
	}
	ms := m1.status(t)
	if ms.Groups[0].OutboundSPI != spi || slices.Contains(ms.Groups[0].InboundSPIs, "0x0badcafe") {
		t.Fatalf("member1 changed: %+v", ms.Groups[0])
	}
	if ms.Drops["not_protected"] < m1Drops+1 {
		t.Errorf("member1 counted %d drops for the wrong interface; want the forged MPSA_PUT counted: %v", ms.Drops["not_protected"], ms.Drops)
	}
}

// TestShutdownCleansUp: SIGTERM makes a member's mpsad remove its TUN
// device and the routes through it; the other member's SA is untouched.
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
	if out := m1.ns.Run(t, "ip", "route", "show"); strings.Contains(out, e.mems[1].lan.String()) {
		t.Fatalf("a route to member2's LAN survived the stop:\n%s", out)
	}
	if g := e.mems[1].status(t).Groups[0]; g.OutboundSPI != spi {
		t.Fatalf("member2 changed: %+v", g)
	}
}
