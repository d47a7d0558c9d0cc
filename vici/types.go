package vici

import (
	"net/netip"
	"slices"
	"time"
)

// IKEState is an IKE SA state as charon names it.
type IKEState string

// IKE SA states (strongSwan's ike_sa_state_names).
const (
	IKECreated     IKEState = "CREATED"
	IKEConnecting  IKEState = "CONNECTING"
	IKEEstablished IKEState = "ESTABLISHED"
	IKEPassive     IKEState = "PASSIVE"
	IKERekeying    IKEState = "REKEYING"
	IKERekeyed     IKEState = "REKEYED"
	IKEDeleting    IKEState = "DELETING"
	IKEDestroying  IKEState = "DESTROYING"
)

// ChildState is a CHILD SA state as charon names it.
type ChildState string

// CHILD SA states (strongSwan's child_sa_state_names).
const (
	ChildCreated    ChildState = "CREATED"
	ChildRouted     ChildState = "ROUTED"
	ChildInstalling ChildState = "INSTALLING"
	ChildInstalled  ChildState = "INSTALLED"
	ChildUpdating   ChildState = "UPDATING"
	ChildRekeying   ChildState = "REKEYING"
	ChildRekeyed    ChildState = "REKEYED"
	ChildRetrying   ChildState = "RETRYING"
	ChildDeleting   ChildState = "DELETING"
	ChildDeleted    ChildState = "DELETED"
	ChildDestroying ChildState = "DESTROYING"
)

// IKESA is one IKE SA as list-sas and the ike-updown event describe it.
type IKESA struct {
	// Conn is the connection (peer config) name.
	Conn string
	// UniqueID is charon's unique id of the IKE SA.
	UniqueID uint32
	// Version is the IKE major version (1 or 2).
	Version int
	// State is the IKE SA state.
	State IKEState
	// LocalHost and LocalPort are the local IKE endpoint.
	LocalHost netip.Addr
	LocalPort uint16
	// LocalID is the local identity.
	LocalID string
	// RemoteHost and RemotePort are the remote IKE endpoint.
	RemoteHost netip.Addr
	RemotePort uint16
	// RemoteID is the remote identity.
	RemoteID string
	// Initiator is true when this end initiated the IKE SA.
	Initiator bool
	// InitiatorSPI and ResponderSPI are the IKE SPIs in network byte order.
	InitiatorSPI, ResponderSPI uint64
	// NATLocal and NATRemote report a NAT in front of either end.
	NATLocal, NATRemote bool
	// Established is the time since the IKE SA was established (zero
	// before).
	Established time.Duration
	// Children are its CHILD SAs ordered by UniqueID. Empty in an
	// ike-updown event.
	Children []ChildSA
}

// ChildSA is one CHILD SA of an IKE SA.
type ChildSA struct {
	// Name is the child config name.
	Name string
	// UniqueID is charon's unique id of the CHILD SA.
	UniqueID uint32
	// ReqID is the reqid shared by the SA's policies and states.
	ReqID uint32
	// State is the CHILD SA state.
	State ChildState
	// Mode is TUNNEL, TRANSPORT, BEET, PASS or DROP.
	Mode string
	// Protocol is ESP or AH.
	Protocol string
	// Encap is true when ESP is carried in UDP.
	Encap bool
	// SPIIn and SPIOut are the inbound and outbound SPIs.
	SPIIn, SPIOut uint32
	// LocalTS and RemoteTS are the negotiated traffic selectors. Protocol
	// and port restrictions ("[udp/4501]") are dropped; address ranges
	// become the prefixes that cover them exactly.
	LocalTS, RemoteTS []netip.Prefix
	// LocalTSText and RemoteTSText are the traffic selectors exactly as
	// charon prints them, restrictions included ("10.98.0.1/32[udp/4501]"),
	// for finding the XFRM policies charon installed for them.
	LocalTSText, RemoteTSText []string
	// EncrAlg and IntegAlg are the negotiated algorithms as charon names
	// them ("AES_CBC", "AES_GCM_16", "NULL", "HMAC_SHA2_256_128"); EncrAlg
	// is empty for AH.
	EncrAlg, IntegAlg string
	// IfIDIn and IfIDOut are the XFRM interface IDs of a route-based
	// CHILD_SA, 0 otherwise.
	IfIDIn, IfIDOut uint32
	// MarkIn and MarkOut are the XFRM marks of the CHILD_SA's policies
	// and SAs, 0 without.
	MarkIn, MarkOut uint32
}

