//go:build mpsavm

package vm

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/server"
)

// lanWatchLab are the member LANs of a daemon lab, which must never leave
// an underlay in plaintext.
var lanWatchLab = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}

// parseSPI reads an SPI as mpsad's status prints it ("0x%08x").
func parseSPI(t *testing.T, s string) uint32 {
	t.Helper()
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	if err != nil {
		t.Fatalf("SPI %q: %v", s, err)
	}
	return uint32(v)
}

// kernelPackets sums the packet counters of the XFRM states with spi in
// n's namespace: in, of the states to n's underlay address; out, of the
// states from it.
func (n *daemonNode) kernelPackets(t *testing.T, spi uint32) (in, out uint64) {
	t.Helper()
	ss, err := n.ns.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("%s: list states: %v", n.name, err)
	}
	self := net.IP(n.peer.Underlay.AsSlice())
	for _, s := range ss {
		if uint32(s.Spi) != spi {
			continue
		}
		switch {
		case s.Dst.Equal(self):
			in += s.Statistics.Packets
		case s.Src.Equal(self):
			out += s.Statistics.Packets
		}
	}
	return in, out
}

// TestCharonKernel runs real charon with the kernel's ESP (kernel-netlink,
// no kernel-libipsec: the control children are kernel ESP) and real mpsad
// on a controller and one member per configuration of the control child
// (controlChildConfigs), whose shared SA lives in the kernel (dataplane =
// xfrm, static routes). One lab serves both parts, which saves starting
// the daemons twice in the emulated guest: the data plane between the two
// members whose control child mpsad can verify (charonDataPlane), then
// forged control messages to every member (charonForged).
func TestCharonKernel(t *testing.T) {
	cfgs := controlChildConfigs()
	l := newDaemonLab(t, "ck", len(cfgs))
	att := setupForgedLab(t, l, cfgs)
	start := time.Now()
	l.start(nil)
	var served []*daemonNode
	for i, c := range cfgs {
		if c.served {
			served = append(served, l.mems[i])
		}
	}
	spi := l.waitSPINot(t, "", served...)
	t.Logf("the members with a verifiable control child (%d) are on the controller's SA %s %.1fs after the start; guest memory: %s",
		len(served), spi, time.Since(start).Seconds(), memAvailable())
	t.Run("DataPlane", func(t *testing.T) { charonDataPlane(t, l, served[0], served[1]) })
	t.Run("Forged", func(t *testing.T) {
		for i, c := range cfgs {
			t.Run(c.name, func(t *testing.T) { charonForged(t, l, att, l.mems[i], c) })
		}
	})
}

