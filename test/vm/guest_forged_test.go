//go:build mpsavm

package vm

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/server"
)

// forgedSPI is the SPI of the shared SA in the forged MPSA_PUTs.
const forgedSPI = 0x0badcafe

// Phrases that a member's mpsad must log and show in `mpsactl status` when
// it cannot verify that the kernel protects its control child and refuses
// to serve the group: refusalPhrase and refusalNotProtected or
// refusalCannotVerify (case-insensitive).
const (
	refusalPhrase       = "control child"
	refusalNotProtected = "not protected"
	refusalCannotVerify = "cannot verify"
)

// refusal reports whether text says that the control child's protection
// cannot be verified.
func refusal(text string) bool {
	low := strings.ToLower(text)
	return strings.Contains(low, refusalPhrase) &&
		(strings.Contains(low, refusalNotProtected) || strings.Contains(low, refusalCannotVerify))
}

// controlChildConfig is one way of configuring a member's control child
// in charon.
type controlChildConfig struct {
	name string
	// child holds further lines of the member's control child.
	child []string
	// ifID is the XFRM interface ID of a route-based child; xfrmi
	// creates an XFRM interface with it and routes the controller's
	// control address into it.
	ifID  uint32
	xfrmi bool
	// served: mpsad can verify that only ESP reaches its control port
	// and serves the group (it gets the controller's SA); otherwise it
	// must refuse to serve the group and say why.
	served bool
}

// controlChildConfigs returns the configurations of the forged-message
// test, one member each.
func controlChildConfigs() []controlChildConfig {
	return []controlChildConfig{
		// (a) charon's default: policies with templates. The kernel drops
		// plaintext that claims a control address.
		{name: "policy-based", served: true},
		// (b) route-based: the child's policies and SAs carry an if_id, an
		// XFRM interface with it carries the control traffic. A plaintext
		// datagram has no secpath, matches none of the if_id policies and
		// reaches the socket: mpsad must accept control datagrams only from
		// the XFRM interface of the child's if_id.
		{name: "route-based", child: []string{"if_id_in = 42", "if_id_out = 42"}, ifID: 42, xfrmi: true, served: true},
		// (b') route-based without an XFRM interface of the child's if_id:
		// nothing can arrive protected, nothing can be verified.
		{name: "route-based-no-interface", child: []string{"if_id_in = 43", "if_id_out = 43"}, ifID: 43},
		// (c) policies = no: charon installs no policy; the kernel lets any
		// plaintext through.
		{name: "policies-no", child: []string{"policies = no"}},
	}
}

// setupForgedLab prepares member i of the lab for cfgs[i]
// (its control child's lines, an XFRM interface for a route-based child,
// no reverse-path filter) and adds the attacker, routing every member's
// control address to its underlay. Call it before the lab starts.
func setupForgedLab(t *testing.T, l *daemonLab, cfgs []controlChildConfig) *daemonNode {
	t.Helper()
	l.group.MemberChild = make([][]string, len(cfgs))
	for i, c := range cfgs {
		l.group.MemberChild[i] = c.child
		m := l.mems[i]
		if c.xfrmi {
			x := &netlink.Xfrmi{LinkAttrs: netlink.LinkAttrs{Name: "ctl0"}, Ifid: c.ifID}
			if err := m.ns.h.LinkAdd(x); err != nil {
				t.Fatalf("%s: XFRM interface: %v", m.name, err)
			}
			m.ns.up(t, "ctl0")
			route := &netlink.Route{LinkIndex: m.ns.link(t, "ctl0").Attrs().Index, Dst: ipnet(l.ctl.peer.Control.String() + "/32"),
				Src: m.peer.Control.AsSlice(), Scope: netlink.SCOPE_LINK}
			if err := m.ns.h.RouteAdd(route); err != nil {
				t.Fatalf("%s: route into ctl0: %v", m.name, err)
			}
		}
		// Spoofed sources reach the socket: mpsad's own check (or the
		// kernel's policies) must stop them, not the reverse-path
		// filter.
		m.ns.sysctl(t, "net/ipv4/conf/all/rp_filter", "0")
		m.ns.sysctl(t, "net/ipv4/conf/eth0/rp_filter", "0")
	}
	att := l.addHost("att", 99)
	for _, m := range l.mems {
		att.ns.addRouteVia(t, m.peer.Control.String()+"/32", m.peer.Underlay)
	}
	return att
}

