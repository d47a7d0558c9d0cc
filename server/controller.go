package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
)

// ctlGroup is one group on the controller: its group SA and its members.
//
// Its work grows with what changed: a join, a leave, a datagram and an
// acknowledgement are map look-ups, counters and at most one deadline
// moved on the heap; a rekey marks every member once and queues it in the
// pacer, which sends at push_rate. Nothing walks the members except a
// rekey (once), the status, and close.
type ctlGroup struct {
	s       *Server
	cfg     *swanctl.Group
	log     *slog.Logger
	group   *mpsa.Group
	backoff mpsa.Backoff
	// members by control address: a member keeps its record across IKE
	// SA rekeys and reconnects, which change SPIs but not the address.
	members map[netip.Addr]*ctlMember
	drops   *dropLog
	metrics *metrics.Metrics
	rekeys  uint64
	// joinWait holds pushes while a rekey asked for by a join is pending,
	// so that a joining member never receives the SA it joined under.
	joinWait bool
	// acked counts the members that acknowledged an SA, current those
	// that acknowledged the current one. Both follow every answer and
	// leave; nothing counts them by a walk.
	acked, current int
	// queued counts the group's entries in the pacer's queue.
	queued int
	// pairs counts the members' control links by control addresses,
	// local and remote, the pairs the server routes to the group.
	pairs map[addrPair]int
	// fanoutDone: every member has acknowledged the current SA since it
	// was made (logged once).
	fanoutDone bool
	// overWindow: a push to every member takes longer than the rollover
	// window (logged when it becomes true, and at every rekey).
	overWindow bool
	rekeyAt    deadline
	// rekeyWait is the wait before the next try after a rekey failed,
	// doubling from rekeyRetryFirst to rekeyRetryMax; 0 after a rekey.
	rekeyWait time.Duration
	put       putCache
	// encodePut is putNotify; tests make it fail.
	encodePut func(now time.Time) (*mpsa.Notify, uint32, error)
	// bgp is the group's route reflector, nil without BGP.
	bgp *ctlBGP
	// controlWatch knows why members' control children are not up.
	controlWatch
}

type ctlMember struct {
	g    *ctlGroup
	addr netip.Addr
	// links are the IKE SAs whose control child goes to addr; the
	// session runs on the newest.
	links   controlLinks[memberLink]
	sess    *mpsa.Session
	acked   uint32
	pending uint32
	// needPush: an MPSA_PUT of the current SA is due when the member's
	// turn in the pacer comes.
	needPush bool
	// queued: in the pacer's queue; gone: left (or the group closed).
	queued, gone bool
	// retx is the retransmission deadline of the outstanding request.
	retx deadline
}

// memberLink is what the controller keeps of a member's control child:
// what the exchange and the status need, not the whole IKE SA.
type memberLink struct {
	ike       uint32
	id        mpsa.SessionID
	initiator bool
	local     netip.Addr
	remoteID  string
	// adm is the way the proof of the link's control child admits the
	// member's datagrams (proven).
	adm admission
	// remoteHost is the member's IKE address.
	remoteHost netip.Addr
	// bgp proves that the child also protects the member's BGP session
	// (groups with BGP); nil when it does not, bgpErr says why.
	bgp    *bgpProof
	bgpErr string
}

// cur is the link the member's session runs on.
func (m *ctlMember) cur() memberLink {
	l, _ := m.links.newest()
	return l
}

// putCache is the current SA's N(MPSA_PUT), encoded once per SPI and
// second of lifetime left: a rekey's pushes share it. It holds SK_d and
// the nonce, so it is kept only while pushes of the group wait in the
// pacer's queue, and encoded again when the next push needs it; a
// request sent keeps its own copy in its session until it is answered or
// replaced.
type putCache struct {
	spi, life uint32
	n         *mpsa.Notify
}

// zero wipes the cached notify, which holds the keys.
func (c *putCache) zero() {
	if c.n != nil {
		clear(c.n.Data)
	}
	*c = putCache{}
}

