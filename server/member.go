package server

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
)

// memGroup is one group on a member: the session with the controller, the
// SA lifecycle and the data plane.
type memGroup struct {
	s       *Server
	cfg     *swanctl.Group
	log     *slog.Logger
	backoff mpsa.Backoff
	life    *mpsa.Member
	dp      xfrm.DataPlane
	// links are the IKE SAs that carry the control child to the
	// controller; the newest is used.
	links controlLinks[proven]
	// ctl is the control child to the controller, and sess the control
	// session over it; sess is nil while the control child is down.
	ctl     proven
	sess    *mpsa.Session
	hello   bool // hello answered
	drops   *dropLog
	metrics *metrics.Metrics
	// peers are the peers each source offers (sourceStatic: routes,
	// sourceBGP: learned by BGP); peerTable merges them.
	peers map[string][]xfrm.Peer
	// staticSince is when each static route took its peer (loaded, or
	// changed by a reload), for `mpsactl routes`.
	staticSince map[netip.Prefix]time.Time
	// bgp is the group's BGP speaker, nil without BGP.
	bgp *memBGP
	// underlay is the member's underlay address once known: the data
	// plane's, and the next hop it advertises by BGP.
	underlay netip.Addr
	// protected is the control address pair the data plane was told
	// to keep out of its peer table (xfrm.Protector).
	protected addrPair
	// timer is the earliest of the SA lifecycle's and the hello's
	// retransmission.
	timer deadline
	// route are the control addresses, local and remote, the server
	// routes to the group, while the session is up.
	route addrPair
	// lastErr is the last data-plane failure, for status.
	lastErr string
	// controlWatch knows why the control child is not up.
	controlWatch
	// retry asks charon for the control child again while an IKE SA
	// with the controller has none (retryChild); retryWait is the next
	// wait, doubling from retryFirst to retryMax.
	retry     deadline
	retryWait time.Duration
}

// The waits between a member's requests to charon to establish its
// control child again.
const (
	retryFirst = 10 * time.Second
	retryMax   = 10 * time.Minute
)

func newMemGroup(s *Server, cfg *swanctl.Group, log *slog.Logger) *memGroup {
	g := &memGroup{s: s, cfg: cfg, log: log, backoff: s.opts.Backoff, life: mpsa.NewMember(), drops: s.newDropLog(log),
		metrics: s.opts.Metrics, peers: map[string][]xfrm.Peer{}, staticSince: map[netip.Prefix]time.Time{}}
	g.timer.fire = g.onTimer
	g.controlWatch.init(s, g.config, log)
	g.retry.fire = g.retryChild
	g.retryWait = retryFirst
	return g
}

// controlMissing records the problem (controlWatch) and has charon asked
// for the control child again if it stays missing.
func (g *memGroup) controlMissing(ctx context.Context, now time.Time, sa vici.IKESA) {
	g.controlWatch.controlMissing(ctx, now, sa)
	g.s.sched.setEarlier(&g.retry, now.Add(max(g.retryWait, controlGrace)))
}

// retryChild asks charon to establish the control child again while the
// member has an IKE SA with the controller but no control child: charon
// does not retry a CHILD_SA that failed with its IKE SA (a proposal the
// controller refused, say), so without this a member would stay cut off
// after the cause is fixed. The waits double up to retryMax; charon's
// answer, if the child fails again, comes in its log (control_problems).
// A child that charon has INSTALLED but mpsad refused is not asked for:
// charon would answer that it has it; a fixed route or policy is noticed
// at the next resync, which verifies a refused child again.
func (g *memGroup) retryChild(_ context.Context, now time.Time) {
	if g.sess != nil || !g.childMissing() {
		g.retryWait = retryFirst
		return
	}
	next := min(2*g.retryWait, retryMax)
	if g.s.initiate(g.cfg.Connection, g.cfg.ControlChild) {
		g.log.Info("asking charon to establish the control child again", "connection", g.cfg.Connection, "child", g.cfg.ControlChild,
			"next_try_in", next.String())
	} else {
		g.log.Warn("cannot ask charon to establish the control child again now: earlier requests still wait for charon", "connection", g.cfg.Connection,
			"child", g.cfg.ControlChild, "next_try_in", next.String())
	}
	g.retryWait = next
	g.s.sched.set(&g.retry, now.Add(g.retryWait))
}

