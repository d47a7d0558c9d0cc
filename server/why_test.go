package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm/protect"
)

// withoutControl is snapshot's IKE SA, as the member or the controller
// sees it, with its control child not installed: absent (state ""), or in
// the given state.
func withoutControl(member bool, state vici.ChildState) vici.Snapshot {
	s := snapshot(ctlAddr, memAddr, false, 0x1111, 0x2222)
	if member {
		s = snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)
	}
	if state == "" {
		s.IKESAs[0].Children = nil
	} else {
		s.IKESAs[0].Children[0].State = state
	}
	s.IKESAs[0].RemoteHost = ctlAddr
	return s
}

func problems(t *testing.T, st api.GroupStatus) string {
	t.Helper()
	var b strings.Builder
	for _, p := range st.ControlProblems {
		b.WriteString(p.Problem + "\n")
	}
	return b.String()
}

// TestControlNotInstalledSaysWhy: an IKE SA up without its control child
// is reported after the grace, on both roles, in the status and once in
// the log, with charon's own words when its log tells them; it goes when
// the child comes up.
func TestControlNotInstalledSaysWhy(t *testing.T) {
	b := newBench(t)
	b.ctl.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(false, "")})
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, "")})
	b.w.drain(b.ctx)
	// Within the grace: charon may still be installing the child.
	if p := problems(t, b.ctlStatus()) + problems(t, b.memStatus()); p != "" {
		t.Fatalf("problem reported within the grace:\n%s", p)
	}
	b.advance(controlGrace)
	for side, st := range map[string]api.GroupStatus{"controller": b.ctlStatus(), "member": b.memStatus()} {
		p := problems(t, st)
		want := "control child ctl of connection c not installed: IKE SA c[7] with 10.98.0.1 (member1) is ESTABLISHED but has no CHILD_SA ctl"
		if !strings.Contains(p, want) || len(st.ControlProblems) != 1 || st.ControlProblems[0].IKE != 7 {
			t.Errorf("%s: problems\n%s\nwant one with %q", side, p, want)
		}
	}
	if n := strings.Count(b.logs.String(), "not installed: IKE SA c[7]"); n != 2 {
		t.Errorf("logged %d times, want once per side:\n%s", n, b.logs)
	}
	// charon's words arrive: said at once, and again in the log.
	ev := vici.LogEvent{Group: "IKE", Level: 1, IKEName: "c", IKEUniqueID: 7, Msg: "received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built"}
	b.mem.vici.said(b.now, ev)
	b.mem.vici.said(b.now, ev) // the same words once
	if p := problems(t, b.memStatus()); !strings.HasSuffix(strings.TrimSpace(p), "; charon said: [IKE] received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built") {
		t.Errorf("member: %s", p)
	}
	// Words for an IKE SA of another connection go nowhere.
	b.mem.vici.said(b.now, vici.LogEvent{Group: "IKE", IKEName: "other", IKEUniqueID: 7, Msg: "failed to establish CHILD_SA"})
	if p := problems(t, b.memStatus()); strings.Contains(p, "failed to establish") {
		t.Errorf("another connection's message reached the group: %s", p)
	}
	// The child comes up: the problem goes, and the member gets the SA.
	b.up()
	if p := problems(t, b.ctlStatus()) + problems(t, b.memStatus()); p != "" {
		t.Fatalf("problem still reported with the child up:\n%s", p)
	}
	if ms := b.memStatus(); ms.OutboundSPI == "" {
		t.Fatalf("member has no SA after the child came up: %+v", ms)
	}
	if !strings.Contains(b.logs.String(), "control child ctl of connection c installed and verified") {
		t.Errorf("the recovery was not logged")
	}
}

// TestControlChildStateSaysWhy: a child that is there but not INSTALLED
// is named with its state; charon's words that came before the IKE SA was
// known as a problem are kept for it.
func TestControlChildStateSaysWhy(t *testing.T) {
	b := newBench(t)
	b.mem.vici.said(b.now, vici.LogEvent{Group: "ESP", IKEName: "c", IKEUniqueID: 7, Msg: "failed to create ESP context: unsupported AEAD algorithm AES_GCM_16"})
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, vici.ChildInstalling)})
	// charon's words make it definite: no grace.
	p := problems(t, b.memStatus())
	if !strings.Contains(p, "its CHILD_SA ctl is INSTALLING") || !strings.Contains(p, "charon said: [ESP] failed to create ESP context: unsupported AEAD algorithm AES_GCM_16") {
		t.Fatalf("member problems:\n%s", p)
	}
}