// groupParams are the parameters of the group SA of cfg. A reload that
// changes only the timers and membership flags applies them with
// mpsa.Group.Retime (see update).
func groupParams(cfg *swanctl.Group) mpsa.GroupParams {
	return mpsa.GroupParams{
		Suite:              cfg.Suite,
		NonceLen:           cfg.NonceLength,
		Lifetime:           cfg.Lifetime.Std(),
		RekeyTime:          cfg.RekeyTime.Std(),
		RekeyJitter:        cfg.RekeyJitter.Std(),
		Rollover1:          cfg.Rollover1.Std(),
		Rollover2:          cfg.Rollover2.Std(),
		RekeyOnJoin:        cfg.RekeyOnJoin,
		RekeyOnLeave:       cfg.RekeyOnLeave,
		MembershipHoldDown: membershipHoldDown,
	}
}

func newCtlGroup(s *Server, cfg *swanctl.Group, rnd io.Reader, log *slog.Logger) (*ctlGroup, error) {
	now := s.now()
	g, err := mpsa.NewGroup(groupParams(cfg), rnd, now)
	if err != nil {
		return nil, err
	}
	cg := &ctlGroup{s: s, cfg: cfg, log: log, group: g, backoff: s.opts.Backoff, members: map[netip.Addr]*ctlMember{},
		drops: s.newDropLog(log), metrics: s.opts.Metrics, pairs: map[addrPair]int{}}
	cg.rekeyAt.fire = cg.onRekeyDue
	cg.encodePut = cg.putNotify
	cg.controlWatch.init(s, cg.config, log)
	if cfg.BGPEnabled() {
		cg.bgp = newCtlBGP(cg)
	}
	s.sched.set(&cg.rekeyAt, g.NextRekey())
	cg.metrics.SetGroupSA(cfg.Name, g.Current().SPI(), g.Current().Created)
	cg.log.Info("generated group SA", "spi", spiString(g.Current().SPI()), "suite", cfg.Suite.String(), "next_rekey", g.NextRekey().Format(time.RFC3339))
	return cg, nil
}

// membershipHoldDown gathers joins and leaves that come together (a site
// rebooting, a controller restart) into one rekey.
const membershipHoldDown = 2 * time.Second

func (g *ctlGroup) config() *swanctl.Group { return g.cfg }

// debug reports whether debug lines are logged: the per-member lines of a
// fan-out are built only then.
func (g *ctlGroup) debug() bool { return g.log.Enabled(context.Background(), slog.LevelDebug) }

// setPeers: a controller has no data plane; peers fed to it are not used
// (BGP will feed it each member's accepted prefixes).
func (g *ctlGroup) setPeers(context.Context, string, []xfrm.Peer) {}

// controlUp follows a member's control child: a new address joins (and
// is pushed the SA once it has a session), a new IKE SA for a known
// address replaces the member's session. A child that claims another
// identity's control address is refused before anything else, so that a
// resync that tells of it again neither reports it verified nor resets
// its problem.
func (g *ctlGroup) controlUp(_ context.Context, now time.Time, c proven) {
	l := memberLink{ike: c.IKE.UniqueID, id: sessionID(c.IKE), initiator: c.IKE.Initiator, local: c.Local, remoteID: c.IKE.RemoteID,
		adm: c.admission, remoteHost: c.IKE.RemoteHost, bgp: c.bgp, bgpErr: c.bgpErr}
	m := g.members[c.Remote]
	if m != nil {
		// A control address belongs to the identity that holds it:
		// another identity's IKE SA that narrowed its traffic
		// selectors to it (the controller's remote_ts is usually a
		// range) must not take the member's control exchange over.
		for _, o := range m.links {
			if o.ike != l.ike && o.v.remoteID != l.remoteID {
				g.controlTaken(now, c.IKE, fmt.Sprintf("its control address %s belongs to member %s (IKE SA %d): an IKE SA of another identity cannot take it over while that one is up; give each member its own control address (remote_ts)",
					c.Remote, o.v.remoteID, o.ike))
				return
			}
		}
	}
	g.controlFine(c.IKE.UniqueID, false)
	if m == nil {
		m = &ctlMember{g: g, addr: c.Remote}
		m.retx.fire = m.onRetransmit
		g.setLink(m, l)
		g.members[c.Remote] = m
		g.joined(now, m, c.how)
	} else {
		g.setLink(m, l)
	}
	g.follow(now, m)
	g.followBGP(now, m)
}

