package bgp

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/bgptest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// Interop with implementations nobody here wrote: FRR's bgpd as a member
// speaker against mpsa's reflector, and FRR and BIRD as the route
// reflector of mpsa's members (internal/bgptest runs them).

// site2 is member 2's site as FRR speaks for it: control address
// 10.99.2.2, the reflector's 10.99.2.1, underlay 192.0.2.2, its own
// prefixes and two it may not advertise (member 1's and a default route).
func site2() bgptest.Site {
	return bgptest.Site{ASN: testASN, RouterID: addr("10.99.2.2"), Controller: addr("10.99.2.1"), Local: addr("10.99.2.2"), Underlay: addr("192.0.2.2"),
		Prefixes: prefixes("10.2.0.0/24", "10.1.0.0/24", "0.0.0.0/0", "2001:db8:2::/64")}
}

// TestFRRMember: FRR's bgpd as member 2's speaker, against mpsa's
// reflector: mpsa's member 1 learns FRR's prefixes with FRR's underlay as
// peer, FRR learns member 1's, and what FRR advertises beyond its policy
// (member 1's prefix, a default route) is rejected and never reaches
// member 1.
func TestFRRMember(t *testing.T) {
	l := newLab(t, 2)
	refl := l.startReflector(t, testPolicy(t, 2), 0)
	m1 := l.startMember(t, 1, 0)
	m1.call(command{Op: "advertise", Prefixes: prefixes("10.1.0.0/24", "2001:db8:1::/64"), Underlay: underlay(1)})
	refl.call(command{Op: "add", Member: MemberInfo{Addr: memberAddr(2, false), Local: ctlAddr(2, false), Identity: identity(2)}})
	join(refl, m1, 1, false)
	frr := bgptest.StartFRR(t, l.members[1], "frr-member2", bgptest.FRRMemberConf(site2()))

	m1.waitRoutes(t, 30*time.Second, time.Now(), map[string]string{"10.2.0.0/24": "192.0.2.2", "2001:db8:2::/64": "192.0.2.2"})
	testenv.WaitFor(t, 15*time.Second, "FRR to learn member 1's prefixes", func() (bool, string) {
		v4, v6 := frr.Routes(t, "ipv4"), frr.Routes(t, "ipv6")
		return slices.Contains(v4["10.1.0.0/24"], "192.0.2.1") && slices.Contains(v6["2001:db8:1::/64"], "192.0.2.1"), fmt.Sprint(v4, v6)
	})
	var st ReflectorStatus
	testenv.WaitFor(t, 10*time.Second, "the reflector to judge FRR's routes", func() (bool, string) {
		st = refl.reflectorStatus()
		for _, m := range st.Members {
			if m.Identity == identity(2) {
				return len(m.Accepted) == 2 && len(m.Rejected) == 2, fmt.Sprintf("%+v", m)
			}
		}
		return false, fmt.Sprintf("%+v", st)
	})
	for _, c := range m1.history() {
		if c.Peer == underlay(2) && (c.Prefix.String() == "0.0.0.0/0" || c.Prefix.String() == "10.1.0.0/24") {
			t.Errorf("member 1 learned a rejected route from FRR: %+v", c.Change)
		}
	}
	// FRR stops: the reflector keeps its routes for the restart time it
	// advertised (graceful restart), as for a member whose mpsad
	// restarts; once its control child is gone (RemoveMember) they are
	// withdrawn at once.
	frr.Stop()
	time.Sleep(time.Second)
	if got := m1.learned(); len(got) != 2 {
		t.Errorf("member 1 lost FRR's routes when FRR stopped: %v", routeStrings(got))
	}
	start := time.Now()
	refl.call(command{Op: "remove", Member: MemberInfo{Addr: memberAddr(2, false)}})
	took := m1.waitRoutes(t, 10*time.Second, start, map[string]string{})
	t.Logf("FRR's routes withdrawn %v after its removal", took.Round(time.Millisecond))
}

// reflectorClients are the lab's members as route reflector clients.
func reflectorClients(members int) []bgptest.Client {
	var cs []bgptest.Client
	for i := 1; i <= members; i++ {
		cs = append(cs, bgptest.Client{Addr: memberAddr(i, false), Local: ctlAddr(i, false)})
	}
	return cs
}

