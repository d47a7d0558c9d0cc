package server

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm"
)

// group is one configured group, in either role: a controller's
// (ctlGroup) or a member's (memGroup). The server owns the groups; sources
// feed them what they learn (see source.go), the loop hands them the
// datagrams of their control exchange, and their timers are deadlines on
// the server's heap. Every method runs on the loop's goroutine. Feeding,
// a datagram and a deadline cost O(1) in the group's size, or O(log N)
// where they set a deadline; only status, close, and setting the group up
// or replacing its configuration look at every member.
type group interface {
	// config is the group's configuration.
	config() *swanctl.Group
	// controlUp tells the group that charon's IKE SA c.IKE.UniqueID
	// carries its control child c, verified to protect the control
	// addresses: a new one, or one that changed (its IKE SA rekeyed, its
	// child SA rekeyed).
	controlUp(ctx context.Context, now time.Time, c proven)
	// controlDown tells the group that the IKE SA with unique id ike no
	// longer carries its control child to the remote control address.
	controlDown(ctx context.Context, now time.Time, ike uint32, remote netip.Addr)
	// controlMissing tells the group that its connection's ESTABLISHED
	// IKE SA sa carries no usable control child (none INSTALLED, or
	// not with single-host traffic selectors); controlFine that IKE SA
	// ike no longer has a problem (its control child came up, or it is
	// gone). charonSaid hands the group one of charon's messages about a
	// CHILD_SA failure of its connection; charonChanged what charon has,
	// at each connection to charon. See controlWatch.
	controlMissing(ctx context.Context, now time.Time, sa vici.IKESA)
	// controlRefused tells the group that the control child of IKE SA
	// sa is INSTALLED but mpsad cannot verify that it protects the
	// control addresses (why): the group does not use it.
	controlRefused(now time.Time, sa vici.IKESA, why string)
	// uses reports whether the group runs a control exchange over the
	// control child of IKE SA ike to the remote control address
	// remote: it was told of it by controlUp and took it. The VICI
	// source tells a group again only of what changed for it.
	uses(ike uint32, remote netip.Addr) bool
	controlFine(ike uint32, gone bool)
	charonSaid(now time.Time, ev vici.LogEvent)
	charonChanged(ch *vici.Charon)
	// setPeers replaces what the source src offers the group as peers:
	// remote prefixes and the underlay addresses that serve them.
	setPeers(ctx context.Context, src string, peers []xfrm.Peer)
	// onDatagram handles a control datagram if it belongs to the group
	// and reports whether it did.
	onDatagram(ctx context.Context, now time.Time, d Datagram) bool
	// reconfigure applies n, the group's new configuration, in place
	// and reports whether it could; if not, the server replaces the
	// group.
	reconfigure(ctx context.Context, n *swanctl.Group) bool
	// status is the group as `mpsactl status` shows it.
	status(ctx context.Context) api.GroupStatus
	// view hands out what the status and `mpsactl routes` ask of the
	// group's BGP outside the loop; false without BGP.
	view() (bgpView, bool)
	// retire tears the group down at a reload: next is its new
	// configuration, which the group could not apply in place, or nil
	// when it is removed. A member group keeps its kill switch for the
	// data plane that replaces it, or removes it with the group.
	retire(ctx context.Context, next *swanctl.Group)
	// close removes what the group installed and stops its deadlines
	// (at shutdown; a member group's kill switch stays).
	close()
}

// controlLinks are the IKE SAs that carry a control child to one peer
// (one member on the controller, the controller on a member): usually
// one, two while the peer reconnects or charon rekeys the IKE SA. The
// newest, with the highest unique id, is the one the control exchange
// uses.
type controlLinks[T any] []controlLink[T]

type controlLink[T any] struct {
	ike uint32
	v   T
}

// get returns the link of IKE SA ike.
func (l controlLinks[T]) get(ike uint32) (T, bool) {
	for _, c := range l {
		if c.ike == ike {
			return c.v, true
		}
	}
	var zero T
	return zero, false
}

// set adds or replaces the link of IKE SA ike.
func (l *controlLinks[T]) set(ike uint32, v T) {
	for i := range *l {
		if (*l)[i].ike == ike {
			(*l)[i].v = v
			return
		}
	}
	*l = append(*l, controlLink[T]{ike, v})
}

// remove drops the link of IKE SA ike, if any.
func (l *controlLinks[T]) remove(ike uint32) {
	*l = slices.DeleteFunc(*l, func(c controlLink[T]) bool { return c.ike == ike })
}

// newest returns the link with the highest IKE unique id.
func (l controlLinks[T]) newest() (T, bool) {
	if len(l) == 0 {
		var zero T
		return zero, false
	}
	best := l[0]
	for _, c := range l[1:] {
		if c.ike > best.ike {
			best = c
		}
	}
	return best.v, true
}

// proven is a control child that protects the control addresses, with
// what proves it (protect.Proof): the datagrams of the control exchange
// over it are accepted only as the proof allows.
type proven struct {
	vici.Control
	// admission is the way the peer's datagrams come through the child;
	// ifName names its interface.
	admission
	ifName string
	// how says it in words, for the log.
	how string
	// bgp, for a group with BGP, proves that the child also protects
	// the group's BGP session; nil when it does not (bgpErr says why).
	bgp    *bgpProof
	bgpErr string
}

// admission is the way a proof (protect.Proof) says the peer's control
// datagrams come through the control child: ifIndex, if not 0, is the
// only interface they may arrive on (charon's TUN under kernel-libipsec,
// the child's XFRM interface for a route-based child); srcPort, if not 0,
// the only UDP source port its traffic selector protects. Server.receive
// checks every control datagram against it.
type admission struct {
	ifIndex int
	srcPort uint16
}

// admits reports whether datagram d, from the control child's remote
// control address, came the way the proof protects.
func (a admission) admits(d Datagram) bool {
	return (a.ifIndex == 0 || d.IfIndex == a.ifIndex) && (a.srcPort == 0 || d.Src.Port() == a.srcPort)
}
