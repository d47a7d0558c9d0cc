package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
)

// probeSPI is the SPI of the short-lived state that finds out which
// algorithm a kernel lacks. SPIs 1-255 are reserved (RFC 4303) and never
// chosen by an MPSA controller, so it cannot collide with a shared SA.
const probeSPI = 0xff

// policyKey identifies a policy the way the kernel does when it inserts
// one: direction and selector. The kernel also tells policies apart by
// if_id, but every policy of a backend has the same one (Config.IfID).
type policyKey struct {
	dir      netlink.Dir
	src, dst netip.Prefix
}

func (k policyKey) String() string {
	return fmt.Sprintf("%s %s -> %s", k.dir, k.src, k.dst)
}

// outKey identifies one outbound state: the SPI and the peer underlay.
type outKey struct {
	spi  uint32
	peer netip.Addr
}

// algorithms maps a suite to the kernel's algorithm descriptions, from the
// mpsa registry. The returned algos share the key slices of sa.
func algorithms(sa xfrm.SA) (crypt, auth, aead *netlink.XfrmStateAlgo, err error) {
	if err := sa.Suite.Validate(); err != nil {
		return nil, nil, nil, err
	}
	e, _ := mpsa.LookupEncr(sa.Suite.Encr)
	if got, want := len(sa.EncrKey), sa.Suite.EncrKeyBytes(); got != want {
		return nil, nil, nil, fmt.Errorf("encryption key is %d bytes, %s needs %d", got, sa.Suite, want)
	}
	if got, want := len(sa.IntegKey), sa.Suite.IntegKeyBytes(); got != want {
		return nil, nil, nil, fmt.Errorf("integrity key is %d bytes, %s needs %d", got, sa.Suite, want)
	}
	if e.AEAD {
		return nil, nil, &netlink.XfrmStateAlgo{Name: e.XFRM, Key: sa.EncrKey, ICVLen: e.ICVBits}, nil
	}
	i, _ := mpsa.LookupInteg(sa.Suite.Integ)
	return &netlink.XfrmStateAlgo{Name: e.XFRM, Key: sa.EncrKey},
		&netlink.XfrmStateAlgo{Name: i.XFRM, Key: sa.IntegKey, TruncateLen: i.ICVBytes * 8},
		nil, nil
}

// algs are the kernel's descriptions of an SA's algorithms, as algorithms
// returns them: crypt and auth, or aead alone.
type algs struct {
	crypt, auth, aead *netlink.XfrmStateAlgo
}

// installed is an SA the backend holds: its own copy of the keys, and the
// descriptions of its algorithms, computed once and sharing those keys.
type installed struct {
	sa   xfrm.SA
	algs algs
}

// newInstalled copies the keys of sa and computes its algorithms from the
// copy; the error is that of algorithms.
func newInstalled(sa xfrm.SA) (installed, error) {
	own := xfrm.SA{SPI: sa.SPI, Suite: sa.Suite, EncrKey: slices.Clone(sa.EncrKey), IntegKey: slices.Clone(sa.IntegKey)}
	crypt, auth, aead, err := algorithms(own)
	if err != nil {
		own.Zero()
		return installed{}, err
	}
	return installed{sa: own, algs: algs{crypt: crypt, auth: auth, aead: aead}}, nil
}

// plan is what the backend wants in the kernel for a given configuration:
// its policies and its outbound states.
type plan struct {
	policies map[policyKey]netlink.XfrmPolicy
	out      map[outKey]netip.Addr // outbound state -> local source
}

func newPlan() plan {
	return plan{policies: map[policyKey]netlink.XfrmPolicy{}, out: map[outKey]netip.Addr{}}
}

// planTable computes the policies and outbound states for the masked
// local prefixes, a peer table (Backend.peerTable) and the outbound SPI
// (0: none, out policies block): planPeer for each peer prefix.
func (b *Backend) planTable(local []netip.Prefix, t map[netip.Prefix]netip.Addr, outSPI uint32) plan {
	p := newPlan()
	for r, u := range t {
		b.planPeer(&p, local, r, u, outSPI)
	}
	return p
}