// childMissing reports whether an IKE SA with the controller lacks its
// control child (not INSTALLED), as opposed to carrying one mpsad
// refused. The problems of a member are its IKE SAs with the controller:
// one, two while it reconnects.
func (g *memGroup) childMissing() bool {
	for _, p := range g.byIKE {
		// Missing, not refused and not present in another state
		// (installing, rekeying, or installed with other selectors):
		// charon has nothing to give again for those.
		if p.refused == "" && p.state == "" {
			return true
		}
	}
	return false
}

func (g *memGroup) config() *swanctl.Group { return g.cfg }

// controlUp and controlDown follow the control children to the
// controller; see follow.
func (g *memGroup) controlUp(ctx context.Context, now time.Time, c proven) {
	g.controlFine(c.IKE.UniqueID, false)
	g.s.sched.stop(&g.retry)
	g.retryWait = retryFirst
	g.links.set(c.IKE.UniqueID, c)
	g.follow(ctx, now)
}

func (g *memGroup) uses(ike uint32, remote netip.Addr) bool {
	l, ok := g.links.get(ike)
	return ok && l.Remote == remote
}

func (g *memGroup) controlDown(ctx context.Context, now time.Time, ike uint32, _ netip.Addr) {
	g.links.remove(ike)
	g.follow(ctx, now)
}

// follow puts the control session on the newest control child: when it
// comes up (or moves to a new IKE SA) the member says hello; when the last
// goes away the member keeps its SAs until they expire.
func (g *memGroup) follow(ctx context.Context, now time.Time) {
	defer g.rearm()
	c, ok := g.links.newest()
	if !ok {
		if g.sess != nil {
			g.log.Warn("control child to the controller is down; keeping the shared SA until it expires", "outbound_spi", spiString(g.life.Outbound()))
			g.sess.Close()
			g.sess, g.hello = nil, false
		}
		g.listen(addrPair{})
		g.followBGP(now, nil)
		return
	}
	g.ctl = c
	g.ensureDataPlane(ctx, c.IKE.LocalHost)
	g.protectControl(ctx)
	id := sessionID(c.IKE)
	g.listen(addrPair{c.Local, c.Remote})
	g.followBGP(now, &c)
	if g.sess != nil && g.sess.ID() == id {
		return
	}
	if g.sess != nil {
		g.sess.Close()
	}
	g.hello = false
	g.sess = mpsa.NewSession(id, c.IKE.Initiator, g.backoff)
	g.log.Info("control child to the controller is up; saying hello", "controller", c.Remote, "ike_sa", c.IKE.UniqueID, "protected_by", c.how)
	b, err := g.sess.Request(now, mpsa.MPSAVendorID())
	if err != nil {
		g.log.Error("encode hello", "err", err)
		return
	}
	g.s.send(b, c.Local, c.Remote)
}

// listen has the server route datagrams between the control addresses
// of p (none if p is the zero addrPair) to the group.
func (g *memGroup) listen(p addrPair) {
	if p == g.route {
		return
	}
	if g.route.local.IsValid() {
		g.s.unlisten(g.route, g)
	}
	if g.route = p; p.local.IsValid() {
		g.s.listen(p, g)
	}
}

// ensureDataPlane builds the data plane on first need, with the configured
// underlay or else the IKE SA's local address, and loads the peer table.
func (g *memGroup) ensureDataPlane(ctx context.Context, ikeLocal netip.Addr) bool {
	if g.dp != nil {
		return true
	}
	local := g.underlayFor(ikeLocal)
	if !local.IsValid() {
		return false
	}
	dp, err := g.s.opts.NewDataPlane(ctx, g.cfg, local, g.log)
	if err != nil {
		g.lastErr = err.Error()
		g.log.Error("data plane", "err", err)
		return false
	}
	g.dp, g.underlay = dp, local
	g.log.Info("data plane ready", "backend", g.cfg.Dataplane, "underlay", local)
	g.protectControl(ctx)
	g.applyPeers(ctx)
	return true
}