// TestCharonProblems: at the connection to a charon that runs
// kernel-libipsec without AES-GCM, a group whose control child uses
// charon's default proposal is told so, in the log and the status; a
// child configured with AH is refused in words.
func TestCharonProblems(t *testing.T) {
	b := newBench(t)
	g := b.mem.groups[0].(*memGroup)
	g.cfg.ControlChildConf = &swanctl.ChildConf{Pos: swanctl.Pos{File: "test.conf", Line: 3}}
	ch := &vici.Charon{Plugins: []string{"charon", "aes", "hmac", "kernel-libipsec"},
		Algorithms: map[string]map[string]string{"encryption": {"AES_CBC": "aes"}, "integrity": {"HMAC_SHA2_256_128": "hmac"}}}
	b.mem.onUpdate(b.ctx, vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Charon: ch})
	st := b.memStatus()
	if len(st.CharonProblems) != 1 || !strings.Contains(st.CharonProblems[0], "AES_GCM_16") || !strings.Contains(st.CharonProblems[0], "libstrongswan-standard-plugins") {
		t.Fatalf("charon problems %q", st.CharonProblems)
	}
	if !strings.Contains(b.logs.String(), "level=ERROR") || !strings.Contains(b.logs.String(), "AES_GCM_16") {
		t.Fatalf("not logged as an error:\n%s", b.logs)
	}
	// The same charon again (a resync) logs nothing new.
	before := strings.Count(b.logs.String(), "AES_GCM_16")
	b.mem.onUpdate(b.ctx, vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Charon: ch})
	if after := strings.Count(b.logs.String(), "AES_GCM_16"); after != before {
		t.Fatalf("logged again on a resync with the same charon")
	}
	g.cfg.ControlChildConf = &swanctl.ChildConf{AHProposals: []string{"sha256"}, Pos: swanctl.Pos{File: "test.conf", Line: 3}}
	g.charonChanged(ch)
	if st := b.memStatus(); len(st.CharonProblems) != 1 || !strings.Contains(st.CharonProblems[0], "AH authenticates but does not encrypt") {
		t.Fatalf("AH child: %q", st.CharonProblems)
	}
	// Proposals that do not encrypt: NULL, and NULL_AES_GMAC in each
	// key size; one that encrypts beside them is not named.
	g.cfg.ControlChildConf = &swanctl.ChildConf{ESPProposals: []string{"aes256-sha256", "null-sha256", "AES128GMAC", "aes192gmac-modp2048", "aes256gmac"},
		Pos: swanctl.Pos{File: "test.conf", Line: 3}}
	nogcm := &vici.Charon{Plugins: []string{"charon", "aes", "hmac", "gcm", "kernel-netlink"}}
	g.charonChanged(nogcm)
	st = b.memStatus()
	for _, want := range []string{"NULL encryption (null-sha256, test.conf:3)", "aes128gmac, NULL_AES_GMAC (AES128GMAC, test.conf:3)",
		"aes192gmac, NULL_AES_GMAC (aes192gmac-modp2048", "aes256gmac, NULL_AES_GMAC (aes256gmac, test.conf:3)"} {
		if !slices.ContainsFunc(st.CharonProblems, func(p string) bool { return strings.Contains(p, want) }) {
			t.Errorf("no problem says %q: %q", want, st.CharonProblems)
		}
	}
	if n := len(st.CharonProblems); n != 4 {
		t.Errorf("%d problems, want 4: %q", n, st.CharonProblems)
	}
}

// TestMemberAsksForControlChildAgain: while the member's IKE SA has no
// control child, it asks charon for the child again, after the grace and
// then with doubling waits; once the child is up it stops.
func TestMemberAsksForControlChildAgain(t *testing.T) {
	b := newBench(t)
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, "")})
	asked := func() int {
		n := 0
		for {
			select {
			case r := <-b.mem.initiates:
				if r != (childRef{"c", "ctl"}) {
					t.Fatalf("asked for %+v", r)
				}
				n++
			default:
				return n
			}
		}
	}
	b.advance(retryFirst - time.Millisecond)
	if n := asked(); n != 0 {
		t.Fatalf("asked %d times before %v", n, retryFirst)
	}
	b.advance(time.Millisecond)
	if n := asked(); n != 1 {
		t.Fatalf("asked %d times at %v, want once", n, retryFirst)
	}
	b.advance(2*retryFirst - time.Millisecond)
	if n := asked(); n != 0 {
		t.Fatalf("asked again before the doubled wait")
	}
	b.advance(time.Millisecond)
	if n := asked(); n != 1 {
		t.Fatalf("asked %d times after the doubled wait, want once", n)
	}
	b.up()
	b.advance(time.Hour)
	if n := asked(); n != 0 {
		t.Fatalf("asked %d times with the control child up", n)
	}
}

