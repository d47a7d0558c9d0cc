//go:build mpsavm

package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/test/charon"
	"github.com/mpsa/mpsa/vici"
)

// A daemon lab is test/charon's Lab rebuilt in the guest: a controller and
// members in their own namespaces on a bridge, each running the host's
// charon with the kernel's ESP (kernel-netlink; no kernel-libipsec) and
// mpsad built on the host; members use the kernel data plane. The
// addresses are the Lab's: underlay 192.0.2.1 (controller) and
// 192.0.2.10+i (member i) on eth0, control addresses 10.98.i.1/32 on lo,
// and member i's LAN 10.1.i.0/24 (10.1.i.1 on the dummy lan0).

// daemonNode is one namespace of a daemon lab with its charon and mpsad.
type daemonNode struct {
	name string // "controller", "member1", ...
	ns   *guestNS
	peer charon.Peer
	// dir holds charon's instance (strongswan.conf, swanctl/, the VICI
	// socket, charon.log), mpsad.log and mpsad's status socket.
	dir    string
	lan    netip.Prefix // a member's LAN; invalid for the controller
	charon *charon.Instance
	mpsad  *exec.Cmd
	exited chan struct{}
}

// daemonLab is the world of one guest scenario with real daemons.
type daemonLab struct {
	t     *testing.T
	bin   string // mpsad and mpsactl
	label string
	sw    *guestNS
	ctl   *daemonNode
	mems  []*daemonNode
	group charon.Group
	// hosts counts the nodes made so far, numbering the switch ports.
	hosts int
	// bgp: the members learn each other's LANs by BGP (a speaker each,
	// the controller's route reflector) instead of static routes.
	bgp bool
}

// labASN is the AS number of a daemon lab with BGP.
const labASN = 64512

// controlPort is mpsad's default control port.
const controlPort = 4501

// newDaemonLab builds the namespaces and addresses of a controller and n
// members (no daemon runs yet); everything goes away when the test ends.
// label prefixes the namespace names; keep it short.
func newDaemonLab(t *testing.T, label string, n int) *daemonLab {
	t.Helper()
	bin := needHost(t)
	l := &daemonLab{t: t, bin: bin, label: label, sw: newNS(t, label+"-sw")}
	if err := l.sw.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	l.sw.up(t, "br0")
	l.ctl = l.node("ctl", "controller.mpsa.test", netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.98.0.1"))
	l.ctl.name = "controller"
	for i := 1; i <= n; i++ {
		m := l.node(fmt.Sprintf("m%d", i), fmt.Sprintf("member%d.mpsa.test", i),
			netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), netip.AddrFrom4([4]byte{10, 98, byte(i), 1}))
		m.name = fmt.Sprintf("member%d", i)
		m.lan = netip.MustParsePrefix(fmt.Sprintf("10.1.%d.0/24", i))
		if err := m.ns.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}}); err != nil {
			t.Fatalf("%s: lan0: %v", m.name, err)
		}
		m.ns.up(t, "lan0")
		m.ns.addAddr(t, "lan0", fmt.Sprintf("10.1.%d.1/24", i))
		// The other LANs are on-link: the XFRM policies decide what is
		// protected, and nothing is routed into an interface of mpsa's.
		m.ns.addRoute(t, "10.1.0.0/16", "eth0")
		l.mems = append(l.mems, m)
	}
	l.group = charon.Group{PSK: "mpsa-guest-psk-0123456789abcdef", Controller: l.ctl.peer}
	for _, m := range l.mems {
		l.group.Members = append(l.group.Members, m.peer)
	}
	return l
}

// node makes a namespace of the lab on the bridge, with under on eth0
// and, if valid, the control address ctl on lo.
func (l *daemonLab) node(label, id string, under, ctl netip.Addr) *daemonNode {
	t := l.t
	t.Helper()
	l.hosts++
	ns := newNS(t, l.label+"-"+label)
	port := fmt.Sprintf("p%d", l.hosts)
	ns.vethTo(t, "eth0", l.sw, port)
	if err := l.sw.h.LinkSetMaster(l.sw.link(t, port), l.sw.link(t, "br0")); err != nil {
		t.Fatalf("enslave %s: %v", port, err)
	}
	ns.addAddr(t, "eth0", under.String()+"/24")
	if ctl.IsValid() {
		ns.addAddr(t, "lo", ctl.String()+"/32")
	}
	dir, err := os.MkdirTemp("", l.label+"-"+label+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &daemonNode{name: label, ns: ns, peer: charon.Peer{ID: id, Underlay: under, Control: ctl}, dir: dir}
}

// addHost adds a namespace on the bridge that is not in the group (an
// attacker): underlay 192.0.2.i, no control address, no daemon.
func (l *daemonLab) addHost(label string, i int) *daemonNode {
	l.t.Helper()
	return l.node(label, label, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), netip.Addr{})
}

