package bgp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// Interop with implementations nobody here wrote: FRR's bgpd as a member
// speaker against mpsa's reflector, and as the route reflector of mpsa's
// members. Each bgpd runs in a test namespace with its own configuration,
// pid file and vty socket in a temporary directory, without zebra (-Z: it
// installs no route), and is stopped by its PID.

const frrBGPD = "/usr/lib/frr/bgpd"

// daemon is a routing daemon run for a test, stopped by its PID (SIGTERM,
// then SIGKILL) when the test ends, its log shown when the test failed.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done <-chan struct{}
}

// startDaemon runs argv in ns with its output in logPath.
func startDaemon(t *testing.T, ns *nettest.NS, name, logPath string, argv ...string) *daemon {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: name, cmd: ns.Command(argv[0], argv[1:]...)}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if d.done, err = testenv.StartTied(d.cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		d.stop()
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("log of %s:\n%s", name, tail(string(b), 150))
			}
		}
	})
	return d
}

// stop ends the daemon by its PID: SIGTERM, then SIGKILL.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// tempDir is a short directory removed when the test ends: socket paths
// in it must fit sun_path.
func tempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// frrDaemon is a running bgpd.
type frrDaemon struct {
	*daemon
	dir string
}

// startFRR runs bgpd with conf in ns.
func startFRR(t *testing.T, ns *nettest.NS, name, conf string) *frrDaemon {
	t.Helper()
	testenv.NeedFile(t, frrBGPD)
	testenv.NeedCommand(t, "vtysh")
	dir := tempDir(t, "mpsa-frr-")
	confPath := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -Z: no zebra; -P 0: no TCP vty; -S: stay root (the vty socket
	// then needs no frrvty group).
	d := &frrDaemon{dir: dir, daemon: startDaemon(t, ns, name, filepath.Join(dir, "bgpd.log"),
		frrBGPD, "-f", confPath, "-i", filepath.Join(dir, "bgpd.pid"), "--vty_socket", dir, "-Z", "-P", "0", "-S", "--log", "stdout", "--log-level", "debug")}
	testenv.WaitFor(t, 10*time.Second, name+"'s vty socket", func() (bool, string) {
		_, err := os.Stat(filepath.Join(dir, "bgpd.vty"))
		return err == nil, fmt.Sprint(err)
	})
	return d
}

// vtysh runs a show command against this bgpd.
func (d *frrDaemon) vtysh(t *testing.T, command string) string {
	t.Helper()
	out, err := exec.Command("vtysh", "--vty_socket", d.dir, "-d", "bgpd", "-c", command).CombinedOutput()
	if err != nil {
		t.Fatalf("vtysh %q: %v: %s", command, err, out)
	}
	return string(out)
}

// frrTable is the part of `show bgp ... json` the tests read.
type frrTable struct {
	Routes map[string][]struct {
		Valid    bool `json:"valid"`
		Best     bool `json:"bestpath"`
		Nexthops []struct {
			IP    string `json:"ip"`
			Scope string `json:"scope"`
		} `json:"nexthops"`
	} `json:"routes"`
}

// routes returns, for family (ipv4 or ipv6), prefix -> the next hops of
// every valid path FRR has, IPv4-mapped IPv6 addresses unmapped.
func (d *frrDaemon) routes(t *testing.T, family string) map[string][]string {
	t.Helper()
	var tb frrTable
	out := d.vtysh(t, "show bgp "+family+" unicast json")
	if err := json.Unmarshal([]byte(out), &tb); err != nil {
		t.Fatalf("show bgp %s unicast json: %v: %s", family, err, out)
	}
	got := map[string][]string{}
	for p, paths := range tb.Routes {
		for _, path := range paths {
			if !path.Valid || len(path.Nexthops) == 0 {
				continue
			}
			nh := path.Nexthops[0].IP
			if a, err := netip.ParseAddr(nh); err == nil {
				nh = a.Unmap().String()
			}
			got[p] = append(got[p], nh)
		}
	}
	return got
}

// frrMemberConf is what an operator writes for FRR as the BGP speaker of
// a member site (docs/bgp.md shows it): iBGP to the controller's control
// address from the site's own, the site's prefixes advertised with the
// site's underlay address as next hop.
func frrMemberConf(routerID, ctl, local, underlay string, v4, v6 []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `frr defaults traditional
hostname member
!
route-map MPSA-OUT permit 10
 set ip next-hop %[4]s
 set ipv6 next-hop global ::ffff:%[4]s
!
router bgp 64512
 bgp router-id %[1]s
 no bgp network import-check
 bgp graceful-restart
 neighbor %[2]s remote-as 64512
 neighbor %[2]s update-source %[3]s
 address-family ipv4 unicast
`, routerID, ctl, local, underlay)
	for _, p := range v4 {
		fmt.Fprintf(&b, "  network %s\n", p)
	}
	fmt.Fprintf(&b, "  neighbor %s route-map MPSA-OUT out\n exit-address-family\n address-family ipv6 unicast\n", ctl)
	for _, p := range v6 {
		fmt.Fprintf(&b, "  network %s\n", p)
	}
	fmt.Fprintf(&b, "  neighbor %[1]s activate\n  neighbor %[1]s route-map MPSA-OUT out\n exit-address-family\n!\n", ctl)
	return b.String()
}