// followBGP gives member m a neighbour on the route reflector while its
// newest control child protects BGP, and says why not otherwise.
func (g *ctlGroup) followBGP(now time.Time, m *ctlMember) {
	if g.bgp == nil {
		return
	}
	l := m.cur()
	if why := g.bgp.sync(m); why != "" {
		g.bgpRefused(now, vici.IKESA{Conn: g.cfg.Connection, UniqueID: l.ike, RemoteID: l.remoteID, RemoteHost: l.remoteHost}, why)
		return
	}
	g.bgpFine(l.ike)
}

// setLink adds or replaces one of m's links and keeps the control
// addresses the server routes to the group.
func (g *ctlGroup) setLink(m *ctlMember, l memberLink) {
	old, had := m.links.get(l.ike)
	m.links.set(l.ike, l)
	if had && old.local == l.local {
		return
	}
	if had {
		g.dropPair(addrPair{old.local, m.addr})
	}
	p := addrPair{l.local, m.addr}
	if g.pairs[p]++; g.pairs[p] == 1 {
		g.s.listen(p, g)
	}
}

func (g *ctlGroup) dropPair(p addrPair) {
	if g.pairs[p]--; g.pairs[p] <= 0 {
		delete(g.pairs, p)
		g.s.unlisten(p, g)
	}
}

// uses reports whether the member with control address remote runs on
// the control child of IKE SA ike (one of its links).
func (g *ctlGroup) uses(ike uint32, remote netip.Addr) bool {
	m := g.members[remote]
	if m == nil {
		return false
	}
	_, ok := m.links.get(ike)
	return ok
}

// controlDown drops one of a member's control children; the member leaves
// with its last.
func (g *ctlGroup) controlDown(_ context.Context, now time.Time, ike uint32, remote netip.Addr) {
	m := g.members[remote]
	if m == nil {
		return
	}
	last := m.cur()
	l, ok := m.links.get(ike)
	if !ok {
		return
	}
	m.links.remove(ike)
	g.dropPair(addrPair{l.local, m.addr})
	if len(m.links) > 0 {
		g.follow(now, m)
		g.followBGP(now, m)
		return
	}
	g.leave(now, m, last.remoteID)
}

// follow puts the member's session on its newest link: when that is
// another IKE SA, a new session, and a push at once without waiting for a
// hello: after a controller restart the members' control children are up
// already and they will not say hello again. A member whose mpsad is not
// up yet gets the push retransmitted until it answers, or answers its
// hello.
func (g *ctlGroup) follow(now time.Time, m *ctlMember) {
	l := m.cur()
	if m.sess != nil && m.sess.ID() == l.id {
		return
	}
	if m.sess != nil {
		m.sess.Close()
		// Its outstanding request went with it: the new session
		// sets its own retransmission when it sends.
		g.s.sched.stop(&m.retx)
		g.log.Info("member moved to a new IKE SA", "member", l.remoteID, "ike_sa", l.ike)
	}
	m.sess = mpsa.NewSession(l.id, l.initiator, g.backoff)
	m.pending = 0
	if !g.joinWait {
		g.want(now, m)
	}
}

// joined records a member whose control child came up: with rekey_on_join
// a rekey is scheduled, and pushes wait for it, so that the new member never
// receives the SA it joined under.
func (g *ctlGroup) joined(now time.Time, m *ctlMember, how string) {
	l := m.cur()
	g.log.Info("member joined: control child up", "member", l.remoteID, "address", m.addr, "ike_sa", l.ike, "protected_by", how)
	if g.cfg.RekeyOnJoin && g.group.MemberJoined(now) {
		g.joinWait = true
		g.s.sched.set(&g.rekeyAt, g.group.NextRekey())
		g.log.Info("rekey scheduled: member joined", "at", g.group.NextRekey().Format(time.RFC3339Nano))
	}
	g.checkWindow(false)
}

// leave removes a member whose last control child went away; id is its
// IKE identity, for the log.
func (g *ctlGroup) leave(now time.Time, m *ctlMember, id string) {
	m.sess.Close()
	m.gone = true
	g.s.sched.stop(&m.retx)
	delete(g.members, m.addr)
	if g.bgp != nil {
		g.bgp.remove(m.addr)
	}
	if m.acked != 0 {
		g.acked--
		g.metrics.SetMembers(g.cfg.Name, g.acked)
	}
	if m.acked == g.group.Current().SPI() {
		g.current--
	}
	g.log.Info("member left", "member", id, "address", m.addr)
	if g.cfg.RekeyOnLeave && g.group.MemberLeft(now) {
		g.s.sched.set(&g.rekeyAt, g.group.NextRekey())
		g.log.Info("rekey scheduled: member left", "at", g.group.NextRekey().Format(time.RFC3339Nano))
	}
	g.checkDone(now)
}

