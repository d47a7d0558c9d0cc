// Package bgptest runs BGP speakers nobody here wrote, FRR's bgpd and BIRD
// 2 (Debian packages frr and bird2), in test network namespaces, and
// writes the configurations an operator would write for them beside mpsa
// (docs/bgp.md, "Operating with FRR or BIRD"). The bgp package's interop
// tests and the end-to-end tests (test/e2e) share it.
//
// Each daemon gets its own configuration, pid file and control socket in
// a temporary directory, runs in the foreground as a child of the test,
// and is stopped by its PID when the test ends; the system services are
// never used. Without the programs a test skips, and under CI=true it
// fails (internal/testenv).
package bgptest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// BGPD is FRR's bgpd as Debian installs it.
const BGPD = "/usr/lib/frr/bgpd"

// Daemon is a routing daemon run for a test, stopped by its PID (SIGTERM,
// then SIGKILL) when the test ends, its log shown when the test failed.
type Daemon struct {
	Name string
	cmd  *exec.Cmd
	done <-chan struct{}
}

// StartDaemon runs argv in ns with its output in logPath.
func StartDaemon(t *testing.T, ns *nettest.NS, name, logPath string, argv ...string) *Daemon {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Name: name, cmd: ns.Command(argv[0], argv[1:]...)}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if d.done, err = testenv.StartTied(d.cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		d.Stop()
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("log of %s:\n%s", name, Tail(string(b), 150))
			}
		}
	})
	return d
}

