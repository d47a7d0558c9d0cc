package userspace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/xfrm"
)

// dest is where ESP for one peer prefix goes: the peer's underlay address
// (and, for ESP in UDP, the port) as a ready-made socket address.
type dest struct {
	addr    netip.Addr
	sa      [unix.SizeofSockaddrInet6]byte // RawSockaddrInet4 or RawSockaddrInet6
	saLen   uint32
	family6 bool
}

// newDest makes the socket address of a, with port (0 for raw ESP).
func newDest(a netip.Addr, port uint16) dest {
	d := dest{addr: a}
	// The port follows the 16-bit family in both layouts, in network
	// byte order whatever the host's.
	binary.BigEndian.PutUint16(d.sa[2:4], port)
	if a.Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&d.sa[0]))
		sa.Family = unix.AF_INET
		sa.Addr = a.As4()
		d.saLen = unix.SizeofSockaddrInet4
		return d
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&d.sa[0]))
	sa.Family = unix.AF_INET6
	sa.Addr = a.As16()
	d.saLen = unix.SizeofSockaddrInet6
	d.family6 = true
	return d
}

// lpm is a longest-prefix-match table for one address family: one map per
// prefix length, tried from the longest length down. Lookups do not
// allocate.
type lpm struct {
	lengths []int // descending
	byLen   map[int]map[netip.Prefix]int
}

func (l *lpm) add(p netip.Prefix, v int) {
	if l.byLen == nil {
		l.byLen = map[int]map[netip.Prefix]int{}
	}
	m, ok := l.byLen[p.Bits()]
	if !ok {
		m = map[netip.Prefix]int{}
		l.byLen[p.Bits()] = m
		l.lengths = append(l.lengths, p.Bits())
		slices.SortFunc(l.lengths, func(a, b int) int { return b - a })
	}
	m[p] = v
}

func (l *lpm) lookup(a netip.Addr) (int, bool) {
	for _, bits := range l.lengths {
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if v, ok := l.byLen[bits][p]; ok {
			return v, true
		}
	}
	return 0, false
}

// peerTable is an immutable snapshot of SetPeers, read by the data path
// through an atomic pointer.
type peerTable struct {
	local  []netip.Prefix
	peers  []xfrm.Peer
	dests  []dest
	v4, v6 lpm
	// senders has every peer's underlay address: ESP from any other
	// address is dropped before its ICV is checked.
	senders map[netip.Addr]*sender
	// nslots is one more than the highest slot of a sender.
	nslots int
}

// sender is what the inbound path knows of a peer's underlay address:
// the prefixes a packet from it may come from (origin binding), and its
// slot, the index of its replay window in every SA (saEntry.windows).
type sender struct {
	slot   int
	v4, v6 lpm
}

// owns reports whether the inner source address a lies in one of the
// sender's prefixes.
func (s *sender) owns(a netip.Addr) bool {
	l := &s.v6
	if a.Is4() {
		l = &s.v4
	}
	_, ok := l.lookup(a)
	return ok
}

// newPeerTable builds the table; port is the ESP-in-UDP port of the peers,
// 0 for raw ESP. slots gives each underlay address its slot (slotAlloc),
// so that a sender keeps its slot (and its replay windows) across tables.
// slots may be nil.
func newPeerTable(local []netip.Prefix, peers []xfrm.Peer, port uint16, slots *slotAlloc) (*peerTable, error) {
	if slots == nil {
		slots = newSlotAlloc()
	}
	t := &peerTable{senders: map[netip.Addr]*sender{}}
	for _, p := range local {
		if !p.IsValid() {
			return nil, fmt.Errorf("local prefix %v is not valid", p)
		}
		t.local = append(t.local, p.Masked())
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range peers {
		if !p.Prefix.IsValid() || !p.Underlay.IsValid() {
			return nil, fmt.Errorf("peer %v: prefix and underlay address must be valid", p)
		}
		pfx := p.Prefix.Masked()
		if seen[pfx] {
			return nil, fmt.Errorf("peer %v: prefix %s appears twice", p, pfx)
		}
		seen[pfx] = true
		under := p.Underlay.Unmap()
		t.peers = append(t.peers, xfrm.Peer{Prefix: pfx, Underlay: under})
		t.dests = append(t.dests, newDest(under, port))
		s := t.senders[under]
		if s == nil {
			slot := slots.get(under)
			s = &sender{slot: slot}
			t.senders[under] = s
			t.nslots = max(t.nslots, slot+1)
		}
		if pfx.Addr().Is4() {
			t.v4.add(pfx, len(t.dests)-1)
			s.v4.add(pfx, 0)
		} else {
			t.v6.add(pfx, len(t.dests)-1)
			s.v6.add(pfx, 0)
		}
	}
	return t, nil
}

// sender returns the peer whose underlay address is a, nil if there is
// none. It does not allocate.
func (t *peerTable) sender(a netip.Addr) *sender {
	if t == nil {
		return nil
	}
	return t.senders[a]
}

// slotCount is one more than the highest slot of the table's senders, 0
// for a nil table.
func (t *peerTable) slotCount() int {
	if t == nil {
		return 0
	}
	return t.nslots
}

// route returns the destination of a packet to a.
func (t *peerTable) route(a netip.Addr) (*dest, bool) {
	l := &t.v6
	if a.Is4() {
		l = &t.v4
	}
	i, ok := l.lookup(a)
	if !ok {
		return nil, false
	}
	return &t.dests[i], true
}

// toLocal is the inbound destination check: when local prefixes are
// configured, a decrypted packet must go to one of them. (Its source is
// checked against the prefixes of the peer that sent it: sender.owns.)
func (t *peerTable) toLocal(dst netip.Addr) bool {
	if len(t.local) == 0 {
		return true
	}
	for _, p := range t.local {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

// addrs returns the source and destination of an IPv4 or IPv6 packet.
func addrs(pkt []byte) (src, dst netip.Addr, ok bool) {
	if len(pkt) < 1 {
		return src, dst, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < 40 {
			return src, dst, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return src, dst, false
}

// ipv4HeaderLen returns the header length of the IPv4 packet in pkt, as a
// raw IPv4 socket delivers it.
func ipv4HeaderLen(pkt []byte) (int, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, false
	}
	n := int(pkt[0]&0x0f) * 4
	if n < 20 || n > len(pkt) || int(binary.BigEndian.Uint16(pkt[2:4])) < n {
		return 0, false
	}
	return n, true
}
