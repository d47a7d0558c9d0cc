package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/internal/bgptest"
	"github.com/mpsa/mpsa/test/charon"
)

// Peer discovery by BGP (docs/bgp.md) end to end: the members run
// `bgp { }` instead of `routes { }`, their speakers talk to the
// controller's route reflector inside their control children (charon's
// kernel-libipsec TUN here), and the traffic between their LANs follows
// what they learned. The interop tests put FRR's bgpd in place of one
// member's speaker and in place of the reflector.

// bgpASN is the group's AS number in these tests.
const bgpASN = 64512

// bgpOptions shape a test group with BGP.
type bgpOptions struct {
	// localTS replaces the local_ts (what its speaker advertises) of
	// member i (from 0).
	localTS map[int]string
	// static lists the members (from 0) whose mpsad has static routes to
	// every other member and no BGP: another speaker (FRR) announces
	// their site.
	static map[int]bool
	// noReflector: the controller's mpsad has no bgp { }; another
	// speaker is the route reflector.
	noReflector bool
}

// localTS is member i's local_ts.
func (e *env) localTS(i int) string {
	if e.bgp != nil {
		if ts, ok := e.bgp.localTS[i]; ok {
			return ts
		}
	}
	return e.mems[i].lan.String()
}

// bgpMemberSection is member i's way to learn its peers with BGP on: its
// bgp { }, or static routes to every other member if another speaker
// announces its site.
func (e *env) bgpMemberSection(i int) []string {
	if e.bgp.static[i] {
		var routes []charon.Route
		for j, o := range e.mems {
			if j != i {
				routes = append(routes, charon.Route{Name: fmt.Sprintf("m%d", j+1), Prefix: o.lan, Peer: o.peer.Underlay})
			}
		}
		return charon.RoutesSection(routes)
	}
	return []string{"bgp {", fmt.Sprintf("    asn = %d", bgpASN), "}"}
}

// reflectorSection is the controller's bgp { }: member N (identity
// memberN.mpsa.test) may advertise its LAN and longer prefixes of it.
// Member 1's rule is written with a wildcard.
func (e *env) reflectorSection() []string {
	if e.bgp.noReflector {
		return nil
	}
	lines := []string{"bgp {", fmt.Sprintf("    asn = %d", bgpASN), "    policy {"}
	for i, m := range e.mems {
		id := m.peer.ID
		if i == 0 {
			id = strings.Replace(id, ".mpsa.test", ".*", 1)
		}
		lines = append(lines, fmt.Sprintf("        site%d {", i+1), "            identity = "+id,
			fmt.Sprintf("            prefixes = %s le %d", m.lan, m.lan.Addr().BitLen()), "        }")
	}
	return append(lines, "    }", "}")
}

// routes is `mpsactl routes lab --json` on n.
func (n *node) routes(t *testing.T) api.Routes {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), filepath.Join(binDir, "mpsactl"), "routes", "lab", "--json", "--socket", n.sock()).Output()
	if err != nil {
		t.Fatalf("mpsactl routes lab --json on %s: %v", n.name, err)
	}
	var rs api.Routes
	if err := json.Unmarshal(out, &rs); err != nil {
		t.Fatalf("mpsactl routes on %s: %v\n%s", n.name, err, out)
	}
	return rs
}

// peers is n's peer table (prefix -> underlay), empty while mpsad does not
// answer.
func (n *node) peers() map[string]string {
	st, err := n.tryStatus()
	out := map[string]string{}
	if err != nil || len(st.Groups) != 1 {
		return out
	}
	for _, p := range st.Groups[0].Peers {
		out[p.Prefix] = p.Underlay
	}
	return out
}

// want is the peer table member i should have: every other member's LAN
// at its underlay, but those listed in without.
func (e *env) want(i int, without ...int) map[string]string {
	out := map[string]string{}
	for j, o := range e.mems {
		if j != i && !slices.Contains(without, j) {
			out[o.lan.String()] = o.peer.Underlay.String()
		}
	}
	return out
}