// Stop ends the daemon by its PID: SIGTERM, then SIGKILL after 5 s.
func (d *Daemon) Stop() {
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

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TempDir is a short directory removed when the test ends: socket paths
// in it must fit sun_path, which t.TempDir's may not.
func TempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FRR is a running bgpd.
type FRR struct {
	*Daemon
	// Dir holds its configuration, pid file, vty socket and log.
	Dir string
}

// StartFRR runs bgpd with conf in ns, without zebra (-Z: it installs no
// route and considers every next hop reachable), and waits for its vty
// socket.
func StartFRR(t *testing.T, ns *nettest.NS, name, conf string) *FRR {
	t.Helper()
	testenv.NeedFile(t, BGPD)
	testenv.NeedCommand(t, "vtysh")
	dir := TempDir(t, "mpsa-frr-")
	confPath := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -P 0: no TCP vty; -S: stay root (the vty socket then needs no
	// frrvty group).
	d := &FRR{Dir: dir, Daemon: StartDaemon(t, ns, name, filepath.Join(dir, "bgpd.log"),
		BGPD, "-f", confPath, "-i", filepath.Join(dir, "bgpd.pid"), "--vty_socket", dir, "-Z", "-P", "0", "-S", "--log", "stdout", "--log-level", "debug")}
	testenv.WaitFor(t, 10*time.Second, name+"'s vty socket", func() (bool, string) {
		_, err := os.Stat(filepath.Join(dir, "bgpd.vty"))
		return err == nil, fmt.Sprint(err)
	})
	return d
}

// Vtysh runs a show command against this bgpd.
func (d *FRR) Vtysh(t *testing.T, command string) string {
	t.Helper()
	out, err := exec.Command("vtysh", "--vty_socket", d.Dir, "-d", "bgpd", "-c", command).CombinedOutput()
	if err != nil {
		t.Fatalf("vtysh %q: %v: %s", command, err, out)
	}
	return string(out)
}

// frrTable is the part of `show bgp ... json` the tests read.
type frrTable struct {
	Routes map[string][]struct {
		Valid    bool `json:"valid"`
		Nexthops []struct {
			IP string `json:"ip"`
		} `json:"nexthops"`
	} `json:"routes"`
}

// Routes returns, for family (ipv4 or ipv6), prefix -> the next hops of
// every valid path bgpd has, IPv4-mapped IPv6 addresses unmapped.
func (d *FRR) Routes(t *testing.T, family string) map[string][]string {
	t.Helper()
	var tb frrTable
	out := d.Vtysh(t, "show bgp "+family+" unicast json")
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

// StartBIRD runs bird with conf in ns.
func StartBIRD(t *testing.T, ns *nettest.NS, conf string) *Daemon {
	t.Helper()
	bird := testenv.NeedCommand(t, "bird")
	dir := TempDir(t, "mpsa-bird-")
	confPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return StartDaemon(t, ns, "bird", filepath.Join(dir, "bird.log"),
		bird, "-f", "-c", confPath, "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
}

// Site is a member site whose BGP speaker is FRR: its control address
// (the control child's local traffic selector), the controller's, its
// underlay (the next hop ESP goes to) and its prefixes.
type Site struct {
	ASN               uint32
	RouterID          netip.Addr
	Controller, Local netip.Addr
	Underlay          netip.Addr
	Prefixes          []netip.Prefix
}

// FRRMemberConf is what an operator writes for FRR as the BGP speaker of
// a member site (docs/bgp.md shows it): iBGP to the controller's control
// address from the site's own, the site's prefixes advertised with the
// site's underlay address as next hop, graceful restart.
// `no bgp network import-check` is there because bgpd runs without zebra.
func FRRMemberConf(s Site) string {
	var v4, v6 []string
	for _, p := range s.Prefixes {
		if p.Addr().Is4() {
			v4 = append(v4, p.String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	nh6 := "::ffff:" + s.Underlay.String()
	ext := ""
	if s.Underlay.Is6() {
		nh6 = s.Underlay.String()
		ext = fmt.Sprintf(" neighbor %s capability extended-nexthop\n", s.Controller)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `frr defaults traditional
hostname member
!
route-map MPSA-OUT permit 10
`)
	if s.Underlay.Is4() {
		fmt.Fprintf(&b, " set ip next-hop %s\n", s.Underlay)
	}
	fmt.Fprintf(&b, ` set ipv6 next-hop global %[5]s
!
router bgp %[1]d
 bgp router-id %[2]s
 no bgp network import-check
 bgp graceful-restart
 neighbor %[3]s remote-as %[1]d
 neighbor %[3]s update-source %[4]s
%[6]s address-family ipv4 unicast
`, s.ASN, s.RouterID, s.Controller, s.Local, nh6, ext)
	for _, p := range v4 {
		fmt.Fprintf(&b, "  network %s\n", p)
	}
	fmt.Fprintf(&b, "  neighbor %s route-map MPSA-OUT out\n exit-address-family\n address-family ipv6 unicast\n", s.Controller)
	for _, p := range v6 {
		fmt.Fprintf(&b, "  network %s\n", p)
	}
	fmt.Fprintf(&b, "  neighbor %[1]s activate\n  neighbor %[1]s route-map MPSA-OUT out\n exit-address-family\n!\n", s.Controller)
	return b.String()
}

// Client is a route reflector client: a member's control address, and
// the reflector's control address on its control child.
type Client struct {
	Addr, Local netip.Addr
}

// FRRReflectorConf makes bgpd the route reflector of clients: graceful
// restart, both families, no next-hop-self.
func FRRReflectorConf(asn uint32, routerID netip.Addr, clients []Client) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname reflector\n!\nrouter bgp %d\n bgp router-id %s\n bgp graceful-restart\n", asn, routerID)
	for _, c := range clients {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s update-source %s\n", c.Addr, asn, c.Addr, c.Local)
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n", af)
		for _, c := range clients {
			fmt.Fprintf(&b, "  neighbor %s activate\n  neighbor %s route-reflector-client\n", c.Addr, c.Addr)
		}
		b.WriteString(" exit-address-family\n")
	}
	return b.String() + "!\n"
}

// BIRDReflectorConf makes BIRD 2 the route reflector of clients.
func BIRDReflectorConf(asn uint32, routerID netip.Addr, clients []Client) string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id %s;
log stderr all;
protocol device { }
template bgp mpsa {
  local as %d;
  rr client;
  graceful restart on;
  ipv4 { import all; export all; extended next hop on; };
  # IPv6 prefixes of IPv4 underlays come with IPv4-mapped next hops,
  # which BIRD takes only with this.
  ipv6 { import all; export all; extended next hop on; };
}
`, routerID, asn)
	for i, c := range clients {
		fmt.Fprintf(&b, "protocol bgp m%d from mpsa { neighbor %s as %d; source address %s; }\n", i+1, c.Addr, asn, c.Local)
	}
	return b.String()
}
