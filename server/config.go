package server

import (
	"reflect"

	"github.com/mpsa/mpsa/swanctl"
)

// comparable returns a copy of g without source positions, so that two
// loads of the same settings compare equal, and without the control
// child's definition: that is charon's configuration, which mpsad only
// checks (controlWatch.childConfChanged), and a line added above it must
// not rebuild a group (a new group SA for every member, a new data plane).
func comparable(g *swanctl.Group) swanctl.Group {
	c := *g
	c.Pos = swanctl.Pos{}
	c.Routes = nil
	c.ControlChildConf = nil
	c.BGP = comparableBGP(g.BGP)
	return c
}

// comparableBGP returns a copy of b without source positions; nil when BGP
// is off (no section, or enabled = no).
func comparableBGP(b *swanctl.BGP) *swanctl.BGP {
	if b == nil || !b.Enabled {
		return nil
	}
	c := *b
	c.Pos = swanctl.Pos{}
	c.Policy = make([]swanctl.BGPPolicy, len(b.Policy))
	for i, p := range b.Policy {
		p.Pos = swanctl.Pos{}
		c.Policy[i] = p
	}
	return &c
}

// sameBGP reports whether a and b have the same BGP settings (both off
// counts as the same).
func sameBGP(a, b *swanctl.Group) bool {
	return reflect.DeepEqual(comparableBGP(a.BGP), comparableBGP(b.BGP))
}

// samePolicyOnly reports whether a and b have BGP on and differ at most
// in the controller's prefix policy, which a running reflector applies
// without restarting.
func samePolicyOnly(a, b *swanctl.Group) bool {
	ca, cb := comparableBGP(a.BGP), comparableBGP(b.BGP)
	if ca == nil || cb == nil {
		return false
	}
	ca.Policy, cb.Policy = nil, nil
	return reflect.DeepEqual(ca, cb)
}

func routes(g *swanctl.Group) []swanctl.Route {
	rs := make([]swanctl.Route, len(g.Routes))
	for i, r := range g.Routes {
		r.Pos = swanctl.Pos{}
		rs[i] = r
	}
	return rs
}

// sameGroup reports whether a reload leaves the group as it is.
func sameGroup(a, b *swanctl.Group) bool {
	ca, cb := comparable(a), comparable(b)
	return reflect.DeepEqual(ca, cb) && reflect.DeepEqual(routes(a), routes(b))
}

// sameExceptPeers reports whether only what a member learns its peers
// from and what it advertises differ (routes, bgp, local_ts): a member
// applies such a change without touching its SAs.
func sameExceptPeers(a, b *swanctl.Group) bool {
	ca, cb := comparable(a), comparable(b)
	ca.LocalTS, cb.LocalTS = nil, nil
	ca.BGP, cb.BGP = nil, nil
	return reflect.DeepEqual(ca, cb)
}
