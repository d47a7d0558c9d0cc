//go:build mpsavm

package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/groupid"
	"github.com/mpsa/mpsa/xfrm/kernel"
)

// xfrmStat reads one counter of /proc/net/xfrm_stat in the namespace.
func (n *guestNS) xfrmStat(t *testing.T, name string) int {
	t.Helper()
	v := -1
	if err := n.do(func() error {
		data, err := os.ReadFile("/proc/thread-self/net/xfrm_stat")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(data), "\n") {
			if fs := strings.Fields(l); len(fs) == 2 && fs[0] == name {
				v, err = strconv.Atoi(fs[1])
				return err
			}
		}
		return fmt.Errorf("no %s in xfrm_stat", name)
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// groupCounts counts a group's states (by reqid) and policies (by
// priority) in a namespace.
func (n *guestNS) groupCounts(t *testing.T, id groupid.ID) (states, policies int) {
	t.Helper()
	ss, err := n.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if uint32(s.Reqid) == id.ReqID() {
			states++
		}
	}
	ps, err := n.h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if uint32(p.Priority) == id.Priority() || uint32(p.Priority) == id.Priority()+1 {
			policies++
		}
	}
	return states, policies
}

// outboundSeq is the outbound sequence number of the state to dst with spi.
func (n *guestNS) outboundSeq(t *testing.T, dst netip.Addr, spi uint32) uint32 {
	t.Helper()
	ss, err := n.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if uint32(s.Spi) == spi && s.Dst.Equal(dst.AsSlice()) && s.Replay != nil {
			return s.Replay.OSeq
		}
	}
	t.Fatalf("no outbound state %08x to %s", spi, dst)
	return 0
}

