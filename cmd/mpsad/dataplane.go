package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

// newDataPlane builds a member group's data plane from its configuration.
func newDataPlane(ctx context.Context, g *swanctl.Group, local netip.Addr, log *slog.Logger) (xfrm.DataPlane, error) {
	switch g.Dataplane {
	case swanctl.BackendUserspace:
		dp, err := userspace.New(ctx, userspace.Config{TUNName: g.TUN, MTU: g.MTU, Local: []netip.Addr{local}, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", g.Name, err)
		}
		return dp, nil
	}
	return nil, fmt.Errorf("group %s: data plane %q is not available in this build yet", g.Name, g.Dataplane)
}
