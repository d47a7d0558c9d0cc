// Package api is mpsad's status API: the types that `GET /status` returns,
// the HTTP handler that serves them on the status socket, and the client
// mpsactl uses. It depends on the standard library only, so that a client
// (mpsactl, a monitoring agent) does not link the engine, Prometheus or
// govici. Package server implements [API].
package api

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Status is what `mpsactl status` shows: the daemon and every group.
type Status struct {
	Role          string        `json:"role"`
	Version       string        `json:"version"`
	VICIConnected bool          `json:"vici_connected"`
	Groups        []GroupStatus `json:"groups"`
	// Drops counts control datagrams that matched no group, by reason.
	Drops map[string]uint64 `json:"drops,omitempty"`
}

// GroupStatus is one group's state. SPI is the SPI in force ("0x%08x"; empty
// when there is none): the current group SA on a controller, the outbound
// SA on a member.
type GroupStatus struct {
	Name string `json:"name"`
	SPI  string `json:"spi"`
	// Controller fields.
	Members     []MemberStatus `json:"members,omitzero"`
	PreviousSPI string         `json:"previous_spi,omitempty"`
	Created     *time.Time     `json:"created,omitempty"`
	NextRekey   *time.Time     `json:"next_rekey,omitempty"`
	Expires     *time.Time     `json:"expires,omitempty"`
	Rekeys      uint64         `json:"rekeys,omitempty"`
	// Fanout is how far the current SA has reached the members.
	Fanout *FanoutStatus `json:"fanout,omitempty"`
	// Member fields. A member's group always has outbound_spi and
	// inbound_spis in JSON, "" and [] when it has no SA (see
	// MarshalJSON); a controller's never has them.
	OutboundSPI string     `json:"outbound_spi,omitzero"`
	InboundSPIs []string   `json:"inbound_spis,omitzero"`
	SAs         []SAStatus `json:"sas,omitzero"`
	Controller  *PeerLink  `json:"controller,omitempty"`
	Peers       []Peer     `json:"peers,omitzero"`
	Counters    []Counter  `json:"counters,omitzero"`
	// DataPlaneError is the last error of the member's data plane, if
	// any (an SA that could not be installed, a backend that could not
	// start).
	DataPlaneError string `json:"dataplane_error,omitempty"`
	// DataPlaneDrops counts the packets the member's data plane dropped
	// since it started, by reason, for a data plane that counts them
	// (the userspace one: no_outbound_sa, no_route, unknown_spi,
	// malformed, tun_write_errors, sa_in_errors, sa_out_errors; see
	// xfrm/userspace.Backend.DropCounts). Absent otherwise.
	DataPlaneDrops map[string]uint64 `json:"dataplane_drops,omitempty"`
	// DataPlaneWarnings are what the member's data plane warns of and
	// the operator should act on, for a data plane that has them (the
	// kernel one: an outbound SA nearing the end of its sequence
	// numbers, a sequence-number record that could not be written).
	DataPlaneWarnings []string `json:"dataplane_warnings,omitempty"`
	// Drops counts control datagrams dropped, by reason.
	Drops map[string]uint64 `json:"drops,omitempty"`
	// ControlProblems are the IKE SAs of the group's connection that
	// carry no usable control child (both roles): charon established
	// the IKE SA but not the control child, or mpsad cannot verify that
	// the child protects the control exchange and refuses to use it.
	// Absent when there are none.
	ControlProblems []ControlProblem `json:"control_problems,omitempty"`
	// CharonProblems are what charon lacks for the group's control
	// child, or what its configuration gets wrong (AH, NULL
	// encryption), as mpsad found at its last connection to charon.
	CharonProblems []string `json:"charon_problems,omitempty"`
	// BGP sums up the group's peer discovery by BGP; absent without
	// BGP. `mpsactl routes GROUP` has the details.
	BGP *BGPSummary `json:"bgp,omitempty"`
}

// BGPSummary is a group's BGP in a few numbers.
type BGPSummary struct {
	// Member: the session with the controller (established, active,
	// idle..., down while the control child is), the controller's
	// control address, the routes learned and how many of them are
	// stale (kept while the session is down).
	Session       string `json:"session,omitempty"`
	Controller    string `json:"controller,omitempty"`
	LearnedRoutes int    `json:"learned_routes,omitempty"`
	StaleRoutes   int    `json:"stale_routes,omitempty"`
	// Controller: the route reflector's members, the prefixes they
	// advertise now that the policy accepts and rejects, and every
	// rejection since each member was added.
	Members          int    `json:"members,omitempty"`
	AcceptedPrefixes int    `json:"accepted_prefixes,omitempty"`
	RejectedPrefixes int    `json:"rejected_prefixes,omitempty"`
	RejectedTotal    uint64 `json:"rejected_total,omitempty"`
	// LastError is the last error of the speaker or the reflector, or
	// why mpsad could not ask it (busy).
	LastError string `json:"last_error,omitempty"`
}