// onDatagram handles a datagram from a member: its source is the remote
// control address of the member's control child and it is addressed to
// the local control address. It reports false for anyone else's.
func (g *ctlGroup) onDatagram(_ context.Context, now time.Time, d Datagram) bool {
	m := g.members[d.Src.Addr()]
	if m == nil {
		return false
	}
	l := m.cur()
	if l.local != d.Dst {
		return false
	}
	msg, kind, ok := g.s.receive(now, d, l.adm, m.sess, l.local, m.addr, g.drops, l.remoteID)
	if !ok {
		return true
	}
	switch kind {
	case mpsa.NewRequest:
		if !msg.HasMPSAVendorID() {
			m.sess.Discard()
			g.drops.drop(now, metrics.DropUnexpected, "member", l.remoteID, "detail", "request without V(MPSA)")
			return true
		}
		resp, err := m.sess.Respond(mpsa.MPSAVendorID())
		if err != nil {
			g.log.Error("encode hello answer", "err", err)
			return true
		}
		g.s.send(resp, l.local, m.addr)
		if !g.joinWait {
			g.want(now, m)
		}
	case mpsa.Response:
		if m.pending != 0 {
			g.acknowledged(now, m)
		}
	case mpsa.StaleResponse, mpsa.RepeatedUnanswered:
		// a late answer to a request we replaced, or a request still
		// being handled; nothing to do
	}
	return true
}

// acknowledged records that m installed the SA it was pushed, keeping the
// counts without a walk.
func (g *ctlGroup) acknowledged(now time.Time, m *ctlMember) {
	cur := g.group.Current().SPI()
	first, wasCur := m.acked == 0, m.acked == cur
	m.acked, m.pending = m.pending, 0
	g.s.sched.stop(&m.retx)
	switch isCur := m.acked == cur; {
	case isCur && !wasCur:
		g.current++
	case wasCur && !isCur:
		g.current--
	}
	switch {
	case first:
		g.acked++
		g.metrics.SetMembers(g.cfg.Name, g.acked)
		g.log.Info("member installed the group SA", "member", m.cur().remoteID, "spi", spiString(m.acked))
	case g.debug():
		// At a rekey, one line per member only when debugging (and no
		// arguments built otherwise); checkDone logs the end.
		g.log.Debug("member installed the group SA", "member", m.cur().remoteID, "spi", spiString(m.acked))
	}
	g.checkDone(now)
}

// checkDone logs, once per SA, when every member has acknowledged it.
func (g *ctlGroup) checkDone(now time.Time) {
	if g.fanoutDone || g.current != len(g.members) || len(g.members) == 0 {
		return
	}
	g.fanoutDone = true
	cur := g.group.Current()
	g.log.Info("every member has the group SA", "spi", spiString(cur.SPI()), "members", len(g.members),
		"after", now.Sub(cur.Created).Round(time.Millisecond).String())
}

// want marks m for an MPSA_PUT of the current SA and sends it, or queues
// it behind the push rate.
func (g *ctlGroup) want(now time.Time, m *ctlMember) {
	m.needPush = true
	g.s.queue(m)
	g.s.pace(now)
}

// sendable reports whether the member has something to send now: a
// fresh push, or a retransmission that is due.
func (m *ctlMember) sendable(now time.Time) bool {
	if m.needPush {
		return true
	}
	t, ok := m.sess.NextDeadline()
	return ok && !now.Before(t)
}