// charonForged: an attacker on the underlay sends forged MPSA_PUTs to
// member m's control port, as plaintext UDP from the controller's control
// address (IP_TRANSPARENT) with the real IKE SPIs of m's IKE SA (read over
// VICI: anyone on the path sees them); m's control child is configured as
// c says. In every configuration the forged SA must never be installed
// (not in mpsad's status, not in the kernel). Where the control child is
// verifiably protected, the member keeps the controller's SA and does not
// answer: with policies, the kernel drops the forgeries
// (XfrmInTmplMismatch); route-based, mpsad drops each once (counted
// not_protected) because it did not come through the child's XFRM
// interface. Where it cannot be verified (no XFRM interface of the
// child's if_id, policies = no), mpsad refuses to serve the group and says
// so in its log and in mpsactl status (refusal).
func charonForged(t *testing.T, l *daemonLab, att, m *daemonNode, c controlChildConfig) {
	var spi string
	if c.served {
		// The controller's SA in force, and the old one gone.
		spi = l.waitSPINot(t, "", m)
		testenv.WaitFor(t, 60*time.Second, m.name+" to hold the controller's SA alone", func() (bool, string) {
			g, _ := labGroup(m.mustStatus(t))
			return slices.Equal(g.InboundSPIs, []string{spi}), fmt.Sprint(g.InboundSPIs)
		})
	}
	ike, child := l.waitControlChild(t, m)
	before := m.mustStatus(t)
	tmpl0, nopols0 := m.ns.xfrmStat(t, "XfrmInTmplMismatch"), m.ns.xfrmStat(t, "XfrmInNoPols")
	// What leaves the member while the forgeries arrive: an
	// answer through the control child (ESP with its
	// outbound SPI) or in plaintext.
	sn := m.ns.sniff(t, "eth0", []netip.Prefix{netip.MustParsePrefix("10.98.0.0/16")})
	esp0 := sn.espWith(child.SPIOut)

	const forged = 3
	sendForgedPuts(t, att, l.ctl.peer.Control, m.peer.Control, ike.InitiatorSPI, ike.ResponderSPI, forged)
	t.Logf("%d forged MPSA_PUTs (SPI %08x, IKE SPIs %016x_i %016x_r) sent from %s to %s:%d", forged, uint32(forgedSPI), ike.InitiatorSPI, ike.ResponderSPI, l.ctl.peer.Control, m.peer.Control, controlPort)

	// Wait until the forgeries have been dealt with: dropped by
	// the kernel, dropped by mpsad, or taken (which is the bug).
	var after server.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = m.mustStatus(t)
		if m.ns.xfrmStat(t, "XfrmInTmplMismatch")-tmpl0 >= forged || dropTotal(after)-dropTotal(before) >= forged ||
			hasSPI(after, forgedSPI) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Long enough for a taken forgery's rollover1 (1 s) and for
	// an answer to leave.
	time.Sleep(1500 * time.Millisecond)
	after = m.mustStatus(t)
	sn.checkComplete(t, m.name)
	tmpl, nopols := m.ns.xfrmStat(t, "XfrmInTmplMismatch")-tmpl0, m.ns.xfrmStat(t, "XfrmInNoPols")-nopols0
	answersESP := sn.espWith(child.SPIOut) - esp0
	answersPlain := sn.plain.Load()
	text, err := l.mpsactl(m, "status")
	if err != nil {
		t.Fatal(err)
	}
	g, listed := labGroup(after)
	g0, _ := labGroup(before)
	dropped := dropTotal(after) - dropTotal(before)
	t.Logf("evidence: kernel XfrmInTmplMismatch +%d, XfrmInNoPols +%d; mpsad dropped %d (daemon %v -> %v, group %v -> %v); "+
		"frames out of the member's eth0 meanwhile: %d ESP with the control child's SPI %08x, %d plaintext to or from 10.98.0.0/16 (first: %v); "+
		"the member's SAs: outbound %q, inbound %v", tmpl, nopols, dropped, before.Drops, after.Drops, g0.Drops, g.Drops,
		answersESP, child.SPIOut, answersPlain, sn.first.Load(), g.OutboundSPI, g.InboundSPIs)
	t.Logf("mpsactl status:\n%s", text)
	t.Logf("charon's XFRM policies of the control child (reqid %d): %s", child.ReqID, m.ns.policiesOfReqID(t, child.ReqID))

	// In every configuration: the forged SA is nowhere.
	if hasSPI(after, forgedSPI) {
		t.Errorf("the member installed the forged SA %08x: outbound %q, inbound %v", uint32(forgedSPI), g.OutboundSPI, g.InboundSPIs)
	}
	if n := m.ns.statesWithSPI(t, forgedSPI); n != 0 {
		t.Errorf("the member's kernel holds %d XFRM states with the forged SPI %08x", n, uint32(forgedSPI))
	}

	if c.served {
		if !listed {
			t.Fatalf("mpsad's status has no group %q: %+v", labGroupName, after)
		}
		if g.OutboundSPI != spi || !slices.Equal(g.InboundSPIs, []string{spi}) {
			t.Errorf("the member's SAs changed: outbound %q, inbound %v; want %s alone", g.OutboundSPI, g.InboundSPIs, spi)
		}
		if answersESP != 0 || answersPlain != 0 {
			t.Errorf("the member answered: %d ESP frames through the control child, %d in plaintext", answersESP, answersPlain)
		}
		if refusal(text) {
			t.Errorf("mpsactl status says the control child is not protected, though it is:\n%s", text)
		}
		if c.ifID == 0 {
			// The kernel's policies dropped them: mpsad saw none.
			if tmpl < forged {
				t.Errorf("the kernel dropped %d of the %d forgeries as XfrmInTmplMismatch", tmpl, forged)
			}
			if dropped != 0 {
				t.Errorf("mpsad counted %d dropped datagrams; the kernel should have dropped them all", dropped)
			}
		} else {
			// They reached the socket; mpsad must drop each once,
			// as not protected (not from the child's XFRM
			// interface).
			if d := dropCount(after, "not_protected") - dropCount(before, "not_protected"); d != forged || dropped != forged {
				t.Errorf("mpsad counted %d of the %d forgeries as not_protected, %d drops in all: %v, group %v", d, forged, dropped, after.Drops, g.Drops)
			}
		}
		return
	}
	// Not verifiable: mpsad refuses to serve the group, and drops each
	// forgery once (for any reason: the kernel let them through).
	if g.OutboundSPI != "" || len(g.InboundSPIs) != 0 {
		t.Errorf("the member serves the group with an unverifiable control child: outbound %q, inbound %v", g.OutboundSPI, g.InboundSPIs)
	}
	if dropped != forged {
		t.Errorf("mpsad counted %d dropped datagrams for the %d forgeries: %v, group %v", dropped, forged, after.Drops, g.Drops)
	}
	if !refusal(text) {
		t.Errorf("mpsactl status does not say that the control child's protection cannot be verified (want %q and %q or %q):\n%s", refusalPhrase, refusalNotProtected, refusalCannotVerify, text)
	}
	if !refusal(m.log()) {
		t.Errorf("mpsad's log does not say that the control child's protection cannot be verified (want %q and %q or %q)", refusalPhrase, refusalNotProtected, refusalCannotVerify)
	}
}