// sock is the node's mpsad status socket.
func (n *daemonNode) sock() string { return filepath.Join(n.dir, "mpsad.sock") }

// lanAddr is the member's address on its LAN.
func (n *daemonNode) lanAddr() netip.Addr { return n.lan.Addr().Next() }

// mpsaSection renders the node's mpsa { } section for the lab's group:
// charon runs with the kernel's ESP (no control_interface).
func (l *daemonLab) mpsaSection(n *daemonNode, role string, settings []string) string {
	return l.group.MPSASection(charon.MPSA{Role: role, Dir: n.dir, StatusSocket: n.sock(),
		Globals: []string{"log_level = debug"}, Settings: settings})
}

// controllerConf is the controller's swanctl.conf with its mpsa section:
// rollovers of 2 s and 4 s, no rekey during the test.
// With BGP, the controller is the route reflector and member N
// (identity memberN.mpsa.test) may advertise its LAN.
func (l *daemonLab) controllerConf() string {
	settings := []string{
		"esp_proposal = aes256-sha256",
		"lifetime = 1h", "rekey_time = 50m", "rollover1 = 2s", "rollover2 = 4s",
	}
	if l.bgp {
		settings = append(settings, "bgp {", fmt.Sprintf("    asn = %d", labASN), "    policy {")
		for i, m := range l.mems {
			settings = append(settings, fmt.Sprintf("        site%d {", i+1), "            identity = "+m.peer.ID,
				"            prefixes = "+m.lan.String(), "        }")
		}
		settings = append(settings, "    }", "}")
	}
	return l.group.ControllerConf() + l.mpsaSection(l.ctl, "controller", settings)
}

// memberConf is member i's (0-based) swanctl.conf with its mpsa section:
// the kernel data plane, policy-based, with a static route to every
// other member's LAN, or with BGP.
func (l *daemonLab) memberConf(i int) string {
	m := l.mems[i]
	settings := []string{"dataplane = xfrm", "local_ts = " + m.lan.String()}
	if l.bgp {
		settings = append(settings, "bgp {", fmt.Sprintf("    asn = %d", labASN), "}")
		return l.group.MemberConf(i) + l.mpsaSection(m, "member", settings)
	}
	var routes []charon.Route
	for j, o := range l.mems {
		if j != i {
			routes = append(routes, charon.Route{Name: o.name, Prefix: o.lan, Peer: o.peer.Underlay})
		}
	}
	settings = append(settings, charon.RoutesSection(routes)...)
	return l.group.MemberConf(i) + l.mpsaSection(m, "member", settings)
}

// startCharon starts charon in n's namespace with the kernel's ESP and
// loads conf (a member initiates its control child at load), with
// settings as further lines of strongswan.conf's charon section. It stops
// when the test ends, after copying charon's log into the test log if the
// test failed. It may run on any goroutine.
func (l *daemonLab) startCharon(n *daemonNode, conf string, settings ...string) error {
	t := l.t
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, err := charon.Launch(ctx, charon.Config{
		NetNS: n.ns.name, Dir: n.dir, SwanctlConf: conf, Settings: settings,
		OmitPlugins: []string{"kernel-libipsec"},
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return fmt.Errorf("charon on %s: %w", n.name, err)
	}
	n.charon = in
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("charon on %s:\n%s", n.name, in.Log())
		}
		if err := in.Close(); err != nil {
			t.Errorf("stop charon on %s: %v", n.name, err)
		}
	})
	return nil
}

// startMPSAD starts mpsad in n's namespace on charon's swanctl.conf. It is
// stopped when the test ends, after copying its log into the test log if
// the test failed. It may run on any goroutine.
func (l *daemonLab) startMPSAD(n *daemonNode) error {
	t := l.t
	logf, err := os.OpenFile(filepath.Join(n.dir, "mpsad.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := (&nettest.NS{Name: n.ns.name}).Command(filepath.Join(l.bin, "mpsad"), "--config", filepath.Join(n.charon.SwanctlDir(), "swanctl.conf"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// A state directory of its own, as on a machine of its own: the
	// sequence-number records of two members of a group must not share
	// files.
	cmd.Env = append(os.Environ(), "STATE_DIRECTORY="+filepath.Join(n.dir, "state"))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mpsad on %s: %w", n.name, err)
	}
	n.mpsad, n.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, n.exited)
	t.Cleanup(func() {
		l.stopMPSAD(n)
		if t.Failed() {
			t.Logf("mpsad on %s:\n%s", n.name, n.log())
		}
	})
	return nil
}

// stopMPSAD stops mpsad by its PID: SIGTERM, SIGKILL after 10 s.
func (l *daemonLab) stopMPSAD(n *daemonNode) {
	if n.mpsad == nil {
		return
	}
	select {
	case <-n.exited:
	default:
		_ = n.mpsad.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			l.t.Errorf("mpsad on %s ignored SIGTERM; killing it", n.name)
			_ = n.mpsad.Process.Kill()
			<-n.exited
		}
	}
	n.mpsad = nil
}

