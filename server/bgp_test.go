package server

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/bgp"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/protect"
)

// The BGP speakers themselves run in the bgp package's tests and end to
// end in test/e2e; these tests check the engine's part without a
// session: which proof a group asks for, what it refuses, and how it
// merges its sources.

// bgpVerifier proves the control exchange and, unless refuseTCP, every
// other flow; it records the flows asked for.
type bgpVerifier struct {
	refuseTCP bool
	flows     []protect.Flow
}

func (v *bgpVerifier) Verify(_ context.Context, c protect.Child, _ bool) (protect.Proof, error) {
	v.flows = append(v.flows, c.Flow)
	if c.Flow.Proto == unix.IPPROTO_TCP && v.refuseTCP {
		return protect.Proof{}, &protect.UnprotectedError{Child: c.Name, Reason: "no pair of its traffic selectors covers TCP"}
	}
	return protect.Proof{IfIndex: 5, IfName: "ipsec0", How: "trusted by the test"}, nil
}

const memBGPConf = `mpsa {
  role = member
  groups { g { connection = c
    control_child = ctl
    dataplane = userspace
    local_ts = 10.1.1.0/24
    bgp { asn = 64512 } } } }`

// bgpMember is a member server with BGP on and verifier v, fed one
// control child.
func bgpMember(t *testing.T, v *bgpVerifier) (*Server, *memGroup, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg := loadConfig(t, memBGPConf)
	cfg.StatusSocket = filepath.Join(t.TempDir(), "mpsad.sock") // the routes file goes beside it
	s, err := New(Options{Config: cfg, Verifier: v,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		NewDataPlane: func(context.Context, *swanctl.Group, netip.Addr, *slog.Logger) (xfrm.DataPlane, error) {
			return &recorder{keys: map[uint32]xfrm.SA{}}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.charon = &vici.Charon{Plugins: []string{"charon", "kernel-libipsec"}}
	s.out = discard{}
	ctx, cancel := context.WithCancel(context.Background())
	s.runCtx = ctx
	if err := s.applyConfig(ctx, s.cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.shutdown()
		cancel()
	})
	s.onUpdate(ctx, vici.Update{Snapshot: snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)})
	return s, s.groups[0].(*memGroup), logs
}

type discard struct{}

func (discard) Send([]byte, netip.Addr, netip.AddrPort) error { return nil }

// TestBGPNeedsItsOwnProof: a member group with BGP asks the verifier for
// the control exchange and for BGP's flow (TCP from any port to the
// controller's 179); a child that protects the first but not the second
// serves the control exchange, and BGP is refused over it, in the log and
// the status, until the child protects it.
func TestBGPNeedsItsOwnProof(t *testing.T) {
	v := &bgpVerifier{refuseTCP: true}
	s, g, logs := bgpMember(t, v)
	want := []protect.Flow{{}, {Proto: unix.IPPROTO_TCP, RemotePort: 179}}
	if !slices.Equal(v.flows, want) {
		t.Fatalf("flows verified %+v, want %+v", v.flows, want)
	}
	if g.sess == nil {
		t.Fatal("the control exchange did not start over a child that protects it")
	}
	if g.bgp == nil || g.bgp.ctl.IsValid() {
		t.Fatalf("BGP session started over a child that does not protect it: %+v", g.bgp)
	}
	st := s.status(context.Background())
	p := problems(t, st.Groups[0])
	if !strings.Contains(p, "BGP refused over control child ctl of connection c (IKE SA c[7]") || !strings.Contains(p, "covers TCP") {
		t.Errorf("status problems:\n%s", p)
	}
	if n := strings.Count(logs.String(), "BGP refused over control child"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	// The same child again (a resync) is not verified again.
	s.onUpdate(context.Background(), vici.Update{Snapshot: snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)})
	if len(v.flows) != 2 {
		t.Errorf("the same child was verified again: %+v", v.flows)
	}
	// The child is rekeyed and protects BGP now: the session may start,
	// bound to the proof's interface.
	v.refuseTCP = false
	snap := snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)
	snap.IKESAs[0].Children[0].SPIIn = 0xc0000001
	s.onUpdate(context.Background(), vici.Update{Snapshot: snap})
	if g.bgp.ctl != ctlAddr || g.bgp.local != memAddr || g.bgp.iface != "ipsec0" {
		t.Fatalf("BGP session after the child protects it: controller %v local %v interface %q", g.bgp.ctl, g.bgp.local, g.bgp.iface)
	}
	if g.bgp.underlay != netip.MustParseAddr("192.0.2.11") || !slices.Equal(g.bgp.prefixes, []netip.Prefix{netip.MustParsePrefix("10.1.1.0/24")}) {
		t.Errorf("advertises %v via %v, want local_ts via the IKE SA's local address", g.bgp.prefixes, g.bgp.underlay)
	}
	st = s.status(context.Background())
	if p := problems(t, st.Groups[0]); p != "" {
		t.Errorf("problems left: %s", p)
	}
	// The child goes: the session ends, the learned routes stay.
	g.bgp.apply([]bgp.Change{{Prefix: netip.MustParsePrefix("10.1.2.0/24"), Peer: netip.MustParseAddr("192.0.2.12"), Learned: time.Now()}})
	s.onUpdate(context.Background(), vici.Update{Snapshot: vici.Snapshot{Connected: true}})
	if g.bgp.ctl.IsValid() || len(g.bgp.learned) != 1 {
		t.Errorf("after the child went: controller %v, learned %v", g.bgp.ctl, g.bgp.learned)
	}
	// mpsad stops: the learned routes are kept for the next run, which
	// starts with them in its peer table.
	s.shutdown()
	routes, err := loadRoutes(bgpStatePath(s.cfg, "g"))
	if err != nil || len(routes) != 1 || routes[0].Prefix != netip.MustParsePrefix("10.1.2.0/24") {
		t.Fatalf("routes kept: %v %v", routes, err)
	}
	next, err := New(Options{Config: s.cfg, Verifier: v, NewDataPlane: s.opts.NewDataPlane})
	if err != nil {
		t.Fatal(err)
	}
	next.runCtx = s.runCtx
	if err := next.applyConfig(context.Background(), next.cfg); err != nil {
		t.Fatal(err)
	}
	defer next.shutdown()
	ng := next.groups[0].(*memGroup)
	if got := ng.peerTable(); len(got) != 1 || got[0].Underlay != netip.MustParseAddr("192.0.2.12") {
		t.Errorf("the next run's peer table: %v", got)
	}
}

