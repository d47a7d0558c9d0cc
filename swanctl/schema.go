package swanctl

import (
	"encoding/json"
	"log/slog"
	"net/netip"

	"github.com/mpsa/mpsa/bgp/policy"
	"github.com/mpsa/mpsa/internal/paths"
	"github.com/mpsa/mpsa/mpsa"
)

// Role is what an mpsad instance is in its groups.
type Role string

// The roles of draft-yamaya-ipsecme-mpsa.
const (
	// RoleController generates each group's shared SA and pushes it to
	// the members.
	RoleController Role = "controller"
	// RoleMember receives the shared SA, installs it in its data plane
	// and talks directly to the other members.
	RoleMember Role = "member"
)

// Backend names a data-plane implementation.
type Backend string

// The data-plane backends.
const (
	// BackendXFRM installs the shared SA in the Linux kernel.
	BackendXFRM Backend = "xfrm"
	// BackendUserspace runs ESP in mpsad over a TUN device.
	BackendUserspace Backend = "userspace"
)

// DefaultVICI is charon's VICI socket URI. It depends on the
// distribution's strongSwan build and is set at link time in
// internal/paths (Debian's by default; the .rpm's binaries have Fedora's).
func DefaultVICI() string { return paths.VICI }

// DefaultConfigFile is the swanctl.conf mpsad reads without --config; like
// DefaultVICI it is the build's (internal/paths).
func DefaultConfigFile() string { return paths.ConfigFile }

// Defaults of the settings; docs/configuration.md documents each.
const (
	DefaultControlPort   = 4501
	DefaultStatusSocket  = "/run/mpsad/mpsad.sock"
	DefaultLogLevel      = "info"
	DefaultESPProposal   = "aes256-sha256"
	DefaultLifetime      = Duration(8 * 3600e9)
	DefaultRekeyTime     = Duration(7 * 3600e9)
	DefaultRekeyJitter   = Duration(0)
	DefaultRollover1     = Duration(30e9)
	DefaultRollover2     = Duration(60e9)
	DefaultRekeyOnJoin   = false
	DefaultRekeyOnLeave  = true
	DefaultNonceLength   = 32
	DefaultDataplane     = BackendXFRM
	DefaultMTU           = 1400
	DefaultEncap         = false
	DefaultEncapPort     = 4502
	DefaultBGPPort       = 179
	DefaultPushRate      = 1000
	DefaultPushBurst     = 100
	maxPushRate          = 1000000
	defaultTUNPrefix     = "mpsa-"
	maxInterfaceNameLen  = 15 // IFNAMSIZ - 1
	minNonceLength       = 16
	maxNonceLength       = 256
	minMTU, minMTUIPv6   = 576, 1280
	maxMTU               = 9000
	defaultLogLevelLevel = slog.LevelInfo
)

// Values of a controller's bgp.next_hop.
const (
	// NextHopIKE: a member's routes must have its IKE address as next
	// hop (the default).
	NextHopIKE = "ike"
	// NextHopAny: the next hop is not checked.
	NextHopAny = "any"
)

// Defaults of the BGP timers; package bgp has the same, and docs/bgp.md
// explains them.
const (
	DefaultBGPHoldTime     = Duration(90e9)
	DefaultBGPRestartTime  = Duration(120e9)
	DefaultBGPStaleTime    = Duration(3600e9)
	DefaultBGPDeferralTime = Duration(30e9)
)

// Config is the effective `mpsa { }` configuration: every setting decoded,
// validated and with its default filled in.
type Config struct {
	// Role is controller or member; it has no default.
	Role Role `json:"role"`
	// VICI is the URI of charon's VICI socket, unix:///path or
	// tcp://host:port.
	VICI string `json:"vici"`
	// ControlPort is the UDP port of the control exchange inside the
	// control CHILD_SA, the same on controller and members.
	ControlPort uint16 `json:"control_port"`
	// ControlInterface, if set, is the only interface control datagrams
	// are accepted from: charon's TUN device (ipsec0) when charon runs
	// its userspace kernel-libipsec. Empty accepts any interface, which
	// is safe where charon installs kernel XFRM policies for the control
	// child: the kernel then drops plaintext that claims to come from a
	// control address.
	ControlInterface string `json:"control_interface"`
	// StatusSocket is the path of the local socket mpsactl talks to.
	StatusSocket string `json:"status_socket"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`
	// MetricsListen is the host:port of the Prometheus endpoint; empty
	// turns it off.
	MetricsListen string `json:"metrics_listen"`
	// PushRate is how many control requests (MPSA_PUTs and their
	// retransmissions) a controller sends per second at most, over all
	// its groups, and PushBurst how many it may send at once: a rekey of
	// many members is paced instead of bursting into charon.
	PushRate  int `json:"push_rate"`
	PushBurst int `json:"push_burst"`
	// Groups are the MPSA groups in the order they were defined.
	Groups []*Group `json:"groups"`
	// Warnings are settings that are valid but have no effect, such as
	// the timers in a member's group (the controller sends them), and
	// insecure_counter_mode_lab_only = yes, which is meant for labs only.
	Warnings Errors `json:"warnings,omitempty"`
	// Pos is where the mpsa section starts.
	Pos Pos `json:"-"`
}