// TestFRRMember: FRR's bgpd as member 2's speaker, against mpsa's
// reflector: mpsa's member 1 learns FRR's prefixes with FRR's underlay as
// peer, FRR learns member 1's, and what FRR advertises beyond its policy
// (member 1's prefix, a default route) is rejected and never reaches
// member 1.
func TestFRRMember(t *testing.T) {
	l := newLab(t, 2)
	refl := l.startReflector(t, testPolicy(t, 2), 0)
	m1 := l.startMember(t, 1, 0)
	m1.call(command{Op: "advertise", Prefixes: prefixes("10.1.0.0/24", "2001:db8:1::/64"), Underlay: underlay(1)})
	refl.call(command{Op: "add", Member: MemberInfo{Addr: memberAddr(2, false), Local: ctlAddr(2, false), Identity: identity(2)}})
	join(refl, m1, 1, false)
	frr := startFRR(t, l.members[1], "frr-member2", frrMemberConf("10.99.2.2", "10.99.2.1", "10.99.2.2", "192.0.2.2",
		[]string{"10.2.0.0/24", "10.1.0.0/24", "0.0.0.0/0"}, []string{"2001:db8:2::/64"}))

	m1.waitRoutes(t, 30*time.Second, time.Now(), map[string]string{"10.2.0.0/24": "192.0.2.2", "2001:db8:2::/64": "192.0.2.2"})
	testenv.WaitFor(t, 15*time.Second, "FRR to learn member 1's prefixes", func() (bool, string) {
		v4, v6 := frr.routes(t, "ipv4"), frr.routes(t, "ipv6")
		return slices.Contains(v4["10.1.0.0/24"], "192.0.2.1") && slices.Contains(v6["2001:db8:1::/64"], "192.0.2.1"), fmt.Sprint(v4, v6)
	})
	var st ReflectorStatus
	testenv.WaitFor(t, 10*time.Second, "the reflector to judge FRR's routes", func() (bool, string) {
		st = refl.reflectorStatus()
		for _, m := range st.Members {
			if m.Identity == identity(2) {
				return len(m.Accepted) == 2 && len(m.Rejected) == 2, fmt.Sprintf("%+v", m)
			}
		}
		return false, fmt.Sprintf("%+v", st)
	})
	for _, c := range m1.history() {
		if c.Peer == underlay(2) && (c.Prefix.String() == "0.0.0.0/0" || c.Prefix.String() == "10.1.0.0/24") {
			t.Errorf("member 1 learned a rejected route from FRR: %+v", c.Change)
		}
	}
	// FRR stops: the reflector keeps its routes for the restart time it
	// advertised (graceful restart), as for a member whose mpsad
	// restarts; once its control child is gone (RemoveMember) they are
	// withdrawn at once.
	frr.stop()
	time.Sleep(time.Second)
	if got := m1.learned(); len(got) != 2 {
		t.Errorf("member 1 lost FRR's routes when FRR stopped: %v", routeStrings(got))
	}
	start := time.Now()
	refl.call(command{Op: "remove", Member: MemberInfo{Addr: memberAddr(2, false)}})
	took := m1.waitRoutes(t, 10*time.Second, start, map[string]string{})
	t.Logf("FRR's routes withdrawn %v after its removal", took.Round(time.Millisecond))
}

// frrReflectorConf makes FRR the route reflector of the lab's members.
func frrReflectorConf(members int) string {
	var b strings.Builder
	b.WriteString("frr defaults traditional\nhostname reflector\n!\nrouter bgp 64512\n bgp router-id 10.99.1.1\n bgp graceful-restart\n")
	for i := 1; i <= members; i++ {
		fmt.Fprintf(&b, " neighbor %s remote-as 64512\n neighbor %s update-source %s\n", memberAddr(i, false), memberAddr(i, false), ctlAddr(i, false))
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n", af)
		for i := 1; i <= members; i++ {
			fmt.Fprintf(&b, "  neighbor %s activate\n  neighbor %s route-reflector-client\n", memberAddr(i, false), memberAddr(i, false))
		}
		b.WriteString(" exit-address-family\n")
	}
	return b.String() + "!\n"
}

