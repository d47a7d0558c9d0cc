// Package bgp is mpsa's peer discovery by BGP (draft-yamaya-ipsecme-mpsa
// section 4.1), on GoBGP's embeddable server (github.com/osrg/gobgp/v4).
//
// Each member runs one iBGP session to its controller's control address,
// inside the control CHILD_SA, and advertises the prefixes behind it
// (local_ts) with its ESP peer (underlay) address as the BGP next hop. The
// controller is a route reflector: every member learns every other
// member's prefixes and the underlay address to send their ESP to. Route
// filtering at the controller is the access control of section 5: a
// member may advertise only the prefixes its IKE identity is allowed
// (package bgp/policy).
//
// The engine drives the two halves:
//
//   - A Member (NewMember) per member group: SetController and
//     ControllerDown as the control child comes and goes, Advertise with
//     local_ts and the underlay, and learned route changes delivered as
//     deltas to MemberConfig.OnChange, which the engine merges with the
//     static routes into the data plane's peer table (package server);
//     Restore hands it back what an earlier run learned.
//   - A Reflector (NewReflector) per controller group: AddMember and
//     RemoveMember as members' control children come and go; it enforces
//     the policy, counts and logs what it rejects, and reports both in
//     Status.
//
// docs/bgp.md describes the design, the wire choices and the timers.
package bgp
