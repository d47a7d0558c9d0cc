package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"

	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/kernel"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

// newDataPlane builds a member group's data plane from its configuration.
func newDataPlane(ctx context.Context, g *swanctl.Group, local netip.Addr, log *slog.Logger) (xfrm.DataPlane, error) {
	var (
		dp  xfrm.DataPlane
		err error
	)
	switch g.Dataplane {
	case swanctl.BackendUserspace:
		dp, err = userspace.New(ctx, userspace.Config{TUNName: g.TUN, MTU: g.MTU, Local: []netip.Addr{local}, Logger: log, ESPInUDPPort: g.EncapPort})
	case swanctl.BackendXFRM:
		dp, err = kernel.New(ctx, kernel.Config{
			Underlay:         []netip.Addr{local},
			ReqID:            groupReqID(g.Name),
			Priority:         groupPriority(g.Name),
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

// groupPriority gives each group its own pair of policy priorities
// (the backend uses the priority and the one after it), so that a group's
// start-up clean-up never takes another group's block policies for its own.
func groupPriority(name string) uint32 {
	return kernel.DefaultPriority + 2*(nameHash(name)&0x3f)
}

// groupReqID gives each group its own reqid, stable across restarts, so
// that a kernel backend recognises (and removes) the leftovers of its own
// group after a crash and never touches another group's states.
func groupReqID(name string) uint32 {
	return kernel.DefaultReqID + nameHash(name)&0xfff
}

// nameHash is the 32-bit FNV-1a hash of a group's name. The reqids and
// priorities derived from it identify a group's leftovers in the kernel,
// so it may never change.
func nameHash(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}