// TestMemberDoesNotAskForAPresentChild: a control child that charon has
// but that is not usable yet (INSTALLING) is reported, and charon is not
// asked for it again: it has nothing more to give.
func TestMemberDoesNotAskForAPresentChild(t *testing.T) {
	b := newBench(t)
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, vici.ChildInstalling)})
	b.advance(time.Hour)
	select {
	case r := <-b.mem.initiates:
		t.Fatalf("asked charon for %+v although its CHILD_SA is INSTALLING", r)
	default:
	}
	if p := problems(t, b.memStatus()); !strings.Contains(p, "INSTALLING") {
		t.Fatalf("member problems:\n%s", p)
	}
}

// TestMemberAskQueueFull: when the requests to charon cannot be queued
// (charon is slow to answer earlier ones), the member says so instead of
// claiming to ask, and asks again at its next try.
func TestMemberAskQueueFull(t *testing.T) {
	b := newBench(t)
	for len(b.mem.initiates) < cap(b.mem.initiates) {
		b.mem.initiates <- childRef{"other", "child"}
	}
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, "")})
	b.advance(retryFirst)
	if strings.Contains(b.logs.String(), "asking charon to establish the control child again") ||
		!strings.Contains(b.logs.String(), "cannot ask charon to establish the control child again now") {
		t.Fatalf("with the queue full:\n%s", b.logs)
	}
	for len(b.mem.initiates) > 0 {
		<-b.mem.initiates
	}
	b.advance(2 * retryFirst)
	if r := <-b.mem.initiates; r != (childRef{"c", "ctl"}) || !strings.Contains(b.logs.String(), "asking charon to establish the control child again") {
		t.Fatalf("asked for %+v at the next try:\n%s", r, b.logs)
	}
}

// TestControlAddressBelongsToItsMember: an IKE SA of another identity
// whose control child claims a member's control address (charon narrows
// a range of remote_ts to what the peer proposes) is refused while the
// member's own is up; the member keeps its session.
func TestControlAddressBelongsToItsMember(t *testing.T) {
	b := newBench(t)
	b.up()
	before := b.ctlStatus().Members
	snap := snapshot(ctlAddr, memAddr, false, 0x1111, 0x2222)
	impostor := snap.IKESAs[0]
	impostor.UniqueID, impostor.RemoteID, impostor.InitiatorSPI = 8, "member2", 0x3333
	snap.IKESAs = append(snap.IKESAs, impostor)
	b.ctl.onUpdate(b.ctx, vici.Update{Snapshot: snap})
	b.w.drain(b.ctx)
	st := b.ctlStatus()
	if len(st.Members) != 1 || st.Members[0] != before[0] {
		t.Fatalf("members changed: %+v, were %+v", st.Members, before)
	}
	p := problems(t, st)
	if !strings.Contains(p, "control child ctl of connection c refused (IKE SA c[8]") || !strings.Contains(p, "its control address 10.98.1.1 belongs to member member1 (IKE SA 7)") {
		t.Fatalf("problems:\n%s", p)
	}
	// The same listing again (a resync every 60 s): nothing new is
	// logged, neither a recovery nor the refusal, and the problem keeps
	// its age.
	logged, since := b.logs.String(), st.ControlProblems[0].Since
	b.now = b.now.Add(time.Minute)
	b.ctl.onUpdate(b.ctx, vici.Update{Snapshot: snap})
	b.w.drain(b.ctx)
	if more := strings.TrimPrefix(b.logs.String(), logged); more != "" {
		t.Fatalf("a repeated listing logged:\n%s", more)
	}
	if st := b.ctlStatus(); len(st.ControlProblems) != 1 || !st.ControlProblems[0].Since.Equal(since) {
		t.Fatalf("after a repeated listing: %+v, want the problem since %v", st.ControlProblems, since)
	}
}

// refusingVerifier proves no control child.
type refusingVerifier struct{}

