// Package e2e runs mpsad end to end: a controller and members, each in its
// own network namespace with a real charon (kernel-libipsec carries the
// control child, as this kernel has no ESP) and a real mpsad process;
// members use the userspace data plane. Traffic between member LANs is
// real packets through real TUN devices, as raw ESP on the wire.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/test/charon"
)

// binDir holds mpsad and mpsactl built for this run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	d, err := os.MkdirTemp("", "mpsa-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(d)
	out, err := exec.Command("go", "build", "-o", d+"/", "../../cmd/mpsad", "../../cmd/mpsactl").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build mpsad: %v\n%s", err, out)
		return 1
	}
	binDir = d
	return m.Run()
}

// groupTimers are the controller's settings of a test group.
type groupTimers struct {
	Lifetime, RekeyTime, Rollover1, Rollover2 string
	RekeyOnLeave, RekeyOnJoin                 bool
}

func defaultTimers() groupTimers {
	return groupTimers{Lifetime: "1h", RekeyTime: "50m", Rollover1: "2s", Rollover2: "4s", RekeyOnLeave: true}
}

// env is one test's world: the charon lab plus mpsad on every node.
type env struct {
	t      *testing.T
	lab    *charon.Lab
	timers groupTimers
	v6     bool // IPv6 member LANs
	// ctlOmitPlugins are left out of the controller charon's plugins.
	ctlOmitPlugins []string
	encap          bool // ESP in UDP between the members
	// bgp: the members learn each other from the controller's route
	// reflector (bgp { } instead of routes { }); see bgp_test.go.
	bgp  *bgpOptions
	ctl  *node
	mems []*node
}

// node is one namespace with its charon and mpsad.
type node struct {
	name   string
	ns     *nettest.NS
	peer   charon.Peer
	dir    string
	charon *charon.Instance
	mpsad  *exec.Cmd
	exited chan struct{}
	lan    netip.Prefix // member LAN; its .1 is on lan0
}

type envOptions struct {
	members   int
	underlay6 bool
	control6  bool
	lan6      bool
	timers    groupTimers
	// late lists members (1-based) that are set up but not started.
	late map[int]bool
	// encap carries the members' ESP in UDP (encap = yes).
	encap bool
	// ctlOmitPlugins leaves plugins out of the controller charon's load
	// list.
	ctlOmitPlugins []string
	// bgp replaces the members' static routes with BGP.
	bgp *bgpOptions
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	testenv.NeedCommand(t, "ping")
	testenv.NeedCommand(t, "tcpdump")
	if o.timers == (groupTimers{}) {
		o.timers = defaultTimers()
	}
	lab := charon.NewLab(t, charon.LabOptions{Members: o.members, Underlay6: o.underlay6, Control6: o.control6})
	e := &env{t: t, lab: lab, timers: o.timers, v6: o.lan6, encap: o.encap, ctlOmitPlugins: o.ctlOmitPlugins, bgp: o.bgp}
	mk := func(name string, n charon.Node) *node {
		dir, err := os.MkdirTemp("", "mpsa-e2e-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return &node{name: name, ns: n.NS, peer: n.Peer, dir: dir}
	}
	e.ctl = mk("controller", lab.Controller)
	for i, m := range lab.Members {
		nd := mk(fmt.Sprintf("member%d", i+1), m)
		if o.lan6 {
			nd.lan = netip.MustParsePrefix(fmt.Sprintf("fd01:%d::/64", i+1))
		} else {
			nd.lan = netip.MustParsePrefix(fmt.Sprintf("10.1.%d.0/24", i+1))
		}
		nettest.LAN(t, nd.ns, "lan0", netip.PrefixFrom(nd.lanAddr(), nd.lan.Bits()).String())
		e.mems = append(e.mems, nd)
	}
	e.startNode(e.ctl, lab.Group.ControllerConf()+e.controllerMPSA())
	for i := range e.mems {
		if !o.late[i+1] {
			e.startMember(i)
		}
	}
	return e
}

// startMember starts member i (from 0) with its charon and mpsad.
func (e *env) startMember(i int) {
	e.startNode(e.mems[i], e.lab.Group.MemberConf(i)+e.memberMPSA(i))
}

func (n *node) lanAddr() netip.Addr { return n.lan.Addr().Next() }

func (n *node) sock() string { return filepath.Join(n.dir, "mpsad.sock") }

// mpsaSection is the mpsa { } section of node n, with debug logs and
// metrics, and the group settings given.
func (e *env) mpsaSection(n *node, role string, settings []string) string {
	return e.lab.Group.MPSASection(charon.MPSA{Role: role, Dir: n.dir, StatusSocket: n.sock(),
		Globals: []string{"log_level = debug", "metrics_listen = 127.0.0.1:9474"}, Settings: settings})
}

func (e *env) controllerMPSA() string {
	tm := e.timers
	settings := []string{
		"esp_proposal = aes256-sha256",
		"lifetime = " + tm.Lifetime, "rekey_time = " + tm.RekeyTime,
		"rollover1 = " + tm.Rollover1, "rollover2 = " + tm.Rollover2,
		"rekey_on_leave = " + yes(tm.RekeyOnLeave), "rekey_on_join = " + yes(tm.RekeyOnJoin),
	}
	if e.bgp != nil {
		settings = append(settings, e.reflectorSection()...)
	}
	return e.mpsaSection(e.ctl, "controller", settings)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (e *env) memberMPSA(i int) string {
	m := e.mems[i]
	var routes []charon.Route
	for j, o := range e.mems {
		if j != i {
			routes = append(routes, charon.Route{Name: fmt.Sprintf("m%d", j+1), Prefix: o.lan, Peer: o.peer.Underlay})
		}
	}
	settings := []string{"dataplane = userspace", "tun = mpsa0", "local_ts = " + e.localTS(i)}
	if e.encap {
		settings = append(settings, "encap = yes")
	}
	if e.bgp != nil {
		return e.mpsaSection(m, "member", append(settings, e.bgpMemberSection(i)...))
	}
	return e.mpsaSection(m, "member", append(settings, charon.RoutesSection(routes)...))
}

// scrape fetches the node's Prometheus metrics (served on 127.0.0.1:9474
// inside its namespace).
func (n *node) scrape(t *testing.T) string {
	t.Helper()
	body, err := n.ns.HTTPGet(t.Context(), "127.0.0.1:9474", "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics on %s: %v", n.name, err)
	}
	return string(body)
}

// metricLine reports whether the exposition has a series line starting
// with prefix (name and labels) and the value.
func metricLine(body, prefix, value string) bool {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) && strings.TrimSpace(strings.TrimPrefix(l, prefix)) == value {
			return true
		}
	}
	return false
}

