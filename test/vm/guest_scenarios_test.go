//go:build mpsavm

package vm

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/kernel"
)

// member is one CPE namespace: an underlay veth "ul0" on the shared bridge
// and a LAN on a dummy interface "lan0".
type member struct {
	ns         *guestNS
	i          int
	ul4, ul6   netip.Addr
	lan4, lan6 netip.Addr
}

func (m *member) lanPrefix(v6 bool) netip.Prefix {
	if v6 {
		return netip.PrefixFrom(m.lan6, 64).Masked()
	}
	return netip.PrefixFrom(m.lan4, 24).Masked()
}

func (m *member) lan(v6 bool) netip.Addr {
	if v6 {
		return m.lan6
	}
	return m.lan4
}

func (m *member) underlay(v6 bool) netip.Addr {
	if v6 {
		return m.ul6
	}
	return m.ul4
}

// lanWatch are the prefixes that must never appear in plaintext on an
// underlay.
var lanWatch = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}

// topology builds n members joined by a bridge in a switch namespace. Each
// member routes the LAN ranges on-link to its underlay, so the XFRM
// policies decide what is protected. Every member's LAN addresses run a
// TCP echo server on port 7.
func topology(t *testing.T, label string, n int) []*member {
	t.Helper()
	sw := newNS(t, label+"-sw")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := sw.h.LinkAdd(br); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	sw.up(t, "br0")
	var ms []*member
	for i := 1; i <= n; i++ {
		ns := newNS(t, fmt.Sprintf("%s-m%d", label, i))
		port := fmt.Sprintf("p%d", i)
		ns.vethTo(t, "ul0", sw, port)
		if err := sw.h.LinkSetMaster(sw.link(t, port), sw.link(t, "br0")); err != nil {
			t.Fatalf("enslave %s: %v", port, err)
		}
		if err := ns.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}}); err != nil {
			t.Fatalf("dummy: %v", err)
		}
		ns.up(t, "lan0")
		m := &member{
			ns: ns, i: i,
			ul4:  netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i)),
			ul6:  netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", i)),
			lan4: netip.MustParseAddr(fmt.Sprintf("10.%d.0.1", i)),
			lan6: netip.MustParseAddr(fmt.Sprintf("fd00:%d::1", i)),
		}
		ns.addAddr(t, "ul0", m.ul4.String()+"/24")
		ns.addAddr(t, "ul0", m.ul6.String()+"/64")
		ns.addAddr(t, "lan0", m.lan4.String()+"/24")
		ns.addAddr(t, "lan0", m.lan6.String()+"/64")
		ns.addRoute(t, "10.0.0.0/8", "ul0")
		ns.addRoute(t, "fd00::/8", "ul0")
		ns.echoServer(t, netip.AddrPortFrom(m.lan4, 7))
		ns.echoServer(t, netip.AddrPortFrom(m.lan6, 7))
		ns.growStateHash(t)
		ms = append(ms, m)
	}
	return ms
}

// newSA returns a shared SA with random keys for a proposal.
func newSA(t *testing.T, spi uint32, proposal string) xfrm.SA {
	t.Helper()
	s, err := mpsa.ParseProposal(proposal)
	if err != nil {
		t.Fatal(err)
	}
	sa := xfrm.SA{SPI: spi, Suite: s, EncrKey: make([]byte, s.EncrKeyBytes()), IntegKey: make([]byte, s.IntegKeyBytes())}
	_, _ = rand.Read(sa.EncrKey)
	_, _ = rand.Read(sa.IntegKey)
	return sa
}

// backends starts a kernel backend in every member.
func backends(t *testing.T, ctx context.Context, ms []*member, cfg func(m *member) kernel.Config) []*kernel.Backend {
	t.Helper()
	var bs []*kernel.Backend
	for _, m := range ms {
		c := cfg(m)
		c.NetNS = m.ns.path()
		b, err := kernel.New(ctx, c)
		if err != nil {
			t.Fatalf("member %d: %v", m.i, err)
		}
		t.Cleanup(func() { _ = b.Close() })
		bs = append(bs, b)
	}
	return bs
}