func (refusingVerifier) Verify(context.Context, protect.Child, bool) (protect.Proof, error) {
	return protect.Proof{}, errors.New("no inbound XFRM policy")
}

// TestMemberDoesNotAskForRefusedChild: a member whose control child is
// INSTALLED but refused (verification failed) does not ask charon for it
// again: charon has it, and asking would change nothing. It asks only
// while a child is missing.
func TestMemberDoesNotAskForRefusedChild(t *testing.T) {
	b := newBench(t)
	b.mem.verifier = refusingVerifier{}
	// The IKE SA first comes without its child (the retry is armed),
	// then the child is installed and refused.
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, "")})
	b.advance(time.Second)
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)})
	if p := problems(t, b.memStatus()); !strings.Contains(p, "not protected, refusing to use it") {
		t.Fatalf("problems:\n%s", p)
	}
	n := 0
	for range 360 { // an hour, 10 s at a time
		b.advance(10 * time.Second)
		for len(b.mem.initiates) > 0 {
			<-b.mem.initiates
			n++
		}
	}
	if n != 0 {
		t.Fatalf("asked charon %d times for a control child it has installed (refused by mpsad)", n)
	}
	if strings.Contains(b.logs.String(), "asking charon to establish the control child again") {
		t.Fatalf("logged a request for a refused child:\n%s", b.logs)
	}
}

// TestCharonForgottenWhenLost: when the VICI session ends, what charon
// said of itself and every proof go with it: a charon that comes back
// without saying which plugins it has (its stats failed) has the control
// child refused, in words, until it says so.
func TestCharonForgottenWhenLost(t *testing.T) {
	b := newBench(t)
	b.up()
	if ms := b.memStatus(); ms.Controller.State != "up" {
		t.Fatalf("member's link %+v", ms.Controller)
	}
	ch := &vici.Charon{Plugins: []string{"charon", "kernel-netlink"}}
	b.mem.onUpdate(b.ctx, vici.Update{Cause: vici.CauseDisconnected})
	if b.mem.charon != nil || len(b.mem.vici.proofs) != 0 {
		t.Fatalf("after the session ended: charon %v, %d proofs", b.mem.charon, len(b.mem.vici.proofs))
	}
	again := snapshot(memAddr, ctlAddr, true, 0x1111, 0x2222)
	b.mem.onUpdate(b.ctx, vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Changed: again.IKESAs})
	p := problems(t, b.memStatus())
	if !strings.Contains(p, "not protected, refusing to use it") || !strings.Contains(p, "charon did not say which plugins it loaded") {
		t.Fatalf("problems with a charon that did not answer stats:\n%s", p)
	}
	if ms := b.memStatus(); ms.Controller.State != "down" {
		t.Fatalf("member kept its link over an unproven child: %+v", ms.Controller)
	}
	// charon answers at the next resync.
	b.mem.onUpdate(b.ctx, vici.Update{Cause: vici.CauseResync, Snapshot: vici.Snapshot{Connected: true}, Changed: again.IKESAs, Charon: ch})
	b.w.drain(b.ctx)
	if p := problems(t, b.memStatus()); p != "" || b.mem.charon != ch {
		t.Fatalf("after charon answered: charon %v, problems\n%s", b.mem.charon, p)
	}
	if ms := b.memStatus(); ms.Controller.State != "up" {
		t.Fatalf("member's link after charon answered: %+v", ms.Controller)
	}
}

