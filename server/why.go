package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
)

// controlGrace is how long an ESTABLISHED IKE SA may lack its control
// child before mpsad says so: charon reports the IKE SA a moment before
// the CHILD_SA it negotiates with it. A failure charon itself reports (its
// log event) is said at once.
const controlGrace = 3 * time.Second

// saidPerIKE bounds the messages of charon's kept for one IKE SA, and
// saidPending the IKE SAs whose messages arrive before the IKE SA does,
// each kept for saidPendingFor at most: charon lists an IKE SA within a
// moment of its messages, and one that fails before it is established
// (in IKE_AUTH) is never listed.
const (
	saidPerIKE     = 3
	saidPending    = 256
	saidPendingFor = time.Minute
)

// controlProblem is an IKE SA of a group's connection that carries no
// usable control child: none INSTALLED, or one mpsad cannot verify.
type controlProblem struct {
	ike   vici.IKESA // without its children
	since time.Time
	// refused is the reason mpsad does not use a child that is
	// INSTALLED: the verifier's, when it cannot prove the child
	// protects the control addresses, or another (taken says which);
	// empty when the child is missing.
	refused string
	taken   bool
	// state describes the child when it is there but not usable
	// (INSTALLING, REKEYING, a traffic selector that is not one host).
	state string
	// said are charon's own messages about the child's failure, oldest
	// first.
	said []string
	// reported is the text last logged; empty until reported.
	reported string
	// counted: it counts in controlWatch.missing (countAsMissing).
	counted bool
}

// controlWatch is the part of a group, in either role, that knows why its
// control children are not up: IKE SAs of its connection without an
// INSTALLED control child, children mpsad refused, what charon said about
// them, and what charon lacks for them. It logs each problem once, when it
// appears (after controlGrace for a child still being negotiated) and when
// its reason changes, and hands them to the status. Its work grows with
// the problems, not with the members: a group with every control child up
// holds nothing here, and the grace check looks only at the problems
// waiting for it.
type controlWatch struct {
	s     *Server
	cfg   func() *swanctl.Group
	log   *slog.Logger
	byIKE map[uint32]*controlProblem
	// bgp are the IKE SAs whose control child is up but does not protect
	// the group's BGP session, which mpsad therefore does not run over it
	// (groups with BGP only).
	bgp map[uint32]*controlProblem
	// pending are charon's messages for IKE SAs not (yet) known as
	// problems, at most saidPending of them, each for saidPendingFor;
	// pendingOrder has them in order of arrival (an entry whose IKE SA
	// is gone from pending, or came again later, is skipped).
	pending      map[uint32]pendingSaid
	pendingOrder []pendingRef
	// waiting are the problems not reported yet, within their grace, in
	// order of since (the order they appear in): check fires for the
	// first. A problem reported or gone meanwhile is skipped.
	waiting []*controlProblem
	check   deadline
	// missing counts the problems that are a missing control child
	// (not a refused one).
	missing int
	// charon are the problems with what charon has, for this group's
	// control child (vici.Charon.ESPProblems and the child's
	// configuration), as last checked.
	charon []string
}

// pendingSaid are charon's messages for an IKE SA not known as a
// problem, and when the first arrived.
type pendingSaid struct {
	said []string
	at   time.Time
}

type pendingRef struct {
	ike uint32
	at  time.Time
}

func (w *controlWatch) init(s *Server, cfg func() *swanctl.Group, log *slog.Logger) {
	w.s, w.cfg, w.log = s, cfg, log
	w.byIKE = map[uint32]*controlProblem{}
	w.bgp = map[uint32]*controlProblem{}
	w.pending = map[uint32]pendingSaid{}
	w.check.fire = w.onCheck
}

// what names the control child for messages.
func (w *controlWatch) what() string {
	c := w.cfg()
	return fmt.Sprintf("control child %s of connection %s", c.ControlChild, c.Connection)
}

// controlMissing records that the ESTABLISHED IKE SA sa of the group's
// connection has no usable control child.
func (w *controlWatch) controlMissing(_ context.Context, now time.Time, sa vici.IKESA) {
	p := w.byIKE[sa.UniqueID]
	isNew := p == nil
	if isNew {
		p = &controlProblem{since: now, said: w.takePending(now, sa.UniqueID)}
		w.byIKE[sa.UniqueID] = p
	}
	p.ike, p.refused = withoutChildren(sa), ""
	p.state = childState(sa, w.cfg().ControlChild)
	if len(p.said) > 0 || p.reported != "" {
		// Definite (charon said why), or reported before (refused,
		// say): a new reason is said at once.
		w.report(p)
		return
	}
	if isNew {
		w.waiting = append(w.waiting, p)
		w.s.sched.setEarlier(&w.check, p.since.Add(controlGrace))
	}
}

