package kernel

import (
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/mpsa/mpsa/xfrm"
)

// planFor is planTable for a peer list, as SetPeers takes it, and local
// prefixes not yet masked.
func (b *Backend) planFor(local []netip.Prefix, peers []xfrm.Peer, outSPI uint32) (plan, error) {
	t, _, err := b.peerTable(peers)
	if err != nil {
		return plan{}, err
	}
	return b.planTable(maskAll(local), t, outSPI), nil
}

// ours reports whether a policy in the kernel is one the backend (or an
// earlier run of its group) installed, with the configured if_id.
func (b *Backend) ours(p netlink.XfrmPolicy) bool {
	_, ours := b.marks().classify(p)
	return ours && p.Ifid == int(b.cfg.IfID)
}