// TestCharonWordsForUnknownIKESAsBounded: charon's messages for IKE SAs
// not known as problems are kept a minute, at most saidPending IKE SAs of
// them, the oldest dropped first so that a flood never shuts the newest
// out; a message that only says a CHILD_SA closed (every rekey logs one)
// is kept only for an IKE SA already known to lack its child.
func TestCharonWordsForUnknownIKESAsBounded(t *testing.T) {
	b := newBench(t)
	g := b.mem.groups[0].(*memGroup)
	say := func(ike uint32, msg string) {
		b.mem.vici.said(b.now, vici.LogEvent{Group: "IKE", Level: 1, IKEName: "c", IKEUniqueID: ike, Msg: msg})
	}
	// Routine rekeys of many IKE SAs keep nothing.
	for i := range uint32(1000) {
		say(1000+i, "closing CHILD_SA ctl{5} with SPIs c1234567_i 01234567_o and TS 10.98.1.1/32 === 10.98.0.1/32")
		say(1000+i, "CHILD_SA closed")
	}
	if n := len(g.pending); n != 0 {
		t.Fatalf("%d IKE SAs kept for routine closes", n)
	}
	// IKE SAs that fail in IKE_AUTH are never listed: forgotten after a
	// minute.
	say(1, "received AUTHENTICATION_FAILED notify error")
	b.advance(saidPendingFor)
	say(2, "received AUTHENTICATION_FAILED notify error")
	if _, ok := g.pending[1]; ok || len(g.pending) != 1 {
		t.Fatalf("after a minute: %d IKE SAs pending, IKE SA 1 among them: %v", len(g.pending), ok)
	}
	// A flood of failures for IKE SAs nobody lists: the newest are kept.
	for i := range uint32(2 * saidPending) {
		say(5000+i, "failed to establish CHILD_SA, keeping IKE_SA")
	}
	say(7, "received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built")
	if len(g.pending) != saidPending {
		t.Fatalf("%d IKE SAs pending, want at most %d", len(g.pending), saidPending)
	}
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, "")})
	if p := problems(t, b.memStatus()); !strings.Contains(p, "charon said: [IKE] received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built") {
		t.Fatalf("IKE SA 7's words lost in the flood:\n%s", p)
	}
	// For IKE SA 7, now known to lack its child, a close is kept.
	say(7, "CHILD_SA closed")
	if p := problems(t, b.memStatus()); !strings.Contains(p, "; [IKE] CHILD_SA closed") {
		t.Fatalf("a close for an IKE SA known to lack its child was not kept:\n%s", p)
	}
}

// TestControlProblemsReportedAfterGrace: problems that appear at
// different times are each reported when their own grace has passed, one
// whose child comes up within its grace never is, and a reported problem
// whose reason changes is reported again at once. Nothing waits once
// everything due is reported.
func TestControlProblemsReportedAfterGrace(t *testing.T) {
	f := newFleet(t, fleetConf(), 10, nil)
	g := f.group()
	missing := func(i int) vici.IKESA {
		sa := f.sas[i]
		sa.Children = nil
		return sa
	}
	for i := range 10 {
		f.s.onUpdate(f.ctx, vici.Update{Cause: vici.CauseEvent, Snapshot: vici.Snapshot{Connected: true}, Changed: []vici.IKESA{missing(i)}})
		f.advance(f.now.Add(controlGrace / 4))
	}
	// IKE SA 10 (member 9) gets its child within its grace.
	f.join(9)
	reported := func() []uint32 {
		st := g.status(f.ctx)
		var ids []uint32
		for _, p := range st.ControlProblems {
			ids = append(ids, p.IKE)
		}
		return ids
	}
	// 10 x grace/4 have passed since the first: the first 7 are due.
	if got := reported(); !slices.Equal(got, []uint32{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("reported %v", got)
	}
	f.advance(f.now.Add(controlGrace))
	if got := reported(); !slices.Equal(got, []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9}) || len(g.waiting) != 0 {
		t.Fatalf("reported %v, %d waiting", got, len(g.waiting))
	}
	// Member 0's child comes, INSTALLING: said at once.
	sa := f.sas[0]
	sa.Children = []vici.ChildSA{sa.Children[0]}
	sa.Children[0].State = vici.ChildInstalling
	f.s.onUpdate(f.ctx, vici.Update{Cause: vici.CauseEvent, Snapshot: vici.Snapshot{Connected: true}, Changed: []vici.IKESA{sa}})
	if st := g.status(f.ctx); !strings.Contains(st.ControlProblems[0].Problem, "its CHILD_SA ctl is INSTALLING") {
		t.Fatalf("a changed reason was not reported: %q", st.ControlProblems[0].Problem)
	}
}

// proofVerifier proves every control child as kernel-libipsec or a
// route-based child would: datagrams only on interface 7, only from port
// 4501.
type proofVerifier struct{}

func (proofVerifier) Verify(context.Context, protect.Child, bool) (protect.Proof, error) {
	return protect.Proof{IfIndex: 7, IfName: "ipsec0", SrcPort: 4501, How: "route into ipsec0"}, nil
}