// Group is one MPSA group: one shared SA among a controller and its
// members. Settings that the role does not use are not read from the file
// (they draw a warning): a member's group holds the defaults of the
// proposal and the timers, and a controller's group the default dataplane
// and mtu, and no other data-plane setting, address or route.
type Group struct {
	// Name is the group's section name under groups { }.
	Name string `json:"name"`
	// Connection is the swanctl connection between member and
	// controller.
	Connection string `json:"connection"`
	// ControlChild is the CHILD_SA of Connection that carries the
	// control exchange.
	ControlChild string `json:"control_child"`
	// ESPProposal is the proposal of the shared SA in normalized
	// strongSwan keywords ("aes256-sha256-prfsha256").
	ESPProposal string `json:"esp_proposal"`
	// Suite is ESPProposal decoded.
	Suite mpsa.Suite `json:"-"`
	// AllowCounterMode is insecure_counter_mode_lab_only (formerly
	// allow_counter_mode, now refused): it permits counter-mode ciphers
	// (GCM, CTR, ChaCha20-Poly1305) despite the IV reuse risk of one key
	// shared by many senders (RFC 6054), which no data plane removes. On
	// a member it permits accepting them. For labs only; setting it draws
	// a warning.
	AllowCounterMode bool `json:"insecure_counter_mode_lab_only"`
	// Lifetime is how long a shared SA lives; members delete it then.
	Lifetime Duration `json:"lifetime"`
	// RekeyTime is when the controller replaces the SA with a new one.
	RekeyTime Duration `json:"rekey_time"`
	// RekeyJitter is the most the controller rekeys before RekeyTime,
	// chosen at random for each rekey.
	RekeyJitter Duration `json:"rekey_jitter"`
	// Rollover1 is how long after a new SA arrives a member keeps
	// sending with the old one.
	Rollover1 Duration `json:"rollover1"`
	// Rollover2 is how long after a new SA arrives a member keeps
	// receiving with the old one.
	Rollover2 Duration `json:"rollover2"`
	// RekeyOnJoin makes the controller rekey when a member joins.
	RekeyOnJoin bool `json:"rekey_on_join"`
	// RekeyOnLeave makes the controller rekey when a member leaves.
	RekeyOnLeave bool `json:"rekey_on_leave"`
	// NonceLength is the length in octets of the Nonce in MPSA_PUT.
	NonceLength int `json:"nonce_length"`
	// Dataplane is the member's data-plane backend.
	Dataplane Backend `json:"dataplane"`
	// TUN is the TUN device of the userspace data plane; empty with
	// another data plane.
	TUN string `json:"tun"`
	// MTU is the MTU of the TUN device or of the XFRM interface.
	MTU int `json:"mtu"`
	// IfID is the XFRM interface ID of route-based mode; 0 means
	// policy-based mode.
	IfID uint32 `json:"if_id"`
	// Encap carries the userspace data plane's ESP in UDP (RFC 3948)
	// instead of as IP protocol 50, so that the kernel segments and
	// coalesces it (UDP GSO/GRO). Every member of the group must agree.
	Encap bool `json:"encap"`
	// EncapPort is the UDP port of ESP in UDP with Encap, 0 without.
	EncapPort uint16 `json:"encap_port"`
	// XFRMInterface is the XFRM interface that mpsad creates with IfID in
	// route-based mode (empty in policy-based mode); the operator routes
	// the peers' prefixes into it.
	XFRMInterface string `json:"xfrm_interface"`
	// Underlay is the member's own underlay address for the shared SA;
	// the zero Addr means the local address of its IKE SA with the
	// controller.
	Underlay netip.Addr `json:"underlay"`
	// LocalTS are the prefixes behind this member (its LANs).
	LocalTS []netip.Prefix `json:"local_ts"`
	// Routes are the static peers: remote prefixes and the member that
	// serves them.
	Routes []Route `json:"routes"`
	// ControlChildConf is what the configuration's connections section
	// says of the control child, nil when the files mpsad read do not
	// define it (swanctl may have loaded it from elsewhere).
	ControlChildConf *ChildConf `json:"-"`
	// BGP is peer discovery by BGP, nil when the section is absent.
	BGP *BGP `json:"bgp,omitempty"`
	// Pos is where the group's section starts.
	Pos Pos `json:"-"`
}