// send sends the member what it waited for in the pacer's queue: the
// current SA (a new request, replacing any unanswered one) or the
// outstanding request again; then it sets the retransmission deadline.
// The N(MPSA_PUT) is the same for all members and encoded once; each
// request around it has the member's own IKE SPIs and message ID.
func (g *ctlGroup) send(now time.Time, m *ctlMember) {
	l := m.cur()
	switch {
	case m.needPush:
		n, spi, err := g.encodePut(now)
		var b []byte
		if err == nil {
			b, err = m.sess.Request(now, n)
		}
		if err != nil {
			// The push stays due: tried again when the member's
			// retransmission deadline brings it back to the pacer.
			g.log.Error("encode MPSA_PUT; trying again", "member", l.remoteID, "err", err, "retry_in", g.backoff.Initial.String())
			g.s.sched.set(&m.retx, now.Add(g.backoff.Initial))
			return
		}
		m.needPush = false
		m.pending = spi
		g.s.send(b, l.local, m.addr)
		clear(b)
		if g.debug() {
			g.log.Debug("pushed group SA", "member", l.remoteID, "spi", spiString(spi))
		}
	default:
		b, ok := m.sess.Retransmit(now)
		if !ok {
			break
		}
		if g.debug() {
			g.log.Debug("retransmitting", "member", l.remoteID, "attempt", m.sess.Attempts())
		}
		g.metrics.PutRetransmitted(g.cfg.Name)
		g.s.send(b, l.local, m.addr)
	}
	if t, ok := m.sess.NextDeadline(); ok {
		g.s.sched.set(&m.retx, t)
	}
}

// onRetransmit is the member's retransmission deadline: the request goes
// out again when the pacer lets it.
func (m *ctlMember) onRetransmit(_ context.Context, now time.Time) {
	if m.gone {
		return
	}
	if m.sendable(now) {
		m.g.s.queue(m)
		m.g.s.pace(now)
		return
	}
	if t, ok := m.sess.NextDeadline(); ok {
		m.g.s.sched.set(&m.retx, t)
	}
}

// putNotify returns the current SA's N(MPSA_PUT) as sent at now, and its
// SPI; the notify is the group's (zeroed when replaced): do not keep it.
func (g *ctlGroup) putNotify(now time.Time) (*mpsa.Notify, uint32, error) {
	cur := g.group.Current()
	// The Lifetime PutAt gives: the whole seconds left, at least 1.
	life := uint32(max(cur.Expires.Sub(now)/time.Second, 1))
	if g.put.n != nil && g.put.spi == cur.SPI() && g.put.life == life {
		return g.put.n, g.put.spi, nil
	}
	p := g.group.PutAt(now)
	defer p.Zero()
	n, err := p.Notify()
	if err != nil {
		return nil, 0, err
	}
	g.put.zero()
	g.put = putCache{spi: p.SPI, life: p.Lifetime, n: n}
	return n, p.SPI, nil
}

// sameSA reports whether a reload from a to b leaves a controller group's
// SA valid: they differ at most in the settings update applies to the
// running group (the timers of the coming rekeys, the membership flags,
// insecure_counter_mode_lab_only, which with an unchanged proposal changes nothing).
// Any other change (connection, control_child, esp_proposal, lifetime,
// nonce_length) needs a new group SA.
func sameSA(a, b *swanctl.Group) bool {
	ca, cb := comparable(a), comparable(b)
	for _, c := range []*swanctl.Group{&ca, &cb} {
		c.RekeyTime, c.RekeyJitter, c.Rollover1, c.Rollover2 = 0, 0, 0, 0
		c.RekeyOnJoin, c.RekeyOnLeave, c.AllowCounterMode = false, false, false
		c.BGP = nil
	}
	return reflect.DeepEqual(ca, cb)
}

// reconfigure keeps the group for a reload that leaves its SA valid.
func (g *ctlGroup) reconfigure(_ context.Context, n *swanctl.Group) bool {
	old := g.cfg
	switch {
	case sameGroup(g.cfg, n):
		g.cfg = n // positions, the control child's definition
	case sameSA(g.cfg, n):
		g.update(n)
	default:
		return false
	}
	g.childConfChanged(old)
	return true
}