// controlRefused records that the control child of IKE SA sa is
// INSTALLED but mpsad cannot verify that it protects the control
// addresses: the group does not use it. It is said at once.
func (w *controlWatch) controlRefused(now time.Time, sa vici.IKESA, why string) {
	w.refuse(now, sa, why, false)
}

// controlTaken records that the control child of IKE SA sa claims a
// control address that belongs to another member: the group does not use
// it. It is said at once.
func (w *controlWatch) controlTaken(now time.Time, sa vici.IKESA, why string) {
	w.refuse(now, sa, why, true)
}

func (w *controlWatch) refuse(now time.Time, sa vici.IKESA, why string, taken bool) {
	p := w.byIKE[sa.UniqueID]
	if p == nil {
		p = &controlProblem{since: now}
		delete(w.pending, sa.UniqueID)
		w.byIKE[sa.UniqueID] = p
	}
	p.ike, p.refused, p.taken, p.state = withoutChildren(sa), why, taken, ""
	w.countAsMissing(p)
	w.report(p)
}

// controlFine forgets the problem of IKE SA ike: its control child is up
// and verified, or the IKE SA is gone.
func (w *controlWatch) controlFine(ike uint32, gone bool) {
	delete(w.pending, ike)
	if gone {
		delete(w.bgp, ike)
	}
	p, ok := w.byIKE[ike]
	if !ok {
		return
	}
	delete(w.byIKE, ike)
	if p.counted {
		p.counted = false
		w.countMissing(-1)
	}
	if p.reported != "" {
		if gone {
			w.log.Info(w.what()+": IKE SA gone", "ike_sa", ikeName(p.ike))
		} else {
			w.log.Info(w.what()+" installed and verified", "ike_sa", ikeName(p.ike))
		}
	}
}

// bgpRefused records that the control child of IKE SA sa is up but does
// not protect the group's BGP session (why): BGP does not run over it.
// It is logged when the reason is new.
func (w *controlWatch) bgpRefused(now time.Time, sa vici.IKESA, why string) {
	p := w.bgp[sa.UniqueID]
	if p == nil {
		p = &controlProblem{since: now}
		w.bgp[sa.UniqueID] = p
	}
	p.ike = withoutChildren(sa)
	t := fmt.Sprintf("BGP refused over %s (IKE SA %s): %s", w.what(), ikeName(p.ike), why)
	if t == p.reported {
		return
	}
	p.reported = t
	w.log.Warn(t, "ike_sa", sa.UniqueID, "peer", sa.RemoteID, "peer_address", sa.RemoteHost)
}

// bgpFine forgets the BGP problem of IKE SA ike: BGP runs over its
// control child.
func (w *controlWatch) bgpFine(ike uint32) {
	p, ok := w.bgp[ike]
	if !ok {
		return
	}
	delete(w.bgp, ike)
	w.log.Info(w.what()+" protects BGP now", "ike_sa", ikeName(p.ike))
}

// charonSaid adds one of charon's messages about a CHILD_SA failure of
// the group's connection. For an IKE SA not known as a problem it is
// kept a minute, in case the IKE SA comes up without its control child;
// a message that only says a CHILD_SA closed, which charon logs at every
// rekey, is not kept for such an IKE SA.
func (w *controlWatch) charonSaid(now time.Time, ev vici.LogEvent) {
	msg := ev.String()
	if p := w.byIKE[ev.IKEUniqueID]; p != nil {
		if !slices.Contains(p.said, msg) {
			p.said = keepLast(append(p.said, msg), saidPerIKE)
		}
		w.report(p)
		return
	}
	if ev.ChildClosed() {
		return
	}
	w.expirePending(now)
	e, ok := w.pending[ev.IKEUniqueID]
	if !ok {
		for len(w.pending) >= saidPending {
			w.dropOldestPending() // a flood of failures for IKE SAs nobody listed
		}
		e.at = now
		w.pendingOrder = append(w.pendingOrder, pendingRef{ev.IKEUniqueID, now})
	}
	if !slices.Contains(e.said, msg) {
		e.said = keepLast(append(e.said, msg), saidPerIKE)
	}
	w.pending[ev.IKEUniqueID] = e
}

// takePending returns and forgets what charon said of IKE SA ike before
// it was known as a problem, unless that is older than saidPendingFor.
func (w *controlWatch) takePending(now time.Time, ike uint32) []string {
	e, ok := w.pending[ike]
	if !ok {
		return nil
	}
	delete(w.pending, ike)
	if now.Sub(e.at) >= saidPendingFor {
		return nil
	}
	return e.said
}