// ChildConf is the part of a CHILD_SA's swanctl definition
// (connections.CONN.children.CHILD) that mpsad checks charon against.
type ChildConf struct {
	// ESPProposals is esp_proposals split at commas; nil means charon's
	// default proposal.
	ESPProposals []string
	// AHProposals is ah_proposals split at commas; set, the child uses
	// AH, which does not encrypt.
	AHProposals []string
	// Pos is where the child's section starts.
	Pos Pos
}

// Route is one static peer: the prefixes behind another member and that
// member's underlay address.
type Route struct {
	// Name is the route's section name.
	Name string `json:"name"`
	// Prefixes are the remote LAN prefixes.
	Prefixes []netip.Prefix `json:"prefixes"`
	// Peer is the other member's underlay address.
	Peer netip.Addr `json:"peer"`
	// Pos is where the route's section starts.
	Pos Pos `json:"-"`
}

// BGP is the group's peer discovery by BGP (draft section 4.1): on a
// member, one iBGP session with the controller over the control child; on
// a controller, a route reflector for the members, whose import policy is
// the access control. Settings that the role does not use hold their
// defaults.
type BGP struct {
	// Enabled turns BGP peer discovery on.
	Enabled bool `json:"enabled"`
	// ASN is the autonomous system number of the group's iBGP.
	ASN uint32 `json:"asn"`
	// RouterID is the BGP router ID; the zero Addr means chosen by mpsad
	// (the IPv4 control address).
	RouterID netip.Addr `json:"router_id"`
	// Port is the BGP TCP port inside the control CHILD_SA: the one the
	// controller listens on and the members connect to.
	Port uint16 `json:"port"`
	// HoldTime is the BGP hold time proposed.
	HoldTime Duration `json:"hold_time"`
	// RestartTime is the graceful restart time advertised (RFC 4724).
	RestartTime Duration `json:"restart_time"`
	// StaleTime (member) is how long learned routes are kept while the
	// session with the controller is down.
	StaleTime Duration `json:"stale_time"`
	// DeferralTime (controller) bounds how long a reflector that has just
	// started waits for its members' routes before it reflects.
	DeferralTime Duration `json:"deferral_time"`
	// NextHop (controller) is what a member's routes may lead to:
	// NextHopIKE, its IKE address, or NextHopAny.
	NextHop string `json:"next_hop"`
	// Policy (controller) is what each member may advertise, by IKE
	// identity.
	Policy []BGPPolicy `json:"policy"`
	// Pos is where the bgp section starts.
	Pos Pos `json:"-"`
}

// BGPPolicy is one rule of a controller's prefix policy: members whose IKE
// identity matches Identity may advertise the prefixes in Prefixes.
type BGPPolicy struct {
	// Name is the rule's section name.
	Name string `json:"name"`
	// Identity is a pattern of IKE identities: * matches any run of
	// characters; case is ignored.
	Identity string `json:"identity"`
	// Prefixes are prefix ranges ("10.0.0.0/8 le 24").
	Prefixes []policy.Range `json:"prefixes"`
	// Pos is where the rule's section starts.
	Pos Pos `json:"-"`
}

// Rules returns the policy as the reflector takes it.
func (b *BGP) Rules() []policy.Rule {
	out := make([]policy.Rule, len(b.Policy))
	for i, p := range b.Policy {
		out[i] = policy.Rule{Name: p.Name, Identity: p.Identity, Prefixes: p.Prefixes}
	}
	return out
}

// MarshalJSON encodes the section with every key present: an empty
// policy is [].
func (b *BGP) MarshalJSON() ([]byte, error) {
	type plain BGP // without the method
	p := plain(*b)
	if p.Policy == nil {
		p.Policy = []BGPPolicy{}
	}
	return json.Marshal(p)
}

// Group returns the group called name, or nil.
func (c *Config) Group(name string) *Group {
	for _, g := range c.Groups {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// SlogLevel returns LogLevel as a log/slog level.
func (c *Config) SlogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return defaultLogLevelLevel
	}
	return l
}

// PeersLearned reports whether a member group has a way to learn its
// peers: static routes, or BGP.
func (g *Group) PeersLearned() bool {
	return len(g.Routes) > 0 || g.BGPEnabled()
}

// BGPEnabled reports whether the group has BGP peer discovery on.
func (g *Group) BGPEnabled() bool {
	return g.BGP != nil && g.BGP.Enabled
}

// MarshalJSON encodes the group with every setting, as --check --json
// shows it: a setting that the role or the data plane does not use shows
// its default (tun and xfrm_interface mpsa-NAME, encap_port 4502), where
// the Group holds the zero value that means "not in use".
func (g *Group) MarshalJSON() ([]byte, error) {
	type plain Group // without the method
	p := plain(*g)
	if p.TUN == "" {
		p.TUN = defaultTUNPrefix + g.Name
	}
	if p.XFRMInterface == "" {
		p.XFRMInterface = defaultTUNPrefix + g.Name
	}
	if p.EncapPort == 0 {
		p.EncapPort = DefaultEncapPort
	}
	return json.Marshal(p)
}