// protectControl tells the data plane the control addresses of the
// current control child, so that no peer prefix that contains one is
// installed (a group policy or route for it would take the control
// exchange away from the control child), before the first peer table and
// whenever the control child's addresses change.
func (g *memGroup) protectControl(ctx context.Context) {
	p, ok := g.dp.(xfrm.Protector)
	want := addrPair{g.ctl.Local, g.ctl.Remote}
	if !ok || !want.local.IsValid() || !want.remote.IsValid() || want == g.protected {
		return
	}
	g.protected = want
	if err := p.Protect(ctx, []netip.Addr{want.local, want.remote}); err != nil {
		g.lastErr = err.Error()
		g.log.Error("a peer prefix contains a control address; that peer is left out of the peer table", "err", err)
	}
}

// underlayFor is the member's underlay address: the configured one, or
// else the local address of its IKE SA with the controller.
func (g *memGroup) underlayFor(ikeLocal netip.Addr) netip.Addr {
	if g.cfg.Underlay.IsValid() {
		return g.cfg.Underlay
	}
	return ikeLocal
}

// sourceOrder is the precedence of the sources: static routes first,
// then the others (bgp) by name.
func sourceOrder(peers map[string][]xfrm.Peer) []string {
	srcs := slices.Sorted(maps.Keys(peers))
	if i := slices.Index(srcs, sourceStatic); i > 0 {
		srcs = slices.Insert(slices.Delete(srcs, i, i+1), 0, sourceStatic)
	}
	return srcs
}

// peerTable merges the peers of every source into the data plane's peer
// table by the group's one rule: on the exact same prefix, the peer of
// the first source in precedence order wins (a static route overrides
// what the controller distributes; the other is shadowed, and used again
// when the first goes), and between different prefixes the data plane
// picks the longest that contains the destination, whatever their
// sources.
func (g *memGroup) peerTable() []xfrm.Peer {
	var ps []xfrm.Peer
	seen := map[netip.Prefix]bool{}
	for _, src := range sourceOrder(g.peers) {
		for _, p := range g.peers[src] {
			k := p.Prefix.Masked()
			if seen[k] {
				continue
			}
			seen[k] = true
			ps = append(ps, p)
		}
	}
	return ps
}

// setPeers replaces the peers of source src and loads the peer table into
// the data plane when they changed.
func (g *memGroup) setPeers(ctx context.Context, src string, peers []xfrm.Peer) {
	if slices.Equal(g.peers[src], peers) {
		return
	}
	if len(peers) == 0 {
		delete(g.peers, src)
	} else {
		g.peers[src] = peers
	}
	g.applyPeers(ctx)
}

func (g *memGroup) applyPeers(ctx context.Context) {
	if g.dp == nil {
		return
	}
	table := g.peerTable()
	g.countPeers(table)
	if err := g.dp.SetPeers(ctx, g.cfg.LocalTS, table); err != nil {
		g.lastErr = err.Error()
		g.log.Error("set peer table", "err", err)
	}
}

// countPeers exports how many prefixes of the peer table come from each
// origin.
func (g *memGroup) countPeers(table []xfrm.Peer) {
	if g.metrics == nil {
		return
	}
	n := len(g.peers[sourceStatic])
	g.metrics.SetPeerPrefixes(g.cfg.Name, sourceStatic, n)
	if g.cfg.BGPEnabled() {
		g.metrics.SetPeerPrefixes(g.cfg.Name, sourceBGP, len(table)-n)
	}
}

// reconfigure keeps the group for a reload that changes at most where
// its peers come from (routes, bgp) and local_ts, and loads the new peer
// table.
func (g *memGroup) reconfigure(ctx context.Context, n *swanctl.Group) bool {
	old := g.cfg
	defer g.childConfChanged(old)
	switch {
	case sameGroup(g.cfg, n):
		g.cfg = n // positions, the control child's definition
		return true
	case sameExceptPeers(g.cfg, n):
		g.cfg = n
		g.setStatic(staticPeers(n), g.s.now())
		if !sameBGP(old, n) {
			g.restartBGP(ctx)
		}
		g.applyPeers(ctx)
		if c, ok := g.links.newest(); ok {
			g.followBGP(g.s.now(), &c)
		}
		return true
	}
	return false
}

