// Package killswitch keeps a group's blackhole routes: one per peer
// prefix, the least preferred route of its prefix (metric
// groupid.ID.RouteMetric, protocol groupid.RouteProtocol). While the
// userspace data plane runs, its routes through the TUN (lower metric)
// win; when it stops or crashes, the TUN and its routes go away and the
// blackhole routes drop the traffic that would otherwise follow a broader
// route (the default route) in plaintext. They stay until the group is
// removed from the configuration or the operator flushes it.
package killswitch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/xfrm/groupid"
)

// Routes is one group's set of blackhole routes in one network namespace.
// It is not safe for concurrent use.
type Routes struct {
	h      *netlink.Handle
	metric uint32
	have   map[netip.Prefix]bool
}

// Adopt returns the group's blackhole routes, reading those an earlier
// run left (recognized by type, protocol and metric, in the main table).
// h is the namespace's route handle, which stays the caller's.
func Adopt(h *netlink.Handle, id groupid.ID) (*Routes, error) {
	r := &Routes{h: h, metric: id.RouteMetric(), have: map[netip.Prefix]bool{}}
	routes, err := list(h, r.metric)
	if err != nil {
		return nil, err
	}
	for _, rt := range routes {
		r.have[prefixOf(rt.Dst)] = true
	}
	return r, nil
}

// Len is the number of blackhole routes in place.
func (r *Routes) Len() int { return len(r.have) }

// Sync makes the blackhole routes those of prefixes: it adds the missing
// ones first and then removes those no longer wanted. The kernel is asked
// only about the prefixes that changed.
func (r *Routes) Sync(prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]bool, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		want[p] = true
		if r.have[p] {
			continue
		}
		rt := route(p, r.metric)
		if err := r.h.RouteReplace(&rt); err != nil {
			return fmt.Errorf("add blackhole route %s metric %d: %w", p, r.metric, err)
		}
		r.have[p] = true
	}
	var errs []error
	for p := range r.have {
		if want[p] {
			continue
		}
		rt := route(p, r.metric)
		if err := r.h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove blackhole route %s metric %d: %w", p, r.metric, err))
			continue
		}
		delete(r.have, p)
	}
	return errors.Join(errs...)
}

// Flush removes the blackhole routes of group id from the namespace of h,
// whoever installed them, and returns how many it removed.
func Flush(h *netlink.Handle, id groupid.ID) (int, error) {
	routes, err := list(h, id.RouteMetric())
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, rt := range routes {
		if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove blackhole route %s: %w", rt.Dst, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// list returns the blackhole routes of protocol groupid.RouteProtocol
// with metric in the main table, both families.
func list(h *netlink.Handle, metric uint32) ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: groupid.RouteProtocol, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_BLACKHOLE, Priority: int(metric)}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	if err != nil {
		return nil, fmt.Errorf("list blackhole routes: %w", err)
	}
	// The netlink package does not filter by metric itself.
	mine := routes[:0]
	for _, rt := range routes {
		if uint32(rt.Priority) == metric {
			mine = append(mine, rt)
		}
	}
	return mine, nil
}

func route(p netip.Prefix, metric uint32) netlink.Route {
	return netlink.Route{
		Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Type:     unix.RTN_BLACKHOLE,
		Priority: int(metric),
		Protocol: groupid.RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	if n.IP.To4() != nil {
		a = a.Unmap()
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked()
}
