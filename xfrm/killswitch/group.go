package killswitch

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/xfrm/groupid"
	"github.com/mpsa/mpsa/xfrm/kernel"
)

// FlushGroup removes every object with the marks of the group called
// name from the calling thread's network namespace, whichever data plane
// installed it: XFRM policies, states and interface (kernel.FlushGroup)
// and blackhole routes. It needs no running mpsad and no configuration:
// the marks come from the name. It returns how many objects it removed;
// objects with the marks that are not mpsa's are left alone and named in
// the error.
func FlushGroup(ctx context.Context, name string) (int, error) {
	id := groupid.Of(name)
	n, kerr := kernel.FlushGroup(ctx, kernel.FlushConfig{Group: name, ReqID: id.ReqID(), Priority: id.Priority()})
	if kerr != nil {
		kerr = fmt.Errorf("XFRM objects: %w", kerr)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return n, errors.Join(kerr, fmt.Errorf("open netlink: %w", err))
	}
	defer h.Close()
	m, rerr := Flush(h, id)
	return n + m, errors.Join(kerr, rerr)
}
