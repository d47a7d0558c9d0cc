// Package xfrm is mpsa's data plane: the interface through which the SA
// lifecycle installs, switches and removes the shared ESP SA, and its
// backends, the Linux kernel (XFRM over netlink) and userspace ESP over a
// TUN device.
package xfrm

import (
	"context"
	"fmt"
	"net/netip"

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
	// installed, kill switch included, and closes the backend. mpsad
	// calls it when the group is removed from the configuration.
	Flush(ctx context.Context) error
}
