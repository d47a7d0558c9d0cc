package server

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
)

// Sources feed the groups what they learn, through the group interface:
// control children (controlUp, controlDown) and peers (setPeers, one
// list per source, which the group merges). A group does not know its
// sources, and a source does not know the groups' roles: adding one (BGP
// routes for a member's peers, a second controller) adds a source and its
// wiring in the server, and changes no group.
//
// Today's sources:
//   - viciSource: charon's IKE SAs over VICI, turned into the control
//     children of each group's connection;
//   - static routes: the routes { } of a member group's configuration
//     (sourceStatic, fed at setup and at reload);
//   - BGP (bgp.go): on a member, the routes its speaker learned from the
//     controller (sourceBGP); on a controller, the reflector follows the
//     members' control children.
//
// A member group merges its sources into one peer table by one rule
// (memGroup.peerTable): on the exact same prefix the first source in
// precedence order wins (static before bgp), and the data plane picks
// the longest prefix that contains a destination among all of them.

// sourceStatic names the peers of a group's routes { } configuration.
const sourceStatic = "static"

// staticPeers are the peers of g's routes, in configuration order.
func staticPeers(g *swanctl.Group) []xfrm.Peer {
	var ps []xfrm.Peer
	for _, r := range g.Routes {
		for _, p := range r.Prefixes {
			ps = append(ps, xfrm.Peer{Prefix: p, Underlay: r.Peer})
		}
	}
	return ps
}

// viciSource follows charon's IKE SAs from the watcher's changes and
// feeds every group the control children of its connection: controlUp
// when an IKE SA comes to carry one (or it changes), controlDown when it
// no longer does. An event costs O(1): only the IKE SAs it names are
// looked at; a resync compares the listing once with what it knows.
type viciSource struct {
	// ikes are the IKE SAs by unique id, as last seen. They share their
	// strings and children with the watcher's state.
	ikes map[uint32]vici.IKESA
	// groups returns the groups of a connection.
	groups func(conn string) []group
	// verify proves that a control child protects the control
	// addresses (Server.verifyControl); proofs keeps what it proved,
	// by IKE SA and child name, so that an event or a resync that does
	// not change a child costs no second verification. An IKE SA's
	// proofs go with it, whatever groups and children the
	// configuration names by then.
	verify func(ctx context.Context, c vici.Control) (proven, error)
	proofs map[uint32]*proofEntry
	// verifyBGP proves that a control child also protects a group's BGP
	// session on a port (Server.verifyBGP); nil refuses BGP.
	verifyBGP func(ctx context.Context, c vici.Control, port uint16) (bgpProof, error)
}

// proofEntry is what was proved of one control child: the control
// exchange, and BGP sessions by port (for the groups with BGP), each
// proved once per CHILD_SA. It keeps of the child only what tells whether
// it is still the same one (childKey) and what the proof found, not the
// IKE SA and child themselves: the cache holds an entry per member. An
// IKE SA's entries (one per control child name its groups use, nearly
// always one) form a list.
type proofEntry struct {
	name  string
	child childKey
	adm   admission
	// ifName and how, as proven has them.
	ifName, how string
	bgp         map[uint16]bgpResult
	next        *proofEntry
}

// childKey is what a proof of a control child depends on: the CHILD_SA
// (its identity, SPIs, reqid, interface IDs, protocol and cipher) and
// the control addresses.
type childKey struct {
	uniqueID, reqID, spiIn, spiOut, ifIDIn, ifIDOut uint32
	protocol, encrAlg                               string
	local, remote                                   netip.Addr
}

// keyOf returns c's childKey.
func keyOf(c vici.Control) childKey {
	ch := c.Child
	return childKey{uniqueID: ch.UniqueID, reqID: ch.ReqID, spiIn: ch.SPIIn, spiOut: ch.SPIOut, ifIDIn: ch.IfIDIn, ifIDOut: ch.IfIDOut,
		protocol: ch.Protocol, encrAlg: ch.EncrAlg, local: c.Local, remote: c.Remote}
}

type bgpResult struct {
	p   bgpProof
	err error
}

func newVICISource(groups func(conn string) []group, verify func(context.Context, vici.Control) (proven, error)) *viciSource {
	return &viciSource{ikes: map[uint32]vici.IKESA{}, groups: groups, verify: verify, proofs: map[uint32]*proofEntry{}}
}

