package charon_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/test/charon"
)

// waitFor polls cond until it holds or the (generous) deadline passes.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, what, cond)
}

func TestLabMembersEstablish(t *testing.T) {
	lab := charon.NewLab(t, charon.LabOptions{Members: 2})
	ctl, members := lab.StartCharons(t)
	if ctl.PIDFile() == 0 || ctl.PIDFile() != ctl.PID() {
		t.Errorf("pid file in private /run says %d, process is %d", ctl.PIDFile(), ctl.PID())
	}
	if _, err := os.Stat("/run/charon.pid"); err == nil {
		// Not fatal (the host may run its own charon) but worth a note.
		t.Logf("note: host /run/charon.pid exists")
	}
	waitFor(t, "two control children on the controller", func() (bool, string) {
		out := ctl.MustSwanctl(t, "--list-sas")
		return strings.Count(out, "INSTALLED") == 2 && strings.Count(out, "ESTABLISHED") == 2, out
	})
	for i, m := range members {
		out := m.MustSwanctl(t, "--list-sas")
		if !strings.Contains(out, "INSTALLED") || !strings.Contains(out, lab.Members[i].Peer.Control.String()) {
			t.Errorf("member %d has no installed control child:\n%s", i, out)
		}
	}
	// Restart keeps the instance usable: the member initiates again.
	if err := members[0].Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "member 0 to come back", func() (bool, string) {
		out := members[0].MustSwanctl(t, "--list-sas")
		return strings.Contains(out, "INSTALLED"), out
	})
}

// TestControlTrafficPath records what the daemon's sender check relies on:
// through the control child a member's datagram arrives on ipsec0 from the
// member's control address, while a stranger on the underlay that forges
// that same source address reaches the control port in the clear on eth0,
// never on ipsec0.
func TestControlTrafficPath(t *testing.T) {
	lab := charon.NewLab(t, charon.LabOptions{Members: 1})
	ctlCharon, members := lab.StartCharons(t)
	ctl, member := lab.Controller, lab.Members[0]
	for _, in := range []*charon.Instance{ctlCharon, members[0]} {
		waitFor(t, "control child installed", func() (bool, string) {
			out := in.MustSwanctl(t, "--list-sas")
			return strings.Contains(out, "INSTALLED"), out
		})
	}
	to := netip.AddrPortFrom(ctl.Peer.Control, 4501)
	l := charon.ListenUDP(t, ctl.NS, to)

	d, err := charon.Exchange(charon.DialUDP(t, member.NS, member.Peer.Control, to), l, []byte("member"), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("member datagram: from %v on %s (ifindex %d)", d.Src, d.IfName, d.IfIndex)
	if d.Src.Addr() != member.Peer.Control || d.IfName != "ipsec0" {
		t.Errorf("member datagram from %v on %q, want from %v on ipsec0", d.Src, d.IfName, member.Peer.Control)
	}
	ipsec0 := d.IfIndex

	// The other way: the controller's answer goes back through the
	// control child (charon routes the remote TS via ipsec0, table 220).
	back := netip.AddrPortFrom(member.Peer.Control, 4501)
	d, err = charon.Exchange(charon.DialUDP(t, ctl.NS, ctl.Peer.Control, back), charon.ListenUDP(t, member.NS, back), []byte("controller"), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("controller datagram at the member: from %v on %s", d.Src, d.IfName)
	if d.Src.Addr() != ctl.Peer.Control || d.IfName != "ipsec0" {
		t.Errorf("controller datagram from %v on %q, want from %v on ipsec0", d.Src, d.IfName, ctl.Peer.Control)
	}

	stranger := lab.AddHost(t, "x")
	nettest.AddrAdd(t, stranger.NS, "lo", netip.PrefixFrom(member.Peer.Control, 32).String())
	stranger.NS.Run(t, "ip", "route", "add", ctl.Peer.Control.String()+"/32", "via", ctl.Peer.Underlay.String())
	// rp_filter = 0 is a new namespace's default; set it anyway, so that a
	// host whose namespaces inherit its own setting
	// (net.core.devconf_inherit_init_net) does not change what is measured.
	ctl.NS.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
	rp := strings.TrimSpace(ctl.NS.Run(t, "sysctl", "-n", "net.ipv4.conf.all.rp_filter"))
	s := charon.DialUDP(t, stranger.NS, member.Peer.Control, to)
	f, err := charon.Exchange(s, l, []byte("forged"), 3*time.Second)
	if err != nil {
		t.Fatalf("forged datagram did not arrive (controller rp_filter=%s): %v", rp, err)
	}
	t.Logf("forged datagram: from %v on %s (ifindex %d), controller rp_filter=%s", f.Src, f.IfName, f.IfIndex, rp)
	if f.IfIndex == ipsec0 || f.IfName == "ipsec0" {
		t.Errorf("forged plaintext datagram arrived on ipsec0")
	}
	if f.IfName != "eth0" {
		t.Errorf("forged datagram arrived on %q, want eth0", f.IfName)
	}
	if f.Src.Addr() != member.Peer.Control {
		t.Errorf("forged datagram from %v, want the forged source %v", f.Src, member.Peer.Control)
	}

	// charon restarts: ipsec0 is a new device with a new index, so
	// the daemon must match the arrival interface by name (or look the
	// index up again), not remember the index.
	if err := ctlCharon.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "member re-established", func() (bool, string) {
		out, _ := members[0].Swanctl(t.Context(), "--initiate", "--child", lab.Group.ChildName())
		return strings.Contains(out, "successfully"), out
	})
	d, err = charon.Exchange(charon.DialUDP(t, member.NS, member.Peer.Control, to), l, []byte("member again"), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after charon restart: member datagram from %v on %q (ifindex %d, was %d)", d.Src, d.IfName, d.IfIndex, ipsec0)
	if d.IfName != "ipsec0" || d.IfIndex == ipsec0 {
		t.Errorf("after restart: datagram on %q index %d, want ipsec0 with a new index (old %d)", d.IfName, d.IfIndex, ipsec0)
	}
}