// twoMembersThrough starts mpsa members 1 and 2, advertising an IPv4 and
// an IPv6 prefix each with an IPv4 underlay, against the reflector the
// test runs in the lab's controller namespace (what names it), and waits
// until each has learned the other's prefixes.
func twoMembersThrough(t *testing.T, l *lab, what string) (m1, m2 *speakerProc) {
	t.Helper()
	m1 = l.startMember(t, 1, 0)
	m2 = l.startMember(t, 2, 0)
	m1.call(command{Op: "advertise", Prefixes: prefixes("10.1.0.0/24", "2001:db8:1::/64"), Underlay: underlay(1)})
	m2.call(command{Op: "advertise", Prefixes: prefixes("10.2.0.0/24", "2001:db8:2::/64"), Underlay: underlay(2)})
	start := time.Now()
	m1.call(command{Op: "set-controller", Ctl: ctlAddr(1, false), Local: memberAddr(1, false)})
	m2.call(command{Op: "set-controller", Ctl: ctlAddr(2, false), Local: memberAddr(2, false)})
	took := m1.waitRoutes(t, 30*time.Second, start, map[string]string{"10.2.0.0/24": "192.0.2.2", "2001:db8:2::/64": "192.0.2.2"})
	m2.waitRoutes(t, 30*time.Second, start, map[string]string{"10.1.0.0/24": "192.0.2.1", "2001:db8:1::/64": "192.0.2.1"})
	t.Logf("converged through %s in %v", what, took.Round(time.Millisecond))
	return m1, m2
}

// TestFRRReflector: FRR's bgpd as the route reflector of mpsa's members:
// each learns the other's IPv4 and IPv6 prefixes with the other's
// underlay as peer and its withdrawals, and a restart of FRR costs the
// members no route.
func TestFRRReflector(t *testing.T) {
	l := newLab(t, 2)
	frr := startFRR(t, l.ctl, "frr-reflector", frrReflectorConf(2))
	m1, m2 := twoMembersThrough(t, l, "FRR")

	// Member 2 withdraws one prefix.
	m2.call(command{Op: "advertise", Prefixes: prefixes("10.2.0.0/24"), Underlay: underlay(2)})
	m1.waitRoutes(t, 10*time.Second, time.Now(), map[string]string{"10.2.0.0/24": "192.0.2.2"})

	// FRR restarts: the members keep their routes while it is away and
	// after it is back, without a withdrawal.
	before := len(m1.history())
	frr.stop()
	testenv.WaitFor(t, 10*time.Second, "member 1 to notice FRR is gone", func() (bool, string) {
		st := m1.memberStatus()
		return st.Session != "established" && len(st.Learned) == 1 && st.Learned[0].Stale, fmt.Sprintf("%+v", st)
	})
	frr = startFRR(t, l.ctl, "frr-reflector-2", frrReflectorConf(2))
	testenv.WaitFor(t, 40*time.Second, "member 1's route to be fresh again", func() (bool, string) {
		st := m1.memberStatus()
		return st.Session == "established" && len(st.Learned) == 1 && !st.Learned[0].Stale, fmt.Sprintf("%+v", st)
	})
	if v4 := frr.routes(t, "ipv4"); !slices.Contains(v4["10.1.0.0/24"], "192.0.2.1") || !slices.Contains(v4["10.2.0.0/24"], "192.0.2.2") {
		t.Errorf("the restarted FRR has %v", v4)
	}
	m2.waitRoutes(t, 10*time.Second, time.Now(), map[string]string{"10.1.0.0/24": "192.0.2.1", "2001:db8:1::/64": "192.0.2.1"})
	if got := m1.history()[before:]; len(got) != 0 {
		t.Errorf("member 1's routes changed while FRR restarted: %+v", got)
	}
	if got := withdrawnIn(m2.history(), "10.1.0.0/24"); len(got) != 0 {
		t.Errorf("member 2 withdrew 10.1.0.0/24 while FRR restarted: %+v", got)
	}
}

// birdReflectorConf makes BIRD 2 the route reflector of the lab's
// members.
func birdReflectorConf(members int) string {
	var b strings.Builder
	b.WriteString(`router id 10.99.1.1;
log stderr all;
protocol device { }
template bgp mpsa {
  local as 64512;
  rr client;
  graceful restart on;
  ipv4 { import all; export all; extended next hop on; };
  # The members' underlays are IPv4: their IPv6 prefixes come with IPv4
  # next hops (IPv4-mapped), which BIRD takes only with this.
  ipv6 { import all; export all; extended next hop on; };
}
`)
	for i := 1; i <= members; i++ {
		fmt.Fprintf(&b, "protocol bgp m%d from mpsa { neighbor %s as 64512; source address %s; }\n", i, memberAddr(i, false), ctlAddr(i, false))
	}
	return b.String()
}

// startBIRD runs bird with conf in ns.
func startBIRD(t *testing.T, ns *nettest.NS, conf string) {
	t.Helper()
	bird := testenv.NeedCommand(t, "bird")
	dir := tempDir(t, "mpsa-bird-")
	confPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, ns, "bird", filepath.Join(dir, "bird.log"),
		bird, "-f", "-c", confPath, "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
}

// TestBIRDReflector: BIRD 2 as the route reflector of mpsa's members.
func TestBIRDReflector(t *testing.T) {
	l := newLab(t, 2)
	startBIRD(t, l.ctl, birdReflectorConf(2))
	m1, m2 := twoMembersThrough(t, l, "BIRD")
	m2.call(command{Op: "advertise", Prefixes: prefixes("10.2.0.0/24"), Underlay: underlay(2)})
	m1.waitRoutes(t, 10*time.Second, time.Now(), map[string]string{"10.2.0.0/24": "192.0.2.2"})
}
