package server

import (
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/mpsa/mpsa/internal/metrics"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
)

// ctlGroup is one group on the controller: its group SA and its members.
type ctlGroup struct {
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
}

type ctlMember struct {
	ctl     vici.Control
	sess    *mpsa.Session
	acked   uint32
	pending uint32
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

func newCtlGroup(cfg *swanctl.Group, rnd io.Reader, now time.Time, b mpsa.Backoff, log *slog.Logger, drops *dropLog, m *metrics.Metrics) (*ctlGroup, error) {
	g, err := mpsa.NewGroup(groupParams(cfg), rnd, now)
	if err != nil {
		return nil, err
	}
	cg := &ctlGroup{cfg: cfg, log: log, group: g, backoff: b, members: map[netip.Addr]*ctlMember{}, drops: drops, metrics: m}
	m.SetGroupSA(cfg.Name, g.Current().SPI(), g.Current().Created)
	cg.log.Info("generated group SA", "spi", spiString(g.Current().SPI()), "suite", cfg.Suite.String(), "next_rekey", g.NextRekey().Format(time.RFC3339))
	return cg, nil
}

// membershipHoldDown gathers joins and leaves that come together (a site
// rebooting, a controller restart) into one rekey.
const membershipHoldDown = 2 * time.Second

// onSnapshot follows the members' control children: new ones are added
// (they join once they say hello), vanished ones leave.
func (g *ctlGroup) onSnapshot(s *Server, snap vici.Snapshot) {
	now := s.now()
	// One control per member address: Controls is ordered by IKE unique
	// id, so when a member has two IKE SAs during a reconnect the newest
	// one is the one kept.
	seen := map[netip.Addr]vici.Control{}
	for _, c := range snap.Controls(g.cfg.Connection, g.cfg.ControlChild) {
		seen[c.Remote] = c
	}
	for _, c := range seen {
		m := g.members[c.Remote]
		id := sessionID(c.IKE)
		if m == nil {
			m = &ctlMember{ctl: c}
			g.members[c.Remote] = m
			g.joined(now, m)
		}
		m.ctl = c
		if m.sess == nil || m.sess.ID() != id {
			if m.sess != nil {
				m.sess.Close()
				g.log.Info("member moved to a new IKE SA", "member", c.IKE.RemoteID, "ike_sa", c.IKE.UniqueID)
			}
			m.sess = mpsa.NewSession(id, c.IKE.Initiator, g.backoff)
			m.pending = 0
			// Push at once, without waiting for a hello: after a
			// controller restart the members' control children
			// are up already and they will not say hello again.
			// A member whose mpsad is not up yet gets the push
			// retransmitted until it answers, or answers its hello.
			if !g.joinWait {
				g.push(s, now, m)
			}
		}
	}
	for addr, m := range g.members {
		if _, ok := seen[addr]; ok {
			continue
		}
		m.sess.Close()
		delete(g.members, addr)
		g.log.Info("member left", "member", m.ctl.IKE.RemoteID, "address", addr)
		g.metrics.SetMembers(g.cfg.Name, g.ackedMembers())
		if g.cfg.RekeyOnLeave && g.group.MemberLeft(now) {
			g.log.Info("rekey scheduled: member left", "at", g.group.NextRekey().Format(time.RFC3339Nano))
		}
	}
}

// claim returns the member d comes from, nil when it is none of this
// group's: its source is the remote control address of a member's control
// child and it is addressed to the local control address.
func (g *ctlGroup) claim(d Datagram) *ctlMember {
	if m := g.members[d.Src.Addr()]; m != nil && m.ctl.Local == d.Dst {
		return m
	}
	return nil
}

// onDatagram handles a datagram from m, the member claim found for it.
func (g *ctlGroup) onDatagram(s *Server, now time.Time, d Datagram, m *ctlMember) {
	msg, kind, ok := s.receive(now, d, m.sess, m.ctl, g.drops, "member", m.ctl.IKE.RemoteID)
	if !ok {
		return
	}
	switch kind {
	case mpsa.NewRequest:
		if !msg.HasMPSAVendorID() {
			m.sess.Discard()
			g.drops.drop(now, metrics.DropUnexpected, "member", m.ctl.IKE.RemoteID, "detail", "request without V(MPSA)")
			return
		}
		resp, err := m.sess.Respond(mpsa.MPSAVendorID())
		if err != nil {
			g.log.Error("encode hello answer", "err", err)
			return
		}
		s.send(resp, m.ctl.Local, m.ctl.Remote)
		if !g.joinWait {
			g.push(s, now, m)
		}
	case mpsa.Response:
		if m.pending != 0 {
			m.acked, m.pending = m.pending, 0
			g.log.Info("member installed the group SA", "member", m.ctl.IKE.RemoteID, "spi", spiString(m.acked))
			g.metrics.SetMembers(g.cfg.Name, g.ackedMembers())
		}
	case mpsa.StaleResponse, mpsa.RepeatedUnanswered:
		// a late answer to a request we replaced, or a request still
		// being handled; nothing to do
	}
}

// joined records a member whose control child came up: with rekey_on_join
// a rekey is scheduled, and pushes wait for it, so that the new member never
// receives the SA it joined under.
func (g *ctlGroup) joined(now time.Time, m *ctlMember) {
	g.log.Info("member joined: control child up", "member", m.ctl.IKE.RemoteID, "address", m.ctl.Remote, "ike_sa", m.ctl.IKE.UniqueID)
	if g.cfg.RekeyOnJoin && g.group.MemberJoined(now) {
		g.joinWait = true
		g.log.Info("rekey scheduled: member joined", "at", g.group.NextRekey().Format(time.RFC3339Nano))
	}
}

// push sends the current group SA to members. The N(MPSA_PUT) is the same
// for all of them and is encoded once; each request around it has the
// member's own IKE SPIs and message ID.
func (g *ctlGroup) push(s *Server, now time.Time, ms ...*ctlMember) {
	if len(ms) == 0 {
		return
	}
	p := g.group.PutAt(now)
	defer p.Zero()
	n, err := p.Notify()
	if err != nil {
		g.log.Error("encode MPSA_PUT", "err", err)
		return
	}
	defer clear(n.Data)
	for _, m := range ms {
		b, err := m.sess.Request(now, n)
		if err != nil {
			g.log.Error("encode MPSA_PUT", "err", err)
			continue
		}
		m.pending = p.SPI
		s.send(b, m.ctl.Local, m.ctl.Remote)
		clear(b)
		g.log.Debug("pushed group SA", "member", m.ctl.IKE.RemoteID, "put", p)
	}
}

// sameSA reports whether a reload from a to b leaves a controller group's
// SA valid: they differ at most in the settings update applies to the
// running group (the timers of the coming rekeys, the membership flags,
// allow_counter_mode, which with an unchanged proposal changes nothing).
// Any other change (connection, control_child, esp_proposal, lifetime,
// nonce_length) needs a new group SA.
func sameSA(a, b *swanctl.Group) bool {
	ca, cb := comparable(a), comparable(b)
	for _, c := range []*swanctl.Group{&ca, &cb} {
		c.RekeyTime, c.RekeyJitter, c.Rollover1, c.Rollover2 = 0, 0, 0, 0
		c.RekeyOnJoin, c.RekeyOnLeave, c.AllowCounterMode = false, false, false
	}
	return reflect.DeepEqual(ca, cb)
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
		{"allow_counter_mode", o.AllowCounterMode != n.AllowCounterMode},
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
	g.log.Info("group settings changed; applied to the running group SA, no rekey", "changed", changed,
		"spi", spiString(g.group.Current().SPI()), "next_rekey", g.group.NextRekey().Format(time.RFC3339))
}

func (g *ctlGroup) rekey(s *Server, now time.Time, reason string) (string, error) {
	sa, err := g.group.Rekey(now)
	if err != nil {
		g.log.Error("rekey failed", "reason", reason, "err", err)
		return "", err
	}
	g.rekeys++
	g.joinWait = false
	g.metrics.Rekeyed(g.cfg.Name, reason)
	g.metrics.SetGroupSA(g.cfg.Name, sa.SPI(), sa.Created)
	g.log.Info("rekeyed group SA", "reason", reason, "spi", spiString(sa.SPI()), "next_rekey", g.group.NextRekey().Format(time.RFC3339), "members", len(g.members))
	g.push(s, now, slices.Collect(maps.Values(g.members))...)
	return spiString(sa.SPI()), nil
}

func (g *ctlGroup) onTimer(s *Server, now time.Time) {
	if g.group.RekeyDue(now) {
		reason := metrics.RekeyLifetime
		if now.Before(g.group.Current().RekeyAt) {
			reason = metrics.RekeyMemberLeave
			if g.joinWait {
				reason = metrics.RekeyMemberJoin
			}
		}
		g.rekey(s, now, reason)
	}
	for _, m := range g.members {
		if b, ok := m.sess.Retransmit(now); ok {
			g.log.Debug("retransmitting", "member", m.ctl.IKE.RemoteID, "attempt", m.sess.Attempts())
			g.metrics.PutRetransmitted(g.cfg.Name)
			s.send(b, m.ctl.Local, m.ctl.Remote)
		}
	}
}

func (g *ctlGroup) nextDeadline() time.Time {
	next := g.group.NextRekey()
	for _, m := range g.members {
		if t, ok := m.sess.NextDeadline(); ok && t.Before(next) {
			next = t
		}
	}
	return next
}

func (g *ctlGroup) status() GroupStatus {
	cur := g.group.Current()
	created, next, exp := cur.Created, g.group.NextRekey(), cur.Expires
	st := GroupStatus{
		Name: g.cfg.Name, SPI: spiString(cur.SPI()), Members: []MemberStatus{},
		Created: &created, NextRekey: &next, Expires: &exp, Rekeys: g.rekeys, Drops: g.drops.snapshot(),
	}
	if p := g.group.Previous(); p != nil {
		st.PreviousSPI = spiString(p.SPI())
	}
	for _, addr := range slices.SortedFunc(maps.Keys(g.members), netip.Addr.Compare) {
		m := g.members[addr]
		st.Members = append(st.Members, MemberStatus{
			ID: m.ctl.IKE.RemoteID, Address: addr.String(), AckedSPI: spiString(m.acked),
			PendingSPI: spiString(m.pending), Retransmits: m.sess.Attempts(), IKE: m.ctl.IKE.UniqueID, IKESPIs: m.sess.ID().String(),
		})
	}
	return st
}

func (g *ctlGroup) close() {
	for _, m := range g.members {
		m.sess.Close()
	}
	g.group.Close()
}

// sessionID names the control session that runs under an IKE SA.
func sessionID(sa vici.IKESA) mpsa.SessionID {
	return mpsa.SessionID{SPIi: sa.InitiatorSPI, SPIr: sa.ResponderSPI}
}

// ackedMembers counts members that acknowledged an SA.
func (g *ctlGroup) ackedMembers() int {
	n := 0
	for _, m := range g.members {
		if m.acked != 0 {
			n++
		}
	}
	return n
}
