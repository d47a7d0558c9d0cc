// Package groupid derives, from a group's name alone, the marks by which
// mpsa recognizes a group's objects in the kernel: the reqid of its XFRM
// states and policy templates, the priorities of its XFRM policies, and the
// metric of its kill-switch routes. mpsad and mpsactl flush both derive
// them, so the operator can remove a group's objects while no mpsad runs,
// knowing only the group's name.
//
// The marks come from a 15-bit slot, the FNV-1a hash of the name modulo
// 2^15: names can collide, so every configuration is checked (Collisions)
// and a colliding pair is refused with the names of both groups. The
// derivation may never change: a restarted mpsad finds its group's
// objects by these marks.
package groupid

import (
	"fmt"
	"hash/fnv"
)

// Slots is the number of distinct identities.
const Slots = 1 << 15

// Bases of the marks. ReqIDBase is "mq" in ASCII followed by the slot,
// far above the small reqids charon allocates from 1 upwards.
// PriorityBase puts every group's XFRM policies between 16384 and 81919:
// preferred (lower) over charon's own policies, whose priorities strongSwan
// computes in the hundreds of thousands. RouteMetricBase makes the
// kill-switch routes the least preferred routes of their prefix, so that
// the routes through a running data plane (metric 0, or 1024 for IPv6)
// win over them.
const (
	ReqIDBase       = 0x6d710000
	PriorityBase    = 0x4000
	RouteMetricBase = 0x6d710000
)

// RouteProtocol is the routing protocol number (rtm_protocol) of the
// routes mpsa installs: the kill-switch routes and the routes through the
// userspace data plane's TUN. It is not listed in iproute2's rt_protos;
// `ip route show proto 109` shows mpsa's routes.
const RouteProtocol = 109

// ID is a group's identity in the kernel.
type ID struct {
	// Name is the group's name.
	Name string
	// Slot is the hash of the name modulo Slots.
	Slot uint16
}

// Of returns the identity of the group called name.
func Of(name string) ID {
	h := fnv.New32a()
	h.Write([]byte(name))
	return ID{Name: name, Slot: uint16(h.Sum32() % Slots)}
}

// ReqID is the reqid of the group's XFRM states and policy templates.
func (id ID) ReqID() uint32 { return ReqIDBase + uint32(id.Slot) }

// Priority is the priority of the group's XFRM policies for its prefix
// pairs; its fallback block policies have Priority()+1.
func (id ID) Priority() uint32 { return PriorityBase + 2*uint32(id.Slot) }

// RouteMetric is the metric of the group's kill-switch routes.
func (id ID) RouteMetric() uint32 { return RouteMetricBase + uint32(id.Slot) }

// String names the group and its marks, for messages.
func (id ID) String() string {
	return fmt.Sprintf("group %s (slot %d: reqid %#x, policy priorities %d and %d, route metric %d)", id.Name, id.Slot, id.ReqID(), id.Priority(), id.Priority()+1, id.RouteMetric())
}

// Collision is a pair of groups with the same identity.
type Collision struct {
	// First is the earlier group in the list, Second the later one.
	First, Second string
	// Slot is their common slot.
	Slot uint16
}

// Collisions returns every group in names whose identity is that of an
// earlier group in names; a name listed twice is not a collision.
func Collisions(names []string) []Collision {
	seen := make(map[uint16]string, len(names))
	var out []Collision
	for _, n := range names {
		id := Of(n)
		if first, ok := seen[id.Slot]; ok {
			if first != n {
				out = append(out, Collision{First: first, Second: n, Slot: id.Slot})
			}
			continue
		}
		seen[id.Slot] = n
	}
	return out
}