// peersOf is the peer table of member self: every other member's LAN
// prefixes of the inner families, via its underlay of the outer family.
func peersOf(ms []*member, self *member, inner []bool, outer6 bool) []xfrm.Peer {
	var ps []xfrm.Peer
	for _, o := range ms {
		if o == self {
			continue
		}
		for _, v6 := range inner {
			ps = append(ps, xfrm.Peer{Prefix: o.lanPrefix(v6), Underlay: o.underlay(outer6)})
		}
	}
	return ps
}

// checkTraffic pings and runs a TCP echo between the LANs of every ordered
// pair of members.
func checkTraffic(t *testing.T, ctx context.Context, ms []*member, inner []bool) {
	t.Helper()
	for _, a := range ms {
		for _, b := range ms {
			if a == b {
				continue
			}
			for _, v6 := range inner {
				src, dst := a.lan(v6), b.lan(v6)
				n, err := a.ns.ping(src, dst, 3)
				if err != nil {
					t.Errorf("ping %s -> %s: %v", src, dst, err)
				} else if n != 3 {
					t.Errorf("ping %s -> %s: %d of 3 answered", src, dst, n)
				}
				if err := a.ns.tcpEcho(ctx, src, netip.AddrPortFrom(dst, 7), 64<<10); err != nil {
					t.Error(err)
				}
			}
		}
	}
}

// installEverywhere installs sa in every member's data plane, inbound and
// as the outbound SA, with the member's LAN prefixes of the inner families
// as local prefixes and the other members as peers over outer6.
func installEverywhere[D xfrm.DataPlane](t *testing.T, ctx context.Context, ms []*member, dps []D, sa xfrm.SA, inner []bool, outer6 bool) {
	t.Helper()
	for j, m := range ms {
		if err := dps[j].InstallInbound(ctx, sa); err != nil {
			t.Fatalf("member %d: %v", m.i, err)
		}
		var local []netip.Prefix
		for _, v6 := range inner {
			local = append(local, m.lanPrefix(v6))
		}
		if err := dps[j].SetPeers(ctx, local, peersOf(ms, m, inner, outer6)); err != nil {
			t.Fatalf("member %d: %v", m.i, err)
		}
		if err := dps[j].SetOutbound(ctx, sa.SPI); err != nil {
			t.Fatalf("member %d: %v", m.i, err)
		}
	}
}

// closeAndCheckClean closes every member's backend, checks that the
// policies (the kill switch) stay and the states go, then flushes and
// checks that no state or policy is left.
func closeAndCheckClean(t *testing.T, ms []*member, bs []*kernel.Backend) {
	t.Helper()
	for j, b := range bs {
		_, before := ms[j].ns.xfrmCounts(t)
		if err := b.Close(); err != nil {
			t.Errorf("member %d: close: %v", ms[j].i, err)
		}
		if s, p := ms[j].ns.xfrmCounts(t); s != 0 || p != before {
			t.Errorf("member %d: after Close %d states and %d policies; want 0 and the %d policies kept", ms[j].i, s, p, before)
		}
	}
	for j, m := range ms {
		b, err := kernel.New(context.Background(), kernel.Config{NetNS: m.ns.path(), Underlay: []netip.Addr{m.ul4, m.ul6}})
		if err != nil {
			t.Fatalf("member %d: adopt: %v", m.i, err)
		}
		if err := b.Flush(context.Background()); err != nil {
			t.Errorf("member %d: flush: %v", ms[j].i, err)
		}
		if s, p := m.ns.xfrmCounts(t); s != 0 || p != 0 {
			t.Errorf("member %d: %d states and %d policies left after Flush", m.i, s, p)
		}
	}
}