// Snapshot is charon's set of SAs at one moment.
type Snapshot struct {
	// Connected is false while the watcher has no VICI session; IKESAs is
	// then empty.
	Connected bool
	// IKESAs are ordered by UniqueID.
	IKESAs []IKESA
}

// HostAddr returns the single address of a /32 or /128 prefix.
func HostAddr(p netip.Prefix) (netip.Addr, bool) {
	if !p.IsValid() || p.Bits() != p.Addr().BitLen() {
		return netip.Addr{}, false
	}
	return p.Addr(), true
}

// RemoteHost returns the remote traffic selector when it is exactly one
// host address (the remote control address of a control child).
func (c ChildSA) RemoteHost() (netip.Addr, bool) {
	if len(c.RemoteTS) != 1 {
		return netip.Addr{}, false
	}
	return HostAddr(c.RemoteTS[0])
}

// LocalHost returns the local traffic selector when it is exactly one host
// address (the local control address of a control child).
func (c ChildSA) LocalHost() (netip.Addr, bool) {
	if len(c.LocalTS) != 1 {
		return netip.Addr{}, false
	}
	return HostAddr(c.LocalTS[0])
}

// Child returns the CHILD SA named name, preferring an INSTALLED one (during
// a rekey the old and the new SA share the name).
func (s IKESA) Child(name string) (ChildSA, bool) {
	var found ChildSA
	ok := false
	for _, c := range s.Children {
		if c.Name != name {
			continue
		}
		if c.State == ChildInstalled {
			return c, true
		}
		if !ok {
			found, ok = c, true
		}
	}
	return found, ok
}

// IKE returns the IKE SA with the given unique id.
func (s Snapshot) IKE(uniqueID uint32) (IKESA, bool) {
	i, ok := slices.BinarySearchFunc(s.IKESAs, uniqueID, func(sa IKESA, id uint32) int {
		switch {
		case sa.UniqueID < id:
			return -1
		case sa.UniqueID > id:
			return 1
		}
		return 0
	})
	if !ok {
		return IKESA{}, false
	}
	return s.IKESAs[i], true
}

// Established returns the ESTABLISHED IKE SAs of connection conn.
func (s Snapshot) Established(conn string) []IKESA {
	var out []IKESA
	for _, sa := range s.IKESAs {
		if sa.Conn == conn && sa.State == IKEEstablished {
			out = append(out, sa)
		}
	}
	return out
}

// Control is an ESTABLISHED IKE SA together with its INSTALLED control
// child.
type Control struct {
	IKE   IKESA
	Child ChildSA
	// Local and Remote are the control addresses: the child's single-host
	// local and remote traffic selectors.
	Local, Remote netip.Addr
}

// Controls returns, for connection conn, every ESTABLISHED IKE SA whose
// CHILD SA named child is INSTALLED with single-host traffic selectors on
// both sides, ordered by IKE unique id.
func (s Snapshot) Controls(conn, child string) []Control {
	var out []Control
	for _, sa := range s.Established(conn) {
		if c, ok := sa.Control(child); ok {
			out = append(out, c)
		}
	}
	return out
}

// Control returns the IKE SA's control child named child, if the IKE SA is
// ESTABLISHED and the child INSTALLED with single-host traffic selectors
// on both sides (see Controls).
func (s IKESA) Control(child string) (Control, bool) {
	if s.State != IKEEstablished {
		return Control{}, false
	}
	c, ok := s.Child(child)
	if !ok || c.State != ChildInstalled {
		return Control{}, false
	}
	local, lok := c.LocalHost()
	remote, rok := c.RemoteHost()
	if !lok || !rok {
		return Control{}, false
	}
	return Control{IKE: s, Child: c, Local: local, Remote: remote}, true
}

// FindControl returns the ESTABLISHED IKE SA of connection conn whose CHILD
// SA named child is INSTALLED and whose remote control address (the child's
// single-host remote traffic selector) is remote. If several match (a
// member reconnected and its old IKE SA is not gone yet) the newest, with
// the highest unique id, wins.
func (s Snapshot) FindControl(conn, child string, remote netip.Addr) (Control, bool) {
	remote = remote.Unmap()
	var best Control
	ok := false
	for _, c := range s.Controls(conn, child) {
		if c.Remote == remote {
			best, ok = c, true
		}
	}
	return best, ok
}

// MatchSPIs reports whether the IKE SA has these initiator and responder
// SPIs.
func (s IKESA) MatchSPIs(initiator, responder uint64) bool {
	return s.InitiatorSPI == initiator && s.ResponderSPI == responder
}
