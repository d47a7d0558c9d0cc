package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/groupid"
	"github.com/mpsa/mpsa/xfrm/kernel"
	"github.com/mpsa/mpsa/xfrm/killswitch"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

// newDataPlane builds a member group's data plane from its configuration.
// The group's kernel objects carry the marks of its name (xfrm/groupid),
// which the configuration check keeps apart from every other group's.
func newDataPlane(ctx context.Context, g *swanctl.Group, local netip.Addr, log *slog.Logger) (xfrm.DataPlane, error) {
	var (
		dp  xfrm.DataPlane
		err error
	)
	id := groupid.Of(g.Name)
	switch g.Dataplane {
	case swanctl.BackendUserspace:
		dp, err = userspace.New(ctx, userspace.Config{Group: g.Name, TUNName: g.TUN, MTU: g.MTU, Local: []netip.Addr{local}, Logger: log, ESPInUDPPort: g.EncapPort})
	case swanctl.BackendXFRM:
		dp, err = kernel.New(ctx, kernel.Config{
			Group:            g.Name,
			Underlay:         []netip.Addr{local},
			ReqID:            id.ReqID(),
			Priority:         id.Priority(),
			Interface:        g.XFRMInterface,
			IfID:             g.IfID,
			AllowCounterMode: g.AllowCounterMode,
			Logger:           log,
		})
	default:
		err = fmt.Errorf("unknown data plane %q", g.Dataplane)
	}
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", g.Name, err)
	}
	return dp, nil
}

// flushDataPlane is server.Options.FlushDataPlane: it removes the kernel
// objects of a removed group whose data plane this run never built.
func flushDataPlane(ctx context.Context, g *swanctl.Group) error {
	_, err := killswitch.FlushGroup(ctx, g.Name)
	return err
}
