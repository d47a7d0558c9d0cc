// Command demo shows mpsa working on one machine: a controller and three
// members (CPEs), each in its own network namespace with a real charon and
// a real mpsad, traffic between the members' LANs over the one shared SA,
// and a rekey under traffic. Run it as root through `make demo`.
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
	"strings"
	"syscall"
	"time"

	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/test/charon"
)

const members = 3

func main() {
	bin := flag.String("bin", "bin", "directory holding mpsad and mpsactl")
	flag.Parse()
	d := &demo{bin: *bin}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := d.run(ctx)
	stop()
	d.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

type node struct {
	name, ns string
	peer     charon.Peer
	lan      netip.Prefix
	dir      string
	charon   *charon.Instance
	mpsad    *exec.Cmd
}

func (n *node) lanAddr() netip.Addr { return n.lan.Addr().Next() }
func (n *node) sock() string        { return filepath.Join(n.dir, "mpsad.sock") }

type demo struct {
	bin   string
	nss   []string
	nodes []*node // controller first
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func (d *demo) ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (d *demo) in(ns string, args ...string) error {
	return d.ip(append([]string{"netns", "exec", ns}, args...)...)
}

func (d *demo) addNS(name string) error {
	exec.Command("ip", "netns", "del", name).Run() // a leftover of an interrupted demo
	if err := d.ip("netns", "add", name); err != nil {
		return err
	}
	d.nss = append(d.nss, name)
	return d.in(name, "ip", "link", "set", "lo", "up")
}

func (d *demo) run(ctx context.Context) error {
	step("mpsa demo: one controller and %d CPEs, each in its own network namespace", members)
	say("   underlay 192.0.2.0/24 on a bridge; control addresses 10.98.N.1 on lo; CPE LANs 10.1.N.0/24")
	if err := d.addNS("mpsa-demo-sw"); err != nil {
		return err
	}
	if err := d.in("mpsa-demo-sw", "ip", "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	d.in("mpsa-demo-sw", "ip", "link", "set", "br0", "up")
	group := charon.Group{PSK: "mpsa-demo-psk-0123456789"}
	for i := 0; i <= members; i++ {
		n := &node{name: "controller", ns: "mpsa-demo-ctl"}
		under := netip.AddrFrom4([4]byte{192, 0, 2, 1})
		if i > 0 {
			n.name, n.ns = fmt.Sprintf("cpe%d", i), fmt.Sprintf("mpsa-demo-cpe%d", i)
			under = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
			n.lan = netip.MustParsePrefix(fmt.Sprintf("10.1.%d.0/24", i))
		}
		n.peer = charon.Peer{ID: n.name + ".mpsa.demo", Underlay: under, Control: netip.AddrFrom4([4]byte{10, 98, byte(i), 1})}
		if err := d.addNS(n.ns); err != nil {
			return err
		}
		port := fmt.Sprintf("p%d", i)
		if err := d.in("mpsa-demo-sw", "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.ns); err != nil {
			return err
		}
		d.in("mpsa-demo-sw", "ip", "link", "set", port, "master", "br0", "up")
		d.in(n.ns, "ip", "link", "set", "eth0", "up")
		d.in(n.ns, "ip", "addr", "add", under.String()+"/24", "dev", "eth0")
		d.in(n.ns, "ip", "addr", "add", n.peer.Control.String()+"/32", "dev", "lo")
		if n.lan.IsValid() {
			d.in(n.ns, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
			d.in(n.ns, "ip", "link", "set", "lan0", "up")
			d.in(n.ns, "ip", "link", "set", "lan0p", "up")
			d.in(n.ns, "ip", "addr", "add", n.lanAddr().String()+"/24", "dev", "lan0")
		}
		dir, err := os.MkdirTemp("", "mpsa-demo-")
		if err != nil {
			return err
		}
		n.dir = dir
		if i == 0 {
			group.Controller = n.peer
		} else {
			group.Members = append(group.Members, n.peer)
		}
		d.nodes = append(d.nodes, n)
	}

	step("1. charon (strongSwan, kernel-libipsec) in every namespace; each CPE runs IKEv2 to the controller")
	for i, n := range d.nodes {
		conf := group.ControllerConf() + d.controllerMPSA(group, n)
		if i > 0 {
			conf = group.MemberConf(i-1) + d.memberMPSA(group, n)
		}
		in, err := charon.Launch(ctx, charon.Config{NetNS: n.ns, Dir: n.dir, SwanctlConf: conf,
			// the demo says what happens in its own words
			Logger: slog.New(slog.DiscardHandler)})
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
	capt := exec.Command("ip", "netns", "exec", d.nodes[1].ns, "tcpdump", "-p", "-n", "-l", "-c", "4", "-i", "eth0", "ip proto 50")
	out := &strings.Builder{}
	capt.Stdout = out
	capt.Start()
	ctlCapt := exec.Command("ip", "netns", "exec", d.nodes[0].ns, "tcpdump", "-p", "-n", "-l", "-i", "eth0", "ip proto 50")
	ctlOut := &strings.Builder{}
	ctlCapt.Stdout = ctlOut
	ctlCapt.Start()
	time.Sleep(time.Second)
	for _, pair := range [][2]int{{1, 2}, {2, 3}, {3, 1}} {
		a, b := d.nodes[pair[0]], d.nodes[pair[1]]
		s, r := d.ping(a, b, 5, "0.2")
		say("   ping %s (%s LAN) -> %s (%s LAN): %d/%d answered", a.lanAddr(), a.name, b.lanAddr(), b.name, r, s)
	}
	capt.Wait()
	ctlCapt.Process.Signal(syscall.SIGINT)
	ctlCapt.Wait()
	say("   on cpe1's wire (tcpdump -i eth0 'ip proto 50'):")
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		say("      %s", l)
	}
	say("   on the controller's wire in the same time: %d ESP packets (the controller carries no CPE traffic)", strings.Count(ctlOut.String(), "ESP("))

	step("4. mpsactl status on the controller")
	d.mpsactl(d.nodes[0], "status")
	step("5. mpsactl status on cpe1")
	d.mpsactl(d.nodes[1], "status")

	step("6. rekey with traffic running: cpe1 pings cpe3 every 10 ms while the controller rekeys")
	type result struct{ s, r int }
	res := make(chan result, 1)
	go func() { s, r := d.ping(d.nodes[1], d.nodes[3], 1000, "0.01"); res <- result{s, r} }()
	time.Sleep(2 * time.Second)
	say("   $ mpsactl rekey lab")
	d.mpsactl(d.nodes[0], "rekey", "lab")
	newSPI, err := d.waitSPI(ctx, spi)
	if err != nil {
		return err
	}
	say("   every CPE moved from %s to %s (new SA inbound at once, outbound after rollover1, old one removed after rollover2)", spi, newSPI)
	r := <-res
	say("   %d pings sent, %d answered: %d lost", r.s, r.r, r.s-r.r)
	if r.s != r.r {
		return fmt.Errorf("%d packets lost across the rekey", r.s-r.r)
	}
	step("7. done: stopping mpsad and charon, removing the namespaces")
	return nil
}

func (d *demo) controllerMPSA(g charon.Group, n *node) string {
	return g.MPSASection(charon.MPSA{Role: "controller", Dir: n.dir, StatusSocket: n.sock(), Settings: []string{
		"esp_proposal = aes256-sha256", "lifetime = 1h", "rekey_time = 50m", "rollover1 = 2s", "rollover2 = 4s",
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
	cmd := exec.Command("ip", "netns", "exec", n.ns, filepath.Join(d.bin, "mpsad"), "--config", filepath.Join(n.charon.SwanctlDir(), "swanctl.conf"))
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
func (d *demo) waitSPI(ctx context.Context, not string) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if spi, ok := d.commonSPI(ctx); ok && spi != not {
			return spi, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("the CPEs did not all receive the group SA within a minute; see the mpsad logs under /tmp/mpsa-demo-*")
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

func (d *demo) ping(a, b *node, count int, interval string) (sent, recv int) {
	out, _ := exec.Command("ip", "netns", "exec", a.ns, "ping", "-n", "-q", "-c", fmt.Sprint(count), "-i", interval, "-W", "2",
		"-I", a.lanAddr().String(), b.lanAddr().String()).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(l, "%d packets transmitted, %d received", &sent, &recv); err == nil {
			return sent, recv
		}
	}
	return 0, 0
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

// cleanup stops every process by PID and removes the namespaces and files.
func (d *demo) cleanup() {
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
		if n.dir != "" && os.Getenv("MPSA_DEMO_KEEP") == "" {
			os.RemoveAll(n.dir)
		}
	}
	for i := len(d.nss) - 1; i >= 0; i-- {
		exec.Command("ip", "netns", "del", d.nss[i]).Run()
	}
}