// Routes is a group's peer discovery as `mpsactl routes GROUP` shows it:
// on a member its BGP session and every route of its peer table, static
// and learned; on a controller its route reflector, with each member's
// accepted and rejected prefixes.
type Routes struct {
	Group string `json:"group"`
	Role  string `json:"role"`
	// BGP is false for a group without BGP (a member with static routes
	// only; a controller then has nothing to show).
	BGP bool `json:"bgp"`
	// Member fields.
	Session *BGPSession `json:"session,omitempty"`
	Routes  []Route     `json:"routes,omitzero"`
	// Controller fields.
	Reflector *Reflector `json:"reflector,omitempty"`
}

// BGPSession is a member's BGP session with its controller.
type BGPSession struct {
	// Controller is the controller's control address, empty while the
	// control child is down.
	Controller string `json:"controller,omitempty"`
	// State is the session state: established, active, idle, ... or
	// down.
	State string `json:"state"`
	// Since is when the session was last established.
	Since *time.Time `json:"since,omitempty"`
	// Advertised are this member's prefixes with the next hop they are
	// advertised with (its underlay).
	Advertised []Advertised `json:"advertised"`
	// LastError is the last error of the speaker, if any.
	LastError string `json:"last_error,omitempty"`
}

// Advertised is one prefix a member advertises.
type Advertised struct {
	Prefix  string `json:"prefix"`
	NextHop string `json:"next_hop"`
}

// Route is one route of a member's peer table.
type Route struct {
	Prefix string `json:"prefix"`
	// Peer is the underlay address ESP for Prefix goes to.
	Peer string `json:"peer"`
	// Origin is static (routes { }) or bgp.
	Origin string `json:"origin"`
	// Since is when the route took its peer; AgeSeconds is how long ago
	// that was when mpsad answered.
	Since      time.Time `json:"since"`
	AgeSeconds float64   `json:"age_seconds"`
	// Stale: a learned route kept while the session with the controller
	// is down or resynchronizing.
	Stale bool `json:"stale,omitempty"`
	// Shadowed: a learned route whose exact prefix a static route also
	// has; the static route is used.
	Shadowed bool `json:"shadowed,omitempty"`
	// Ignored says why a learned route is not used (it overlaps the
	// member's own prefixes, or leads to its own underlay).
	Ignored string `json:"ignored,omitempty"`
}

// Reflector is a controller group's route reflector.
type Reflector struct {
	RouterID string `json:"router_id,omitempty"`
	Port     uint16 `json:"port"`
	// Interface is the interface its listener is bound to, if any.
	Interface string `json:"interface,omitempty"`
	// Deferring: just started, it waits for the members' routes before
	// it reflects.
	Deferring     bool              `json:"deferring,omitempty"`
	Members       []ReflectorMember `json:"members"`
	AcceptedTotal uint64            `json:"accepted_total"`
	RejectedTotal uint64            `json:"rejected_total"`
	LastError     string            `json:"last_error,omitempty"`
}

// ReflectorMember is one member of the route reflector.
type ReflectorMember struct {
	Identity string `json:"identity"`
	Address  string `json:"address"`
	// Session is the BGP session state, Since when it entered it.
	Session string    `json:"session"`
	Since   time.Time `json:"since"`
	// Policy names the rules that match the member's identity.
	Policy []string `json:"policy"`
	// Accepted and Rejected are the prefixes it advertises now.
	Accepted []PrefixVerdict `json:"accepted"`
	Rejected []PrefixVerdict `json:"rejected"`
	// AcceptedTotal and RejectedTotal count every advertisement since
	// the member was added.
	AcceptedTotal uint64 `json:"accepted_total"`
	RejectedTotal uint64 `json:"rejected_total"`
}