// TestProofAdmitsOnlyItsWay: with a proof that names an interface and a
// source port, a control datagram that arrives on another interface or
// from another port is dropped as not_protected in either role, and
// nothing follows from it: no SA installed, no acknowledgement, no
// acknowledgement counted. The same datagram the proof's way is taken.
func TestProofAdmitsOnlyItsWay(t *testing.T) {
	b := newBench(t)
	b.ctl.verifier, b.mem.verifier = proofVerifier{}, proofVerifier{}
	b.w.ifIndex = 7
	b.up()
	first := b.ctlGroup().group.Current().SPI()
	b.expectCalls(peersCall, fmt.Sprintf("install %08x", first), fmt.Sprintf("outbound %08x", first))
	if _, err := b.ctlGroup().rekey(b.now, metrics.RekeyManual); err != nil {
		t.Fatal(err)
	}
	second := b.ctlGroup().group.Current().SPI()
	wrong := func(d Datagram) []Datagram {
		onIf := d
		onIf.IfIndex = 8
		fromPort := d
		fromPort.Src = netip.AddrPortFrom(d.Src.Addr(), 4502)
		return []Datagram{onIf, fromPort}
	}
	take := func() Datagram {
		t.Helper()
		if len(b.w.queue) != 1 {
			t.Fatalf("%d datagrams on the wire, want 1", len(b.w.queue))
		}
		d := b.w.queue[0].d
		b.w.queue = b.w.queue[1:]
		return d
	}
	// The member's side: the controller's MPSA_PUT.
	put := take()
	for _, d := range wrong(put) {
		b.mem.onDatagram(b.ctx, d)
	}
	b.expectCalls()
	if n := len(b.w.queue); n != 0 {
		t.Fatalf("the member answered a datagram its proof does not admit (%d datagrams)", n)
	}
	if got := b.memStatus().Drops[metrics.DropNotProtected]; got != 2 {
		t.Fatalf("member counted %d not_protected, want 2", got)
	}
	b.mem.onDatagram(b.ctx, put)
	b.expectCalls(fmt.Sprintf("install %08x", second))
	// The controller's side: the member's acknowledgement.
	ack := take()
	for _, d := range wrong(ack) {
		b.ctl.onDatagram(b.ctx, d)
	}
	st := b.ctlStatus()
	if st.Members[0].AckedSPI != spiString(first) || st.Members[0].PendingSPI != spiString(second) || st.Drops[metrics.DropNotProtected] != 2 {
		t.Fatalf("after acknowledgements its proof does not admit: member %+v, drops %v", st.Members[0], st.Drops)
	}
	b.ctl.onDatagram(b.ctx, ack)
	if st := b.ctlStatus(); st.Members[0].AckedSPI != spiString(second) {
		t.Fatalf("the acknowledgement the proof admits was not taken: %+v", st.Members[0])
	}
}

// TestNoCharonNoControl: until charon says which plugins it has, neither
// role uses a control child, and both say why.
func TestNoCharonNoControl(t *testing.T) {
	b := newBench(t)
	b.ctl.charon, b.mem.charon = nil, nil
	b.up()
	if n := len(b.w.queue); n != 0 || len(b.ctlStatus().Members) != 0 {
		t.Fatalf("control children used without charon's plugin list: %d datagrams, members %+v", n, b.ctlStatus().Members)
	}
	for side, st := range map[string]GroupStatus{"controller": b.ctlStatus(), "member": b.memStatus()} {
		p := problems(t, st)
		if !strings.Contains(p, "not protected, refusing to use it") || !strings.Contains(p, "charon did not say which plugins it loaded (VICI stats)") {
			t.Errorf("%s: problems\n%s", side, p)
		}
	}
}

// TestFollowLogOnlyWhileMissing: charon's log is followed while some
// group has an IKE SA without its control child past the grace, and stops
// a while after the last one came up.
func TestFollowLogOnlyWhileMissing(t *testing.T) {
	b := newBench(t)
	if b.mem.followingLog {
		t.Fatal("following charon's log with nothing to explain")
	}
	b.mem.onUpdate(b.ctx, vici.Update{Snapshot: withoutControl(true, "")})
	if b.mem.followingLog {
		t.Fatal("following charon's log for a control child within its grace (every IKE SA lacks it for a moment)")
	}
	b.advance(controlGrace)
	if !b.mem.followingLog {
		t.Fatal("not following charon's log with a control child missing")
	}
	b.up()
	b.advance(logLinger - time.Millisecond)
	if !b.mem.followingLog {
		t.Fatal("stopped following before the linger")
	}
	b.advance(time.Millisecond)
	if b.mem.followingLog {
		t.Fatal("still following charon's log with every control child up")
	}
}