// TestSharedSA installs one shared SA in three members for each of the
// four inner/outer address-family combinations (each with a different
// algorithm suite), and checks ping and TCP between every pair of LANs,
// ESP and no plaintext on every underlay, the per-SPI counters, and that
// Close leaves nothing behind.
func TestSharedSA(t *testing.T) {
	ms := topology(t, "ssa", 3)
	for i, tc := range []struct {
		inner6, outer6 bool
		proposal       string
		counterMode    bool
	}{
		{false, false, "aes256-sha256", false},
		{true, true, "aes128-sha1", false},
		{false, true, "aes256-sha512", false},
		{true, false, "aes128gcm16", true},
	} {
		name := fmt.Sprintf("inner%d-outer%d-%s", ipv(tc.inner6), ipv(tc.outer6), tc.proposal)
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			spi := uint32(0x10000 + i)
			sa := newSA(t, spi, tc.proposal)
			bs := backends(t, ctx, ms, func(m *member) kernel.Config {
				return kernel.Config{Underlay: []netip.Addr{m.underlay(tc.outer6)}, AllowCounterMode: tc.counterMode}
			})
			inner := []bool{tc.inner6}
			installEverywhere(t, ctx, ms, bs, sa, inner, tc.outer6)
			var sniffers []*sniffer
			for _, m := range ms {
				sniffers = append(sniffers, m.ns.sniff(t, "ul0", lanWatch))
			}
			checkTraffic(t, ctx, ms, inner)
			for j, m := range ms {
				sniffers[j].check(t, fmt.Sprintf("member %d", m.i), true)
				cs, err := bs[j].Counters(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(cs) != 1 {
					t.Errorf("member %d: counters %+v, want traffic both ways on %08x", m.i, cs, spi)
					continue
				}
				if cs[0].SPI != spi || cs[0].InPackets == 0 || cs[0].OutPackets == 0 || cs[0].InBytes == 0 || cs[0].OutBytes == 0 {
					t.Errorf("member %d: counters %+v, want traffic both ways on %08x", m.i, cs, spi)
				}
				if esp := sniffers[j].esp.Load(); uint64(esp) != cs[0].OutPackets {
					t.Errorf("member %d: %d ESP frames left ul0 but the outbound states counted %d packets", m.i, esp, cs[0].OutPackets)
				}
				if cs[0].InErrors != 0 {
					t.Errorf("member %d: %d inbound errors", m.i, cs[0].InErrors)
				}
				t.Logf("member %d: %d ESP frames out; SPI %08x in %d pkts, out %d pkts", m.i, sniffers[j].esp.Load(), spi, cs[0].InPackets, cs[0].OutPackets)
			}
			closeAndCheckClean(t, ms, bs)
		})
	}
}

func ipv(v6 bool) int {
	if v6 {
		return 6
	}
	return 4
}