// PrefixVerdict is one prefix a member advertised and what the policy
// made of it.
type PrefixVerdict struct {
	Prefix  string    `json:"prefix"`
	NextHop string    `json:"next_hop,omitempty"`
	Since   time.Time `json:"since"`
	// Rule is the rule that admitted it; Reason why it was rejected.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ControlProblem is one IKE SA of a group's connection without a usable
// control child.
type ControlProblem struct {
	// IKE is charon's unique id of the IKE SA, Peer its remote identity
	// and Address its remote IKE address.
	IKE     uint32 `json:"ike_sa"`
	Peer    string `json:"peer"`
	Address string `json:"address"`
	// Since is when mpsad first saw it.
	Since time.Time `json:"since"`
	// Problem says what is wrong, with what charon said about it: "control
	// child mpsa-ctl of connection mpsa not installed: IKE SA mpsa[1]
	// with 192.0.2.1 (ctl.example.net) is ESTABLISHED but has no CHILD_SA
	// mpsa-ctl; charon said: [IKE] received NO_PROPOSAL_CHOSEN notify, no
	// CHILD_SA built".
	Problem string `json:"problem"`
}

// IsMember reports whether g is a member's group: a member always reports
// its link to the controller, a controller never.
func (g GroupStatus) IsMember() bool { return g.Controller != nil }

// MarshalJSON encodes g with its fields' tags, except that a member's
// group always has outbound_spi and inbound_spis, "" and [] when it holds
// no SA (before the first MPSA_PUT, after its SA expired), so that a reader
// tells a member without an SA from a controller's group by the fields
// present. A controller's group never has them.
func (g GroupStatus) MarshalJSON() ([]byte, error) {
	type plain GroupStatus // the fields without this method
	if !g.IsMember() {
		return json.Marshal(plain(g))
	}
	in := g.InboundSPIs
	if in == nil {
		in = []string{}
	}
	// The outer fields take the names from the embedded ones.
	return json.Marshal(struct {
		plain
		OutboundSPI string   `json:"outbound_spi"`
		InboundSPIs []string `json:"inbound_spis"`
	}{plain(g), g.OutboundSPI, in})
}

// FanoutStatus is how far a controller group's current SA has reached its
// members, and how long a push to all of them takes at the daemon's
// push_rate.
type FanoutStatus struct {
	// Members counts the group's members, Current those that acknowledged
	// the current SA, Queued the pushes and retransmissions that wait for
	// the push rate.
	Members int `json:"members"`
	Current int `json:"current"`
	Queued  int `json:"queued"`
	// PushSeconds is how long a push to every member takes at push_rate
	// (push_burst of them go at once); WindowSeconds is the rollover
	// window it must fit in, the lesser of rollover1 and rollover2 -
	// rollover1 (docs/configuration.md, push_rate).
	PushSeconds   float64 `json:"push_seconds"`
	WindowSeconds float64 `json:"window_seconds"`
	// Warning says so when PushSeconds exceeds WindowSeconds.
	Warning string `json:"warning,omitempty"`
}

// MemberStatus is one member as the controller sees it.
type MemberStatus struct {
	// ID is the member's IKE identity.
	ID string `json:"id"`
	// Address is its control address.
	Address string `json:"address"`
	// AckedSPI is the last SA it acknowledged ("0x%08x", empty if none).
	AckedSPI string `json:"acked_spi"`
	// PendingSPI is the SA being pushed to it, if unacknowledged.
	PendingSPI string `json:"pending_spi,omitempty"`
	// Retransmits of the pending push.
	Retransmits int `json:"retransmits,omitempty"`
	// IKE is charon's unique id of the member's IKE SA, IKESPIs its SPIs
	// as swanctl --list-sas shows them ("i_r").
	IKE     uint32 `json:"ike_sa"`
	IKESPIs string `json:"ike_spis"`
}

// SAStatus is one installed SA of a member with its timers.
type SAStatus struct {
	SPI        string     `json:"spi"`
	Received   time.Time  `json:"received"`
	Expires    time.Time  `json:"expires"`
	ActivateAt *time.Time `json:"activate_at,omitempty"`
	RemoveAt   *time.Time `json:"remove_at,omitempty"`
}

// PeerLink is a member's view of its controller.
type PeerLink struct {
	Address string `json:"address"`
	// State is "down" (no control child), "hello" (waiting for the
	// answer) or "up".
	State   string `json:"state"`
	IKE     uint32 `json:"ike_sa,omitempty"`
	IKESPIs string `json:"ike_spis,omitempty"`
}

// Peer is a remote prefix and the underlay address it is reached at.
type Peer struct {
	Prefix   string `json:"prefix"`
	Underlay string `json:"underlay"`
}

// Counter is the traffic of one SPI in the data plane.
type Counter struct {
	SPI        string `json:"spi"`
	InPackets  uint64 `json:"in_packets"`
	InBytes    uint64 `json:"in_bytes"`
	OutPackets uint64 `json:"out_packets"`
	OutBytes   uint64 `json:"out_bytes"`
	InErrors   uint64 `json:"in_errors"`
	OutErrors  uint64 `json:"out_errors"`
}

// API is what the status socket serves; server.Server implements it.
type API interface {
	// Status returns the daemon's state.
	Status(ctx context.Context) (Status, error)
	// Rekey rekeys a controller's group now and returns the new SPI.
	Rekey(ctx context.Context, group string) (string, error)
}

// RoutesAPI is implemented by a daemon that shows its groups' routes
// (server.Server); the status socket serves it at GET
// /groups/NAME/routes.
type RoutesAPI interface {
	// Routes returns a group's peer discovery.
	Routes(ctx context.Context, group string) (Routes, error)
}

// ErrNoGroup is returned for a group name that is not configured; the
// socket answers it with 404.
var ErrNoGroup = errors.New("no such group")