// setStatic replaces the peers of the static routes, keeping when each
// unchanged route took its peer.
func (g *memGroup) setStatic(ps []xfrm.Peer, now time.Time) {
	since := make(map[netip.Prefix]time.Time, len(ps))
	old := map[netip.Prefix]netip.Addr{}
	for _, p := range g.peers[sourceStatic] {
		old[p.Prefix] = p.Underlay
	}
	for _, p := range ps {
		since[p.Prefix] = now
		if u, ok := old[p.Prefix]; ok && u == p.Underlay {
			since[p.Prefix] = g.staticSince[p.Prefix]
		}
	}
	g.staticSince = since
	if len(ps) > 0 {
		g.peers[sourceStatic] = ps
	} else {
		delete(g.peers, sourceStatic)
	}
}

// startBGP starts the group's BGP speaker when its configuration has BGP
// on (at setup; reconfigure restarts it).
func (g *memGroup) startBGP() {
	if !g.cfg.BGPEnabled() {
		return
	}
	mb, err := newMemBGP(g.s, g)
	if err != nil {
		g.lastErr = err.Error()
		g.log.Error("bgp: cannot start the speaker", "err", err)
		return
	}
	g.bgp = mb
}

// restartBGP applies new BGP settings: the old speaker stops and its
// routes leave the peer table (they would be learned again), and a new
// one starts if BGP is still on.
func (g *memGroup) restartBGP(ctx context.Context) {
	if g.bgp != nil {
		g.log.Info("bgp: settings changed; restarting the speaker")
		g.bgp.close()
		g.bgp.forget()
		g.bgp = nil
		delete(g.peers, sourceBGP)
	}
	g.startBGP()
}

// followBGP follows the control child c to the controller (nil: none) with
// the BGP speaker: it advertises local_ts with the underlay as next hop,
// and has a session with the controller while the child is up and
// protects BGP. Without a session the learned routes stay (stale).
func (g *memGroup) followBGP(now time.Time, c *proven) {
	mb := g.bgp
	if mb == nil {
		return
	}
	if c == nil {
		mb.down()
		return
	}
	mb.advertise(g.cfg.LocalTS, g.underlayFor(c.IKE.LocalHost))
	if c.bgp == nil {
		mb.down()
		g.bgpRefused(now, c.IKE, c.bgpErr)
		return
	}
	g.bgpFine(c.IKE.UniqueID)
	mb.up(*c, c.bgp)
}

// onDatagram handles a datagram from the controller: from the remote
// control address of the control child to the local one.
func (g *memGroup) onDatagram(ctx context.Context, now time.Time, d Datagram) bool {
	if g.sess == nil || d.Src.Addr() != g.ctl.Remote || d.Dst != g.ctl.Local {
		return false
	}
	defer g.rearm()
	msg, kind, ok := g.s.receive(now, d, g.ctl.admission, g.sess, g.ctl.Local, g.ctl.Remote, g.drops, "")
	if !ok {
		return true
	}
	switch kind {
	case mpsa.Response:
		if !g.hello {
			g.hello = true
			g.log.Info("controller answered hello")
		}
	case mpsa.NewRequest:
		n := msg.PutNotify()
		if n == nil {
			g.sess.Discard()
			g.drops.drop(now, metrics.DropUnexpected, "detail", "request without MPSA_PUT")
			return true
		}
		if !g.onPut(ctx, now, n) {
			// No answer: the controller retransmits, and the
			// retransmission is handled anew.
			g.sess.Discard()
			return true
		}
		resp, err := g.sess.Respond()
		if err != nil {
			g.log.Error("encode response", "err", err)
			return true
		}
		g.s.send(resp, g.ctl.Local, g.ctl.Remote)
	}
	return true
}

