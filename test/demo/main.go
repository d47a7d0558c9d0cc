// Command demo shows mpsa working on one machine: a controller and three
// members (CPEs), each in its own network namespace with a real charon and
// a real mpsad, traffic between the members' LANs over the one shared SA,
// and a rekey under traffic. Run it as root through `make demo`.
//
// When it fails it says why in the daemons' own words, removes the
// namespaces and keeps each node's folder under the temporary directory
// ($TMPDIR, else /tmp: mpsa-demo-*, with charon's and mpsad's logs and
// configuration), naming the folders and the command that removes them.
// Interrupted (Ctrl-C, SIGTERM), it says so, stops everything and removes
// it all.
//
// Environment:
//
//	MPSA_DEMO_KEEP                      non-empty: keep the nodes' folders after a run that passed too
//	MPSA_DEMO_CONTROLLER_OMIT_PLUGINS   charon plugins the controller's charon does not load, such as
//	                                    "gcm openssl": the failure of a fresh Debian without
//	                                    libstrongswan-standard-plugins (the demo's own test uses it)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/test/charon"
	"github.com/mpsa/mpsa/vici"
)

const members = 3

// The group's rollover times: short, so that the demo sees a whole rekey.
const (
	rollover1 = 2 * time.Second
	rollover2 = 4 * time.Second
)

func main() {
	bin := flag.String("bin", "bin", "directory holding mpsad and mpsactl")
	flag.Parse()
	d := &demo{bin: *bin, setup: testenv.Program{Prefix: "demo: "}}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := d.run(ctx)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case interrupted:
		// Asked to stop: nothing to explain, and nothing to keep.
		fmt.Fprintf(os.Stderr, "\ndemo interrupted: stopping mpsad and charon, removing the namespaces and files\n")
		d.cleanup(false)
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		d.explain()
		d.cleanup(true)
		os.Exit(1)
	}
	d.cleanup(false)
}

type node struct {
	name   string
	ns     *nettest.NS
	peer   charon.Peer
	lan    netip.Prefix
	dir    string
	charon *charon.Instance
	mpsad  *exec.Cmd
}

func (n *node) lanAddr() netip.Addr { return n.lan.Addr().Next() }
func (n *node) sock() string        { return filepath.Join(n.dir, "mpsad.sock") }