// startNode starts charon with conf (swanctl.conf and the mpsa section in
// one file) and then mpsad reading the same file.
func (e *env) startNode(n *node, conf string) {
	e.t.Helper()
	cfg := charon.Config{Dir: n.dir, SwanctlConf: conf}
	if n == e.ctl {
		cfg.OmitPlugins = e.ctlOmitPlugins
	}
	n.charon = charon.Start(e.t, n.ns, cfg)
	e.startMPSAD(n)
}

func (e *env) startMPSAD(n *node) {
	t := e.t
	t.Helper()
	conf := filepath.Join(n.charon.SwanctlDir(), "swanctl.conf")
	logf, err := os.OpenFile(filepath.Join(n.dir, "mpsad.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.ns.Command(filepath.Join(binDir, "mpsad"), "--config", conf)
	// Every node's own state directory: the nodes share this host's
	// /var/lib, and a test must not write there.
	cmd.Env = append(os.Environ(), "STATE_DIRECTORY="+filepath.Join(n.dir, "state"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mpsad on %s: %v", n.name, err)
	}
	logf.Close()
	n.mpsad, n.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(cmd, n.exited)
	t.Cleanup(func() {
		e.stopMPSAD(n)
		if t.Failed() || os.Getenv("MPSA_E2E_LOG") != "" {
			b, _ := os.ReadFile(filepath.Join(n.dir, "mpsad.log"))
			t.Logf("mpsad on %s:\n%s", n.name, b)
		}
	})
}

// stopMPSAD stops mpsad by PID: SIGTERM, then SIGKILL after 10 s.
func (e *env) stopMPSAD(n *node) {
	if n.mpsad == nil {
		return
	}
	select {
	case <-n.exited:
	default:
		n.mpsad.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			e.t.Errorf("mpsad on %s ignored SIGTERM; killing it", n.name)
			n.mpsad.Process.Kill()
			<-n.exited
		}
	}
	n.mpsad = nil
}

// logCount counts the lines of n's mpsad log that contain s.
func (n *node) logCount(t *testing.T, s string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "mpsad.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// status is tryStatus that fails the test on an error.
func (n *node) status(t *testing.T) server.Status {
	t.Helper()
	st, err := n.tryStatus()
	if err != nil {
		t.Fatalf("status of %s: %v", n.name, err)
	}
	return st
}

// waitFor polls cond for up to a minute; it fails the test with what's
// last seen if the condition never holds.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.WaitFor(t, time.Minute, what, cond)
}

// tryStatus is status without failing, for polling while a daemon starts.
func (n *node) tryStatus() (server.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return server.NewClient(n.sock()).Status(ctx)
}

// waitSPI waits until every listed member sends with the same SPI, the
// controller's current one, and returns it.
func (e *env) waitSPI(members ...*node) string {
	e.t.Helper()
	return e.waitSPINot("", members...)
}

// waitSPINot is waitSPI for an SPI other than not (any SPI if not is
// empty): after a rekey, waitSPINot(old, ...) waits for the new one.
func (e *env) waitSPINot(not string, members ...*node) string {
	e.t.Helper()
	what := "every member to send with the controller's SPI"
	if not != "" {
		what += ", a new one instead of " + not
	}
	var spi string
	waitFor(e.t, what, func() (bool, string) {
		cs, err := e.ctl.tryStatus()
		if err != nil || len(cs.Groups) != 1 {
			return false, fmt.Sprint("controller: ", err)
		}
		spi = cs.Groups[0].SPI
		if spi == not {
			return false, "controller still on " + not
		}
		var seen []string
		for _, m := range members {
			ms, err := m.tryStatus()
			if err != nil || len(ms.Groups) != 1 {
				return false, fmt.Sprintf("%s: %v", m.name, err)
			}
			seen = append(seen, m.name+"="+ms.Groups[0].OutboundSPI)
			if ms.Groups[0].OutboundSPI != spi {
				return false, fmt.Sprintf("controller %s, members %v", spi, seen)
			}
		}
		return true, ""
	})
	return spi
}

// ping sends count pings from a's LAN address to b's at interval and
// returns how many were answered; it fails the test if ping prints no
// summary. ping is killed if the test ends first.
func ping(t *testing.T, a, b *node, count int, interval string) (sent, received int) {
	t.Helper()
	sent, received, err := tryPing(t.Context(), a, b, count, interval)
	if err != nil {
		t.Fatal(err)
	}
	return sent, received
}

// tryPing is ping without a test, for use off the test's goroutine; ping
// is killed when ctx is done.
func tryPing(ctx context.Context, a, b *node, count int, interval string) (sent, received int, err error) {
	return nettest.PingContext(ctx, a.ns, a.lanAddr(), b.lanAddr(), count, interval)
}

// statusJSON runs `mpsactl status --json` against n and returns its
// groups as generic objects, to see which fields are there.
func (n *node) statusJSON(t *testing.T) []map[string]json.RawMessage {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), filepath.Join(binDir, "mpsactl"), "status", "--json", "--socket", n.sock()).Output()
	if err != nil {
		t.Fatalf("mpsactl status --json on %s: %v", n.name, err)
	}
	var st struct {
		Role   string
		Groups []map[string]json.RawMessage
	}
	if err := json.Unmarshal(out, &st); err != nil || st.Role == "" {
		t.Fatalf("mpsactl status --json on %s: %v\n%s", n.name, err, out)
	}
	return st.Groups
}