// waitPeers waits until each member's peer table is want(i, without...)
// and returns how long that took from start.
func (e *env) waitPeers(start time.Time, members []int, without ...int) time.Duration {
	e.t.Helper()
	var took time.Duration
	testWaitFast(e.t, fmt.Sprintf("members %v to have every other's LAN but %v", members, without), func() (bool, string) {
		var seen []string
		ok := true
		for _, i := range members {
			got := e.mems[i].peers()
			seen = append(seen, fmt.Sprintf("%s: %v", e.mems[i].name, got))
			if !maps.Equal(got, e.want(i, without...)) {
				ok = false
			}
		}
		took = time.Since(start)
		return ok, strings.Join(seen, "\n")
	})
	return took
}

// testWaitFast is waitFor polling every 20 ms, for the times the tests
// report.
func testWaitFast(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 1m waiting for %s; last seen:\n%s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitControlUp waits until the controller lists n as a member (its
// control child is up) and returns when it saw it.
func (e *env) waitControlUp(n *node) time.Time {
	e.t.Helper()
	var at time.Time
	testWaitFast(e.t, n.name+"'s control child", func() (bool, string) {
		st, err := e.ctl.tryStatus()
		if err != nil || len(st.Groups) != 1 {
			return false, fmt.Sprint(err)
		}
		for _, m := range st.Groups[0].Members {
			if m.Address == n.peer.Control.String() {
				at = time.Now()
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", st.Groups[0].Members)
	})
	return at
}

// TestBGP: three members learn each other's LANs from the controller's
// route reflector, with no static route anywhere. Member 3 also
// advertises member 1's LAN, which the policy rejects: nobody sends to it
// for that LAN, and the controller shows, logs and counts the rejection.
// A fourth member joins (the others learn its LAN with no change on them)
// and leaves (they withdraw it). The controller's mpsad restarts while two
// members ping each other every 10 ms: they lose nothing, keep their
// routes, and have fresh ones again once the new reflector has them.
func TestBGP(t *testing.T) {
	e := newEnv(t, envOptions{members: 4, late: map[int]bool{4: true}, bgp: &bgpOptions{
		localTS: map[int]string{2: "10.1.3.0/24, 10.1.1.0/24"},
	}})
	m1, m2, m3, m4 := e.mems[0], e.mems[1], e.mems[2], e.mems[3]
	e.waitSPI(m1, m2, m3)
	took := e.waitPeers(time.Now(), []int{0, 1}, 3)
	t.Logf("three members have each other's LANs %v after every one has the SA", took.Round(time.Millisecond))
	// Member 3 ignores member 1's LAN (it claims it itself); the others
	// have it at member 1 only.
	testWaitFast(t, "member 3 to have member 2's LAN", func() (bool, string) {
		got := m3.peers()
		return maps.Equal(got, map[string]string{m2.lan.String(): m2.peer.Underlay.String()}), fmt.Sprint(got)
	})
	pingOK(t, m1, m2)
	pingOK(t, m2, m3)

	t.Run("filter", func(t *testing.T) {
		// Nothing for member 1's LAN reaches member 3's link.
		cp := startCapture(t, m3, "ip proto 50")
		pingOK(t, m2, m1)
		transferTCP(t, m2, m1, 128<<10)
		if lines := cp.Stop(0); countContaining(lines, "> "+m3.peer.Underlay.String()+": ESP") != 0 {
			t.Errorf("member 3 received ESP while members 1 and 2 talked:\n%s", strings.Join(lines, "\n"))
		}
		rs := e.ctl.routes(t)
		if rs.Reflector == nil {
			t.Fatalf("controller routes: %+v", rs)
		}
		var bad *api.ReflectorMember
		for i, m := range rs.Reflector.Members {
			if m.Identity == m3.peer.ID {
				bad = &rs.Reflector.Members[i]
			}
		}
		if bad == nil || len(bad.Accepted) != 1 || bad.Accepted[0].Prefix != "10.1.3.0/24" || len(bad.Rejected) != 1 ||
			bad.Rejected[0].Prefix != "10.1.1.0/24" || !strings.Contains(bad.Rejected[0].Reason, "outside the prefixes of policy site3") {
			t.Errorf("controller's view of member 3: %+v", bad)
		}
		if bad != nil && (bad.Rejected[0].NextHop != m3.peer.Underlay.String() || bad.Accepted[0].Rule != "site3") {
			t.Errorf("member 3's prefixes: %+v", bad)
		}
		if n := m3.peerCount(t); n != 1 {
			t.Errorf("member 3 uses %d peer prefixes, want member 2's alone (member 1's LAN overlaps its own)", n)
		}
		body := e.ctl.scrape(t)
		if v := metricValue(t, body, `mpsa_bgp_prefixes_rejected_total{group="lab",member="`+m3.peer.ID+`"}`); v != 1 {
			t.Errorf("mpsa_bgp_prefixes_rejected_total for member 3 = %v, want 1", v)
		}
		if v := metricValue(t, body, `mpsa_bgp_prefixes{group="lab",member="`+m3.peer.ID+`",verdict="rejected"}`); v != 1 {
			t.Errorf("mpsa_bgp_prefixes rejected for member 3 = %v, want 1", v)
		}
		if n := e.ctl.logCount(t, "bgp: rejected a route the policy does not allow this member"); n != 1 {
			t.Errorf("the controller logged %d rejections, want 1", n)
		}
		st := e.ctl.status(t).Groups[0].BGP
		if st == nil || st.Members != 3 || st.RejectedPrefixes != 1 || st.AcceptedPrefixes != 3 {
			t.Errorf("controller status bgp: %+v", st)
		}
	})

	t.Run("join", func(t *testing.T) {
		e.startMember(3)
		up := e.waitControlUp(m4)
		took := e.waitPeers(up, []int{0, 1, 3})
		t.Logf("member 4's LAN in every other member's peer table %v after its control child came up", took.Round(time.Millisecond))
		e.waitSPI(m1, m2, m4)
		for _, m := range []*node{m1, m2} {
			pingOK(t, m, m4)
			pingOK(t, m4, m)
		}
		rs := m1.routes(t)
		var r *api.Route
		for i := range rs.Routes {
			if rs.Routes[i].Prefix == m4.lan.String() {
				r = &rs.Routes[i]
			}
		}
		if rs.Session == nil || rs.Session.State != "established" || r == nil || r.Origin != "bgp" || r.Peer != m4.peer.Underlay.String() || r.Since.IsZero() {
			t.Errorf("member 1's routes: session %+v, member 4's LAN %+v", rs.Session, r)
		}
		if rs.Session != nil && (len(rs.Session.Advertised) != 1 || rs.Session.Advertised[0] != api.Advertised{Prefix: m1.lan.String(), NextHop: m1.peer.Underlay.String()}) {
			t.Errorf("member 1 advertises %+v", rs.Session.Advertised)
		}
	})

	t.Run("leave", func(t *testing.T) {
		start := time.Now()
		m4.charon.MustSwanctl(t, "--terminate", "--ike", e.lab.Group.ConnName())
		took := e.waitPeers(start, []int{0, 1}, 3)
		t.Logf("member 4's LAN withdrawn from every other member %v after its IKE SA was terminated", took.Round(time.Millisecond))
	})

	t.Run("controller restart", func(t *testing.T) {
		stopPing := pingUntil(t, m1, m2)
		time.Sleep(300 * time.Millisecond)
		e.stopMPSAD(e.ctl)
		time.Sleep(time.Second)
		e.startMPSAD(e.ctl)
		start := time.Now()
		testWaitFast(t, "members 1 and 2 to have fresh routes from the new reflector", func() (bool, string) {
			var seen []string
			for _, m := range []*node{m1, m2} {
				rs, err := tryRoutes(m)
				if err != nil || rs.Session == nil {
					return false, fmt.Sprint(err)
				}
				seen = append(seen, fmt.Sprintf("%s: %s %+v", m.name, rs.Session.State, rs.Routes))
				if rs.Session.State != "established" {
					return false, strings.Join(seen, "\n")
				}
				for _, r := range rs.Routes {
					if r.Stale {
						return false, strings.Join(seen, "\n")
					}
				}
			}
			return true, ""
		})
		t.Logf("members fresh again %v after the controller's mpsad started", time.Since(start).Round(time.Millisecond))
		e.waitSPI(m1, m2)
		res := stopPing()
		if res.err != nil || res.sent == 0 || res.received != res.sent {
			t.Errorf("ping across the controller's restart: %d of %d answered (%v)", res.received, res.sent, res.err)
		}
		e.waitPeers(time.Now(), []int{0, 1}, 3)
		if n := m1.logCount(t, "withdrew stale routes"); n != 0 {
			t.Errorf("member 1 withdrew stale routes %d times across the restart", n)
		}
	})

	t.Run("member restart", func(t *testing.T) {
		// Member 2's mpsad restarts while its LAN pings member 1's and it
		// has a default route out of its underlay, as a CPE has: it
		// starts with the routes it had learned (stale), so that its
		// kill switch never lets go of them and nothing leaves in
		// plaintext, and the controller's routes refresh them.
		m2.ns.Run(t, "ip", "route", "add", "default", "via", e.ctl.peer.Underlay.String())
		plain := startCapture(t, m2, fmt.Sprintf("ip and net %s and net %s", m2.lan, m1.lan))
		stopPing := pingUntil(t, m2, m1)
		e.stopMPSAD(m2)
		if out := m2.ns.Run(t, "ip", "route", "show", m1.lan.String()); !strings.HasPrefix(out, "blackhole") {
			t.Errorf("with mpsad stopped, the route to member 1's learned LAN is not the kill switch's blackhole: %q", out)
		}
		time.Sleep(300 * time.Millisecond)
		e.startMPSAD(m2)
		var first map[string]string
		testWaitFast(t, "member 2's mpsad to answer", func() (bool, string) {
			st, err := m2.tryStatus()
			if err != nil || len(st.Groups) != 1 {
				return false, fmt.Sprint(err)
			}
			first = m2.peers()
			return true, ""
		})
		if !maps.Equal(first, e.want(1, 3)) {
			t.Errorf("member 2's first peer table after its restart: %v, want %v", first, e.want(1, 3))
		}
		if n := m2.logCount(t, "restored the routes of the previous run"); n != 1 {
			t.Errorf("member 2 logged %d restorations", n)
		}
		testWaitFast(t, "member 2's routes to be fresh", func() (bool, string) {
			rs, err := tryRoutes(m2)
			if err != nil || rs.Session == nil || rs.Session.State != "established" {
				return false, fmt.Sprint(err)
			}
			for _, r := range rs.Routes {
				if r.Stale {
					return false, fmt.Sprintf("%+v", rs.Routes)
				}
			}
			return len(rs.Routes) == 2, fmt.Sprintf("%+v", rs.Routes)
		})
		e.waitSPI(m1, m2)
		pingOK(t, m2, m1)
		stopPing()
		if lines := plain.Stop(0); len(lines) != 0 {
			t.Errorf("%d packets between the LANs in plaintext on member 2's underlay across its restart:\n%s", len(lines), strings.Join(lines[:min(len(lines), 5)], "\n"))
		}
	})
}

// tryRoutes is routes without failing, for polling.
func tryRoutes(n *node) (api.Routes, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return api.NewClient(n.sock()).Routes(ctx, "lab")
}

// peerCount is how many prefixes n's peer table has.
func (n *node) peerCount(t *testing.T) int {
	t.Helper()
	return len(n.status(t).Groups[0].Peers)
}

// TestBGPIPv6: IPv6 LANs over an IPv6 underlay, with IPv6 control
// addresses: the members learn each other's LANs with IPv6 next hops.
func TestBGPIPv6(t *testing.T) {
	e := newEnv(t, envOptions{members: 2, underlay6: true, lan6: true, control6: true, bgp: &bgpOptions{}})
	e.waitSPI(e.mems...)
	e.waitPeers(time.Now(), []int{0, 1})
	a, b := e.mems[0], e.mems[1]
	lines := trafficCaptured(t, a, b, "ip6 proto 50")
	if n := countContaining(lines, fmt.Sprintf("%s > %s: ESP(", a.peer.Underlay, b.peer.Underlay)); n < 10 {
		t.Errorf("%d ESP packets from %s to %s on %s's link", n, a.peer.Underlay, b.peer.Underlay, a.name)
	}
}

// TestBGPFRRMember: FRR's bgpd speaks for member 2's site against mpsad's
// route reflector, over member 2's control child; mpsad there has static
// routes for its data plane and no BGP. FRR announces the site's LAN, and
// also member 1's LAN and a default route, which the policy rejects:
// member 1 learns the site's LAN at member 2's underlay and nothing else,
// traffic flows both ways, and FRR learns member 1's LAN.
func TestBGPFRRMember(t *testing.T) {
	e := newEnv(t, envOptions{members: 2, bgp: &bgpOptions{static: map[int]bool{1: true}}})
	m1, m2 := e.mems[0], e.mems[1]
	e.waitSPI(m1, m2)
	frr := bgptest.StartFRR(t, m2.ns, "frr-member2", bgptest.FRRMemberConf(bgptest.Site{
		ASN: bgpASN, RouterID: m2.peer.Control, Controller: e.ctl.peer.Control, Local: m2.peer.Control, Underlay: m2.peer.Underlay,
		Prefixes: []netip.Prefix{m2.lan, m1.lan, netip.MustParsePrefix("0.0.0.0/0")},
	}))
	start := time.Now()
	e.waitPeers(start, []int{0})
	testWaitFast(t, "FRR to learn member 1's LAN", func() (bool, string) {
		v4 := frr.Routes(t, "ipv4")
		return slices.Contains(v4[m1.lan.String()], m1.peer.Underlay.String()), fmt.Sprint(v4)
	})
	pingOK(t, m1, m2)
	pingOK(t, m2, m1)
	rs := e.ctl.routes(t)
	var site *api.ReflectorMember
	for i, m := range rs.Reflector.Members {
		if m.Identity == m2.peer.ID {
			site = &rs.Reflector.Members[i]
		}
	}
	if site == nil || site.Session != "established" || len(site.Accepted) != 1 || len(site.Rejected) != 2 {
		t.Fatalf("the controller's view of FRR's site: %+v", site)
	}
	for _, r := range m1.routes(t).Routes {
		if r.Prefix != m2.lan.String() || r.Peer != m2.peer.Underlay.String() {
			t.Errorf("member 1 has route %+v", r)
		}
	}
}

// TestBGPFRRReflector: FRR's bgpd is the route reflector in the
// controller's namespace (mpsad there has no BGP); the members' mpsad
// speakers learn each other's LANs through it.
func TestBGPFRRReflector(t *testing.T) {
	e := newEnv(t, envOptions{members: 2, bgp: &bgpOptions{noReflector: true}})
	var clients []bgptest.Client
	for _, m := range e.mems {
		clients = append(clients, bgptest.Client{Addr: m.peer.Control, Local: e.ctl.peer.Control})
	}
	frr := bgptest.StartFRR(t, e.ctl.ns, "frr-reflector", bgptest.FRRReflectorConf(bgpASN, e.ctl.peer.Control, clients))
	e.waitSPI(e.mems...)
	took := e.waitPeers(time.Now(), []int{0, 1})
	t.Logf("members learned each other through FRR %v after they had the SA", took.Round(time.Millisecond))
	pingOK(t, e.mems[0], e.mems[1])
	pingOK(t, e.mems[1], e.mems[0])
	v4 := frr.Routes(t, "ipv4")
	for _, m := range e.mems {
		if !slices.Contains(v4[m.lan.String()], m.peer.Underlay.String()) {
			t.Errorf("FRR has %v, not %s via %s", v4, m.lan, m.peer.Underlay)
		}
	}
	if rs := e.mems[0].routes(t); rs.Session == nil || rs.Session.State != "established" {
		t.Errorf("member 1's session: %+v", rs.Session)
	}
}