// proof returns the cached proof of the control child name of IKE SA ike.
func (v *viciSource) proof(ike uint32, name string) *proofEntry {
	for e := v.proofs[ike]; e != nil; e = e.next {
		if e.name == name {
			return e
		}
	}
	return nil
}

// prove returns the verified control child c of IKE SA c.IKE, from the
// cache when the same CHILD_SA was verified before.
func (v *viciSource) prove(ctx context.Context, c vici.Control) (proven, error) {
	ike, name := c.IKE.UniqueID, c.Child.Name
	key := keyOf(c)
	if e := v.proof(ike, name); e != nil && e.child == key {
		return proven{Control: c, admission: e.adm, ifName: e.ifName, how: e.how}, nil
	}
	p, err := v.verify(ctx, c)
	v.forgetProof(ike, name)
	if err != nil {
		return proven{}, err
	}
	v.proofs[ike] = &proofEntry{name: name, child: key, adm: p.admission, ifName: p.ifName, how: p.how, next: v.proofs[ike]}
	return p, nil
}

// forgetProof drops the proof of child name in IKE SA ike.
func (v *viciSource) forgetProof(ike uint32, name string) {
	var prev *proofEntry
	for e := v.proofs[ike]; e != nil; prev, e = e, e.next {
		if e.name != name {
			continue
		}
		switch {
		case prev != nil:
			prev.next = e.next
		case e.next != nil:
			v.proofs[ike] = e.next
		default:
			delete(v.proofs, ike)
		}
		return
	}
}

// proveBGP adds to p, the proved control child of a group with BGP on
// port, whether it also protects the BGP session; from the cache when
// the same CHILD_SA was verified for that port before.
func (v *viciSource) proveBGP(ctx context.Context, p proven, port uint16) proven {
	e := v.proof(p.IKE.UniqueID, p.Child.Name)
	r, ok := bgpResult{}, false
	if e != nil {
		r, ok = e.bgp[port]
	}
	if !ok {
		if v.verifyBGP == nil {
			r.err = errors.New("mpsad cannot verify that the control child protects BGP")
		} else {
			r.p, r.err = v.verifyBGP(ctx, p.Control, port)
		}
		if e != nil {
			if e.bgp == nil {
				e.bgp = map[uint16]bgpResult{}
			}
			e.bgp[port] = r
		}
	}
	if r.err != nil {
		p.bgp, p.bgpErr = nil, r.err.Error()
		return p
	}
	bp := r.p
	p.bgp, p.bgpErr = &bp, ""
	return p
}

// forgetProofs drops every verification: charon changed (restarted,
// reconnected), so its TUN or policies may have too.
func (v *viciSource) forgetProofs() { clear(v.proofs) }

// tell tells group g what IKE SA sa, new or changed, means for it: its
// control child up and verified, up but refused, or missing. prev is the
// control child the group was last told of for sa, if any.
func (v *viciSource) tell(ctx context.Context, now time.Time, g group, sa vici.IKESA, prev *vici.Control) {
	child := g.config().ControlChild
	c, ok := sa.Control(child)
	var (
		p   proven
		err error
	)
	if ok {
		if p, err = v.prove(ctx, c); err != nil {
			ok = false
		} else if cfg := g.config(); cfg.BGPEnabled() {
			p = v.proveBGP(ctx, p, cfg.BGP.Port)
		}
	}
	// What went away first: a member group keeps one link per IKE SA,
	// which the new state then replaces. A child the group never took
	// (refused before) has nothing to go.
	if prev != nil && (!ok || prev.Remote != c.Remote) && g.uses(sa.UniqueID, prev.Remote) {
		g.controlDown(ctx, now, sa.UniqueID, prev.Remote)
	}
	switch {
	case ok:
		g.controlUp(ctx, now, p)
	case err != nil:
		g.controlRefused(now, sa, err.Error())
	case sa.State == vici.IKEEstablished:
		g.controlMissing(ctx, now, sa)
	default:
		// not established yet, or going away
		g.controlFine(sa.UniqueID, true)
	}
}