// log returns mpsad's log so far.
func (n *daemonNode) log() string {
	b, err := os.ReadFile(filepath.Join(n.dir, "mpsad.log"))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// start starts charon on the controller, then mpsad there and charon and
// mpsad on every member side by side (a member's charon initiates at
// once, so the controller's must answer first); memberSettings, if set,
// gives further charon settings per member (0-based).
func (l *daemonLab) start(memberSettings func(i int) []string) {
	t := l.t
	t.Helper()
	begin := time.Now()
	if err := l.startCharon(l.ctl, l.controllerConf()); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, len(l.mems)+1)
	go func() { errc <- l.startMPSAD(l.ctl) }()
	for i, m := range l.mems {
		var settings []string
		if memberSettings != nil {
			settings = memberSettings(i)
		}
		go func() {
			if err := l.startCharon(m, l.memberConf(i), settings...); err != nil {
				errc <- err
				return
			}
			errc <- l.startMPSAD(m)
		}()
	}
	var errs []error
	for range len(l.mems) + 1 {
		errs = append(errs, <-errc)
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("charon and mpsad started on %d nodes in %.1fs", len(l.mems)+1, time.Since(begin).Seconds())
}

// status asks n's mpsad for its status.
func (n *daemonNode) status() (server.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return server.NewClient(n.sock()).Status(ctx)
}

// mustStatus is status that fails the test.
func (n *daemonNode) mustStatus(t *testing.T) server.Status {
	t.Helper()
	st, err := n.status()
	if err != nil {
		t.Fatalf("status of %s: %v", n.name, err)
	}
	return st
}

// mpsactl runs mpsactl against n's mpsad and returns its output.
func (l *daemonLab) mpsactl(n *daemonNode, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(l.bin, "mpsactl"), append(args, "--socket", n.sock())...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mpsactl %s on %s: %w: %s", strings.Join(args, " "), n.name, err, out)
	}
	return string(out), nil
}

// labGroupName is the name of the daemon lab's group (charon.Group.MPSASection's).
const labGroupName = "lab"

// labGroup returns the lab's group in a daemon's status, and whether it is
// listed there.
func labGroup(st server.Status) (server.GroupStatus, bool) {
	for _, g := range st.Groups {
		if g.Name == labGroupName {
			return g, true
		}
	}
	return server.GroupStatus{}, false
}

// waitSPINot waits until every listed member sends with the controller's
// current SPI, one other than not (any if not is empty), and returns it.
func (l *daemonLab) waitSPINot(t *testing.T, not string, members ...*daemonNode) string {
	t.Helper()
	var spi string
	testenv.WaitFor(t, 90*time.Second, "every member to send with the controller's SPI (other than "+not+")", func() (bool, string) {
		cs, err := l.ctl.status()
		g, _ := labGroup(cs)
		if err != nil || g.SPI == "" || g.SPI == not {
			return false, fmt.Sprintf("controller on %q (%v)", g.SPI, err)
		}
		spi = g.SPI
		state, all := "controller on "+spi, true
		for _, m := range members {
			ms, err := m.status()
			mg, _ := labGroup(ms)
			state += fmt.Sprintf(", %s sends with %q (%v)", m.name, mg.OutboundSPI, err)
			all = all && err == nil && mg.OutboundSPI == spi
		}
		return all, state
	})
	return spi
}

// controlChild returns n's IKE SA of the group's connection and its
// INSTALLED control child, as charon reports them over VICI.
func (l *daemonLab) controlChild(n *daemonNode) (vici.IKESA, vici.ChildSA, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := vici.Dial(ctx, n.charon.SocketPath())
	if err != nil {
		return vici.IKESA{}, vici.ChildSA{}, err
	}
	defer c.Close()
	sas, err := c.ListSAs(ctx)
	if err != nil {
		return vici.IKESA{}, vici.ChildSA{}, err
	}
	for _, sa := range sas {
		if sa.Conn != l.group.ConnName() || sa.State != vici.IKEEstablished {
			continue
		}
		for _, ch := range sa.Children {
			if ch.Name == l.group.ChildName() && ch.State == vici.ChildInstalled {
				return sa, ch, nil
			}
		}
	}
	return vici.IKESA{}, vici.ChildSA{}, errors.New("no established IKE SA with an installed control child")
}

// waitControlChild waits until n's control child is INSTALLED and returns
// it with its IKE SA.
func (l *daemonLab) waitControlChild(t *testing.T, n *daemonNode) (vici.IKESA, vici.ChildSA) {
	t.Helper()
	var (
		ike   vici.IKESA
		child vici.ChildSA
	)
	testenv.WaitFor(t, 60*time.Second, n.name+"'s control child", func() (bool, string) {
		var err error
		ike, child, err = l.controlChild(n)
		return err == nil, fmt.Sprint(err)
	})
	return ike, child
}