// charonDataPlane: both members have the controller's SA; traffic between
// their LANs leaves each underlay as ESP with the shared SPI and never in
// plaintext; a rekey (mpsactl rekey) under a UDP stream each way loses no
// datagram; and mpsactl status shows the kernel's counters of the shared
// SA.
func charonDataPlane(t *testing.T, l *daemonLab, m1, m2 *daemonNode) {
	mems := []*daemonNode{m1, m2}
	spi := l.waitSPINot(t, "", mems...)
	old := parseSPI(t, spi)

	sniffers := []*sniffer{m1.ns.sniff(t, "eth0", lanWatchLab), m2.ns.sniff(t, "eth0", lanWatchLab)}
	for _, c := range [][2]*daemonNode{{m1, m2}, {m2, m1}} {
		if n, err := c[0].ns.ping(c[0].lanAddr(), c[1].lanAddr(), 3); err != nil || n != 3 {
			t.Fatalf("ping %s -> %s: %d of 3 answered (%v)", c[0].lanAddr(), c[1].lanAddr(), n, err)
		}
	}

	// A datagram every 2 ms each way across the rekey: the new SA
	// arrives, both members receive on both SAs, switch outbound after
	// rollover1 (2 s) and remove the old one after rollover2 (4 s).
	streams := []*udpStream{
		startUDPStream(t, m1.ns, m1.lanAddr(), m2.ns, netip.AddrPortFrom(m2.lanAddr(), 9200), 2*time.Millisecond),
		startUDPStream(t, m2.ns, m2.lanAddr(), m1.ns, netip.AddrPortFrom(m1.lanAddr(), 9200), 2*time.Millisecond),
	}
	for k, s := range streams {
		if !s.waitSent(100, 30*time.Second) {
			t.Fatalf("stream %d: not 100 datagrams sent within 30 s", k)
		}
	}
	out, err := l.mpsactl(l.ctl, "rekey", labGroupName)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mpsactl rekey lab: %s", strings.TrimSpace(out))
	next := l.waitSPINot(t, spi, mems...)
	if !strings.Contains(out, next) {
		t.Errorf("mpsactl rekey printed %q; the members switched to %s", out, next)
	}
	// The old SA is removed rollover2 after the new one arrived.
	for _, m := range mems {
		testenv.WaitFor(t, 60*time.Second, m.name+" to remove the old SA", func() (bool, string) {
			g, _ := labGroup(m.mustStatus(t))
			return len(g.InboundSPIs) == 1 && g.InboundSPIs[0] == next, fmt.Sprint(g.InboundSPIs)
		})
	}
	for k, s := range streams {
		if !s.waitSent(100, 30*time.Second) {
			t.Fatalf("stream %d: not 100 datagrams sent within 30 s after the rollover", k)
		}
	}
	for k, s := range streams {
		sent, got := s.finish(5 * time.Second)
		t.Logf("stream %d: %d of %d datagrams across the rekey", k, got, sent)
		if got != sent {
			t.Errorf("stream %d across the rekey: sent %d, received %d; missing: %v", k, sent, got, s.missing())
		}
	}

	newSPI := parseSPI(t, next)
	for j, m := range mems {
		sn := sniffers[j]
		sn.check(t, m.name, true)
		t.Logf("%s: ESP frames out of eth0 by SPI: %s", m.name, sn.spis())
		for _, s := range []uint32{old, newSPI} {
			if sn.espWith(s) == 0 {
				t.Errorf("%s: no ESP frame with the shared SPI %08x left eth0 (by SPI: %s)", m.name, s, sn.spis())
			}
		}
		if n := m.ns.statesWithSPI(t, old); n != 0 {
			t.Errorf("%s: %d XFRM states of the old SA %s left after the rollover", m.name, n, spi)
		}
		// mpsactl status shows the kernel's counters of the new SA.
		text, err := l.mpsactl(m, "status")
		if err != nil {
			t.Fatal(err)
		}
		js, err := l.mpsactl(m, "status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var st server.Status
		if err := json.Unmarshal([]byte(js), &st); err != nil {
			t.Fatalf("%s: mpsactl status --json: %v\n%s", m.name, err, js)
		}
		in, outP := m.kernelPackets(t, newSPI)
		g, _ := labGroup(st)
		var c *server.Counter
		for i := range g.Counters {
			if g.Counters[i].SPI == next {
				c = &g.Counters[i]
			}
		}
		switch {
		case c == nil:
			t.Errorf("%s: mpsactl status --json has no counters of %s: %+v", m.name, next, g.Counters)
		case c.InPackets != in || c.OutPackets != outP || in == 0 || outP == 0:
			t.Errorf("%s: mpsactl shows %s in %d, out %d packets; the kernel's states counted in %d, out %d", m.name, next, c.InPackets, c.OutPackets, in, outP)
		case uint64(sn.espWith(newSPI)) != outP:
			t.Errorf("%s: %d ESP frames with %s left eth0, the kernel counted %d out", m.name, sn.espWith(newSPI), next, outP)
		}
		if !strings.Contains(text, next) || !strings.Contains(text, "IN PKTS") || !strings.Contains(text, strconv.FormatUint(in, 10)) {
			t.Errorf("%s: mpsactl status does not show the counters of %s (in %d):\n%s", m.name, next, in, text)
		}
		t.Logf("%s: mpsactl status:\n%s", m.name, text)
	}
}
