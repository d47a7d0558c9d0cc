package server

import (
	"reflect"

	"github.com/mpsa/mpsa/swanctl"
)

// comparable returns a copy of g without source positions, so that two
// loads of the same settings compare equal.
func comparable(g *swanctl.Group) swanctl.Group {
	c := *g
	c.Pos = swanctl.Pos{}
	c.Routes = nil
	if g.BGP != nil {
		b := *g.BGP
		b.Pos = swanctl.Pos{}
		c.BGP = &b
	}
	return c
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
	return sameExceptPeers(a, b) && reflect.DeepEqual(routes(a), routes(b))
}

// sameExceptPeers reports whether only the peer table (routes) differs, a
// change a member applies without touching its SAs.
func sameExceptPeers(a, b *swanctl.Group) bool {
	ca, cb := comparable(a), comparable(b)
	ca.LocalTS, cb.LocalTS = nil, nil
	return reflect.DeepEqual(ca, cb)
}