// expirePending forgets the messages kept longer than saidPendingFor,
// oldest first: O(1) for each.
func (w *controlWatch) expirePending(now time.Time) {
	for len(w.pendingOrder) > 0 && now.Sub(w.pendingOrder[0].at) >= saidPendingFor {
		w.dropOldestPending()
	}
	if len(w.pendingOrder) == 0 {
		w.pendingOrder = nil // let the array go
	}
}

// dropOldestPending forgets the IKE SA that waits longest in pending.
func (w *controlWatch) dropOldestPending() {
	r := w.pendingOrder[0]
	w.pendingOrder = w.pendingOrder[1:]
	if e, ok := w.pending[r.ike]; ok && e.at.Equal(r.at) {
		delete(w.pending, r.ike)
	}
}

// onCheck reports the problems whose grace has passed, from the front of
// waiting, and schedules the next: it looks at no problem that is not
// waiting.
func (w *controlWatch) onCheck(_ context.Context, now time.Time) {
	for len(w.waiting) > 0 {
		p := w.waiting[0]
		if w.byIKE[p.ike.UniqueID] == p && p.reported == "" {
			due := p.since.Add(controlGrace)
			if due.After(now) {
				w.s.sched.set(&w.check, due)
				return
			}
			w.report(p)
		}
		w.waiting[0] = nil
		w.waiting = w.waiting[1:]
	}
	w.waiting = nil // let the array go
}

// text says what is wrong with p in words an operator can act on.
func (w *controlWatch) text(p *controlProblem) string {
	var b strings.Builder
	peer := ikeName(p.ike)
	if p.refused != "" && p.taken {
		fmt.Fprintf(&b, "%s refused (IKE SA %s): %s", w.what(), peer, p.refused)
	} else if p.refused != "" {
		fmt.Fprintf(&b, "%s not protected, refusing to use it (IKE SA %s): %s", w.what(), peer, p.refused)
	} else {
		fmt.Fprintf(&b, "%s not installed: IKE SA %s is %s but ", w.what(), peer, p.ike.State)
		if p.state != "" {
			b.WriteString(p.state)
		} else {
			fmt.Fprintf(&b, "has no CHILD_SA %s", w.cfg().ControlChild)
		}
	}
	if len(p.said) > 0 {
		fmt.Fprintf(&b, "; charon said: %s", strings.Join(p.said, "; "))
	}
	if len(w.charon) > 0 && p.refused == "" {
		fmt.Fprintf(&b, "; %s", strings.Join(w.charon, "; "))
	}
	return b.String()
}

// report logs p when its text changed since it was last logged.
func (w *controlWatch) report(p *controlProblem) {
	t := w.text(p)
	if t == p.reported {
		return
	}
	p.reported = t
	w.log.Warn(t, "ike_sa", p.ike.UniqueID, "peer", p.ike.RemoteID, "peer_address", p.ike.RemoteHost)
	w.countAsMissing(p)
}

// countAsMissing keeps p in the count of reported missing control
// children (countMissing) exactly while it is one: a child still within
// its grace does not count (a thousand IKE SAs coming up each lack their
// child for a moment), nor a refused one (charon has nothing to say).
func (w *controlWatch) countAsMissing(p *controlProblem) {
	want := p.reported != "" && p.refused == ""
	if want == p.counted {
		return
	}
	p.counted = want
	if want {
		w.countMissing(+1)
	} else {
		w.countMissing(-1)
	}
}

// charonChanged checks what charon has against the group's control
// child, at every (re)connection to charon.
func (w *controlWatch) charonChanged(ch *vici.Charon) {
	problems := childProblems(w.cfg(), ch)
	if slices.Equal(problems, w.charon) {
		return
	}
	w.charon = problems
	for _, p := range problems {
		w.log.Error(w.what()+": "+p, "charon", ch.Version.Version)
	}
}

// childConfChanged checks the control child's definition again after a
// reload that kept the group (old is its previous configuration) when
// the definition, or where it is, changed. Without charon's plugin list
// it waits, as at setup, for the connection to charon.
func (w *controlWatch) childConfChanged(old *swanctl.Group) {
	if w.s.charon != nil && !reflect.DeepEqual(old.ControlChildConf, w.cfg().ControlChildConf) {
		w.charonChanged(w.s.charon)
	}
}