// planPeer adds to p the objects of the peer prefix r (masked) via the
// peer underlay u, which has a local underlay address of its family
// (peerTable); a zero u blocks r: its policies are those of a peer
// without an outbound SA.
//
// For every local prefix of r's family there is an out policy (local ->
// r, template: tunnel from our underlay to u with the outbound SPI) and an
// in and a fwd policy (r -> local, template: any tunnel with our reqid,
// so that every installed inbound SPI is accepted during a rollover). With
// no local prefixes, the local side is any address of r's family. With
// an outbound SPI, the outbound state to u.
//
// With local prefixes, r also gets an out policy from any source of its
// family that blocks, at priority Priority+1 (less preferred than the
// policies above), whether or not a local prefix of its family pairs
// with it: traffic the member originates from an address outside its
// local prefixes (its underlay address, say) to a peer's LAN is dropped
// instead of leaving in plaintext, also to a peer prefix of a family the
// member has no LAN of.
func (b *Backend) planPeer(p *plan, local []netip.Prefix, r netip.Prefix, u netip.Addr, outSPI uint32) {
	ifid := b.cfg.IfID
	src, ok := b.underlayFor(u)
	if !ok || !u.IsValid() {
		// Blocked: the inbound templates only need the family.
		outSPI, src = 0, zeroOf(r.Addr())
	}
	if outSPI != 0 {
		p.out[outKey{outSPI, u}] = src
	}
	locals := local
	if len(locals) == 0 {
		locals = []netip.Prefix{anyPrefix(r.Addr())}
	}
	for _, l := range locals {
		if l.Addr().Is4() != r.Addr().Is4() {
			continue
		}
		out := netlink.XfrmPolicy{
			Src: ipNet(l), Dst: ipNet(r), Dir: netlink.XFRM_DIR_OUT,
			Priority: int(b.cfg.Priority), Ifid: int(ifid),
		}
		if outSPI == 0 {
			out.Action = netlink.XFRM_POLICY_BLOCK
		} else {
			out.Tmpls = []netlink.XfrmPolicyTmpl{{
				Src: net.IP(src.AsSlice()), Dst: net.IP(u.AsSlice()),
				Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
				Spi: int(outSPI), Reqid: int(b.cfg.ReqID),
			}}
		}
		p.policies[policyKey{netlink.XFRM_DIR_OUT, l, r}] = out
		for _, dir := range []netlink.Dir{netlink.XFRM_DIR_IN, netlink.XFRM_DIR_FWD} {
			p.policies[policyKey{dir, r, l}] = netlink.XfrmPolicy{
				Src: ipNet(r), Dst: ipNet(l), Dir: dir,
				Priority: int(b.cfg.Priority), Ifid: int(ifid),
				Tmpls: []netlink.XfrmPolicyTmpl{{
					// Source and destination unspecified: the kernel
					// compares only a template's source with the
					// state, and the inbound states have none.
					Src: net.IP(zeroOf(src).AsSlice()), Dst: net.IP(zeroOf(src).AsSlice()),
					Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
					Reqid: int(b.cfg.ReqID),
				}},
			}
		}
	}
	fb := policyKey{netlink.XFRM_DIR_OUT, anyPrefix(r.Addr()), r}
	if _, exists := p.policies[fb]; !exists && len(local) > 0 {
		p.policies[fb] = netlink.XfrmPolicy{
			Src: ipNet(fb.src), Dst: ipNet(r), Dir: netlink.XFRM_DIR_OUT,
			Priority: int(b.cfg.Priority) + 1, Ifid: int(ifid), Action: netlink.XFRM_POLICY_BLOCK,
		}
	}
}

// underlayFor returns the local underlay address of peer's family.
func (b *Backend) underlayFor(peer netip.Addr) (netip.Addr, bool) {
	for _, u := range b.cfg.Underlay {
		if u.Is4() == peer.Is4() {
			return u, true
		}
	}
	return netip.Addr{}, false
}

func sameTmpls(a, b netlink.XfrmPolicy) bool {
	if a.Action != b.Action || len(a.Tmpls) != len(b.Tmpls) {
		return false
	}
	for i := range a.Tmpls {
		x, y := a.Tmpls[i], b.Tmpls[i]
		if !x.Src.Equal(y.Src) || !x.Dst.Equal(y.Dst) || x.Spi != y.Spi || x.Reqid != y.Reqid || x.Proto != y.Proto || x.Mode != y.Mode {
			return false
		}
	}
	return true
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// fromIPNet turns a policy selector's address and mask into a prefix.
func fromIPNet(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	if n.IP.To4() != nil && len(n.Mask) == net.IPv4len {
		a = a.Unmap()
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked()
}

func anyPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(zeroOf(a), 0)
}

func zeroOf(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// sortedKeys returns the keys of m in a stable order (sortKeys).
func sortedKeys(m map[policyKey]netlink.XfrmPolicy) []policyKey {
	keys := make([]policyKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortKeys(keys)
	return keys
}

// sortKeys orders keys so that changes are applied in a predictable
// sequence: by their text (String), which puts the fwd policies first,
// then in, then out, and within a direction orders by source, then
// destination prefix as text.
func sortKeys(keys []policyKey) {
	type keyText struct {
		k policyKey
		s string
	}
	kts := make([]keyText, len(keys))
	for i, k := range keys {
		kts[i] = keyText{k, k.String()}
	}
	slices.SortFunc(kts, func(a, b keyText) int { return strings.Compare(a.s, b.s) })
	for i, kt := range kts {
		keys[i] = kt.k
	}
}