// twoMembersThrough starts mpsa members 1 and 2, advertising an IPv4 and
// an IPv6 prefix each with an IPv4 underlay, against the reflector the
// test runs in the lab's controller namespace (what names it), and waits
// until each has learned the other's prefixes.
func twoMembersThrough(t *testing.T, l *lab, what string) (m1, m2 *speakerProc) {
	t.Helper()
	m1 = l.startMember(t, 1, 0)
	m2 = l.startMember(t, 2, 0)
	m1.call(command{Op: "advertise", Prefixes: prefixes("10.1.0.0/24", "2001:db8:1::/64"), Underlay: underlay(1)})
	m2.call(command{Op: "advertise", Prefixes: prefixes("10.2.0.0/24", "2001:db8:2::/64"), Underlay: underlay(2)})
	start := time.Now()
	m1.call(command{Op: "set-controller", Ctl: ctlAddr(1, false), Local: memberAddr(1, false)})
	m2.call(command{Op: "set-controller", Ctl: ctlAddr(2, false), Local: memberAddr(2, false)})
	took := m1.waitRoutes(t, 30*time.Second, start, map[string]string{"10.2.0.0/24": "192.0.2.2", "2001:db8:2::/64": "192.0.2.2"})
	m2.waitRoutes(t, 30*time.Second, start, map[string]string{"10.1.0.0/24": "192.0.2.1", "2001:db8:1::/64": "192.0.2.1"})
	t.Logf("converged through %s in %v", what, took.Round(time.Millisecond))
	return m1, m2
}

// TestFRRReflector: FRR's bgpd as the route reflector of mpsa's members:
// each learns the other's IPv4 and IPv6 prefixes with the other's
// underlay as peer and its withdrawals, and a restart of FRR costs the
// members no route.
func TestFRRReflector(t *testing.T) {
	l := newLab(t, 2)
	frr := bgptest.StartFRR(t, l.ctl, "frr-reflector", bgptest.FRRReflectorConf(testASN, addr("10.99.1.1"), reflectorClients(2)))
	m1, m2 := twoMembersThrough(t, l, "FRR")

	// Member 2 withdraws one prefix.
	m2.call(command{Op: "advertise", Prefixes: prefixes("10.2.0.0/24"), Underlay: underlay(2)})
	m1.waitRoutes(t, 10*time.Second, time.Now(), map[string]string{"10.2.0.0/24": "192.0.2.2"})

	// FRR restarts: the members keep their routes while it is away and
	// after it is back, without a withdrawal.
	before := len(m1.history())
	frr.Stop()
	testenv.WaitFor(t, 10*time.Second, "member 1 to notice FRR is gone", func() (bool, string) {
		st := m1.memberStatus()
		return st.Session != "established" && len(st.Learned) == 1 && st.Learned[0].Stale, fmt.Sprintf("%+v", st)
	})
	frr = bgptest.StartFRR(t, l.ctl, "frr-reflector-2", bgptest.FRRReflectorConf(testASN, addr("10.99.1.1"), reflectorClients(2)))
	testenv.WaitFor(t, 40*time.Second, "member 1's route to be fresh again", func() (bool, string) {
		st := m1.memberStatus()
		return st.Session == "established" && len(st.Learned) == 1 && !st.Learned[0].Stale, fmt.Sprintf("%+v", st)
	})
	if v4 := frr.Routes(t, "ipv4"); !slices.Contains(v4["10.1.0.0/24"], "192.0.2.1") || !slices.Contains(v4["10.2.0.0/24"], "192.0.2.2") {
		t.Errorf("the restarted FRR has %v", v4)
	}
	m2.waitRoutes(t, 10*time.Second, time.Now(), map[string]string{"10.1.0.0/24": "192.0.2.1", "2001:db8:1::/64": "192.0.2.1"})
	if got := m1.history()[before:]; len(got) != 0 {
		t.Errorf("member 1's routes changed while FRR restarted: %+v", got)
	}
	if got := withdrawnIn(m2.history(), "10.1.0.0/24"); len(got) != 0 {
		t.Errorf("member 2 withdrew 10.1.0.0/24 while FRR restarted: %+v", got)
	}
}

// TestBIRDReflector: BIRD 2 as the route reflector of mpsa's members.
func TestBIRDReflector(t *testing.T) {
	l := newLab(t, 2)
	bgptest.StartBIRD(t, l.ctl, bgptest.BIRDReflectorConf(testASN, addr("10.99.1.1"), reflectorClients(2)))
	m1, m2 := twoMembersThrough(t, l, "BIRD")
	m2.call(command{Op: "advertise", Prefixes: prefixes("10.2.0.0/24"), Underlay: underlay(2)})
	m1.waitRoutes(t, 10*time.Second, time.Now(), map[string]string{"10.2.0.0/24": "192.0.2.2"})
}