// childProblems are the reasons, known from the configuration and from
// charon's plugins and algorithms, why the group's control child cannot
// be installed or cannot be trusted with SK_d.
func childProblems(g *swanctl.Group, ch *vici.Charon) []string {
	cc := g.ControlChildConf
	if cc == nil {
		return nil // defined elsewhere: swanctl's files are not all ours
	}
	var out []string
	if len(cc.AHProposals) > 0 {
		out = append(out, fmt.Sprintf("ah_proposals is set (%s:%d): AH authenticates but does not encrypt, so SK_d and the nonce of every MPSA_PUT would cross the network in clear; mpsad refuses such a child; remove ah_proposals and use esp_proposals with encryption",
			cc.Pos.File, cc.Pos.Line))
	}
	for _, p := range cc.ESPProposals {
		for _, w := range strings.Split(p, "-") {
			switch w = strings.ToLower(w); w {
			case "null":
				out = append(out, fmt.Sprintf("esp_proposals offers NULL encryption (%s, %s:%d): SK_d and the nonce would cross the network in clear; mpsad refuses such a child; remove it", p, cc.Pos.File, cc.Pos.Line))
			case "aes128gmac", "aes192gmac", "aes256gmac":
				out = append(out, fmt.Sprintf("esp_proposals offers %s, NULL_AES_GMAC (%s, %s:%d): it authenticates but does not encrypt, so SK_d and the nonce would cross the network in clear; mpsad refuses such a child; remove it", w, p, cc.Pos.File, cc.Pos.Line))
			}
		}
	}
	if ch != nil && len(cc.AHProposals) == 0 {
		out = append(out, ch.ESPProblems(cc.ESPProposals)...)
	}
	return out
}

// problems are the group's control problems for the status, oldest IKE
// SA first.
func (w *controlWatch) problems() (list []api.ControlProblem, charon []string) {
	for _, id := range slices.Sorted(maps.Keys(w.byIKE)) {
		p := w.byIKE[id]
		if p.reported == "" {
			continue // still within its grace
		}
		list = append(list, api.ControlProblem{IKE: id, Peer: p.ike.RemoteID, Address: addrString(p.ike.RemoteHost), Since: p.since, Problem: p.reported})
	}
	for _, id := range slices.Sorted(maps.Keys(w.bgp)) {
		p := w.bgp[id]
		list = append(list, api.ControlProblem{IKE: id, Peer: p.ike.RemoteID, Address: addrString(p.ike.RemoteHost), Since: p.since, Problem: p.reported})
	}
	return list, slices.Clone(w.charon)
}

// stop removes the watch's deadline (the group is closed) and its part
// in following charon's log.
func (w *controlWatch) stop() {
	w.s.sched.stop(&w.check)
	if w.missing > 0 {
		w.missing = 0
		w.s.childrenMissing(-1)
	}
}

// countMissing follows how many of the group's IKE SAs lack their control
// child; the server follows charon's log while any group has one
// (Server.childrenMissing), to hear charon say why.
func (w *controlWatch) countMissing(d int) {
	was := w.missing > 0
	w.missing += d
	switch now := w.missing > 0; {
	case now && !was:
		w.s.childrenMissing(+1)
	case !now && was:
		w.s.childrenMissing(-1)
	}
}

// childState describes the control child of sa when it is there but not
// usable; empty when sa has no child of that name.
func childState(sa vici.IKESA, name string) string {
	c, ok := sa.Child(name)
	if !ok {
		return ""
	}
	if c.State != vici.ChildInstalled {
		return fmt.Sprintf("its CHILD_SA %s is %s", name, c.State)
	}
	if _, ok := c.LocalHost(); !ok {
		return fmt.Sprintf("its CHILD_SA %s has local traffic selectors %v, not one host address (the local control address)", name, c.LocalTS)
	}
	if _, ok := c.RemoteHost(); !ok {
		return fmt.Sprintf("its CHILD_SA %s has remote traffic selectors %v, not one host address (the remote control address)", name, c.RemoteTS)
	}
	return ""
}

func withoutChildren(sa vici.IKESA) vici.IKESA {
	sa.Children = nil
	return sa
}

// ikeName is "mpsa[3] with 192.0.2.1 (controller.example.net)".
func ikeName(sa vici.IKESA) string {
	return fmt.Sprintf("%s[%d] with %s (%s)", sa.Conn, sa.UniqueID, addrString(sa.RemoteHost), cmp.Or(sa.RemoteID, "no identity"))
}

func addrString(a interface{ IsValid() bool }) string {
	if !a.IsValid() {
		return ""
	}
	return fmt.Sprint(a)
}

func keepLast(s []string, n int) []string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}