// TestPeerTableOneRule: the member's sources merge by one rule: on the
// same prefix the static route wins and the learned one is shadowed
// (and comes back when the static route goes); other prefixes, nested or
// not, all reach the data plane, which picks the longest match.
func TestPeerTableOneRule(t *testing.T) {
	g := &memGroup{peers: map[string][]xfrm.Peer{}, staticSince: map[netip.Prefix]time.Time{}}
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	g.setStatic([]xfrm.Peer{{Prefix: p("10.2.0.0/16"), Underlay: a("192.0.2.2")}, {Prefix: p("10.3.0.0/24"), Underlay: a("192.0.2.3")}}, time.Now())
	g.peers[sourceBGP] = []xfrm.Peer{
		{Prefix: p("10.2.0.0/16"), Underlay: a("192.0.2.9")}, // shadowed
		{Prefix: p("10.2.5.0/24"), Underlay: a("192.0.2.5")}, // inside a static prefix
		{Prefix: p("10.4.0.0/24"), Underlay: a("192.0.2.4")},
	}
	got := g.peerTable()
	want := []xfrm.Peer{
		{Prefix: p("10.2.0.0/16"), Underlay: a("192.0.2.2")}, {Prefix: p("10.3.0.0/24"), Underlay: a("192.0.2.3")},
		{Prefix: p("10.2.5.0/24"), Underlay: a("192.0.2.5")}, {Prefix: p("10.4.0.0/24"), Underlay: a("192.0.2.4")},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("peer table %v, want %v", got, want)
	}
	v, _ := g.view()
	rs := memberRoutes(v, []bgp.Route{
		{Prefix: p("10.2.0.0/16"), Peer: a("192.0.2.9"), Origin: bgp.OriginBGP},
		{Prefix: p("10.2.5.0/24"), Peer: a("192.0.2.5"), Origin: bgp.OriginBGP, Stale: true},
	}, time.Now())
	var lines []string
	for _, r := range rs {
		lines = append(lines, r.Prefix+" "+r.Peer+" "+r.Origin+map[bool]string{true: " shadowed"}[r.Shadowed]+map[bool]string{true: " stale"}[r.Stale])
	}
	if got, want := strings.Join(lines, "\n"), "10.2.0.0/16 192.0.2.2 static\n10.2.0.0/16 192.0.2.9 bgp shadowed\n10.2.5.0/24 192.0.2.5 bgp stale\n10.3.0.0/24 192.0.2.3 static"; got != want {
		t.Errorf("routes\n%s\nwant\n%s", got, want)
	}
	// The static route goes: the learned one is used.
	g.setStatic([]xfrm.Peer{{Prefix: p("10.3.0.0/24"), Underlay: a("192.0.2.3")}}, time.Now())
	if got := g.peerTable(); !slices.Contains(got, xfrm.Peer{Prefix: p("10.2.0.0/16"), Underlay: a("192.0.2.9")}) {
		t.Errorf("the learned route did not come back: %v", got)
	}
}

// TestReloadKeepsSAForBGPChanges: a change of the BGP settings alone
// (the policy on a controller, anything on a member) is applied in place,
// without a new group SA.
func TestReloadKeepsSAForBGPChanges(t *testing.T) {
	base := loadConfig(t, ctlConf).Groups[0]
	withBGP := func(policy string) *swanctl.Group {
		c := loadConfig(t, strings.Replace(ctlConf, "rollover2 = 2s", "rollover2 = 2s\n    bgp { asn = 64512\n policy { a { identity = m*\n prefixes = "+policy+" } } }", 1)).Groups[0]
		return c
	}
	a, b := withBGP("10.0.0.0/8 le 24"), withBGP("10.1.0.0/16 le 24")
	switch {
	case !sameSA(base, a) || !sameSA(a, b):
		t.Error("a BGP change needs a new group SA")
	case sameBGP(a, b) || sameBGP(base, a):
		t.Error("different BGP settings compare equal")
	case !samePolicyOnly(a, b):
		t.Error("a policy change is not a policy change only")
	case samePolicyOnly(base, a):
		t.Error("turning BGP on is a policy change only")
	}
	m := loadConfig(t, memBGPConf).Groups[0]
	if !sameExceptPeers(loadConfig(t, memConf).Groups[0], m) {
		t.Error("a member moving from static routes to BGP needs a new group")
	}
}