type demo struct {
	bin string
	// setup is the testenv.TB the demo hands to test/charon's Lab and
	// internal/nettest: a failure ends run with its error, and the
	// namespaces go at cleanup.
	setup testenv.Program
	nodes []*node // controller first
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func (d *demo) run(ctx context.Context) (err error) {
	defer d.setup.Recover(&err)
	step("mpsa demo: one controller and %d CPEs, each in its own network namespace", members)
	say("   underlay 192.0.2.0/24 on a bridge; control addresses 10.98.N.1 on lo; CPE LANs 10.1.N.0/24")
	// test/charon's Lab: the namespaces on a bridge, their underlay and
	// control addresses, and the PSK group over them.
	lab := charon.NewLab(&d.setup, charon.LabOptions{Members: members, PSK: "mpsa-demo-psk-0123456789"})
	group := lab.Group
	for i, ln := range append([]charon.Node{lab.Controller}, lab.Members...) {
		n := &node{name: "controller", ns: ln.NS, peer: ln.Peer}
		if i > 0 {
			n.name = fmt.Sprintf("cpe%d", i)
			n.lan = netip.MustParsePrefix(fmt.Sprintf("10.1.%d.0/24", i))
			nettest.LAN(&d.setup, n.ns, "lan0", netip.PrefixFrom(n.lanAddr(), n.lan.Bits()).String())
		}
		dir, err := os.MkdirTemp("", "mpsa-demo-")
		if err != nil {
			return err
		}
		n.dir = dir
		d.nodes = append(d.nodes, n)
	}

	step("1. charon (strongSwan, kernel-libipsec) in every namespace; each CPE runs IKEv2 to the controller")
	for i, n := range d.nodes {
		conf := group.ControllerConf() + d.controllerMPSA(group, n)
		if i > 0 {
			conf = group.MemberConf(i-1) + d.memberMPSA(group, n)
		}
		cc := charon.Config{NetNS: n.ns.Name, Dir: n.dir, SwanctlConf: conf,
			// the demo says what happens in its own words
			Logger: slog.New(slog.DiscardHandler)}
		if i == 0 {
			// MPSA_DEMO_CONTROLLER_OMIT_PLUGINS="gcm openssl" shows a
			// failure as a fresh Debian without
			// libstrongswan-standard-plugins had it (the demo's
			// own test uses it).
			cc.OmitPlugins = strings.Fields(os.Getenv("MPSA_DEMO_CONTROLLER_OMIT_PLUGINS"))
		}
		in, err := charon.Launch(ctx, cc)
		if err != nil {
			return fmt.Errorf("charon on %s: %w", n.name, err)
		}
		n.charon = in
		say("   %-10s charon up, swanctl.conf loaded (it also holds the mpsa { } section: %s)", n.name, filepath.Join(in.SwanctlDir(), "swanctl.conf"))
	}

	step("2. mpsad beside each charon: the controller generates ONE group SA and pushes it to every CPE")
	for _, n := range d.nodes {
		if err := d.startMPSAD(n); err != nil {
			return err
		}
	}
	spi, err := d.waitSPI(ctx, "")
	if err != nil {
		return err
	}
	for _, n := range d.nodes[1:] {
		say("   %-10s sends and receives with SPI %s", n.name, spi)
	}

	step("3. traffic between CPE LANs goes straight from CPE to CPE as ESP with that SPI")
	const wantESP = 4
	capt, err := nettest.StartCapture(d.nodes[1].ns, "eth0", "-c", fmt.Sprint(wantESP), "ip proto 50")
	if err != nil {
		return err
	}
	ctlCapt, err := nettest.StartCapture(d.nodes[0].ns, "eth0", "ip proto 50")
	if err != nil {
		capt.Stop(0)
		return err
	}
	for _, pair := range [][2]int{{1, 2}, {2, 3}, {3, 1}} {
		a, b := d.nodes[pair[0]], d.nodes[pair[1]]
		s, r, err := nettest.Ping(a.ns, a.lanAddr(), b.lanAddr(), 5, "0.2")
		if err != nil {
			say("   %v", err)
		}
		say("   ping %s (%s LAN) -> %s (%s LAN): %d/%d answered", a.lanAddr(), a.name, b.lanAddr(), b.name, r, s)
	}
	// tcpdump -c stops by itself after wantESP packets; if fewer came, it
	// is stopped after a grace time and prints what it has.
	out := strings.Join(capt.Stop(5*time.Second), "\n")
	ctlOut := strings.Join(ctlCapt.Stop(0), "\n")
	say("   on cpe1's wire (tcpdump -i eth0 'ip proto 50'):")
	for _, l := range strings.Split(out, "\n") {
		say("      %s", l)
	}
	if n := strings.Count(out, "ESP("); n < wantESP {
		say("   (only %d ESP packets captured of the %d expected)", n, wantESP)
	}
	say("   on the controller's wire in the same time: %d ESP packets (the controller carries no CPE traffic)", strings.Count(ctlOut, "ESP("))

	step("4. mpsactl status on the controller")
	d.mpsactl(d.nodes[0], "status")
	step("5. mpsactl status on cpe1")
	d.mpsactl(d.nodes[1], "status")

	step("6. rekey with traffic running: cpe1 pings cpe3 every 10 ms while the controller rekeys")
	type result struct {
		s, r int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		a, b := d.nodes[1], d.nodes[3]
		s, r, err := nettest.Ping(a.ns, a.lanAddr(), b.lanAddr(), 1000, "0.01")
		res <- result{s, r, err}
	}()
	time.Sleep(2 * time.Second)
	say("   $ mpsactl rekey lab")
	rekeyed := time.Now()
	d.mpsactl(d.nodes[0], "rekey", "lab")
	newSPI, err := d.waitSPI(ctx, spi)
	if err != nil {
		return err
	}
	say("   every CPE took the new SA %s inbound at once and sends with it since rollover1 (%v)", newSPI, rollover1)
	gone, err := d.waitGone(ctx, spi, rekeyed, rollover2, 2*time.Second)
	if err != nil {
		return err
	}
	say("   %s (the old SA) left every CPE's inbound SPIs %.1f s after the rekey (rollover2 is %v); cpe1's mpsactl status now:", spi, gone.Seconds(), rollover2)
	d.mpsactl(d.nodes[1], "status")
	r := <-res
	if r.err != nil {
		return r.err
	}
	say("   %d pings sent, %d answered: %d lost", r.s, r.r, r.s-r.r)
	if r.s != r.r {
		return fmt.Errorf("%d packets lost across the rekey", r.s-r.r)
	}
	step("7. done: stopping mpsad and charon, removing the namespaces")
	return nil
}

func (d *demo) controllerMPSA(g charon.Group, n *node) string {
	return g.MPSASection(charon.MPSA{Role: "controller", Dir: n.dir, StatusSocket: n.sock(), Settings: []string{
		"esp_proposal = aes256-sha256", "lifetime = 1h", "rekey_time = 50m",
		fmt.Sprintf("rollover1 = %ds", rollover1/time.Second), fmt.Sprintf("rollover2 = %ds", rollover2/time.Second),
	}})
}

func (d *demo) memberMPSA(g charon.Group, n *node) string {
	var routes []charon.Route
	for _, o := range d.nodes[1:] {
		if o != n {
			routes = append(routes, charon.Route{Name: o.name, Prefix: o.lan, Peer: o.peer.Underlay})
		}
	}
	settings := append([]string{
		"dataplane = userspace          # this machine's kernel has no ESP",
		"tun = mpsa0",
		"local_ts = " + n.lan.String(),
	}, charon.RoutesSection(routes)...)
	return g.MPSASection(charon.MPSA{Role: "member", Dir: n.dir, StatusSocket: n.sock(), Settings: settings})
}

func (d *demo) startMPSAD(n *node) error {
	logf, err := os.Create(filepath.Join(n.dir, "mpsad.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := n.ns.Command(filepath.Join(d.bin, "mpsad"), "--config", filepath.Join(n.charon.SwanctlDir(), "swanctl.conf"))
	// Each node's own state directory, not this host's /var/lib/mpsad.
	cmd.Env = append(os.Environ(), "STATE_DIRECTORY="+filepath.Join(n.dir, "state"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mpsad on %s: %w", n.name, err)
	}
	n.mpsad = cmd
	say("   %-10s mpsad started (pid %d, log %s)", n.name, cmd.Process.Pid, logf.Name())
	return nil
}

// waitSPI waits until every member sends with the controller's SPI, and
// that SPI differs from not.
//
// When the daemons say why it cannot happen (a control child charon did
// not install, a charon without what the control child needs), it stops
// waiting after 10 s and fails with their words.
func (d *demo) waitSPI(ctx context.Context, not string) (string, error) {
	start := time.Now()
	deadline := start.Add(time.Minute)
	for time.Now().Before(deadline) {
		if spi, ok := d.commonSPI(ctx); ok && spi != not {
			return spi, nil
		}
		if time.Since(start) > 10*time.Second {
			if p := d.problems(ctx); len(p) > 0 {
				return "", fmt.Errorf("the CPEs did not all receive the group SA; the daemons say why:\n  %s", strings.Join(p, "\n  "))
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("the CPEs did not all receive the group SA within a minute")
}

// waitGone waits until no CPE has old among its inbound SPIs and returns
// how long after rekeyed that was. It fails if that happens before roll2,
// the group's rollover2 (a CPE would drop packets still in flight with
// the old SA), or not within grace after it.
func (d *demo) waitGone(ctx context.Context, old string, rekeyed time.Time, roll2, grace time.Duration) (time.Duration, error) {
	deadline := rekeyed.Add(roll2 + grace)
	for {
		holders, err := d.inboundHolders(ctx, old)
		elapsed := time.Since(rekeyed)
		switch {
		case err != nil:
			// a status socket that does not answer is a failure too
		case len(holders) == 0 && elapsed < roll2:
			return 0, fmt.Errorf("the old SA %s was removed %.1f s after the rekey, before rollover2 (%v)", old, elapsed.Seconds(), roll2)
		case len(holders) == 0:
			return elapsed, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%s still receive with it", strings.Join(holders, ", "))
			}
			return 0, fmt.Errorf("the old SA %s is not gone %.1f s after the rekey (rollover2 is %v): %w", old, elapsed.Seconds(), roll2, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// inboundHolders names the CPEs that have spi among their inbound SPIs.
func (d *demo) inboundHolders(ctx context.Context, spi string) ([]string, error) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var holders []string
	for _, n := range d.nodes[1:] {
		st, err := server.NewClient(n.sock()).Status(c)
		if err != nil {
			return nil, fmt.Errorf("status of %s: %w", n.name, err)
		}
		if len(st.Groups) == 0 {
			return nil, fmt.Errorf("%s has no group", n.name)
		}
		if slices.Contains(st.Groups[0].InboundSPIs, spi) {
			holders = append(holders, n.name)
		}
	}
	return holders, nil
}

// problems are what every node's mpsad says is wrong: what its charon
// lacks, and control children that are not up, each with the node's name.
func (d *demo) problems(ctx context.Context) []string {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var out []string
	for _, n := range d.nodes {
		st, err := server.NewClient(n.sock()).Status(c)
		if err != nil {
			continue
		}
		for _, g := range st.Groups {
			for _, p := range g.CharonProblems {
				out = append(out, n.name+": "+p)
			}
			for _, p := range g.ControlProblems {
				out = append(out, n.name+": "+p.Problem)
			}
		}
	}
	return out
}

func (d *demo) commonSPI(ctx context.Context) (string, bool) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cs, err := server.NewClient(d.nodes[0].sock()).Status(c)
	if err != nil || len(cs.Groups) == 0 {
		return "", false
	}
	spi := cs.Groups[0].SPI
	for _, n := range d.nodes[1:] {
		ms, err := server.NewClient(n.sock()).Status(c)
		if err != nil || len(ms.Groups) == 0 || ms.Groups[0].OutboundSPI != spi {
			return "", false
		}
	}
	return spi, true
}

func (d *demo) mpsactl(n *node, args ...string) {
	cmd := exec.Command(filepath.Join(d.bin, "mpsactl"), append(args, "--socket", n.sock())...)
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		say("   %s", l)
	}
	if err != nil {
		say("   (mpsactl: %v)", err)
	}
}

// explain prints what tells why the demo failed: each node's mpsactl
// status, the warnings and errors in its mpsad log and the lines of its
// charon log that say why an SA or a plugin failed, with the paths of the
// whole logs, which are kept.
func (d *demo) explain() {
	var dirs []string
	for _, n := range d.nodes {
		if n.dir != "" {
			dirs = append(dirs, n.dir)
		}
	}
	fmt.Fprintf(os.Stderr, "\nwhat the daemons say (their files are kept; rm -r %s removes them):\n", strings.Join(dirs, " "))
	for _, n := range d.nodes {
		if n.dir == "" {
			continue
		}
		fmt.Fprintf(os.Stderr, "\n== %s (%s)\n", n.name, n.dir)
		if n.mpsad != nil {
			out, _ := exec.Command(filepath.Join(d.bin, "mpsactl"), "status", "--socket", n.sock()).CombinedOutput()
			fmt.Fprintf(os.Stderr, "   $ mpsactl status\n%s", indent(string(out), "   "))
		}
		mlog := filepath.Join(n.dir, "mpsad.log")
		printMatching(mlog, "mpsad.log, warnings and errors", func(l string) bool {
			return strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")
		})
		printMatching(filepath.Join(n.dir, "charon.log"), "charon.log, what failed", func(l string) bool {
			return strings.Contains(l, "failed to load") || vici.ExplainsChildFailure(l)
		})
	}
}

// printMatching prints the lines of the file that match (at most the last
// 15 of them) under a heading with the file's path.
func printMatching(path, what string, match func(string) bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "   %s: %v\n", what, err)
		return
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if match(l) && !slices.Contains(lines, l) {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		fmt.Fprintf(os.Stderr, "   %s (%s): nothing\n", what, path)
		return
	}
	fmt.Fprintf(os.Stderr, "   %s (%s):\n", what, path)
	for _, l := range lines[max(0, len(lines)-15):] {
		fmt.Fprintf(os.Stderr, "      %s\n", l)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

// cleanup stops every process by PID and removes the namespaces, and the
// files unless keep (after a failure, whose explanation points at them).
func (d *demo) cleanup(keep bool) {
	for _, n := range d.nodes {
		if n.mpsad != nil && n.mpsad.Process != nil {
			n.mpsad.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { n.mpsad.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				n.mpsad.Process.Kill()
			}
		}
	}
	for _, n := range d.nodes {
		if n.charon != nil {
			n.charon.Close()
		}
		if n.dir != "" && !keep && os.Getenv("MPSA_DEMO_KEEP") == "" {
			os.RemoveAll(n.dir)
		}
	}
	d.setup.RunCleanups()
}
