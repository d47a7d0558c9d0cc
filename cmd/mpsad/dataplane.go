package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/groupid"
	"github.com/mpsa/mpsa/xfrm/kernel"
	"github.com/mpsa/mpsa/xfrm/killswitch"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

// DefaultStateDir is where mpsad keeps state across restarts when systemd
// does not name the directory (StateDirectory= sets STATE_DIRECTORY).
const DefaultStateDir = "/var/lib/mpsad"

// stateDir is the state directory: the first of the paths in env, the
// value of STATE_DIRECTORY, or DefaultStateDir when it is empty.
func stateDir(env string) string {
	if first, _, _ := strings.Cut(env, ":"); first != "" {
		return first
	}
	return DefaultStateDir
}

// leaseDir is the directory of a group's sequence-number leases under the
// state directory: seq/ and the group's name, or, for a name that is not
// a plain file name, "x-" and its bytes in hex.
func leaseDir(state, group string) string {
	name := group
	plain := group != "" && !strings.HasPrefix(group, ".") && strings.Trim(group,
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == ""
	if !plain {
		name = "x-" + hex.EncodeToString([]byte(group))
	}
	return filepath.Join(state, "seq", name)
}

// dataPlanes builds member groups' data planes (server.DataPlaneFactory).
type dataPlanes struct {
	// stateDir is the state directory (stateDir).
	stateDir string
	// hardwareAES tells whether userspace ESP runs on AES-NI
	// (esp.HardwareAES).
	hardwareAES bool
}

// new builds a member group's data plane from its configuration.
// The group's kernel objects carry the marks of its name (xfrm/groupid),
// which the configuration check keeps apart from every other group's.
func (f dataPlanes) new(ctx context.Context, g *swanctl.Group, local netip.Addr, log *slog.Logger) (xfrm.DataPlane, error) {
	var (
		dp  xfrm.DataPlane
		err error
	)
	switch g.Dataplane {
	case swanctl.BackendUserspace:
		warnSoftwareAES(log, f.hardwareAES)
		dp, err = userspace.New(ctx, userspace.Config{Group: g.Name, TUNName: g.TUN, MTU: g.MTU, Local: []netip.Addr{local}, Logger: log, ESPInUDPPort: g.EncapPort,
			SeqLeaseDir: leaseDir(f.stateDir, g.Name)})
	case swanctl.BackendXFRM:
		dp, err = kernel.New(ctx, f.kernelConfig(g, local, log))
	default:
		err = fmt.Errorf("unknown data plane %q", g.Dataplane)
	}
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", g.Name, err)
	}
	return dp, nil
}

// kernelConfig is the configuration of a group's kernel data plane: the
// group's marks (xfrm/groupid) and, as for the userspace data plane, the
// group's lease directory, which keeps the outbound sequence numbers from
// going back across restarts, reboots and power losses.
func (f dataPlanes) kernelConfig(g *swanctl.Group, local netip.Addr, log *slog.Logger) kernel.Config {
	id := groupid.Of(g.Name)
	return kernel.Config{
		Group:            g.Name,
		Underlay:         []netip.Addr{local},
		ReqID:            id.ReqID(),
		Priority:         id.Priority(),
		Interface:        g.XFRMInterface,
		IfID:             g.IfID,
		AllowCounterMode: g.AllowCounterMode,
		SeqLeaseDir:      leaseDir(f.stateDir, g.Name),
		Logger:           log,
	}
}

// warnSoftwareAES warns, for a userspace data plane, when AES runs
// without the CPU's AES instructions.
func warnSoftwareAES(log *slog.Logger, hardware bool) {
	if hardware {
		return
	}
	log.Warn("AES runs without hardware support (no AES-NI on this CPU, or mpsad built with the purego tag): " +
		"the userspace data plane uses Go's table-based AES, whose memory accesses depend on the key and the data " +
		"(cache-timing side channels) and which is several times slower; run it on a CPU with AES-NI, or use dataplane = xfrm")
}

// flushDataPlane is server.Options.FlushDataPlane: it removes the kernel
// objects of a removed group whose data plane this run never built.
func flushDataPlane(ctx context.Context, g *swanctl.Group) error {
	_, err := killswitch.FlushGroup(ctx, g.Name)
	return err
}
