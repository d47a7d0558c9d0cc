package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/groupid"
)

// These tests run on any Linux host with XFRM policies (no ESP needed):
// without an outbound SA the backend installs policies only.

// groupNS is a namespace with an underlay 192.0.2.1 on veth "u0" (its
// peer "u0p" takes whatever is routed to it), LAN addresses 10.1.0.1 and
// 10.11.0.1 on veth "lan0", and routes to the peer prefixes 10.2.0.0/16
// and 10.12.0.0/16 out of u0: without policies, traffic to them leaves in
// plaintext.
func groupNS(t *testing.T) *nettest.NS {
	ns := nettest.NewNS(t, "ks")
	ns.Run(t, "ip", "link", "add", "u0", "type", "veth", "peer", "name", "u0p")
	ns.Run(t, "ip", "link", "set", "u0", "up")
	ns.Run(t, "ip", "link", "set", "u0p", "up")
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "u0")
	ns.Run(t, "ip", "neigh", "add", "192.0.2.254", "lladdr", "02:00:00:00:00:fe", "dev", "u0")
	ns.Run(t, "ip", "route", "add", "default", "via", "192.0.2.254")
	nettest.LAN(t, ns, "lan0", "10.1.0.1/24")
	nettest.AddrAdd(t, ns, "lan0", "10.11.0.1/24")
	return ns
}