// netStats reads the kernel's SNMP counters in n's namespace
// (/proc/net/snmp and /proc/net/netstat are per namespace), keyed
// "Tcp:RetransSegs", "TcpExt:TCPLossProbes" and so on.
func (n *node) netStats(t *testing.T) map[string]uint64 {
	t.Helper()
	st := map[string]uint64{}
	for _, f := range []string{"/proc/net/snmp", "/proc/net/netstat"} {
		lines := strings.Split(n.ns.Run(t, "cat", f), "\n")
		// Each protocol has a line of names and then one of values.
		for i := 0; i+1 < len(lines); i++ {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) < 2 || len(names) != len(values) || names[0] != values[0] || !strings.HasSuffix(names[0], ":") {
				continue
			}
			for j := 1; j < len(names); j++ {
				if v, err := strconv.ParseUint(values[j], 10, 64); err == nil {
					st[names[0]+names[j]] = v
				}
			}
			i++
		}
	}
	if _, ok := st["Tcp:RetransSegs"]; !ok {
		t.Fatalf("no Tcp RetransSegs in %s's /proc/net/snmp", n.name)
	}
	return st
}

// linkStat reads a statistics counter of a link in n's namespace
// (ip netns exec mounts the namespace's own /sys).
func (n *node) linkStat(t *testing.T, link, stat string) uint64 {
	t.Helper()
	out := n.ns.Run(t, "cat", "/sys/class/net/"+link+"/statistics/"+stat)
	v, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("%s %s %s: %q", n.name, link, stat, out)
	}
	return v
}

// metricValue is the value of the series line starting with prefix (name
// and labels), failing the test when there is none.
func metricValue(t *testing.T, body, prefix string) float64 {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", prefix, l)
			}
			return v
		}
	}
	t.Fatalf("no metric %s", prefix)
	return 0
}

// duration parses a test timer setting.
func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