// update applies n, which sameSA accepts, to the running group without a
// new group SA: rekey_on_join and rekey_on_leave hold for the next join
// or leave; a new rekey_time or rekey_jitter reschedules the current SA's
// rekey (creation + rekey_time - a new jitter, at once if that has
// passed); rollover1 and rollover2 go with the next SA pushed (the current
// SA's pushes keep the values its members already have).
func (g *ctlGroup) update(n *swanctl.Group) {
	o := g.cfg
	var changed []string
	for _, c := range []struct {
		key  string
		diff bool
	}{
		{"rekey_time", o.RekeyTime != n.RekeyTime}, {"rekey_jitter", o.RekeyJitter != n.RekeyJitter},
		{"rollover1", o.Rollover1 != n.Rollover1}, {"rollover2", o.Rollover2 != n.Rollover2},
		{"rekey_on_join", o.RekeyOnJoin != n.RekeyOnJoin}, {"rekey_on_leave", o.RekeyOnLeave != n.RekeyOnLeave},
		{"insecure_counter_mode_lab_only", o.AllowCounterMode != n.AllowCounterMode},
		{"bgp", !sameBGP(o, n)},
	} {
		if c.diff {
			changed = append(changed, c.key)
		}
	}
	if err := g.group.Retime(groupParams(n)); err != nil {
		g.log.Error("group settings changed but cannot be applied; keeping the previous ones", "changed", changed, "err", err)
		return
	}
	g.cfg = n
	if !sameBGP(o, n) {
		g.reconfigureBGP()
	}
	g.s.sched.set(&g.rekeyAt, g.group.NextRekey())
	g.log.Info("group settings changed; applied to the running group SA, no rekey", "changed", changed,
		"spi", spiString(g.group.Current().SPI()), "next_rekey", g.group.NextRekey().Format(time.RFC3339))
	g.checkWindow(false)
}

// rekey makes a new group SA and pushes it to every member at the push
// rate, in the map's (random) order, so that no member is always last.
func (g *ctlGroup) rekey(now time.Time, reason string) (string, error) {
	sa, err := g.group.Rekey(now)
	if err != nil {
		g.log.Error("rekey failed", "reason", reason, "err", err)
		return "", err
	}
	g.rekeys++
	g.rekeyWait = 0
	g.joinWait = false
	g.current, g.fanoutDone = 0, false
	g.put.zero()
	g.s.sched.set(&g.rekeyAt, g.group.NextRekey())
	g.metrics.Rekeyed(g.cfg.Name, reason)
	g.metrics.SetGroupSA(g.cfg.Name, sa.SPI(), sa.Created)
	est, _ := g.fanoutTime()
	g.log.Info("rekeyed group SA", "reason", reason, "spi", spiString(sa.SPI()), "next_rekey", g.group.NextRekey().Format(time.RFC3339),
		"members", len(g.members), "push_time", est.String())
	g.checkWindow(true)
	for _, m := range g.members {
		m.needPush = true
		g.s.queue(m)
	}
	g.s.pace(now)
	return spiString(sa.SPI()), nil
}

// onRekeyDue is the group's rekey deadline.
func (g *ctlGroup) onRekeyDue(_ context.Context, now time.Time) {
	if !g.group.RekeyDue(now) {
		g.s.sched.set(&g.rekeyAt, g.group.NextRekey())
		return
	}
	reason := metrics.RekeyLifetime
	if now.Before(g.group.Current().RekeyAt) {
		reason = metrics.RekeyMemberLeave
		if g.joinWait {
			reason = metrics.RekeyMemberJoin
		}
	}
	if _, err := g.rekey(now, reason); err != nil {
		// Try again, not at once and not every second forever: the
		// wait doubles up to a minute.
		g.rekeyWait = min(max(2*g.rekeyWait, rekeyRetryFirst), rekeyRetryMax)
		g.s.sched.set(&g.rekeyAt, now.Add(g.rekeyWait))
		g.log.Warn("rekey will be tried again", "in", g.rekeyWait.String())
	}
}

// The waits between tries of a rekey that failed.
const (
	rekeyRetryFirst = time.Second
	rekeyRetryMax   = time.Minute
)

// fanoutTime is how long a push to every member takes at the push rate
// (the burst goes at once), and the rollover window it must fit in:
// members that get the new SA later than rollover1 after the first send
// with it to members that cannot read it yet, and later than rollover2 -
// rollover1 keep sending with the old SA to members that removed it.
func (g *ctlGroup) fanoutTime() (est, window time.Duration) {
	p := g.s.pacer
	n := float64(len(g.members))
	est = time.Duration(max(0, n-p.burst) / p.rate * float64(time.Second))
	r1, r2 := g.cfg.Rollover1.Std(), g.cfg.Rollover2.Std()
	return est, min(r1, r2-r1)
}