func newGroupBackend(t *testing.T, ns *nettest.NS, group string) *Backend {
	t.Helper()
	id := groupid.Of(group)
	b, err := New(context.Background(), Config{
		NetNS: "/run/netns/" + ns.Name, Group: group, Underlay: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		ReqID: id.ReqID(), Priority: id.Priority(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("New %s: %v", group, err)
	}
	return b
}

// sendErr sends a UDP datagram from src to dst inside ns and returns the
// send's error: EPERM when a block policy refuses it.
func sendErr(t *testing.T, ns *nettest.NS, src, dst string) error {
	t.Helper()
	var serr error
	if err := ns.Do(func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(dst), Port: 9})
		if err != nil {
			serr = err
			return nil
		}
		defer c.Close()
		_, serr = c.Write([]byte("kill switch probe"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return serr
}

// policiesAt lists the namespace's policies at priority prio and prio+1.
func policiesAt(t *testing.T, ns *nettest.NS, prio uint32) []netlink.XfrmPolicy {
	t.Helper()
	var out []netlink.XfrmPolicy
	if err := ns.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_XFRM)
		if err != nil {
			return err
		}
		defer h.Close()
		pols, err := h.XfrmPolicyList(netlink.FAMILY_ALL)
		for _, p := range pols {
			if uint32(p.Priority) == prio || uint32(p.Priority) == prio+1 {
				out = append(out, p)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func policyText(ps []netlink.XfrmPolicy) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%s %v->%v prio %d action %d tmpls %d", p.Dir, p.Src, p.Dst, p.Priority, p.Action, len(p.Tmpls)))
	}
	return strings.Join(s, "; ")
}

// TestKillSwitchTwoGroups runs groups "east" and "mgmt" (one priority,
// 7120, under the old derivation) side by side in one namespace: each
// group's Close keeps its block policies, so traffic to its peers is
// refused while no backend runs; a restart (New) adopts them; a backend
// abandoned without Close (a crash) leaves them too; starting, stopping
// and flushing one group never touches the other's; Flush removes the
// group's policies and traffic flows (in plaintext: the group is gone).
func TestKillSwitchTwoGroups(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	east, mgmt := groupid.Of("east"), groupid.Of("mgmt")
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	eastPeers := []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2"), peer("10.2.2.0/24", "192.0.2.3")}
	mgmtPeers := []xfrm.Peer{peer("10.12.1.0/24", "192.0.2.2")}

	if err := sendErr(t, ns, "10.1.0.1", "10.2.1.5"); err != nil {
		t.Fatalf("without policies the probe must leave (the control): %v", err)
	}
	be := newGroupBackend(t, ns, "east")
	bm := newGroupBackend(t, ns, "mgmt")
	if err := be.SetPeers(ctx, local, eastPeers); err != nil {
		t.Fatal(err)
	}
	if err := bm.SetPeers(ctx, []netip.Prefix{netip.MustParsePrefix("10.11.0.0/24")}, mgmtPeers); err != nil {
		t.Fatal(err)
	}
	eastN, mgmtN := len(policiesAt(t, ns, east.Priority())), len(policiesAt(t, ns, mgmt.Priority()))
	if eastN != 8 || mgmtN != 4 {
		t.Fatalf("east has %d policies, mgmt %d; want 8 and 4", eastN, mgmtN)
	}

	// Normal stop of east: the block policies stay.
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	if got := policiesAt(t, ns, east.Priority()); len(got) != eastN {
		t.Fatalf("after Close east has %d policies, want %d kept: %s", len(got), eastN, policyText(got))
	}
	for _, dst := range []string{"10.2.1.5", "10.2.2.5"} {
		if err := sendErr(t, ns, "10.1.0.1", dst); !errors.Is(err, unix.EPERM) {
			t.Errorf("east stopped: send to %s: %v, want EPERM from the kill switch", dst, err)
		}
	}
	// Traffic from outside the local prefixes too (the fallback policy).
	if err := sendErr(t, ns, "192.0.2.1", "10.2.1.5"); !errors.Is(err, unix.EPERM) {
		t.Errorf("east stopped: send from the underlay: %v, want EPERM", err)
	}
	if got := len(policiesAt(t, ns, mgmt.Priority())); got != mgmtN {
		t.Fatalf("east's Close changed mgmt's policies: %d, want %d", got, mgmtN)
	}

	// Restart of east: adopted, nothing removed, still blocking.
	be = newGroupBackend(t, ns, "east")
	if got := len(be.cur.policies); got != eastN {
		t.Fatalf("restarted east adopted %d policies, want %d", got, eastN)
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.2.1.5"); !errors.Is(err, unix.EPERM) {
		t.Errorf("east restarted: %v, want EPERM", err)
	}
	// Its first SetPeers reconciles: a peer dropped while it was down
	// loses its policies, the other keeps them.
	opsBefore := be.ops
	if err := be.SetPeers(ctx, local, eastPeers[:1]); err != nil {
		t.Fatal(err)
	}
	if got := len(policiesAt(t, ns, east.Priority())); got != 4 {
		t.Errorf("after reconciling east has %d policies, want 4", got)
	}
	if ops := be.ops - opsBefore; ops != 4 {
		t.Errorf("reconciling one dropped peer took %d kernel requests, want 4 (its policies only)", ops)
	}

	// A crash of mgmt (no Close) and its restart leave east alone.
	bm.h.Close()
	bm.xs.close()
	bm = newGroupBackend(t, ns, "mgmt")
	if got := len(policiesAt(t, ns, east.Priority())); got != 4 {
		t.Errorf("mgmt's restart changed east's policies: %d, want 4", got)
	}
	if got := len(bm.cur.policies); got != mgmtN {
		t.Errorf("mgmt adopted %d policies, want %d", got, mgmtN)
	}

	// Flush of east removes its policies only; traffic to its peers
	// flows again.
	if err := be.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := policiesAt(t, ns, east.Priority()); len(got) != 0 {
		t.Errorf("after Flush east has policies: %s", policyText(got))
	}
	if got := len(policiesAt(t, ns, mgmt.Priority())); got != mgmtN {
		t.Errorf("east's Flush changed mgmt's policies: %d, want %d", got, mgmtN)
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.2.1.5"); err != nil {
		t.Errorf("east flushed: %v, want the probe sent", err)
	}
	if err := sendErr(t, ns, "10.11.0.1", "10.12.1.5"); !errors.Is(err, unix.EPERM) {
		t.Errorf("mgmt's peer after east's flush: %v, want EPERM", err)
	}
	if err := bm.Close(); err != nil {
		t.Fatal(err)
	}

	// FlushGroup (mpsactl flush) removes mgmt's without a backend.
	n, err := FlushGroup(ctx, FlushConfig{NetNS: "/run/netns/" + ns.Name, Group: "mgmt", ReqID: mgmt.ReqID(), Priority: mgmt.Priority()})
	if err != nil || n != mgmtN {
		t.Fatalf("FlushGroup: %d objects, %v; want %d", n, err, mgmtN)
	}
	if err := sendErr(t, ns, "10.11.0.1", "10.12.1.5"); err != nil {
		t.Errorf("mgmt flushed: %v, want the probe sent", err)
	}
}

// TestForeignPolicyWithOurMarksRefused: a policy at a group's priority
// whose template names another reqid (charon's, say) is not adopted, not
// deleted and not replaced: New refuses and names it, FlushGroup leaves
// it and says so.
func TestForeignPolicyWithOurMarksRefused(t *testing.T) {
	ns := groupNS(t)
	id := groupid.Of("east")
	ns.Run(t, "ip", "xfrm", "policy", "add", "src", "10.1.0.0/24", "dst", "10.2.1.0/24", "dir", "out",
		"priority", fmt.Sprint(id.Priority()), "tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "mode", "tunnel", "reqid", "1")
	_, err := New(context.Background(), Config{
		NetNS: "/run/netns/" + ns.Name, Group: "east", Underlay: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		ReqID: id.ReqID(), Priority: id.Priority(), Logger: slog.New(slog.DiscardHandler),
	})
	if err == nil || !strings.Contains(err.Error(), "not mpsa's") {
		t.Fatalf("New with a foreign policy at the group's priority: %v, want a refusal", err)
	}
	n, err := FlushGroup(context.Background(), FlushConfig{NetNS: "/run/netns/" + ns.Name, Group: "east", ReqID: id.ReqID(), Priority: id.Priority()})
	if n != 0 || err == nil || !strings.Contains(err.Error(), "not mpsa's") {
		t.Errorf("FlushGroup: %d objects, %v; want 0 and the foreign policy named", n, err)
	}
	if got := policiesAt(t, ns, id.Priority()); len(got) != 1 {
		t.Errorf("the foreign policy was touched: %s", policyText(got))
	}
}

// TestSetPeersIncremental: with many peers, adding, moving or removing
// one peer prefix costs kernel requests for that prefix only, and the
// kernel ends with exactly the full plan's policies, field by field. (The
// host has no ESP, so there is no outbound SA here; the guest's
// TestPeerMoveToUserspace checks the same with one.)
func TestSetPeersIncremental(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	b := newGroupBackend(t, ns, "east")
	defer b.Flush(ctx)
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	var peers []xfrm.Peer
	for i := range 200 {
		peers = append(peers, peer(fmt.Sprintf("10.2.%d.0/24", i), fmt.Sprintf("192.0.2.%d", 2+i%50)))
	}
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	check := func(what string, peers []xfrm.Peer, minOps, maxOps int, before int) {
		t.Helper()
		if ops := b.ops - before; ops > maxOps || ops < minOps {
			t.Errorf("%s: %d kernel requests, want %d..%d", what, ops, minOps, maxOps)
		}
		want, err := b.planFor(local, peers, 0)
		if err != nil {
			t.Fatal(err)
		}
		samePolicies(t, what, policiesAt(t, ns, groupid.Of("east").Priority()), want.policies)
	}
	// Four policies per prefix (out, in, fwd, fallback).
	before := b.ops
	peers = append(peers, peer("10.3.0.0/24", "192.0.2.77"))
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	check("one peer added", peers, 4, 4, before)
	before = b.ops
	// Moved to another underlay: with no outbound SA its out policy
	// blocks either way, so nothing changes in the kernel.
	peers[5].Underlay = netip.MustParseAddr("192.0.2.99")
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	check("one peer moved", peers, 0, 0, before)
	before = b.ops
	peers = append(peers[:7], peers[8:]...)
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	check("one peer removed", peers, 4, 4, before)
	before = b.ops
	if err := b.SetPeers(ctx, local, peers); err != nil || b.ops != before {
		t.Errorf("unchanged table: %d kernel requests, %v", b.ops-before, err)
	}
}

// samePolicies compares the policies in the kernel with want field by
// field: selector, direction, priority, action, if_id and templates.
func samePolicies(t *testing.T, what string, got []netlink.XfrmPolicy, want map[policyKey]netlink.XfrmPolicy) {
	t.Helper()
	seen := map[policyKey]bool{}
	for _, p := range got {
		k := policyKey{p.Dir, fromIPNet(p.Src), fromIPNet(p.Dst)}
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("%s: unexpected policy %s", what, k)
		case seen[k]:
			t.Errorf("%s: policy %s twice", what, k)
		case p.Priority != w.Priority || p.Action != w.Action || p.Ifid != w.Ifid || !sameTmpls(p, w):
			t.Errorf("%s: policy %s: priority %d action %d if_id %d templates %+v; want %d %d %d %+v", what, k, p.Priority, p.Action, p.Ifid, p.Tmpls, w.Priority, w.Action, w.Ifid, w.Tmpls)
		}
		seen[k] = true
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("%s: policy %s missing", what, k)
		}
	}
}

// fakeSA puts an SA into b as InstallInbound would, without its inbound
// states (the host has no ESP).
func fakeSA(t *testing.T, b *Backend, spi uint32) {
	t.Helper()
	own, err := newInstalled(xfrm.SA{SPI: spi, Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 128, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256},
		EncrKey: make([]byte, 16), IntegKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.sas[spi] = own
	b.mu.Unlock()
}

// TestRemoveReconcilesAfterFailedSwitch: a SetOutbound that fails leaves
// the backend marked for a full reconcile (here it fails at its first
// step: the host has no ESP for the new outbound states). One that failed
// half way, after some out policies were switched to the new SPI (made
// here directly, as the host cannot add the states such a switch needs),
// leaves policies naming an SPI the backend does not send with; Remove of
// that SPI then moves every policy back to the plan in force before it
// deletes the SPI's states, instead of leaving policies that name states
// that are gone.
func TestRemoveReconcilesAfterFailedSwitch(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	b := newGroupBackend(t, ns, "east")
	defer b.Flush(ctx)
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	peers := []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2"), peer("10.2.2.0/24", "192.0.2.3")}
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	const spi = 0x4242
	fakeSA(t, b, spi)
	if err := b.SetOutbound(ctx, spi); err == nil {
		t.Fatal("SetOutbound succeeded on a host without ESP (the test would prove nothing)")
	}
	if !b.full || b.outSPI != 0 {
		t.Fatalf("after a failed SetOutbound: full %v, outbound SA %08x; want a full reconcile pending and no outbound SA", b.full, b.outSPI)
	}
	// Half way: the out policy of the first peer names the new SPI.
	k := policyKey{netlink.XFRM_DIR_OUT, local[0], netip.MustParsePrefix("10.2.1.0/24")}
	p := b.cur.policies[k]
	p.Action = netlink.XFRM_POLICY_ALLOW
	p.Tmpls = []netlink.XfrmPolicyTmpl{{Src: net.ParseIP("192.0.2.1"), Dst: net.ParseIP("192.0.2.2"),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Spi: spi, Reqid: int(b.cfg.ReqID)}}
	if err := b.h.XfrmPolicyUpdate(&p); err != nil {
		t.Fatal(err)
	}
	b.cur.policies[k] = p
	if err := b.Remove(ctx, spi); err != nil {
		t.Fatal(err)
	}
	want := b.planTable(local, b.table, 0)
	samePolicies(t, "after Remove", policiesAt(t, ns, groupid.Of("east").Priority()), want.policies)
	if b.full {
		t.Error("the reconcile is still pending after Remove reconciled")
	}
}

// TestSetOutboundBeforePeersKeepsAdopted: SetOutbound before the first
// SetPeers (after a restart) does not know the peer table yet, and leaves
// the adopted kill switch as it is instead of removing every policy the
// empty table lacks.
func TestSetOutboundBeforePeersKeepsAdopted(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	b := newGroupBackend(t, ns, "east")
	if err := b.SetPeers(ctx, local, []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	id := groupid.Of("east")
	n := len(policiesAt(t, ns, id.Priority()))
	b = newGroupBackend(t, ns, "east")
	defer b.Flush(ctx)
	fakeSA(t, b, 0x4242)
	if err := b.SetOutbound(ctx, 0x4242); err != nil {
		t.Fatal(err)
	}
	if got := policiesAt(t, ns, id.Priority()); len(got) != n {
		t.Errorf("SetOutbound before SetPeers left %d of the %d adopted policies: %s", len(got), n, policyText(got))
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.2.1.5"); !errors.Is(err, unix.EPERM) {
		t.Errorf("send to the peer: %v, want EPERM from the kill switch", err)
	}
}

// TestProtectLeavesControlAddressesAlone: the remote control address
// (10.98.0.1, routed out of the underlay like the controller) lies in a
// peer prefix. Without Protect the group's policies for that prefix catch
// the control datagrams (here: block them, there being no outbound SA;
// with one they would go into the group's SA); after Protect with the
// control addresses the prefix is left out of the peer table, kill
// switch included, the error names it, the datagrams leave, and the other
// peers keep their policies. A later SetPeers leaves it out as well.
func TestProtectLeavesControlAddressesAlone(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	b := newGroupBackend(t, ns, "east")
	defer b.Flush(ctx)
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	peers := []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2"), peer("10.98.0.0/16", "192.0.2.3")}
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.98.0.1"); !errors.Is(err, unix.EPERM) {
		t.Fatalf("control datagram before Protect: %v; want EPERM from the group's policies (the test would prove nothing)", err)
	}
	ctl := []netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.98.0.1")}
	err := b.Protect(ctx, ctl)
	if err == nil || !strings.Contains(err.Error(), "10.98.0.0/16 (via 192.0.2.3) contains 10.98.0.1") {
		t.Errorf("Protect: %v; want the covering prefix named", err)
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.98.0.1"); err != nil {
		t.Errorf("control datagram after Protect: %v; want it sent (by charon's child, in real life)", err)
	}
	want, perr := b.planFor(local, peers[:1], 0)
	if perr != nil {
		t.Fatal(perr)
	}
	samePolicies(t, "after Protect", policiesAt(t, ns, groupid.Of("east").Priority()), want.policies)
	if err := b.SetPeers(ctx, local, append(peers, peer("10.3.0.0/24", "192.0.2.4"))); err == nil {
		t.Error("SetPeers with the covering prefix again: no error")
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.98.0.1"); err != nil {
		t.Errorf("control datagram after SetPeers: %v", err)
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.3.0.5"); !errors.Is(err, unix.EPERM) {
		t.Errorf("the new peer's prefix: %v, want EPERM (its policies are there)", err)
	}
}

// TestInstallInboundUnwritableRecord: a sequence-number record that
// cannot be written does not stop InstallInbound (receiving must go on;
// addOut tries again and Warnings lists it); here the host has no ESP, so
// InstallInbound still fails, but at the states, not at the record.
func TestInstallInboundUnwritableRecord(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "seq")
	b, err := New(ctx, Config{NetNS: "/run/netns/" + ns.Name, Underlay: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		SeqLeaseDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Root ignores permissions: take the directory away.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	err = b.InstallInbound(ctx, xfrm.SA{SPI: 0x4243, Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 128, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256},
		EncrKey: make([]byte, 16), IntegKey: make([]byte, 32)})
	t.Logf("InstallInbound: %v", err)
	if err != nil && strings.Contains(err.Error(), "sequence lease") {
		t.Errorf("InstallInbound failed at the record: %v; want it to go on to the states", err)
	}
	if w := b.Warnings(); len(w) != 0 {
		t.Errorf("warnings of an SA that was not installed: %v", w)
	}
}

// TestFallbackForUnpairedFamily: a member with IPv4 LANs only and a peer
// with an IPv6 LAN: what the member itself sends to that LAN (from its
// IPv6 underlay address, over its IPv6 default route) is dropped by the
// fallback block policy instead of leaving in plaintext.
func TestFallbackForUnpairedFamily(t *testing.T) {
	ns := groupNS(t)
	ns.Run(t, "ip", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
	ns.Run(t, "ip", "neigh", "add", "2001:db8::fe", "lladdr", "02:00:00:00:00:fe", "dev", "u0")
	ns.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8::fe")
	ctx := context.Background()
	if err := sendErr(t, ns, "2001:db8::1", "fd02::5"); err != nil {
		t.Fatalf("without policies the probe must leave (the control): %v", err)
	}
	b := newGroupBackend(t, ns, "east")
	defer b.Flush(ctx)
	if err := b.SetPeers(ctx, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2"), peer("fd02::/64", "192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	if err := sendErr(t, ns, "2001:db8::1", "fd02::5"); !errors.Is(err, unix.EPERM) {
		t.Errorf("to the peer's IPv6 LAN from the underlay: %v, want EPERM from the fallback block policy", err)
	}
}

// TestBadPeerDoesNotRejectTable: one peer that cannot be served (its
// underlay is IPv6, the member has none) is named in SetPeers' error, but
// the rest of the table is applied and its prefix gets block policies:
// traffic to both prefixes is dropped (no outbound SA yet) instead of the
// whole table being refused and the new prefixes leaving in plaintext.
func TestBadPeerDoesNotRejectTable(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	b := newGroupBackend(t, ns, "east")
	defer b.Flush(ctx)
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	err := b.SetPeers(ctx, local, []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2"), peer("10.2.2.0/24", "2001:db8::3")})
	if err == nil || !strings.Contains(err.Error(), "10.2.2.0/24 via 2001:db8::3") {
		t.Errorf("SetPeers: %v; want the peer without an underlay of its family named", err)
	}
	for _, dst := range []string{"10.2.1.5", "10.2.2.5"} {
		if err := sendErr(t, ns, "10.1.0.1", dst); !errors.Is(err, unix.EPERM) {
			t.Errorf("send to %s: %v, want EPERM", dst, err)
		}
	}
	if got := len(policiesAt(t, ns, groupid.Of("east").Priority())); got != 8 {
		t.Errorf("%d policies, want 8 (4 per prefix)", got)
	}
}

// TestConcurrentCloseWaits: of two Close calls at once, neither returns
// before the backend is closed for good (sockets closed, keys zeroed,
// objects forgotten), whichever of them did the work.
func TestConcurrentCloseWaits(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	for round := range 50 {
		b := newGroupBackend(t, ns, "east")
		if err := b.SetPeers(ctx, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2")}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		early := make(chan string, 2)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := b.Close(); err != nil {
					early <- err.Error()
					return
				}
				b.mu.Lock()
				released := b.sas == nil
				b.mu.Unlock()
				if !released {
					early <- "a Close returned before the backend was released"
				}
			}()
		}
		wg.Wait()
		close(early)
		for e := range early {
			t.Fatalf("round %d: %s", round, e)
		}
	}
	if _, err := FlushGroup(ctx, FlushConfig{NetNS: "/run/netns/" + ns.Name, Group: "east", ReqID: groupid.Of("east").ReqID(), Priority: groupid.Of("east").Priority()}); err != nil {
		t.Fatal(err)
	}
}

// TestFlushAfterClose: Flush on a backend already closed still removes
// the group's kill switch, by its marks.
func TestFlushAfterClose(t *testing.T) {
	ns := groupNS(t)
	ctx := context.Background()
	b := newGroupBackend(t, ns, "east")
	if err := b.SetPeers(ctx, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, []xfrm.Peer{peer("10.2.1.0/24", "192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(policiesAt(t, ns, groupid.Of("east").Priority())); got != 4 {
		t.Fatalf("after Close: %d policies, want the 4 of the kill switch", got)
	}
	if err := b.Flush(ctx); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
	if got := policiesAt(t, ns, groupid.Of("east").Priority()); len(got) != 0 {
		t.Errorf("after Flush: %s", policyText(got))
	}
}