// onPut handles an MPSA_PUT and reports whether to acknowledge it.
func (g *memGroup) onPut(ctx context.Context, now time.Time, n *mpsa.Notify) bool {
	p, err := mpsa.ParsePut(n)
	if err != nil {
		g.drops.drop(now, metrics.DropMalformed, "err", err)
		return false
	}
	defer p.Zero()
	if p.Suite.CounterMode() && !g.cfg.AllowCounterMode {
		g.drops.drop(now, metrics.DropUnexpected, "detail", "counter-mode SA refused", "suite", p.Suite.String(),
			"hint", "one key shared by many senders risks nonce reuse (RFC 6054); only a lab may set insecure_counter_mode_lab_only = yes to accept it")
		return false
	}
	if !g.ensureDataPlane(ctx, g.ctl.IKE.LocalHost) {
		return false
	}
	res, acts, err := g.life.Receive(now, mpsa.PutInfoOf(p))
	if err != nil {
		g.drops.drop(now, metrics.DropMalformed, "err", err)
		return false
	}
	switch res {
	case mpsa.Conflict:
		g.log.Error("MPSA_PUT reuses a known SPI with other keys; ignored", "spi", spiString(p.SPI))
		return false
	case mpsa.Duplicate, mpsa.Stale, mpsa.Retired:
		// Acknowledged, nothing changes: a retransmission, or an SA this
		// member has had (a replay never brings a removed SA back).
		g.log.Debug("MPSA_PUT again", "spi", spiString(p.SPI), "outcome", res.String())
		return true
	}
	g.log.Info("received group SA", "put", p)
	return g.apply(ctx, now, acts, p)
}

// apply carries out lifecycle actions on the data plane. p, if set, is the
// Put whose SA an InstallInbound installs. When the install fails the SA is
// forgotten so that the controller's retransmission is handled anew.
func (g *memGroup) apply(ctx context.Context, now time.Time, acts []mpsa.Action, p *mpsa.Put) bool {
	ok := true
	for _, a := range acts {
		var err error
		switch a.Kind {
		case mpsa.InstallInbound:
			if p == nil || p.SPI != a.SPI {
				err = errors.New("no keys for this SA")
				break
			}
			keys, kerr := mpsa.DeriveKeys(p)
			if kerr != nil {
				err = kerr
				break
			}
			sa := xfrm.SA{SPI: p.SPI, Suite: p.Suite, EncrKey: keys.Encr, IntegKey: keys.Integ}
			err = g.dp.InstallInbound(ctx, sa)
			keys.Zero()
		case mpsa.SetOutbound:
			if err = g.dp.SetOutbound(ctx, a.SPI); err == nil {
				g.metrics.SetGroupSA(g.cfg.Name, a.SPI, a.At)
			}
		case mpsa.Remove:
			if err = g.dp.Remove(ctx, a.SPI); err == nil && g.life.Outbound() == 0 {
				g.metrics.ClearGroupSA(g.cfg.Name)
			}
		}
		if err != nil {
			g.lastErr = err.Error()
			g.log.Error("data plane", "action", a.Kind.String(), "spi", spiString(a.SPI), "err", err)
			if a.Kind == mpsa.InstallInbound {
				g.apply(ctx, now, g.life.Forget(now, a.SPI), nil)
				return false
			}
			ok = false
			continue
		}
		g.log.Info("data plane", "action", a.Kind.String(), "spi", spiString(a.SPI), "why", a.Reason)
	}
	return ok
}

// onTimer is the group's deadline: SA lifecycle steps and the hello's
// retransmission.
func (g *memGroup) onTimer(ctx context.Context, now time.Time) {
	defer g.rearm()
	if acts := g.life.Advance(now); len(acts) > 0 {
		g.apply(ctx, now, acts, nil)
	}
	if g.sess != nil {
		if b, ok := g.sess.Retransmit(now); ok {
			g.log.Debug("retransmitting hello", "attempt", g.sess.Attempts())
			g.s.send(b, g.ctl.Local, g.ctl.Remote)
		}
	}
}

// rearm sets the group's deadline to its next timer.
func (g *memGroup) rearm() {
	if t, ok := g.nextDeadline(); ok {
		g.s.sched.set(&g.timer, t)
	} else {
		g.s.sched.stop(&g.timer)
	}
}

func (g *memGroup) nextDeadline() (time.Time, bool) {
	t, ok := g.life.NextDeadline()
	if g.sess != nil {
		if r, rok := g.sess.NextDeadline(); rok && (!ok || r.Before(t)) {
			t, ok = r, true
		}
	}
	return t, ok
}