// windowWarning says, when it is so, that a push to every member takes
// longer than the rollover window.
func (g *ctlGroup) windowWarning() string {
	est, window := g.fanoutTime()
	if est <= window {
		return ""
	}
	return fmt.Sprintf("a push to all %d members takes %s at push_rate %.0f/s, longer than the rollover window %s (the lesser of rollover1 and rollover2 - rollover1): members that get the new SA late lose traffic; raise push_rate, or rollover1 and rollover2",
		len(g.members), est.Round(time.Millisecond), g.s.pacer.rate, window)
}

// checkWindow logs the window warning when the group has just outgrown
// the rollover window, and at every rekey while it has.
func (g *ctlGroup) checkWindow(atRekey bool) {
	w := g.windowWarning()
	if w != "" && (atRekey || !g.overWindow) {
		g.log.Warn(w)
	}
	g.overWindow = w != ""
}

func (g *ctlGroup) status(context.Context) api.GroupStatus {
	cur := g.group.Current()
	created, next, exp := cur.Created, g.group.NextRekey(), cur.Expires
	est, window := g.fanoutTime()
	st := api.GroupStatus{
		Name: g.cfg.Name, SPI: spiString(cur.SPI()), Members: []api.MemberStatus{},
		Created: &created, NextRekey: &next, Expires: &exp, Rekeys: g.rekeys, Drops: g.drops.snapshot(),
		Fanout: &api.FanoutStatus{Members: len(g.members), Current: g.current, Queued: g.queued,
			PushSeconds: est.Seconds(), WindowSeconds: window.Seconds(), Warning: g.windowWarning()},
	}
	if p := g.group.Previous(); p != nil {
		st.PreviousSPI = spiString(p.SPI())
	}
	st.ControlProblems, st.CharonProblems = g.problems()
	for _, addr := range slices.SortedFunc(maps.Keys(g.members), netip.Addr.Compare) {
		m := g.members[addr]
		l := m.cur()
		st.Members = append(st.Members, api.MemberStatus{
			ID: l.remoteID, Address: addr.String(), AckedSPI: spiString(m.acked),
			PendingSPI: spiString(m.pending), Retransmits: m.sess.Attempts(), IKE: l.ike, IKESPIs: m.sess.ID().String(),
		})
	}
	return st
}

// retire tears the group down: with a new group SA it is built anew and
// pushes it to every member, who roll over to it as at a rekey.
func (g *ctlGroup) retire(_ context.Context, next *swanctl.Group) {
	if next == nil {
		g.log.Info("group removed; tearing it down")
	} else {
		g.log.Info("group changed in a setting that needs a new group SA; tearing it down")
	}
	g.close()
}

// reconfigureBGP applies the group's new BGP settings (a reload): turned
// off, the reflector stops; turned on, it starts with every member;
// changed, it applies the policy or starts again.
func (g *ctlGroup) reconfigureBGP() {
	now := g.s.now()
	switch {
	case !g.cfg.BGPEnabled():
		if g.bgp != nil {
			g.log.Info("bgp: turned off; stopping the route reflector")
			g.bgp.stop()
			g.bgp = nil
			clear(g.controlWatch.bgp)
		}
		return
	case g.bgp == nil:
		g.bgp = newCtlBGP(g)
	default:
		g.bgp.reconfigure(g.cfg.BGP)
	}
	for _, m := range g.members {
		g.followBGP(now, m)
	}
}

func (g *ctlGroup) close() {
	if g.bgp != nil {
		g.bgp.stop()
	}
	for _, m := range g.members {
		m.sess.Close()
		m.gone = true
		g.s.sched.stop(&m.retx)
	}
	g.s.sched.stop(&g.rekeyAt)
	g.s.sched.stop(&g.drops.flushAt)
	g.controlWatch.stop()
	for p := range g.pairs {
		g.s.unlisten(p, g)
	}
	clear(g.pairs)
	g.put.zero()
	g.group.Close()
}

// sessionID names the control session that runs under an IKE SA.
func sessionID(sa vici.IKESA) mpsa.SessionID {
	return mpsa.SessionID{SPIi: sa.InitiatorSPI, SPIr: sa.ResponderSPI}
}
