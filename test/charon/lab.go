package charon

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// LabOptions shapes a Lab.
type LabOptions struct {
	// Members is the number of member namespaces (at least 1).
	Members int
	// Underlay6 puts IKE on IPv6 (2001:db8::/64) instead of IPv4
	// (192.0.2.0/24).
	Underlay6 bool
	// Control6 uses IPv6 control addresses (fd98:N::1/128) instead of IPv4
	// (10.98.N.1/32).
	Control6 bool
	// PSK overrides the group's pre-shared key.
	PSK string
}

// Node is one namespace of a Lab with its addresses.
type Node struct {
	// NS is the node's namespace; its underlay link is eth0.
	NS *nettest.NS
	// Peer holds its IKE identity, underlay and control address.
	Peer Peer
}

// Lab is a controller and members, each in its own namespace, joined by a
// bridge in a switch namespace, with underlay addresses on eth0 and control
// addresses on lo. It starts no daemon: see StartCharons.
type Lab struct {
	// Switch holds the bridge br0.
	Switch *nettest.NS
	// Controller is node 0: underlay .1 (or ::1), control 10.98.0.1.
	Controller Node
	// Members are nodes 1..n: underlay .10+i, control 10.98.(i+1).1.
	Members []Node
	// Group is the PSK group over these nodes with default names.
	Group Group

	opts  LabOptions
	extra int // hosts added with AddHost
}

// NewLab builds the namespaces and addresses; everything goes away when
// the test ends.
func NewLab(t testenv.TB, o LabOptions) *Lab {
	t.Helper()
	Need(t)
	if o.Members < 1 {
		o.Members = 1
	}
	if o.PSK == "" {
		o.PSK = "mpsa-test-psk-0123456789abcdef"
	}
	l := &Lab{Switch: nettest.NewNS(t, "sw"), opts: o}
	nettest.Bridge(t, l.Switch, "br0")
	l.Controller = l.node(t, 0, "ctl")
	for i := 1; i <= o.Members; i++ {
		l.Members = append(l.Members, l.node(t, i, fmt.Sprintf("m%d", i)))
	}
	l.Group = Group{PSK: o.PSK, Controller: l.Controller.Peer}
	for _, m := range l.Members {
		l.Group.Members = append(l.Group.Members, m.Peer)
	}
	return l
}

// AddHost adds one more namespace on the bridge, numbered after the
// members (underlay .10+i, control 10.98.i.1 on lo, identity hostI), that
// is not part of Group: a stranger, or a member to add later.
func (l *Lab) AddHost(t testenv.TB, label string) Node {
	t.Helper()
	l.extra++
	return l.node(t, len(l.Members)+l.extra, label)
}

// node makes namespace i: 0 is the controller, 1..n the members.
func (l *Lab) node(t testenv.TB, i int, label string) Node {
	t.Helper()
	o := l.opts
	ns := nettest.NewNS(t, label)
	port := fmt.Sprintf("p%d", i)
	nettest.Veth(t, l.Switch, port, ns, "eth0")
	l.Switch.Run(t, "ip", "link", "set", port, "master", "br0")
	var under, ctl netip.Addr
	var underBits, ctlBits int
	if o.Underlay6 {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8}
		a[15] = 1
		if i > 0 {
			a[15] = byte(0x10 + i)
		}
		under, underBits = netip.AddrFrom16(a), 64
	} else {
		last := byte(1)
		if i > 0 {
			last = byte(10 + i)
		}
		under, underBits = netip.AddrFrom4([4]byte{192, 0, 2, last}), 24
	}
	if o.Control6 {
		ctl, ctlBits = netip.AddrFrom16([16]byte{0xfd, 0x98, 0, byte(i), 15: 1}), 128
	} else {
		ctl, ctlBits = netip.AddrFrom4([4]byte{10, 98, byte(i), 1}), 32
	}
	nettest.AddrAdd(t, ns, "eth0", netip.PrefixFrom(under, underBits).String())
	nettest.AddrAdd(t, ns, "lo", netip.PrefixFrom(ctl, ctlBits).String())
	id := "controller.mpsa.test"
	switch {
	case i > o.Members:
		id = fmt.Sprintf("host%d.mpsa.test", i)
	case i > 0:
		id = fmt.Sprintf("member%d.mpsa.test", i)
	}
	return Node{NS: ns, Peer: Peer{ID: id, Underlay: under, Control: ctl}}
}

// StartCharons starts charon in the controller's namespace, then in every
// member's (members initiate the control child at load). The instances stop when the test ends.
func (l *Lab) StartCharons(t testing.TB) (controller *Instance, members []*Instance) {
	t.Helper()
	controller = Start(t, l.Controller.NS, Config{SwanctlConf: l.Group.ControllerConf()})
	for i, m := range l.Members {
		members = append(members, Start(t, m.NS, Config{SwanctlConf: l.Group.MemberConf(i)}))
	}
	return controller, members
}