// TestRollover runs numbered UDP streams around three members every
// millisecond while the shared SA is replaced three times in a row: each
// time the new SA inbound everywhere, then each member's outbound switch in
// turn, then the old SA removed everywhere. Not one datagram may be lost
// or refused by the kernel.
func TestRollover(t *testing.T) {
	const rounds = 3
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ms := topology(t, "roll", 3)
	var sas []xfrm.SA
	for r := 0; r <= rounds; r++ {
		sas = append(sas, newSA(t, 0x20001+uint32(r), "aes256-sha256"))
	}
	bs := backends(t, ctx, ms, func(m *member) kernel.Config {
		return kernel.Config{Underlay: []netip.Addr{m.ul4, m.ul6}}
	})
	inner := []bool{false, true}
	for j, m := range ms {
		if err := bs[j].InstallInbound(ctx, sas[0]); err != nil {
			t.Fatal(err)
		}
		// Peers reached over IPv6 underlay for member 3, IPv4 for the
		// others: both outer families take part in the rollover.
		if err := bs[j].SetPeers(ctx, []netip.Prefix{m.lanPrefix(false), m.lanPrefix(true)}, peersOf(ms, m, inner, m.i == 3)); err != nil {
			t.Fatal(err)
		}
		if err := bs[j].SetOutbound(ctx, sas[0].SPI); err != nil {
			t.Fatal(err)
		}
	}
	var sniffers []*sniffer
	for _, m := range ms {
		sniffers = append(sniffers, m.ns.sniff(t, "ul0", lanWatch))
	}
	var streams []*udpStream
	for j, a := range ms {
		b := ms[(j+1)%len(ms)]
		v6 := j == 1
		streams = append(streams, startUDPStream(t, a.ns, a.lan(v6), b.ns, netip.AddrPortFrom(b.lan(v6), 9000), time.Millisecond))
	}
	progress := func(n int) {
		t.Helper()
		targets := make([]int, len(streams))
		for i, s := range streams {
			targets[i] = s.received() + n
		}
		if err := waitFor(ctx, func() bool {
			for i, s := range streams {
				if s.received() < targets[i] {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("streams stalled: %v", err)
		}
	}
	var tl timeline
	progress(100)
	for r := 1; r <= rounds; r++ {
		old, next := sas[r-1], sas[r]
		for j, m := range ms {
			tl.mark("round %d: member %d: install inbound %08x", r, m.i, next.SPI)
			if err := bs[j].InstallInbound(ctx, next); err != nil {
				t.Fatal(err)
			}
		}
		progress(30)
		for j, m := range ms {
			tl.mark("round %d: member %d: outbound %08x", r, m.i, next.SPI)
			if err := bs[j].SetOutbound(ctx, next.SPI); err != nil {
				t.Fatal(err)
			}
			progress(30)
		}
		// Both SPIs carried traffic into every member. The streams count
		// what their receivers read, which in a busy emulated guest can
		// trail what the kernel has already decrypted, or not yet: give
		// the new SPI's first packets a few seconds to show.
		for j, m := range ms {
			var cs []xfrm.Counters
			both := func() bool {
				var err error
				if cs, err = bs[j].Counters(ctx); err != nil {
					t.Fatal(err)
				}
				return len(cs) == 2 && cs[0].InPackets > 0 && cs[1].InPackets > 0
			}
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			err := waitFor(wctx, both)
			wcancel()
			if err != nil {
				t.Errorf("round %d: member %d: counters during rollover %+v, want inbound traffic on both SPIs", r, m.i, cs)
			}
		}
		for j, m := range ms {
			// Old and new: inbound on two underlays, outbound to two peers.
			if s, _ := m.ns.xfrmCounts(t); s != 8 {
				t.Errorf("round %d: member %d: %d states before removing the old SA, want 8", r, m.i, s)
			}
			tl.mark("round %d: member %d: remove %08x", r, m.i, old.SPI)
			if err := bs[j].Remove(ctx, old.SPI); err != nil {
				t.Fatal(err)
			}
			if s, _ := m.ns.xfrmCounts(t); s != 4 {
				t.Errorf("round %d: member %d: %d states after removing the old SA, want 4", r, m.i, s)
			}
		}
		progress(30)
	}
	tl.mark("rollovers done")
	last := sas[rounds]
	lost := false
	for i, s := range streams {
		sent, got := s.finish(5 * time.Second)
		t.Logf("stream %d: sent %d, received %d, send errors %d", i, sent, got, s.sendErrs.Load())
		if e := s.sendErrs.Load(); e != 0 {
			t.Errorf("stream %d: %d send errors, first: %v", i, e, s.firstErr.Load())
		}
		if got != sent {
			t.Errorf("stream %d: sent %d datagrams, received %d: %d lost during the rollovers: %v", i, sent, got, sent-got, s.missing())
			lost = true
		}
	}
	if lost {
		t.Logf("steps:\n%s", tl.String())
		for _, m := range ms {
			t.Logf("member %d: non-zero kernel counters:\n%s", m.i, m.ns.netStats())
		}
	}
	for j, m := range ms {
		sniffers[j].check(t, fmt.Sprintf("member %d", m.i), true)
		cs, err := bs[j].Counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || cs[0].SPI != last.SPI {
			t.Errorf("member %d: counters after the last rollover: %+v, want only %08x", m.i, cs, last.SPI)
		}
	}
	closeAndCheckClean(t, ms, bs)
}

// TestRouteBased uses an XFRM interface in every member: the LAN routes to
// the peers point into it, IPv4 and IPv6 inside IPv4.
func TestRouteBased(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := topology(t, "rb", 3)
	sa := newSA(t, 0x30001, "aes256-sha256")
	const ifname, ifid = "mpsa0", 0x42
	bs := backends(t, ctx, ms, func(m *member) kernel.Config {
		return kernel.Config{Underlay: []netip.Addr{m.ul4}, Interface: ifname, IfID: ifid}
	})
	inner := []bool{false, true}
	for j, m := range ms {
		if name, idx := bs[j].Interface(); name != ifname || idx == 0 {
			t.Fatalf("member %d: Interface() = %q, %d", m.i, name, idx)
		}
	}
	installEverywhere(t, ctx, ms, bs, sa, inner, false)
	var sniffers []*sniffer
	for _, m := range ms {
		for _, o := range ms {
			if o != m {
				m.ns.addRoute(t, o.lanPrefix(false).String(), ifname)
				m.ns.addRoute(t, o.lanPrefix(true).String(), ifname)
			}
		}
		sniffers = append(sniffers, m.ns.sniff(t, "ul0", lanWatch))
	}
	checkTraffic(t, ctx, ms, inner)
	for j, m := range ms {
		sniffers[j].check(t, fmt.Sprintf("member %d", m.i), true)
		st := m.ns.link(t, ifname).Attrs().Statistics
		if st == nil || st.RxPackets == 0 || st.TxPackets == 0 {
			t.Errorf("member %d: XFRM interface statistics %+v, want packets both ways", m.i, st)
		}
	}
	for j, m := range ms {
		if err := bs[j].Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := m.ns.h.LinkByName(ifname); err != nil {
			t.Errorf("member %d: %s gone after Close; the kill switch needs it: %v", m.i, ifname, err)
		}
		b, err := kernel.New(ctx, kernel.Config{NetNS: m.ns.path(), Underlay: []netip.Addr{m.ul4}, Interface: ifname, IfID: ifid})
		if err != nil {
			t.Fatalf("member %d: adopt the interface: %v", m.i, err)
		}
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := m.ns.h.LinkByName(ifname); err == nil {
			t.Errorf("member %d: %s still there after Flush", m.i, ifname)
		}
		if s, p := m.ns.xfrmCounts(t); s != 0 || p != 0 {
			t.Errorf("member %d: %d states and %d policies left after Flush", m.i, s, p)
		}
	}
}

// TestAdoptedOnStart simulates a crash (a backend never closed) and checks
// that the next start keeps its own policies (out policies now blocking),
// removes its own states, and leaves a foreign state and policy and
// another instance's objects alone; Flush then removes its policies, and
// the route-based instance adopts its interface, which its Flush removes.
// An XFRM interface of the configured name without the group's alias (the
// operator's) is refused, whatever its if_id, and left as it was; one
// with the alias and another if_id is replaced.
func TestAdoptedOnStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := newNS(t, "left")
	cfg := kernel.Config{NetNS: ns.path(), Underlay: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	crashed, err := kernel.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sa := newSA(t, 0x40001, "aes128-sha256")
	if err := crashed.InstallInbound(ctx, sa); err != nil {
		t.Fatal(err)
	}
	peers := []xfrm.Peer{
		{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Underlay: netip.MustParseAddr("192.0.2.2")},
		{Prefix: netip.MustParsePrefix("fd00:3::/64"), Underlay: netip.MustParseAddr("2001:db8::3")},
	}
	if err := crashed.SetPeers(ctx, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd00:1::/64")}, peers); err != nil {
		t.Fatal(err)
	}
	if err := crashed.SetOutbound(ctx, sa.SPI); err != nil {
		t.Fatal(err)
	}
	// A route-based instance with another reqid leaves its interface too.
	rb, err := kernel.New(ctx, kernel.Config{NetNS: ns.path(), Underlay: cfg.Underlay, ReqID: 0x6d705a02, Priority: 7100, Interface: "mpsa9", IfID: 9})
	if err != nil {
		t.Fatal(err)
	}
	if err := rb.InstallInbound(ctx, newSA(t, 0x40002, "aes128-sha256")); err != nil {
		t.Fatal(err)
	}
	// Foreign objects, as charon would have them.
	foreignState := &netlink.XfrmState{
		Src: netip.MustParseAddr("192.0.2.1").AsSlice(), Dst: netip.MustParseAddr("192.0.2.9").AsSlice(),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Spi: 0xc0000001, Reqid: 1,
		Crypt: &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: make([]byte, 16)},
		Auth:  &netlink.XfrmStateAlgo{Name: "hmac(sha256)", Key: make([]byte, 32), TruncateLen: 128},
	}
	if err := ns.h.XfrmStateAdd(foreignState); err != nil {
		t.Fatal(err)
	}
	foreignPolicy := &netlink.XfrmPolicy{
		Src: ipnet("10.1.0.0/24"), Dst: ipnet("10.9.0.0/24"), Dir: netlink.XFRM_DIR_OUT, Priority: 180000,
		Tmpls: []netlink.XfrmPolicyTmpl{{Src: foreignState.Src, Dst: foreignState.Dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: 1}},
	}
	if err := ns.h.XfrmPolicyAdd(foreignPolicy); err != nil {
		t.Fatal(err)
	}
	states, policies := ns.xfrmCounts(t)
	// Ours: 2 inbound + 2 outbound (+2 inbound of rb); 2 prefix pairs x 3
	// policies and a fallback block policy per peer prefix.
	if states != 7 || policies != 9 {
		t.Fatalf("before restart: %d states, %d policies; want 7 and 9", states, policies)
	}

	restarted, err := kernel.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	states, policies = ns.xfrmCounts(t)
	if states != 3 || policies != 9 {
		t.Errorf("after restart: %d states, %d policies; want the foreign state, rb's two states, our 8 policies and the foreign one", states, policies)
	}
	pols, err := ns.h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pols {
		if p.Priority == kernel.DefaultPriority && p.Dir == netlink.XFRM_DIR_OUT && (len(p.Tmpls) != 0 || p.Action != netlink.XFRM_POLICY_BLOCK) {
			t.Errorf("adopted out policy %v -> %v still names a template", p.Src, p.Dst)
		}
	}
	if _, err := ns.h.XfrmStateGet(foreignState); err != nil {
		t.Errorf("foreign state gone: %v", err)
	}
	if err := restarted.Flush(ctx); err != nil {
		t.Error(err)
	}
	rbRestarted, err := kernel.New(ctx, kernel.Config{NetNS: ns.path(), Underlay: cfg.Underlay, ReqID: 0x6d705a02, Priority: 7100, Interface: "mpsa9", IfID: 9})
	if err != nil {
		t.Fatalf("restart route-based instance over its leftover interface: %v", err)
	}
	if name, _ := rbRestarted.Interface(); name != "mpsa9" {
		t.Errorf("route-based instance did not adopt mpsa9")
	}
	if err := rbRestarted.Flush(ctx); err != nil {
		t.Error(err)
	}
	if _, err := ns.h.LinkByName("mpsa9"); err == nil {
		t.Error("mpsa9 still there after Flush")
	}
	states, policies = ns.xfrmCounts(t)
	if states != 1 || policies != 1 {
		t.Errorf("at the end: %d states, %d policies; want only the foreign ones", states, policies)
	}

	// XFRM interfaces of the configured name that are not the group's
	// (no alias: the operator's) are neither adopted, whatever their
	// if_id, nor replaced; one with the group's alias and another if_id
	// is replaced.
	if err := ns.h.LinkAdd(&netlink.Xfrmi{LinkAttrs: netlink.LinkAttrs{Name: "op0"}, Ifid: 8}); err != nil {
		t.Fatal(err)
	}
	for _, ifid := range []uint32{8, 5} {
		b, err := kernel.New(ctx, kernel.Config{NetNS: ns.path(), Underlay: cfg.Underlay, Group: "g", Interface: "op0", IfID: ifid})
		if err == nil || !strings.Contains(err.Error(), "op0") || !strings.Contains(err.Error(), "not this group's") {
			t.Errorf("if_id %d: New over the operator's op0: %v; want a refusal naming it", ifid, err)
		}
		if b != nil {
			_ = b.Flush(ctx)
		}
		if l, err := ns.h.LinkByName("op0"); err != nil {
			t.Errorf("if_id %d: the operator's op0 is gone: %v", ifid, err)
		} else if x, ok := l.(*netlink.Xfrmi); !ok || x.Ifid != 8 || l.Attrs().Alias != "" {
			t.Errorf("if_id %d: the operator's op0 was changed: %+v", ifid, l)
		}
	}
	if err := ns.h.LinkAdd(&netlink.Xfrmi{LinkAttrs: netlink.LinkAttrs{Name: "mpsa7"}, Ifid: 3}); err != nil {
		t.Fatal(err)
	}
	if err := ns.h.LinkSetAlias(ns.link(t, "mpsa7"), kernel.InterfaceAlias("g")); err != nil {
		t.Fatal(err)
	}
	b7, err := kernel.New(ctx, kernel.Config{NetNS: ns.path(), Underlay: cfg.Underlay, Group: "g", Interface: "mpsa7", IfID: 7})
	if err != nil {
		t.Fatalf("New over the group's own mpsa7 with another if_id: %v", err)
	}
	if x, ok := ns.link(t, "mpsa7").(*netlink.Xfrmi); !ok || x.Ifid != 7 {
		t.Errorf("the group's mpsa7 was not replaced with if_id 7")
	}
	if err := b7.Flush(ctx); err != nil {
		t.Error(err)
	}
}

// TestMissingAlgorithmNamed: the guest deliberately does not load the
// xcbc module (and has no modprobe), so an aes-aesxcbc SA must fail with an
// error naming xcbc(aes).
func TestMissingAlgorithmNamed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := newNS(t, "alg")
	b, err := kernel.New(ctx, kernel.Config{NetNS: ns.path(), Underlay: []netip.Addr{netip.MustParseAddr("192.0.2.1")}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.InstallInbound(ctx, newSA(t, 0x50001, "aes128-aesxcbc"))
	if err == nil {
		t.Fatal("an SA with xcbc(aes) was installed although its module is not loaded")
	}
	if !strings.Contains(err.Error(), "xcbc(aes)") || strings.Contains(err.Error(), "encryption algorithm cbc(aes)") {
		t.Errorf("error does not name xcbc(aes) as the missing one: %v", err)
	}
	t.Log(err)
	if s, p := ns.xfrmCounts(t); s != 0 || p != 0 {
		t.Errorf("%d states, %d policies left after the failed install", s, p)
	}
}

// TestRemoveOutboundBlocks removes the outbound SA at one member: from then
// on its traffic for the peers is blocked (sends fail with EPERM), never
// sent in plaintext; the peer table emptied removes the policies, Close the
// rest.
func TestRemoveOutboundBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := topology(t, "rm", 2)
	sa := newSA(t, 0x60001, "aes128-sha256")
	bs := backends(t, ctx, ms, func(m *member) kernel.Config {
		return kernel.Config{Underlay: []netip.Addr{m.ul4}}
	})
	installEverywhere(t, ctx, ms, bs, sa, []bool{false}, false)
	a, b := ms[0], ms[1]
	if n, err := a.ns.ping(a.lan4, b.lan4, 1); err != nil || n != 1 {
		t.Fatalf("ping before removal: %d answered, %v", n, err)
	}
	sn := a.ns.sniff(t, "ul0", lanWatch)
	if err := bs[0].Remove(ctx, sa.SPI); err != nil {
		t.Fatal(err)
	}
	n, err := a.ns.ping(a.lan4, b.lan4, 2)
	if n != 0 {
		t.Errorf("%d pings answered after the outbound SA was removed", n)
	}
	t.Logf("ping after removal: %v", err)
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("ping after removal: %v; want the block policy to refuse the send with EPERM", err)
	}
	if err := a.ns.tcpEcho(ctx, a.lan4, netip.AddrPortFrom(b.lan4, 7), 1000); err == nil {
		t.Error("TCP worked after the outbound SA was removed")
	}
	sn.check(t, "member 1 after removal", false)
	if cs, err := bs[0].Counters(ctx); err != nil || len(cs) != 0 {
		t.Errorf("counters after removal: %+v, %v; want none", cs, err)
	}
	states, policies := a.ns.xfrmCounts(t)
	if states != 0 || policies != 4 {
		t.Errorf("after removal: %d states, %d policies; want 0 states and the 4 policies (out blocking, and the fallback)", states, policies)
	}
	if err := bs[0].SetPeers(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if states, policies := a.ns.xfrmCounts(t); states != 0 || policies != 0 {
		t.Errorf("after emptying the peer table: %d states, %d policies", states, policies)
	}
	closeAndCheckClean(t, ms, bs)
}

// TestTamperedESPCounted sends ESP packets with the shared SPI but a wrong
// ICV to a member: the kernel drops them and the backend reports them as
// inbound errors of that SPI, while real traffic still flows.
func TestTamperedESPCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := topology(t, "tamper", 2)
	sa := newSA(t, 0x70001, "aes128-sha256")
	bs := backends(t, ctx, ms, func(m *member) kernel.Config {
		return kernel.Config{Underlay: []netip.Addr{m.ul4}}
	})
	installEverywhere(t, ctx, ms, bs, sa, []bool{false}, false)
	a, b := ms[0], ms[1]
	const forged = 5
	var c net.PacketConn
	if err := b.ns.do(func() (err error) {
		c, err = net.ListenPacket("ip4:50", b.ul4.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < forged; i++ {
		// SPI, sequence number, a 16-byte IV, two cipher blocks and a
		// 16-byte ICV, all but the SPI random.
		pkt := make([]byte, 8+16+32+16)
		_, _ = rand.Read(pkt)
		binary.BigEndian.PutUint32(pkt, sa.SPI)
		if _, err := c.WriteTo(pkt, &net.IPAddr{IP: a.ul4.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	// Real traffic after the forged packets: once it is answered, the
	// forged ones have been processed.
	if n, err := b.ns.ping(b.lan4, a.lan4, 1); err != nil || n != 1 {
		t.Fatalf("ping after forged packets: %d answered, %v", n, err)
	}
	// Decryption may complete asynchronously: wait until the errors are
	// counted (or the deadline passes), then check the exact figure.
	var cs []xfrm.Counters
	var cerr error
	werr := waitFor(ctx, func() bool {
		cs, cerr = bs[0].Counters(ctx)
		return cerr != nil || (len(cs) == 1 && cs[0].InErrors >= forged)
	})
	if cerr != nil {
		t.Fatalf("counters: %v", cerr)
	}
	if werr != nil {
		t.Errorf("waiting for %d inbound errors on %08x: %v; counters %+v", forged, sa.SPI, werr, cs)
	}
	if len(cs) != 1 {
		t.Fatalf("counters %+v, want %d inbound errors on %08x", cs, forged, sa.SPI)
	}
	if cs[0].InErrors != forged {
		t.Errorf("counters %+v, want %d inbound errors on %08x", cs, forged, sa.SPI)
	}
	if cs[0].InPackets == 0 {
		t.Errorf("counters %+v, want the real packets counted", cs)
	}
	closeAndCheckClean(t, ms, bs)
}

// TestCaptureSeesPlaintext is the control for every "no plaintext" check:
// without any SA, LAN traffic leaves the underlay in the clear, and the
// capture must count it.
func TestCaptureSeesPlaintext(t *testing.T) {
	ms := topology(t, "ctl", 2)
	a, b := ms[0], ms[1]
	sn := a.ns.sniff(t, "ul0", lanWatch)
	// IPv4 only: the other member answers ARP for its LAN address on the
	// underlay, but IPv6 neighbor discovery only for addresses on that
	// interface.
	if n, err := a.ns.ping(a.lan4, b.lan4, 2); err != nil || n != 2 {
		t.Fatalf("plaintext ping %s -> %s: %d of 2 answered, %v", a.lan4, b.lan4, n, err)
	}
	sn.checkComplete(t, "member 1")
	if p := sn.plain.Load(); p < 2 {
		t.Errorf("capture counted %d plaintext frames, want at least the two echo requests", p)
	}
	if e := sn.esp.Load(); e != 0 {
		t.Errorf("capture counted %d ESP frames without any SA", e)
	}
}

// TestHostTrafficNotLeaked: traffic a member originates from an address
// outside its local prefixes (its underlay address) towards a peer's LAN
// matches no LAN-to-LAN policy; the fallback block policy drops it instead
// of letting it leave in plaintext, while LAN-to-LAN traffic flows.
func TestHostTrafficNotLeaked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := topology(t, "host", 2)
	sa := newSA(t, 0x70001, "aes256-sha256")
	bs := backends(t, ctx, ms, func(m *member) kernel.Config {
		return kernel.Config{Underlay: []netip.Addr{m.ul4, m.ul6}}
	})
	inner := []bool{false, true}
	installEverywhere(t, ctx, ms, bs, sa, inner, false)
	a, b := ms[0], ms[1]
	sn := a.ns.sniff(t, "ul0", lanWatch)
	for _, v6 := range inner {
		if n, err := a.ns.ping(a.lan(v6), b.lan(v6), 2); err != nil || n != 2 {
			t.Errorf("LAN to LAN (v6=%v): %d of 2 answered, %v", v6, n, err)
		}
		n, err := a.ns.ping(a.underlay(v6), b.lan(v6), 2)
		if n != 0 {
			t.Errorf("from the underlay address to a peer LAN (v6=%v): %d answered; want the fallback policy to block it", v6, n)
		}
		t.Logf("from %s to %s: %v", a.underlay(v6), b.lan(v6), err)
	}
	sn.check(t, "member 1", true)
	closeAndCheckClean(t, ms, bs)
}