// startMember starts (or restarts: adopts) a's backend and gives it sa,
// the peer table and the outbound SA.
func startMember(t *testing.T, ctx context.Context, cfg kernel.Config, sa xfrm.SA, local []netip.Prefix, peers []xfrm.Peer) *kernel.Backend {
	t.Helper()
	b, err := kernel.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { return b.InstallInbound(ctx, sa) },
		func() error { return b.SetPeers(ctx, local, peers) },
		func() error { return b.SetOutbound(ctx, sa.SPI) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestKillSwitchUnderTraffic: a UDP stream (1 datagram/ms, IPv4 and IPv6
// LAN to LAN) runs while member 1's backend is stopped (Close), restarted,
// abandoned without Close (a SIGKILLed mpsad) and restarted again: the
// capture on its underlay sees ESP and not one plaintext LAN frame, and
// the streams flow again after each restart.
func TestKillSwitchUnderTraffic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ms := topology(t, "ksw", 2)
	sa := newSA(t, 0x70001, "aes256-sha256")
	bs := backends(t, ctx, ms[1:], func(m *member) kernel.Config {
		return kernel.Config{Underlay: []netip.Addr{m.ul4}}
	})
	a, b := ms[0], ms[1]
	inner := []bool{false, true}
	local := []netip.Prefix{a.lanPrefix(false), a.lanPrefix(true)}
	cfg := kernel.Config{NetNS: a.ns.path(), Underlay: []netip.Addr{a.ul4}}
	for _, step := range []func() error{
		func() error { return bs[0].InstallInbound(ctx, sa) },
		func() error {
			return bs[0].SetPeers(ctx, []netip.Prefix{b.lanPrefix(false), b.lanPrefix(true)}, peersOf(ms, b, inner, false))
		},
		func() error { return bs[0].SetOutbound(ctx, sa.SPI) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	ba := startMember(t, ctx, cfg, sa, local, peersOf(ms, a, inner, false))
	sn := a.ns.sniff(t, "ul0", lanWatch)
	s4 := startUDPStream(t, a.ns, a.lan4, b.ns, netip.AddrPortFrom(b.lan4, 9001), time.Millisecond)
	s6 := startUDPStream(t, a.ns, a.lan6, b.ns, netip.AddrPortFrom(b.lan6, 9001), time.Millisecond)
	flowing := func(what string) {
		t.Helper()
		n4, n6 := s4.received(), s6.received()
		if err := waitFor(ctx, func() bool { return s4.received() > n4+20 && s6.received() > n6+20 }); err != nil {
			t.Fatalf("%s: the streams do not flow (%d, %d received)", what, s4.received(), s6.received())
		}
	}
	stopped := func(what string) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		n4, n6 := s4.received(), s6.received()
		time.Sleep(300 * time.Millisecond)
		if s4.received() != n4 || s6.received() != n6 {
			t.Errorf("%s: datagrams arrived while no backend ran (%d, %d more)", what, s4.received()-n4, s6.received()-n6)
		}
		if _, p := a.ns.xfrmCounts(t); p == 0 {
			t.Errorf("%s: no policy left", what)
		}
	}
	flowing("first start")
	if err := ba.Close(); err != nil {
		t.Fatal(err)
	}
	stopped("stopped")
	killed := startMember(t, ctx, cfg, sa, local, peersOf(ms, a, inner, false))
	flowing("restarted")
	// SIGKILL: nothing runs Close (the backend is abandoned); the states
	// stay and the kernel goes on protecting the streams with them until
	// the next start adopts the policies and replaces the states.
	_ = killed
	time.Sleep(200 * time.Millisecond)
	ba = startMember(t, ctx, cfg, sa, local, peersOf(ms, a, inner, false))
	flowing("restarted after a kill")
	s4.finish(time.Second)
	s6.finish(time.Second)
	sn.check(t, "member 1", true)
	if err := ba.Flush(ctx); err != nil {
		t.Error(err)
	}
}

// TestSeqNearWrap starts the outbound state 20 sequence numbers before
// 2^32 (a sequence-number record left at that number in the lease
// directory, as an earlier run would): 19 datagrams go out, then the
// kernel refuses
// to wrap (no ESN, no OSEQ_MAY_WRAP): the sends fail with EOVERFLOW,
// XfrmOutStateSeqError counts them, nothing leaves in plaintext, the
// soft expiry is reported (Warnings), and a state added again for the SPI
// (the peer left and came back) continues from where the last one ended
// instead of starting over.
func TestSeqNearWrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := topology(t, "seq", 2)
	a, b := ms[0], ms[1]
	sa := newSA(t, 0x70101, "aes128-sha256")
	const start = 1<<32 - 20
	bb := startMember(t, ctx, kernel.Config{NetNS: b.ns.path(), Underlay: []netip.Addr{b.ul4}}, sa, []netip.Prefix{b.lanPrefix(false)}, peersOf(ms, b, []bool{false}, false))
	defer bb.Flush(ctx)
	peers := peersOf(ms, a, []bool{false}, false)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%08x", sa.SPI)), []byte(fmt.Sprintf("%d\n", start)), 0o600); err != nil {
		t.Fatal(err)
	}
	ba := startMember(t, ctx, kernel.Config{NetNS: a.ns.path(), Underlay: []netip.Addr{a.ul4}, SeqLeaseDir: dir},
		sa, []netip.Prefix{a.lanPrefix(false)}, peers)
	defer ba.Flush(ctx)
	if got := a.ns.outboundSeq(t, b.ul4, sa.SPI); got != start {
		t.Fatalf("outbound state starts at %d, want %d", got, start)
	}
	sn := a.ns.sniff(t, "ul0", lanWatch)
	errsBefore := a.ns.xfrmStat(t, "XfrmOutStateSeqError")
	s := startUDPStream(t, a.ns, a.lan4, b.ns, netip.AddrPortFrom(b.lan4, 9002), time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	sent, got := s.finish(time.Second)
	if got != 19 {
		t.Errorf("%d of %d datagrams arrived; want exactly 19 (sequence numbers %d to 2^32-1)", got, sent, start+1)
	}
	if first, _ := s.firstErr.Load().(string); !strings.Contains(first, "value too large") {
		t.Errorf("first send error %q, want EOVERFLOW", first)
	}
	if n := a.ns.xfrmStat(t, "XfrmOutStateSeqError") - errsBefore; n < sent-19 {
		t.Errorf("XfrmOutStateSeqError rose by %d, want at least %d", n, sent-19)
	}
	if got := a.ns.outboundSeq(t, b.ul4, sa.SPI); got != 1<<32-1 {
		t.Errorf("outbound sequence number %d after exhaustion, want 2^32-1", got)
	}
	sn.check(t, "member 1", true)
	if err := waitFor(ctx, func() bool { return len(ba.Warnings()) > 0 }); err != nil {
		t.Error("no soft-expiry warning")
	} else {
		t.Log(ba.Warnings())
	}
	// The peer leaves and comes back: its outbound state is deleted and
	// added again, and continues at 2^32-1 (still exhausted), never at 0.
	if err := ba.SetPeers(ctx, []netip.Prefix{a.lanPrefix(false)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := ba.SetPeers(ctx, []netip.Prefix{a.lanPrefix(false)}, peers); err != nil {
		t.Fatal(err)
	}
	if got := a.ns.outboundSeq(t, b.ul4, sa.SPI); got != 1<<32-1 {
		t.Errorf("re-added outbound state starts at %d, want 2^32-1 (where the last one ended)", got)
	}
	if n, err := a.ns.ping(a.lan4, b.lan4, 1); n != 0 {
		t.Errorf("ping with exhausted sequence numbers: %d answered, %v", n, err)
	}
}

// TestTwoGroupsSideBySide runs groups "east" and "mgmt" (one priority,
// 7120, under the old derivation) in both members, each with its own SA
// and LAN prefixes: stopping, restarting and flushing east at member 1
// never touches mgmt's states or policies, and mgmt's traffic flows
// throughout; east's traffic is blocked while it is stopped, and no
// plaintext leaves.
func TestTwoGroupsSideBySide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := topology(t, "two", 2)
	east, mgmt := groupid.Of("east"), groupid.Of("mgmt")
	// mgmt uses 10.(100+i).0.0/24 on each member's LAN.
	mgmtLAN := func(m *member) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/24", 100+m.i)) }
	for _, m := range ms {
		m.ns.addAddr(t, "lan0", fmt.Sprintf("10.%d.0.1/24", 100+m.i))
	}
	saE, saM := newSA(t, 0x70201, "aes256-sha256"), newSA(t, 0x70202, "aes128-sha1")
	cfgOf := func(m *member, id groupid.ID) kernel.Config {
		return kernel.Config{NetNS: m.ns.path(), Group: id.Name, Underlay: []netip.Addr{m.ul4}, ReqID: id.ReqID(), Priority: id.Priority()}
	}
	peersE := func(m *member) []xfrm.Peer { return peersOf(ms, m, []bool{false}, false) }
	peersM := func(m *member) []xfrm.Peer {
		var ps []xfrm.Peer
		for _, o := range ms {
			if o != m {
				ps = append(ps, xfrm.Peer{Prefix: mgmtLAN(o), Underlay: o.ul4})
			}
		}
		return ps
	}
	var eastB, mgmtB []*kernel.Backend
	for _, m := range ms {
		eastB = append(eastB, startMember(t, ctx, cfgOf(m, east), saE, []netip.Prefix{m.lanPrefix(false)}, peersE(m)))
		mgmtB = append(mgmtB, startMember(t, ctx, cfgOf(m, mgmt), saM, []netip.Prefix{mgmtLAN(m)}, peersM(m)))
	}
	a, b := ms[0], ms[1]
	mgmtA, mgmtB1 := netip.MustParseAddr("10.101.0.1"), netip.MustParseAddr("10.102.0.1")
	ping := func(what string, src, dst netip.Addr, want int) {
		t.Helper()
		if n, err := a.ns.ping(src, dst, 2); n != want {
			t.Errorf("%s: ping %s -> %s: %d of 2 answered (%v), want %d", what, src, dst, n, err, want)
		}
	}
	ping("both running", a.lan4, b.lan4, 2)
	ping("both running", mgmtA, mgmtB1, 2)
	sE, pE := a.ns.groupCounts(t, east)
	sM, pM := a.ns.groupCounts(t, mgmt)
	if sE != 2 || pE != 4 || sM != 2 || pM != 4 {
		t.Fatalf("member 1: east %d states %d policies, mgmt %d and %d; want 2 and 4 each", sE, pE, sM, pM)
	}
	sn := a.ns.sniff(t, "ul0", lanWatch)
	if err := eastB[0].Close(); err != nil {
		t.Fatal(err)
	}
	if s, p := a.ns.groupCounts(t, east); s != 0 || p != 4 {
		t.Errorf("east stopped: %d states, %d policies; want 0 and 4", s, p)
	}
	if s, p := a.ns.groupCounts(t, mgmt); s != sM || p != pM {
		t.Errorf("east's Close changed mgmt: %d states, %d policies", s, p)
	}
	ping("east stopped", a.lan4, b.lan4, 0)
	ping("east stopped", mgmtA, mgmtB1, 2)
	eastB[0] = startMember(t, ctx, cfgOf(a, east), saE, []netip.Prefix{a.lanPrefix(false)}, peersE(a))
	if s, p := a.ns.groupCounts(t, mgmt); s != sM || p != pM {
		t.Errorf("east's restart changed mgmt: %d states, %d policies", s, p)
	}
	ping("east restarted", a.lan4, b.lan4, 2)
	if err := eastB[0].Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s, p := a.ns.groupCounts(t, east); s != 0 || p != 0 {
		t.Errorf("east flushed: %d states, %d policies left", s, p)
	}
	if s, p := a.ns.groupCounts(t, mgmt); s != sM || p != pM {
		t.Errorf("east's Flush changed mgmt: %d states, %d policies", s, p)
	}
	ping("east flushed", mgmtA, mgmtB1, 2)
	sn.check(t, "member 1", true)
	for _, be := range append(append([]*kernel.Backend{}, eastB[1:]...), mgmtB...) {
		_ = be.Flush(ctx)
	}
}

// TestInboundStateLimits records what XFRM enforces on the receiving side
// of a shared SA, as docs/kernel-dataplane.md describes: one inbound state
// per (destination, SPI), so a second state for another sender is refused
// (no per-sender replay window); the inner source is checked against the
// union of the peer prefixes (an inner source in no peer prefix is
// dropped, XfrmInNoPols), but not against the prefixes of the peer that
// sent it (no origin binding).
func TestInboundStateLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := topology(t, "inb", 3)
	a, b := ms[0], ms[1]
	sa := newSA(t, 0x70301, "aes256-sha256")
	for _, m := range ms {
		be := startMember(t, ctx, kernel.Config{NetNS: m.ns.path(), Underlay: []netip.Addr{m.ul4}}, sa, []netip.Prefix{m.lanPrefix(false)}, peersOf(ms, m, []bool{false}, false))
		defer be.Flush(ctx)
	}
	// A second inbound state for the same (destination, SPI) with a
	// source: EEXIST, whatever the source.
	second := &netlink.XfrmState{
		Src: a.ul4.AsSlice(), Dst: b.ul4.AsSlice(), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
		Spi: int(sa.SPI), Reqid: 99,
		Crypt: &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: make([]byte, 32)},
		Auth:  &netlink.XfrmStateAlgo{Name: "hmac(sha256)", Key: make([]byte, 32), TruncateLen: 128},
	}
	if err := b.ns.h.XfrmStateAdd(second); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second inbound state for (%s, %08x): %v, want EEXIST", b.ul4, sa.SPI, err)
	}
	// Member 1 sends with an inner source in member 3's LAN (it holds
	// the group key, as every member does): its own out policy for that
	// source, through the shared SA.
	spoof := netip.MustParseAddr("10.3.0.99")
	outside := netip.MustParseAddr("10.77.0.1")
	for _, src := range []netip.Addr{spoof, outside} {
		a.ns.addAddr(t, "lan0", src.String()+"/32")
		pol := &netlink.XfrmPolicy{
			Src: ipnet(src.String() + "/32"), Dst: ipnet(b.lanPrefix(false).String()), Dir: netlink.XFRM_DIR_OUT, Priority: 100,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: a.ul4.AsSlice(), Dst: b.ul4.AsSlice(), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Spi: int(sa.SPI), Reqid: kernel.DefaultReqID}},
		}
		if err := a.ns.h.XfrmPolicyAdd(pol); err != nil {
			t.Fatal(err)
		}
	}
	noPols := b.ns.xfrmStat(t, "XfrmInNoPols")
	sp := startUDPStream(t, a.ns, spoof, b.ns, netip.AddrPortFrom(b.lan4, 9003), 5*time.Millisecond)
	so := startUDPStream(t, a.ns, outside, b.ns, netip.AddrPortFrom(b.lan4, 9004), 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	spSent, spGot := sp.finish(time.Second)
	soSent, soGot := so.finish(time.Second)
	if spGot == 0 {
		t.Errorf("inner source %s (member 3's prefix) from member 1: 0 of %d accepted; the docs say XFRM cannot bind origins", spoof, spSent)
	}
	if soGot != 0 {
		t.Errorf("inner source %s (no peer's prefix): %d of %d accepted, want 0", outside, soGot, soSent)
	}
	if n := b.ns.xfrmStat(t, "XfrmInNoPols") - noPols; n < soSent/2 {
		t.Errorf("XfrmInNoPols rose by %d for %d datagrams from outside every peer prefix", n, soSent)
	}
	t.Logf("origin not bound: %d of %d with a spoofed peer source accepted; %d of %d from outside every peer prefix dropped (XfrmInNoPols)", spGot, spSent, soSent-soGot, soSent)
}
