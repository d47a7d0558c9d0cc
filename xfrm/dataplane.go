// Package xfrm is mpsa's data plane: the interface through which the SA
// lifecycle installs, switches and removes the shared ESP SA, and its
// backends, the Linux kernel (XFRM over netlink) and userspace ESP over a
// TUN device.
package xfrm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/mpsa/mpsa/mpsa"
)

// SA is one keyed shared SA as the data plane needs it. The same SA serves
// inbound and outbound traffic with every peer.
type SA struct {
	// SPI is the shared SPI, the same at every member.
	SPI uint32
	// Suite names the algorithms.
	Suite mpsa.Suite
	// EncrKey is the encryption key, with the salt at its tail for
	// GCM, CTR and ChaCha20-Poly1305.
	EncrKey []byte
	// IntegKey is the integrity key; empty for AEAD ciphers.
	IntegKey []byte
}

// Zero overwrites the key material of sa.
func (sa *SA) Zero() {
	clear(sa.EncrKey)
	clear(sa.IntegKey)
}

// Peer maps a remote prefix (the LAN behind another member) to that member's
// underlay address, where ESP for the prefix is sent.
type Peer struct {
	Prefix   netip.Prefix
	Underlay netip.Addr
}

// String writes the peer as "PREFIX via UNDERLAY".
func (p Peer) String() string { return fmt.Sprintf("%s via %s", p.Prefix, p.Underlay) }

// Counters are the traffic counters of one SPI.
type Counters struct {
	SPI        uint32
	InPackets  uint64
	InBytes    uint64
	OutPackets uint64
	OutBytes   uint64
	// InErrors counts inbound packets dropped for this SPI: failed
	// integrity checks, bad padding, truncation.
	InErrors uint64
	// OutErrors counts outbound packets that could not be sent.
	OutErrors uint64
}

// DataPlane is implemented by every backend. Methods are safe for
// concurrent use. A member drives it from the SA lifecycle: InstallInbound
// for each new SA, SetOutbound after rollover time 1, Remove after rollover
// time 2 or at lifetime expiry.
//
// Every backend keeps a kill switch for its group in the kernel while the
// group is configured, whether or not mpsad runs: objects that drop
// traffic between the local prefixes and the peer prefixes instead of
// letting it follow another route in plaintext (block policies for the
// kernel backend, blackhole routes for the userspace one). New adopts the
// group's kill switch left by an earlier run; Close keeps it; Flush
// removes it.
type DataPlane interface {
	// InstallInbound installs sa for receiving from every peer. It does
	// not change the outbound SA. Installing an SPI that is already
	// installed is an error.
	InstallInbound(ctx context.Context, sa SA) error
	// SetOutbound makes the installed SA with this SPI the one used for
	// sending to every peer.
	SetOutbound(ctx context.Context, spi uint32) error
	// Remove deletes the SA with this SPI in both directions. If it was
	// the outbound SA, nothing is sent until another SetOutbound.
	Remove(ctx context.Context, spi uint32) error
	// SetPeers replaces the local prefixes (the LANs behind this member)
	// and the peer table. Traffic from a local prefix to a peer's prefix
	// is protected with the outbound SA and sent to the peer's underlay;
	// the kill switch covers every peer prefix.
	SetPeers(ctx context.Context, local []netip.Prefix, peers []Peer) error
	// Counters reports per-SPI counters of every installed SA.
	Counters(ctx context.Context) ([]Counters, error)
	// Close stops the data plane and removes its SAs (their keys), but
	// leaves the group's kill switch in place, so that until a new
	// backend adopts it, or Flush removes it, nothing between the
	// group's prefixes is sent in plaintext. mpsad calls it when it
	// stops or restarts.
	Close() error
	// Flush removes everything the backend and earlier runs of its group
	// installed, kill switch included, and closes the backend; on a
	// backend already closed it removes them all the same, by the
	// group's marks. mpsad calls it when the group is removed from the
	// configuration.
	Flush(ctx context.Context) error
}

// Protector is implemented by the data planes that can be told which
// addresses no peer prefix may contain: the addresses of charon's control
// child to the controller, local and remote. The group's objects for such
// a prefix would take the control exchange (and BGP) away from the child:
// the kernel data plane's XFRM policies are preferred over charon's, so
// the control datagrams would go into the group's SA or be blocked, and
// the userspace data plane's route through its TUN, or its blackhole
// route, is more specific than the route to the controller. The member
// calls Protect with the control child's addresses whenever they change,
// before the peer table is set where it can.
type Protector interface {
	// Protect replaces the protected addresses and applies the last
	// peer table given to SetPeers again. From then on a peer whose
	// prefix contains a protected address is left out of the peer
	// table, kill switch included (its block policies or blackhole route
	// would drop the control exchange): the rest of the table is
	// applied, and SetPeers (or Protect) returns an error naming it.
	Protect(ctx context.Context, addrs []netip.Addr) error
}

// ProtectedTable is what a Protector keeps: the peer table last given to
// SetPeers and the protected addresses. The zero value has neither. It is
// not safe for concurrent use.
type ProtectedTable struct {
	local     []netip.Prefix
	peers     []Peer
	asked     bool
	protected []netip.Addr
}

// Set keeps copies of the local prefixes and the peers of a SetPeers.
func (t *ProtectedTable) Set(local []netip.Prefix, peers []Peer) {
	t.local, t.peers, t.asked = slices.Clone(local), slices.Clone(peers), true
}

// Protect replaces the protected addresses (IPv4-mapped ones unmapped)
// and reports whether the peer table must be applied again: they changed
// and a table was given.
func (t *ProtectedTable) Protect(addrs []netip.Addr) bool {
	norm := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			norm = append(norm, a.Unmap())
		}
	}
	slices.SortFunc(norm, netip.Addr.Compare)
	norm = slices.Compact(norm)
	if slices.Equal(norm, t.protected) {
		return false
	}
	t.protected = norm
	return t.asked
}

// Table returns the local prefixes and the peers of the last SetPeers,
// without the peers whose prefix contains a protected address, which the
// error names (Uncovered).
func (t *ProtectedTable) Table() ([]netip.Prefix, []Peer, error) {
	peers, err := Uncovered(t.peers, t.protected)
	return t.local, peers, err
}

// Uncovered returns peers without those whose prefix contains one of
// addrs (an IPv4-mapped IPv6 address counting as the IPv4 address), and
// an error naming each of those; peers itself if
// none does.
func Uncovered(peers []Peer, addrs []netip.Addr) ([]Peer, error) {
	if len(addrs) == 0 {
		return peers, nil
	}
	var (
		kept []Peer
		errs []error
	)
	for i, p := range peers {
		bad := false
		for _, a := range addrs {
			if p.Prefix.Contains(a.Unmap()) {
				errs = append(errs, fmt.Errorf("peer prefix %s (via %s) contains %s, an address of the control child to the controller: left out of the peer table, kill switch included, since the group's objects for it would take the control exchange away from the control child; the member or the routes that give this prefix must not cover the control addresses", p.Prefix, p.Underlay, a.Unmap()))
				bad = true
				break
			}
		}
		switch {
		case bad && kept == nil:
			kept = append(make([]Peer, 0, len(peers)), peers[:i]...)
		case !bad && kept != nil:
			kept = append(kept, p)
		}
	}
	if kept == nil {
		return peers, nil
	}
	return kept, errors.Join(errs...)
}
