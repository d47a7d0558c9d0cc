package bgp

import (
	"cmp"
	"net/netip"
	"time"
)

// Origin says where a route of the peer table comes from.
type Origin string

// The origins of a route.
const (
	// OriginStatic is a route from the group's routes { } section.
	OriginStatic Origin = "static"
	// OriginBGP is a route learned from the controller by BGP.
	OriginBGP Origin = "bgp"
)

// Change is one change of the routes a Member learned: Prefix is now
// reached through the member at Peer (its underlay address), or, when
// Withdrawn, no longer through BGP.
type Change struct {
	// Prefix is a remote LAN prefix.
	Prefix netip.Prefix `json:"prefix"`
	// Peer is the underlay address of the member behind Prefix; the
	// zero Addr when Withdrawn.
	Peer netip.Addr `json:"peer,omitzero"`
	// Learned is when the route to Peer was learned; for a withdrawal,
	// when it was withdrawn.
	Learned time.Time `json:"learned"`
	// Withdrawn is true when the prefix is gone.
	Withdrawn bool `json:"withdrawn,omitempty"`
}

// Route is one entry of a member's view of the peer table, as `mpsactl
// routes GROUP` shows it.
type Route struct {
	// Prefix is the remote prefix.
	Prefix netip.Prefix `json:"prefix"`
	// Peer is the underlay address ESP for Prefix goes to.
	Peer netip.Addr `json:"peer"`
	// Origin is static or bgp.
	Origin Origin `json:"origin"`
	// Since is when the route took its current peer: learned by BGP, or
	// loaded from the configuration.
	Since time.Time `json:"since"`
	// Stale is true for a BGP route kept while the session with the
	// controller is down or resynchronizing (see docs/bgp.md, timers).
	Stale bool `json:"stale,omitempty"`
	// Shadowed is true for a BGP route whose exact prefix a static route
	// also has: the static route wins, this one is not used.
	Shadowed bool `json:"shadowed,omitempty"`
	// Ignored, when set, says why a learned route is not used although
	// no static route shadows it (it overlaps this member's own
	// prefixes, or its peer is this member's own underlay).
	Ignored string `json:"ignored,omitempty"`
}

// Age is how long the route has had its peer at now.
func (r Route) Age(now time.Time) time.Duration { return now.Sub(r.Since) }

// comparePrefix orders prefixes by address (IPv4 first), then length.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
