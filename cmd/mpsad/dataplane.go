package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm"
)

// newDataPlane builds a member group's data plane from its configuration.
func newDataPlane(ctx context.Context, g *swanctl.Group, local netip.Addr, log *slog.Logger) (xfrm.DataPlane, error) {
	return nil, fmt.Errorf("group %s: data plane %q is not available in this build yet", g.Name, g.Dataplane)
}
