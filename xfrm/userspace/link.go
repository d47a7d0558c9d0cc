package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/mpsa/mpsa/xfrm/groupid"
)

// removeLeftover deletes a TUN of the configured name left by an earlier
// run that crashed (recognized by its alias), and refuses any other link of
// that name.
func (b *Backend) removeLeftover() error {
	l, err := b.nl.LinkByName(b.cfg.TUNName)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("userspace data plane: look up link %s: %w", b.cfg.TUNName, err)
	}
	if l.Type() != "tuntap" || l.Attrs().Alias != tunAlias {
		return fmt.Errorf("userspace data plane: link %s exists and is not a leftover of this data plane (type %s, alias %q); choose another TUN name", b.cfg.TUNName, l.Type(), l.Attrs().Alias)
	}
	if err := b.nl.LinkDel(l); err != nil {
		return fmt.Errorf("userspace data plane: remove leftover TUN %s: %w", b.cfg.TUNName, err)
	}
	b.log.Warn("removed leftover TUN of an earlier run", "link", b.cfg.TUNName)
	return nil
}

func (b *Backend) createTUN() error {
	dev, err := tun.CreateTUN(b.cfg.TUNName, b.cfg.MTU)
	if err != nil {
		return fmt.Errorf("userspace data plane: create TUN %s: %w", b.cfg.TUNName, err)
	}
	b.dev = dev
	if b.name, err = dev.Name(); err != nil {
		return fmt.Errorf("userspace data plane: TUN name: %w", err)
	}
	l, err := b.nl.LinkByName(b.name)
	if err != nil {
		return fmt.Errorf("userspace data plane: look up TUN %s: %w", b.name, err)
	}
	b.index = l.Attrs().Index
	if err := b.nl.LinkSetAlias(l, tunAlias); err != nil {
		return fmt.Errorf("userspace data plane: set alias of TUN %s: %w", b.name, err)
	}
	// No IPv6 link-local address on the TUN: it would only make the
	// kernel send router solicitations and MLD reports into it, which no
	// peer prefix covers.
	if err := b.nl.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		b.log.Debug("cannot turn off IPv6 address generation on the TUN", "err", err)
	}
	if err := b.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("userspace data plane: bring TUN %s up: %w", b.name, err)
	}
	return nil
}

// routesFor computes the routes of a peer table: each peer prefix through
// the TUN, preferring a source address from a local prefix.
func (b *Backend) routesFor(t *peerTable) ([]netlink.Route, error) {
	var src4, src6 net.IP
	if len(t.local) > 0 {
		addrs, err := b.nl.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			for _, p := range t.local {
				if !p.Contains(ip) {
					continue
				}
				if ip.Is4() && src4 == nil {
					src4 = a.IP
				}
				if ip.Is6() && src6 == nil && !ip.IsLinkLocalUnicast() {
					src6 = a.IP
				}
			}
		}
	}
	var routes []netlink.Route
	for _, p := range t.peers {
		r := netlink.Route{
			LinkIndex: b.index,
			Dst:       &net.IPNet{IP: p.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(p.Prefix.Bits(), p.Prefix.Addr().BitLen())},
			Scope:     netlink.SCOPE_LINK,
			// mpsa's own protocol number; the metric stays the
			// default (0, or 1024 for IPv6), well below that of
			// the kill switch's blackhole routes.
			Protocol: groupid.RouteProtocol,
		}
		if p.Prefix.Addr().Is4() {
			r.Src = src4
		} else {
			r.Src = src6
		}
		routes = append(routes, r)
	}
	return routes, nil
}

// syncRoutes installs routes and removes those of the previous SetPeers
// that are no longer wanted.
func (b *Backend) syncRoutes(routes []netlink.Route) error {
	want := map[string]bool{}
	for i := range routes {
		if err := b.nl.RouteReplace(&routes[i]); err != nil {
			return fmt.Errorf("route %s dev %s: %w", routes[i].Dst, b.name, err)
		}
		want[routes[i].Dst.String()] = true
	}
	var errs []error
	for i := range b.routes {
		if want[b.routes[i].Dst.String()] {
			continue
		}
		if err := b.nl.RouteDel(&b.routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s dev %s: %w", b.routes[i].Dst, b.name, err))
		}
	}
	b.routes = routes
	return errors.Join(errs...)
}