// set records sa, new or changed, and tells the groups of its connection
// what changed for them: a group that took the control child of sa is not
// told again while the IKE SA and the child are as it took them (a resync
// lists every IKE SA; a child refused before is verified again).
func (v *viciSource) set(ctx context.Context, now time.Time, sa vici.IKESA) {
	old, had := v.ikes[sa.UniqueID]
	v.ikes[sa.UniqueID] = sa
	for _, g := range v.groups(sa.Conn) {
		var prev *vici.Control
		if had && old.Conn == sa.Conn {
			if oc, ok := old.Control(g.config().ControlChild); ok {
				prev = &oc
			}
		}
		if prev != nil && v.unchanged(g, old, sa) {
			continue
		}
		v.tell(ctx, now, g, sa, prev)
	}
	if had && old.Conn != sa.Conn {
		v.down(ctx, now, old)
	}
}

// unchanged reports whether group g took the control child of IKE SA sa
// as it is now: the IKE SA is the same as old but for its age, the child
// is the one proved (and, with BGP, proved for the group's port), and g
// uses it.
func (v *viciSource) unchanged(g group, old, sa vici.IKESA) bool {
	cfg := g.config()
	c, ok := sa.Control(cfg.ControlChild)
	if !ok || !sameIKE(&old, &sa) {
		return false
	}
	e := v.proof(sa.UniqueID, cfg.ControlChild)
	if e == nil || e.child != keyOf(c) {
		return false
	}
	if cfg.BGPEnabled() {
		if _, ok := e.bgp[cfg.BGP.Port]; !ok {
			return false
		}
	}
	return g.uses(sa.UniqueID, c.Remote)
}

// sameIKE reports whether a and b are the same IKE SA in the same state,
// apart from their age and children (field by field: reflect would cost
// more than the telling it spares).
func sameIKE(a, b *vici.IKESA) bool {
	return a.Conn == b.Conn && a.UniqueID == b.UniqueID && a.Version == b.Version && a.State == b.State &&
		a.LocalHost == b.LocalHost && a.LocalPort == b.LocalPort && a.LocalID == b.LocalID &&
		a.RemoteHost == b.RemoteHost && a.RemotePort == b.RemotePort && a.RemoteID == b.RemoteID &&
		a.Initiator == b.Initiator && a.InitiatorSPI == b.InitiatorSPI && a.ResponderSPI == b.ResponderSPI &&
		a.NATLocal == b.NATLocal && a.NATRemote == b.NATRemote
}

// remove forgets the IKE SA id and tells the groups that had its control
// child.
func (v *viciSource) remove(ctx context.Context, now time.Time, id uint32) {
	old, ok := v.ikes[id]
	if !ok {
		return
	}
	delete(v.ikes, id)
	v.down(ctx, now, old)
	delete(v.proofs, id)
}

func (v *viciSource) down(ctx context.Context, now time.Time, old vici.IKESA) {
	for _, g := range v.groups(old.Conn) {
		v.forgetProof(old.UniqueID, g.config().ControlChild)
		g.controlFine(old.UniqueID, true)
		if oc, ok := old.Control(g.config().ControlChild); ok {
			g.controlDown(ctx, now, old.UniqueID, oc.Remote)
		}
	}
}

// resync replaces everything with a full listing: every IKE SA listed is
// set (which tells the groups only of what changed), then those not
// listed are removed, in this order so that a member that moved to a new
// IKE SA is never seen leaving.
func (v *viciSource) resync(ctx context.Context, now time.Time, sas []vici.IKESA) {
	listed := make(map[uint32]struct{}, len(sas))
	for _, sa := range sas {
		listed[sa.UniqueID] = struct{}{}
		v.set(ctx, now, sa)
	}
	for id := range v.ikes {
		if _, ok := listed[id]; !ok {
			v.remove(ctx, now, id)
		}
	}
}

// feed tells a group just set up every control child of its connection
// known now (at start or reload, O(IKE SAs)).
func (v *viciSource) feed(ctx context.Context, now time.Time, g group) {
	cfg := g.config()
	for _, sa := range v.ikes {
		if sa.Conn != cfg.Connection {
			continue
		}
		v.tell(ctx, now, g, sa, nil)
	}
}

// said hands one of charon's messages about a CHILD_SA failure to the
// groups of its connection.
func (v *viciSource) said(now time.Time, ev vici.LogEvent) {
	for _, g := range v.groups(ev.IKEName) {
		g.charonSaid(now, ev)
	}
}