// sendForgedPuts sends n forged MPSA_PUTs from the attacker's namespace:
// UDP from src:4501 (an address the attacker does not have, sent with
// IP_TRANSPARENT) to dst:4501, each a request of the IKE SA with SPIs
// spiI and spiR (the controller is its responder, so no I flag) with its
// own message ID, carrying one valid MPSA_PUT of forgedSPI.
func sendForgedPuts(t *testing.T, att *daemonNode, src, dst netip.Addr, spiI, spiR uint64, n int) {
	t.Helper()
	put := &mpsa.Put{SPI: forgedSPI, Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256},
		Nonce: make([]byte, 32), SKd: make([]byte, 32), Lifetime: 3600, Rollover1: 1, Rollover2: 2}
	_, _ = rand.Read(put.Nonce)
	_, _ = rand.Read(put.SKd)
	notify, err := put.Notify()
	if err != nil {
		t.Fatal(err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) }); err != nil {
			return err
		}
		return serr
	}}
	if err := att.ns.do(func() error {
		pc, err := lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(src, controlPort).String())
		if err != nil {
			return err
		}
		defer pc.Close()
		c := pc.(*net.UDPConn)
		for i := range n {
			msg, err := (&mpsa.Message{Header: mpsa.Header{SPIi: spiI, SPIr: spiR, Exchange: mpsa.ExchangeInformational, MessageID: uint32(0x7000 + i)},
				Payloads: []mpsa.Payload{notify}}).Marshal()
			if err != nil {
				return err
			}
			if _, err := c.WriteToUDPAddrPort(msg, netip.AddrPortFrom(dst, controlPort)); err != nil {
				return fmt.Errorf("send to %s: %w", dst, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("forge from %s to %s: %v", src, dst, err)
	}
}

// hasSPI reports whether a member's status holds the SA spi.
func hasSPI(st server.Status, spi uint32) bool {
	s := fmt.Sprintf("0x%08x", spi)
	for _, g := range st.Groups {
		if g.OutboundSPI == s || slices.Contains(g.InboundSPIs, s) {
			return true
		}
		for _, sa := range g.SAs {
			if sa.SPI == s {
				return true
			}
		}
	}
	return false
}

// dropTotal is the number of control datagrams a daemon dropped, for any
// reason, in all groups and outside them.
func dropTotal(st server.Status) uint64 {
	var n uint64
	for _, v := range st.Drops {
		n += v
	}
	for _, g := range st.Groups {
		for _, v := range g.Drops {
			n += v
		}
	}
	return n
}

// dropCount is the number of control datagrams a daemon dropped for reason.
func dropCount(st server.Status, reason string) uint64 {
	n := st.Drops[reason]
	for _, g := range st.Groups {
		n += g.Drops[reason]
	}
	return n
}

// policiesOfReqID describes the XFRM policies in the namespace with a
// template of reqid: direction and if_id of each.
func (n *guestNS) policiesOfReqID(t *testing.T, reqid uint32) string {
	t.Helper()
	ps, err := n.h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("%s: list policies: %v", n.name, err)
	}
	var out []string
	for _, p := range ps {
		for _, tm := range p.Tmpls {
			if uint32(tm.Reqid) == reqid {
				out = append(out, fmt.Sprintf("%s %s if_id %d", p.Dir, p.Src, p.Ifid))
				break
			}
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// statesWithSPI counts the XFRM states with spi in the namespace.
func (n *guestNS) statesWithSPI(t *testing.T, spi uint32) int {
	t.Helper()
	ss, err := n.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("%s: list states: %v", n.name, err)
	}
	c := 0
	for _, s := range ss {
		if uint32(s.Spi) == spi {
			c++
		}
	}
	return c
}

// sysctl writes a network sysctl of the namespace (path under
// /proc/sys/, as "net/ipv4/conf/all/rp_filter").
func (n *guestNS) sysctl(t *testing.T, path, value string) {
	t.Helper()
	if err := n.do(func() error { return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("%s: sysctl %s=%s: %v", n.name, path, value, err)
	}
}

// addRouteVia adds a route to dst through gateway gw.
func (n *guestNS) addRouteVia(t *testing.T, dst string, gw netip.Addr) {
	t.Helper()
	if err := n.h.RouteAdd(&netlink.Route{Dst: ipnet(dst), Gw: gw.AsSlice()}); err != nil {
		t.Fatalf("%s: route add %s via %s: %v", n.name, dst, gw, err)
	}
}
