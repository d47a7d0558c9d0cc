package bgp

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/mpsa/mpsa/xfrm"
)

// PeerTable is a member group's peer table: its static routes and the
// routes its Member learned by BGP, combined as docs/bgp.md says:
//
//   - The data plane looks a destination up by longest prefix match over
//     both kinds together: a learned 10.1.2.0/24 is used for 10.1.2.5
//     even with a static 10.1.0.0/16, and the reverse.
//   - On the exact same prefix, the static route wins: the operator's
//     configuration overrides what the controller distributes. The
//     learned route is kept (and shown as shadowed), and used again when
//     the static route goes.
//
// It turns every change of either kind into the changes of the effective
// table, so that the data plane's work grows with what changed. The zero
// PeerTable is empty and ready. Not safe for concurrent use: the engine's
// loop owns it.
type PeerTable struct {
	static  map[netip.Prefix]Route
	learned map[netip.Prefix]Route
}

// PeerChange is one change of the effective peer table: Peer.Prefix now
// goes to Peer.Underlay, or, when Removed, to no peer.
type PeerChange struct {
	Peer    xfrm.Peer
	Removed bool
}

// effective is the route the data plane uses for p, if any.
func (t *PeerTable) effective(p netip.Prefix) (Route, bool) {
	if r, ok := t.static[p]; ok {
		return r, true
	}
	r, ok := t.learned[p]
	return r, ok
}

// diff appends the change from before to after for one prefix.
func diff(out []PeerChange, p netip.Prefix, before Route, hadBefore bool, after Route, hasAfter bool) []PeerChange {
	switch {
	case hasAfter && (!hadBefore || before.Peer != after.Peer):
		return append(out, PeerChange{Peer: xfrm.Peer{Prefix: p, Underlay: after.Peer}})
	case !hasAfter && hadBefore:
		return append(out, PeerChange{Peer: xfrm.Peer{Prefix: p, Underlay: before.Peer}, Removed: true})
	}
	return out
}

// SetStatic replaces the static routes (a reload of routes { }) and
// returns the changes of the effective table, in prefix order. A route
// whose prefix and peer are unchanged keeps its Since.
func (t *PeerTable) SetStatic(peers []xfrm.Peer, now time.Time) []PeerChange {
	next := make(map[netip.Prefix]Route, len(peers))
	for _, p := range peers {
		r := Route{Prefix: p.Prefix, Peer: p.Underlay, Origin: OriginStatic, Since: now}
		if old, ok := t.static[p.Prefix]; ok && old.Peer == p.Underlay {
			r.Since = old.Since
		}
		next[p.Prefix] = r
	}
	touched := make(map[netip.Prefix]struct{}, len(next)+len(t.static))
	for p := range next {
		touched[p] = struct{}{}
	}
	for p := range t.static {
		touched[p] = struct{}{}
	}
	var out []PeerChange
	for _, p := range slices.SortedFunc(maps.Keys(touched), comparePrefix) {
		before, had := t.effective(p)
		if r, ok := next[p]; ok {
			if t.static == nil {
				t.static = map[netip.Prefix]Route{}
			}
			t.static[p] = r
		} else {
			delete(t.static, p)
		}
		after, has := t.effective(p)
		out = diff(out, p, before, had, after, has)
	}
	return out
}

// Apply records the changes a Member delivered and returns the changes of
// the effective table, in the same order.
func (t *PeerTable) Apply(changes []Change) []PeerChange {
	var out []PeerChange
	for _, c := range changes {
		before, had := t.effective(c.Prefix)
		if c.Withdrawn {
			delete(t.learned, c.Prefix)
		} else {
			if t.learned == nil {
				t.learned = map[netip.Prefix]Route{}
			}
			t.learned[c.Prefix] = Route{Prefix: c.Prefix, Peer: c.Peer, Origin: OriginBGP, Since: c.Learned}
		}
		after, has := t.effective(c.Prefix)
		out = diff(out, c.Prefix, before, had, after, has)
	}
	return out
}

// ClearLearned forgets every learned route (BGP was turned off for the
// group) and returns the changes of the effective table, in prefix order.
func (t *PeerTable) ClearLearned() []PeerChange {
	var changes []Change
	for _, p := range slices.SortedFunc(maps.Keys(t.learned), comparePrefix) {
		changes = append(changes, Change{Prefix: p, Withdrawn: true})
	}
	return t.Apply(changes)
}

// Peers returns the effective table in prefix order, as
// xfrm.DataPlane.SetPeers takes it.
func (t *PeerTable) Peers() []xfrm.Peer {
	out := make([]xfrm.Peer, 0, len(t.static)+len(t.learned))
	for p, r := range t.static {
		out = append(out, xfrm.Peer{Prefix: p, Underlay: r.Peer})
	}
	for p, r := range t.learned {
		if _, ok := t.static[p]; !ok {
			out = append(out, xfrm.Peer{Prefix: p, Underlay: r.Peer})
		}
	}
	slices.SortFunc(out, func(a, b xfrm.Peer) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// Lookup returns the peer the data plane sends dst to: the longest
// prefix containing dst, static or learned.
func (t *PeerTable) Lookup(dst netip.Addr) (xfrm.Peer, bool) {
	var best Route
	found := false
	try := func(r Route) {
		if r.Prefix.Contains(dst) && (!found || r.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = r, true
		}
	}
	for _, r := range t.static {
		try(r)
	}
	for p, r := range t.learned {
		if _, shadowed := t.static[p]; !shadowed {
			try(r)
		}
	}
	return xfrm.Peer{Prefix: best.Prefix, Underlay: best.Peer}, found
}

// Routes returns the table as `mpsactl routes` shows it on a member: the
// static routes, then every route in learned (Member.Routes, which also
// has the stale and ignored ones) with Shadowed set where a static route
// has the same prefix; sorted by prefix, static first on a tie.
func (t *PeerTable) Routes(learned []Route) []Route {
	out := make([]Route, 0, len(t.static)+len(learned))
	for _, r := range t.static {
		out = append(out, r)
	}
	for _, r := range learned {
		if _, ok := t.static[r.Prefix]; ok {
			r.Shadowed = true
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int {
		return cmp.Or(comparePrefix(a.Prefix, b.Prefix), cmp.Compare(originRank(a.Origin), originRank(b.Origin)))
	})
	return out
}

// comparePrefix orders prefixes by address (IPv4 first), then length.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// originRank puts static routes before learned ones.
func originRank(o Origin) int {
	if o == OriginStatic {
		return 0
	}
	return 1
}