func (g *memGroup) status(ctx context.Context) api.GroupStatus {
	out := spiString(g.life.Outbound())
	st := api.GroupStatus{
		Name: g.cfg.Name, SPI: out, OutboundSPI: out,
		InboundSPIs: []string{}, SAs: []api.SAStatus{}, Peers: []api.Peer{}, Drops: g.drops.snapshot(),
		DataPlaneError: g.lastErr,
	}
	st.ControlProblems, st.CharonProblems = g.problems()
	for _, sa := range g.life.SAs() {
		st.InboundSPIs = append(st.InboundSPIs, spiString(sa.SPI))
		ss := api.SAStatus{SPI: spiString(sa.SPI), Received: sa.Received, Expires: sa.Expires}
		if !sa.ActivateAt.IsZero() {
			t := sa.ActivateAt
			ss.ActivateAt = &t
		}
		if !sa.RemoveAt.IsZero() {
			t := sa.RemoveAt
			ss.RemoveAt = &t
		}
		st.SAs = append(st.SAs, ss)
	}
	link := &api.PeerLink{State: "down"}
	if g.sess != nil {
		link = &api.PeerLink{Address: g.ctl.Remote.String(), State: "hello", IKE: g.ctl.IKE.UniqueID, IKESPIs: g.sess.ID().String()}
		if g.hello {
			link.State = "up"
		}
	}
	st.Controller = link
	for _, p := range g.peerTable() {
		st.Peers = append(st.Peers, api.Peer{Prefix: p.Prefix.String(), Underlay: p.Underlay.String()})
	}
	if dc, ok := g.dp.(dropCounter); ok {
		st.DataPlaneDrops = dc.DropCounts()
	}
	if w, ok := g.dp.(warner); ok {
		st.DataPlaneWarnings = w.Warnings()
	}
	if g.dp != nil {
		if cs, err := g.dp.Counters(ctx); err == nil {
			for _, c := range cs {
				st.Counters = append(st.Counters, api.Counter{SPI: spiString(c.SPI), InPackets: c.InPackets, InBytes: c.InBytes,
					OutPackets: c.OutPackets, OutBytes: c.OutBytes, InErrors: c.InErrors, OutErrors: c.OutErrors})
			}
		}
	}
	return st
}

// warner is a data plane with warnings for the operator
// (xfrm/kernel.Backend); they go into the member's status.
type warner interface {
	Warnings() []string
}

// dropCounter is a data plane that counts the packets it drops, by reason
// (xfrm/userspace.Backend); its counts go into the member's status.
type dropCounter interface {
	DropCounts() map[string]uint64
}

// flush tears the group down for good, when it is removed from the
// configuration or changed to another data plane: its data plane removes
// the group's kill switch too, or, if this run never built it, flush
// (Options.FlushDataPlane) removes what an earlier run left.
func (g *memGroup) flush(ctx context.Context, flush DataPlaneFlusher) {
	if g.sess != nil {
		g.sess.Close()
	}
	if g.dp == nil {
		if flush != nil {
			if err := flush(ctx, g.cfg); err != nil {
				g.log.Error("flush the data plane of an earlier run", "err", err)
			}
		}
		return
	}
	if err := g.dp.Flush(ctx); err != nil {
		g.log.Error("flush data plane", "err", err)
	}
	g.dp = nil
}

// retire tears the group down at a reload. Rebuilt under the same name
// and data plane, the new data plane adopts the kill switch; removed, or
// moved to another data plane, the group removes its kill switch too.
func (g *memGroup) retire(ctx context.Context, next *swanctl.Group) {
	if next != nil && next.Dataplane == g.cfg.Dataplane {
		g.log.Info("group changed; tearing it down")
		g.close()
		return
	}
	g.log.Info("group removed or moved to another data plane; removing it and its kill switch")
	if g.bgp != nil {
		g.bgp.close()
		g.bgp.forget()
		g.bgp = nil
	}
	g.stopDeadlines()
	g.flush(ctx, g.s.opts.FlushDataPlane)
}

// stopDeadlines stops the group's deadlines and the server's routing of its
// datagrams, for either teardown (retire, close).
func (g *memGroup) stopDeadlines() {
	g.s.sched.stop(&g.timer)
	g.s.sched.stop(&g.retry)
	g.controlWatch.stop()
	g.s.sched.stop(&g.drops.flushAt)
	g.listen(addrPair{})
}

func (g *memGroup) close() {
	if g.bgp != nil {
		g.bgp.close()
		g.bgp = nil
	}
	g.stopDeadlines()
	if g.sess != nil {
		g.sess.Close()
	}
	if g.dp != nil {
		if err := g.dp.Close(); err != nil {
			g.log.Error("close data plane", "err", err)
		}
		g.dp = nil
	}
}
