package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	govici "github.com/strongswan/govici/vici"

	"github.com/mpsa/mpsa/internal/bgptest"
	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/test/charon"
	"github.com/mpsa/mpsa/vici"
)

// Options shape a Harness.
type Options struct {
	// Members is N, the number of members the farm runs (1 to
	// MaxMembers).
	Members int
	// Bin is the directory holding mpsad, mpsactl and mpsa-scale (whose
	// `farm` command is the load generator).
	Bin string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Timeout bounds each phase; zero means 60 s plus 150 ms per member.
	Timeout time.Duration
	// KeepLogs, if set, is a directory that receives the logs of both
	// charons, the controller's mpsad and the load generator when the
	// harness is cleaned up.
	KeepLogs string
	// BGP gives the group a route reflector, and each member a BGP
	// speaker advertising BGPPrefixes prefixes (bgp.go): the BGP phase
	// measures the reflector's convergence, and Restart its
	// resynchronization.
	BGP bool
	// FRR, with BGP, makes FRR's bgpd the route reflector, in the
	// controller's namespace beside an mpsad without BGP, for a
	// comparison (docs/scale.md); Restart then measures no
	// resynchronization.
	FRR bool
}

// pollEvery is how often the harness asks the controller's mpsad for its
// members' acknowledgements, elapsed into a wait that starts once every
// member has installed the SA (so that the acknowledgements are due):
// a twentieth of the time waited so far, from 5 ms to 100 ms.
func pollEvery(elapsed time.Duration) time.Duration {
	return min(max(elapsed/20, 5*time.Millisecond), 100*time.Millisecond)
}

// stopGrace is how long a process may take to exit after SIGTERM.
const stopGrace = 15 * time.Second

// Harness is the scale harness: a controller namespace with charon and
// mpsad as in production, and a member-farm namespace where ONE charon
// initiates N IKE SAs to the controller (N connections, identities and
// control addresses) and ONE load generator (`mpsa-scale farm`, the
// project's engine in the member role over a recording data plane)
// speaks the member side of the control exchange for all N. Its phases
// are Join, Rekey and Restart, in that order; Result sums them up.
//
// Everything it starts is stopped by PID, and its namespaces and files
// removed, when the TB's cleanups run.
type Harness struct {
	o   Options
	log io.Writer
	dir string

	ctlNS, farmNS         *nettest.NS
	ctlCharon, farmCharon *charon.Instance
	ctlConf, farmConf     string
	ctlSock, farmSock     string
	recordSock            string

	ctl  *proc // the controller's mpsad
	farm *proc // the load generator

	// ended sums the controller mpsad processes that were stopped:
	// their usage, PUT retransmissions and overload drops.
	ended          Usage
	endedRetrans   uint64
	endedOver      uint64
	endedSockDrops uint64

	children *childWatch
	// polls and pollTime count the status requests of waitAcked and
	// the time they took, which the controller's loop spent on them.
	polls    int
	pollTime time.Duration

	join           *JoinResult
	rekey, restart *PushResult

	// speakers are the members' BGP speakers (BGP mode), bgp the BGP
	// phase's result.
	speakers []*bgptest.LightClient
	bgp      *BGPResult
	frr      *proc // FRR's bgpd as the reflector (Options.FRR)
}

// New sets up both namespaces, starts both charons, the controller's
// mpsad and the load generator, and waits until they answer; no IKE SA is
// up yet (Join brings them up). It fails t when something cannot be set
// up, and registers the clean-up of everything it made.
func New(t testenv.TB, o Options) *Harness {
	t.Helper()
	charon.Need(t)
	if o.Members < 1 || o.Members > MaxMembers {
		t.Fatalf("scale: %d members; the harness runs 1 to %d", o.Members, MaxMembers)
	}
	for _, b := range []string{"mpsad", "mpsactl", "mpsa-scale"} {
		if _, err := os.Stat(filepath.Join(o.Bin, b)); err != nil {
			t.Fatalf("scale: %v (build it into -bin)", err)
		}
	}
	if o.Timeout == 0 {
		o.Timeout = time.Minute + time.Duration(o.Members)*150*time.Millisecond
	}
	h := &Harness{o: o, log: o.Log}
	if h.log == nil {
		h.log = io.Discard
	}
	dir, err := os.MkdirTemp("", "mpsa-scale-")
	if err != nil {
		t.Fatalf("scale: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.dir = dir
	if o.KeepLogs != "" {
		// Runs after everything else has stopped, before the removal.
		t.Cleanup(func() {
			if err := h.keepLogs(); err != nil {
				t.Errorf("scale: %v", err)
			}
		})
	}
	ctlDir, farmDir := filepath.Join(dir, "ctl"), filepath.Join(dir, "farm")
	h.ctlSock, h.farmSock = filepath.Join(ctlDir, "mpsad.sock"), filepath.Join(farmDir, "farm.sock")
	h.recordSock = filepath.Join(farmDir, "record.sock")

	h.say("setting up: controller and member-farm namespaces, %d control addresses", o.Members)
	h.ctlNS, h.farmNS = nettest.NewNS(t, "sctl"), nettest.NewNS(t, "sfarm")
	nettest.Veth(t, h.ctlNS, "eth0", h.farmNS, "eth0")
	nettest.AddrAdd(t, h.ctlNS, "eth0", netip.PrefixFrom(ctlUnderlay, 24).String())
	nettest.AddrAdd(t, h.farmNS, "eth0", netip.PrefixFrom(farmUnderlay, 24).String())
	nettest.AddrAdd(t, h.ctlNS, "lo", hostPrefix(ctlControl))
	h.addControlAddrs(t)

	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	h.ctlCharon, err = charon.Launch(ctx, charon.Config{NetNS: h.ctlNS.Name, Dir: ctlDir, Logger: quiet,
		Settings: append(slices.Clone(charonSettings), ctlCharonSettings...), SwanctlConf: controllerSwanctl(psk) + controllerMPSA(ctlDir, h.ctlSock, o.BGP && !o.FRR)})
	if err != nil {
		t.Fatalf("scale: controller charon: %v", err)
	}
	t.Cleanup(func() { h.closeCharon(t, h.ctlCharon, "controller") })
	h.farmCharon, err = charon.Launch(ctx, charon.Config{NetNS: h.farmNS.Name, Dir: farmDir, Logger: quiet, Settings: charonSettings})
	if err != nil {
		t.Fatalf("scale: farm charon: %v", err)
	}
	t.Cleanup(func() { h.closeCharon(t, h.farmCharon, "farm") })
	// Written now, loaded by Join: loading it initiates every IKE SA.
	if err := h.farmCharon.WriteSwanctlConf(farmSwanctl(o.Members, psk) + farmMPSA(o.Members, farmDir, h.farmSock)); err != nil {
		t.Fatalf("scale: %v", err)
	}
	h.ctlConf = filepath.Join(h.ctlCharon.SwanctlDir(), "swanctl.conf")
	h.farmConf = filepath.Join(h.farmCharon.SwanctlDir(), "swanctl.conf")

	if err := h.startController(ctx); err != nil {
		t.Fatalf("scale: %v", err)
	}
	if o.BGP && o.FRR {
		if err := h.startFRR(ctlDir); err != nil {
			t.Fatalf("scale: %v", err)
		}
		t.Cleanup(func() {
			if _, err := h.frr.stop(stopGrace); err != nil {
				t.Errorf("scale: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		if _, err := h.ctl.stop(stopGrace); err != nil {
			t.Errorf("scale: %v", err)
		}
	})
	h.farm, err = startProc(h.farmNS, "load generator", filepath.Join(farmDir, "farm.log"),
		filepath.Join(o.Bin, "mpsa-scale"), "farm", "-config", h.farmConf, "-record", h.recordSock)
	if err != nil {
		t.Fatalf("scale: %v", err)
	}
	t.Cleanup(func() {
		if _, err := h.farm.stop(stopGrace); err != nil {
			t.Errorf("scale: %v", err)
		}
	})
	if err := h.waitConnected(ctx, h.farm, h.farmSock); err != nil {
		t.Fatalf("scale: %v", err)
	}
	if _, err := fetchRecord(ctx, h.recordSock); err != nil {
		t.Fatalf("scale: %v", err)
	}
	h.children, err = watchChildren(ctx, h.ctlCharon.SocketPath(), o.Members)
	if err != nil {
		t.Fatalf("scale: %v", err)
	}
	t.Cleanup(h.children.close)
	t.Cleanup(h.stopSpeakers) // first, before anything they talk to stops
	return h
}

// psk is the pre-shared key of every IKE SA of the harness.
const psk = "mpsa-scale-psk-0123456789abcdef"

func (h *Harness) say(format string, args ...any) {
	fmt.Fprintf(h.log, "scale: "+format+"\n", args...)
}

// keepLogs copies the logs into o.KeepLogs.
func (h *Harness) keepLogs() error {
	if err := os.MkdirAll(h.o.KeepLogs, 0o755); err != nil {
		return err
	}
	prefix := fmt.Sprintf("n%d-%s-", h.o.Members, time.Now().Format("150405"))
	for _, f := range []struct{ from, to string }{
		{"ctl/charon.log", "ctl-charon.log"}, {"ctl/mpsad.log", "ctl-mpsad.log"},
		{"farm/charon.log", "farm-charon.log"}, {"farm/farm.log", "farm-load-generator.log"}, {"ctl/bgpd.log", "ctl-frr-bgpd.log"},
	} {
		b, err := os.ReadFile(filepath.Join(h.dir, f.from))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(h.o.KeepLogs, prefix+f.to), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// addControlAddrs puts the N control addresses on the farm's lo, in one
// batch.
func (h *Harness) addControlAddrs(t testenv.TB) {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= h.o.Members; i++ {
		fmt.Fprintf(&b, "address add %s dev lo\n", hostPrefix(MemberControl(i)))
	}
	f := filepath.Join(h.dir, "farm-addrs.batch")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("scale: %v", err)
	}
	h.farmNS.Run(t, "ip", "-batch", f)
}

// closeCharon stops an instance at clean-up; a charon with thousands of
// IKE SAs takes a while to delete them.
func (h *Harness) closeCharon(t testenv.TB, in *charon.Instance, name string) {
	if err := in.Stop(stopGrace); err != nil {
		t.Errorf("scale: stop %s charon: %v", name, err)
	}
}

// startController starts the controller's mpsad and waits until it is
// connected to charon.
func (h *Harness) startController(ctx context.Context) error {
	p, err := startProc(h.ctlNS, "controller mpsad", filepath.Join(h.dir, "ctl", "mpsad.log"),
		filepath.Join(h.o.Bin, "mpsad"), "--config", h.ctlConf)
	if err != nil {
		return err
	}
	h.ctl = p
	return h.waitConnected(ctx, p, h.ctlSock)
}

// waitConnected waits until the mpsad-like process p answers on its
// status socket and is connected to charon.
func (h *Harness) waitConnected(ctx context.Context, p *proc, sock string) error {
	for {
		st, err := status(ctx, sock)
		if err == nil && st.VICIConnected {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("%s exited (%v); its log ends:\n%s", p.name, p.cmd.ProcessState, p.tail(30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer on %s: %w (last: %v); its log ends:\n%s", p.name, sock, ctx.Err(), err, p.tail(30))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// status asks an mpsad for its status, within a few seconds.
func status(ctx context.Context, sock string) (server.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return server.NewClient(sock).Status(ctx)
}

// ControllerStatus is the controller mpsad's status.
func (h *Harness) ControllerStatus(ctx context.Context) (server.Status, error) {
	return status(ctx, h.ctlSock)
}

// Record is the load generator's record of every member group.
func (h *Harness) Record(ctx context.Context) (Record, error) {
	return fetchRecord(ctx, h.recordSock)
}

// ChildDowns is how many control children went down at the controller
// since the harness started watching (none should).
func (h *Harness) ChildDowns() int { return h.children.downs() }

// Logs returns the end of every log of the harness, for a failure report.
func (h *Harness) Logs() string {
	var b strings.Builder
	for _, p := range []*proc{h.ctl, h.farm} {
		if p != nil {
			fmt.Fprintf(&b, "==== %s (%s) ====\n%s\n", p.name, p.log, p.tail(40))
		}
	}
	for _, in := range []struct {
		name string
		in   *charon.Instance
	}{{"controller charon", h.ctlCharon}, {"farm charon", h.farmCharon}} {
		if in.in != nil {
			fmt.Fprintf(&b, "==== %s ====\n%s\n", in.name, lastLines(in.in.Log(), 40))
		}
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Phase is what one phase cost: the controller's control datagrams (the
// packets through its ipsec0, which carries nothing else), PUT
// retransmissions, datagrams lost on the way, and the CPU time of each
// process.
type Phase struct {
	// Sent are the control datagrams the controller's mpsad sent into
	// its control children (those dropped at ipsec0 included); Received
	// those it got from them.
	Sent, Received uint64
	// Retransmits are the controller mpsad's PUT retransmissions.
	Retransmits uint64
	// CtlLost and FarmLost are the datagrams dropped in each namespace.
	CtlLost, FarmLost Losses
	// CPU of the controller's mpsad and charon, the farm's charon and
	// the load generator.
	CtlMPSAD, CtlCharon, FarmCharon, Farm time.Duration
	// Polls are the harness's status requests to the controller's mpsad
	// while it waited for the acknowledgements, and PollTime the time
	// they took: load the harness itself put on mpsad's loop.
	Polls    int
	PollTime time.Duration
}

// Losses count the datagrams dropped in one namespace, by where.
type Losses struct {
	// Tun are datagrams from mpsad (or the load generator) that the
	// kernel dropped at ipsec0 because charon did not read them in time
	// (the TUN device's queue was full).
	Tun uint64
	// Charon are UDP datagrams dropped because a charon socket's receive
	// buffer was full: ESP in UDP (port 4500) or IKE.
	Charon uint64
	// MPSAD are control datagrams dropped because the receive buffer of
	// mpsad's control port (of the load generator's, in the farm) was
	// full.
	MPSAD uint64
	// Overload are datagrams mpsad's engine dropped because its loop was
	// behind (its status's "overload" drops).
	Overload uint64
}

func (l Losses) sub(o Losses) Losses {
	return Losses{Tun: l.Tun - o.Tun, Charon: l.Charon - o.Charon, MPSAD: l.MPSAD - o.MPSAD, Overload: l.Overload - o.Overload}
}

func (l Losses) add(o Losses) Losses {
	return Losses{Tun: l.Tun + o.Tun, Charon: l.Charon + o.Charon, MPSAD: l.MPSAD + o.MPSAD, Overload: l.Overload + o.Overload}
}

// sample is the counters at one moment.
type sample struct {
	polls     int
	pollTime  time.Duration
	tx, rx    uint64
	retrans   uint64
	ctl, farm Losses
	cpu       [4]time.Duration
}

// dropOverload is the engine's drop reason for datagrams its loop had no
// room for (server's status).
const dropOverload = "overload"

// take reads the counters now. The controller mpsad's figures are those of
// the running process plus those of the stopped ones.
func (h *Harness) take(ctx context.Context) (sample, error) {
	s := sample{polls: h.polls, pollTime: h.pollTime}
	var err error
	if s.tx, s.rx, s.ctl.Tun, err = linkStats(ctx, h.ctlNS, "ipsec0"); err != nil {
		return s, err
	}
	if _, _, s.farm.Tun, err = linkStats(ctx, h.farmNS, "ipsec0"); err != nil {
		return s, err
	}
	if s.ctl.MPSAD, s.ctl.Charon, err = socketDrops(ctx, h.ctlNS); err != nil {
		return s, err
	}
	s.ctl.MPSAD += h.endedSockDrops
	if s.farm.MPSAD, s.farm.Charon, err = socketDrops(ctx, h.farmNS); err != nil {
		return s, err
	}
	ctlSt, err := h.ControllerStatus(ctx)
	if err != nil {
		return s, err
	}
	s.ctl.Overload = h.endedOver + ctlSt.Drops[dropOverload]
	farmSt, err := status(ctx, h.farmSock)
	if err != nil {
		return s, fmt.Errorf("load generator: %w", err)
	}
	s.farm.Overload = farmSt.Drops[dropOverload]
	r, err := h.retransmits(ctx)
	if err != nil {
		return s, err
	}
	s.retrans = h.endedRetrans + r
	u, err := h.ctl.usage()
	if err != nil {
		return s, fmt.Errorf("controller mpsad: %w", err)
	}
	s.cpu[0] = h.ended.CPU + u.CPU
	for i, pid := range []int{h.ctlCharon.PID(), h.farmCharon.PID(), h.farm.pid()} {
		u, err := procUsage(pid)
		if err != nil {
			return s, err
		}
		s.cpu[i+1] = u.CPU
	}
	return s, nil
}

// phase is the difference between two samples.
func phase(a, b sample) Phase {
	return Phase{
		Sent: b.tx + b.ctl.Tun - a.tx - a.ctl.Tun, Received: b.rx - a.rx, Retransmits: b.retrans - a.retrans,
		CtlLost: b.ctl.sub(a.ctl), FarmLost: b.farm.sub(a.farm),
		CtlMPSAD: b.cpu[0] - a.cpu[0], CtlCharon: b.cpu[1] - a.cpu[1],
		FarmCharon: b.cpu[2] - a.cpu[2], Farm: b.cpu[3] - a.cpu[3],
		Polls: b.polls - a.polls, PollTime: b.pollTime - a.pollTime,
	}
}

// linkStats reads a link's tx and rx packets and tx drops in ns.
func linkStats(ctx context.Context, ns *nettest.NS, link string) (tx, rx, txDrop uint64, err error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns.Name, "-j", "-s", "link", "show", "dev", link).Output()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("statistics of %s in %s: %w", link, ns.Name, err)
	}
	var links []struct {
		Stats64 struct {
			RX struct{ Packets uint64 }          `json:"rx"`
			TX struct{ Packets, Dropped uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, 0, 0, fmt.Errorf("statistics of %s in %s: %v: %s", link, ns.Name, err, out)
	}
	st := links[0].Stats64
	return st.TX.Packets, st.RX.Packets, st.TX.Dropped, nil
}

// socketDrops sums the drops of the UDP sockets of ns (/proc/net/udp
// and udp6 are per namespace, with one drops counter per socket): those
// bound to mpsad's control port, and the others (charon's).
func socketDrops(ctx context.Context, ns *nettest.NS) (control, other uint64, err error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "cat", "/proc/net/udp", "/proc/net/udp6").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("UDP sockets in %s: %w", ns.Name, err)
	}
	return udpDrops(string(out), controlPort)
}

// udpDrops sums the drops column of /proc/net/udp (or udp6) lines, split
// by whether the socket's local port is port.
func udpDrops(table string, port uint16) (onPort, other uint64, err error) {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) < 13 || f[0] == "sl" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			return 0, 0, fmt.Errorf("UDP socket line %q", l)
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return 0, 0, fmt.Errorf("UDP socket line %q: %w", l, err)
		}
		d, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("UDP socket line %q: %w", l, err)
		}
		if uint16(p) == port {
			onPort += d
		} else {
			other += d
		}
	}
	return onPort, other, nil
}

// retransmits scrapes the running controller mpsad's PUT retransmissions
// (mpsa_put_retransmissions_total) from its metrics endpoint, which
// listens inside the controller's namespace.
func (h *Harness) retransmits(ctx context.Context) (uint64, error) {
	body, err := h.ctlNS.HTTPGet(ctx, metricsListen, "/metrics")
	if err != nil {
		return 0, fmt.Errorf("controller metrics: %w", err)
	}
	return metricValue(string(body), `mpsa_put_retransmissions_total{group="`+GroupName+`"}`)
}

// metricValue is the value of the exposition line for series.
func metricValue(body, series string) (uint64, error) {
	for _, l := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return 0, fmt.Errorf("metric %s: %q", series, l)
			}
			return uint64(v), nil
		}
	}
	return 0, fmt.Errorf("no metric %s", series)
}

// JoinResult is the Join phase: N members come up from nothing.
type JoinResult struct {
	// SPI is the group SA every member acknowledged.
	SPI string
	// Load is how long `swanctl --load-all` of the N connections took.
	Load time.Duration
	// ChildrenUp is from the start of the load until the controller's
	// charon reported the last of the N control children up: charon's
	// share.
	ChildrenUp time.Duration
	// Acked is from then until the controller's mpsad had every member's
	// acknowledgement (to within one status request, see waitAcked):
	// what mpsad adds after charon is done.
	Acked time.Duration
	// Latency are percentiles of each member's time from its control
	// child up (controller's charon) to its SA installed (load
	// generator): 50, 90, 99 and 100.
	Latency [4]time.Duration
	Phase
}

// PushResult is a Rekey or a Restart: the group SA goes to all N.
type PushResult struct {
	// SPI is the new group SA.
	SPI string
	// Acked is from the command (mpsactl rekey, or the new mpsad's start)
	// until the controller's mpsad had every member's acknowledgement of
	// SPI, to within one status request (see waitAcked).
	Acked time.Duration
	// LastInstall is from the command until the last member installed
	// SPI, as the load generator recorded it (it acknowledges right
	// after).
	LastInstall time.Duration
	// BeforeRetransmit members installed SPI before any PUT could have
	// been retransmitted: within the backoff's first interval (1 s) of
	// the command, before which no push can have been.
	BeforeRetransmit int
	Phase
}

// Join loads the farm's N connections into its charon, which initiates
// them all, and waits until every member acknowledged the controller's
// group SA.
func (h *Harness) Join(ctx context.Context) (JoinResult, error) {
	var r JoinResult
	if h.join != nil {
		return r, errors.New("scale: Join runs once")
	}
	ctx, cancel := context.WithTimeout(ctx, h.o.Timeout)
	defer cancel()
	st, err := h.ControllerStatus(ctx)
	if err != nil {
		return r, err
	}
	// rekey_on_join is off: the members join under this SA.
	spi := groupOf(st).SPI
	before, err := h.take(ctx)
	if err != nil {
		return r, err
	}
	h.say("join: loading %d connections into the farm's charon", h.o.Members)
	start := time.Now()
	if _, err := h.farmCharon.Swanctl(ctx, "--load-all"); err != nil {
		return r, err
	}
	r.Load = time.Since(start)
	upAt, err := h.children.wait(ctx)
	if err != nil {
		return r, fmt.Errorf("scale: join: %w", err)
	}
	r.ChildrenUp = upAt.Sub(start)
	h.say("join: %d control children up at the controller after %.2f s", h.o.Members, r.ChildrenUp.Seconds())
	ackedAt, err := h.waitAcked(ctx, "every member to acknowledge the group SA "+spi, spi)
	if err != nil {
		return r, err
	}
	r.SPI = spi
	r.Acked = max(ackedAt.Sub(upAt), 0)
	after, err := h.take(ctx)
	if err != nil {
		return r, err
	}
	r.Phase = phase(before, after)
	rec, err := h.Record(ctx)
	if err != nil {
		return r, err
	}
	r.Latency, err = h.joinLatency(rec, r.SPI)
	if err != nil {
		return r, err
	}
	h.join = &r
	h.say("join: all %d acknowledged %s %.2f s after the last control child came up", h.o.Members, r.SPI, r.Acked.Seconds())
	return r, nil
}

// joinLatency is the percentiles of the members' times from control child
// up to SA installed.
func (h *Harness) joinLatency(rec Record, spi string) ([4]time.Duration, error) {
	var out [4]time.Duration
	up := h.children.upTimes()
	lat := make([]time.Duration, 0, h.o.Members)
	for i := 1; i <= h.o.Members; i++ {
		at, ok := rec.Groups[MemberConn(i)].Installed(spi)
		if !ok {
			return out, fmt.Errorf("scale: member %d acknowledged %s but the load generator did not record installing it", i, spi)
		}
		u, ok := up[MemberControl(i)]
		if !ok {
			return out, fmt.Errorf("scale: no child-up event for member %d", i)
		}
		lat = append(lat, at.Sub(u))
	}
	slices.Sort(lat)
	for i, p := range []int{50, 90, 99, 100} {
		out[i] = lat[max((len(lat)*p+99)/100-1, 0)]
	}
	return out, nil
}

// Rekey runs `mpsactl rekey` on the controller and waits until every
// member acknowledged the new SA.
func (h *Harness) Rekey(ctx context.Context) (PushResult, error) {
	var r PushResult
	if h.join == nil || h.rekey != nil {
		return r, errors.New("scale: Rekey runs once, after Join")
	}
	ctx, cancel := context.WithTimeout(ctx, h.o.Timeout)
	defer cancel()
	before, err := h.take(ctx)
	if err != nil {
		return r, err
	}
	h.say("rekey: mpsactl rekey %s", GroupName)
	start := time.Now()
	out, err := exec.CommandContext(ctx, filepath.Join(h.o.Bin, "mpsactl"), "rekey", GroupName, "--json", "--socket", h.ctlSock).Output()
	if err != nil {
		return r, fmt.Errorf("scale: mpsactl rekey: %w: %s", err, out)
	}
	var reply struct{ SPI string }
	if err := json.Unmarshal(out, &reply); err != nil || reply.SPI == "" {
		return r, fmt.Errorf("scale: mpsactl rekey printed %q (%v)", out, err)
	}
	r.SPI = reply.SPI
	if err := h.finishPush(ctx, &r, "the rekeyed SA", start, before); err != nil {
		return r, err
	}
	h.rekey = &r
	h.say("rekey: all %d acknowledged %s %.2f s after mpsactl rekey", h.o.Members, r.SPI, r.Acked.Seconds())
	return r, nil
}

// Restart stops the controller's mpsad with SIGTERM, starts it again and
// waits until every member acknowledged the SA the new process pushes.
func (h *Harness) Restart(ctx context.Context) (PushResult, error) {
	var r PushResult
	if h.rekey == nil || h.restart != nil {
		return r, errors.New("scale: Restart runs once, after Rekey")
	}
	ctx, cancel := context.WithTimeout(ctx, h.o.Timeout)
	defer cancel()
	st, err := h.ControllerStatus(ctx)
	if err != nil {
		return r, err
	}
	old := groupOf(st).SPI
	before, err := h.take(ctx)
	if err != nil {
		return r, err
	}
	// The old process's last counts go into the sums before it ends.
	retrans, err := h.retransmits(ctx)
	if err != nil {
		return r, err
	}
	sockDrops, _, err := socketDrops(ctx, h.ctlNS)
	if err != nil {
		return r, err
	}
	h.say("restart: SIGTERM to the controller's mpsad (pid %d), then start it again", h.ctl.pid())
	u, err := h.ctl.stop(stopGrace)
	if err != nil {
		return r, err
	}
	h.ended = h.ended.add(u)
	h.endedRetrans += retrans
	h.endedOver += st.Drops[dropOverload]
	h.endedSockDrops += sockDrops
	start := time.Now()
	if err := h.startController(ctx); err != nil {
		return r, fmt.Errorf("scale: restart: %w", err)
	}
	if st, err = h.ControllerStatus(ctx); err != nil {
		return r, err
	}
	r.SPI = groupOf(st).SPI
	if r.SPI == "" || r.SPI == old {
		return r, fmt.Errorf("scale: restart: the new mpsad's group SA is %q, the old one was %s", r.SPI, old)
	}
	if err := h.finishPush(ctx, &r, "the restarted controller's SA", start, before); err != nil {
		return r, err
	}
	if h.o.BGP && !h.o.FRR {
		if err := h.bgpResync(ctx, start); err != nil {
			return r, err
		}
	}
	h.restart = &r
	h.say("restart: all %d acknowledged %s %.2f s after the new mpsad started", h.o.Members, r.SPI, r.Acked.Seconds())
	return r, nil
}

// finishPush waits until every member acknowledged r.SPI (what names
// it), pushed at start, and fills in r.
func (h *Harness) finishPush(ctx context.Context, r *PushResult, what string, start time.Time, before sample) error {
	ackedAt, err := h.waitAcked(ctx, "every member to acknowledge "+what+" "+r.SPI, r.SPI)
	if err != nil {
		return err
	}
	r.Acked = ackedAt.Sub(start)
	after, err := h.take(ctx)
	if err != nil {
		return err
	}
	r.Phase = phase(before, after)
	rec, err := h.Record(ctx)
	if err != nil {
		return err
	}
	ats := make([]time.Duration, 0, h.o.Members)
	for i := 1; i <= h.o.Members; i++ {
		at, ok := rec.Groups[MemberConn(i)].Installed(r.SPI)
		if !ok {
			return fmt.Errorf("scale: member %d acknowledged %s but the load generator did not record installing it", i, r.SPI)
		}
		ats = append(ats, at.Sub(start))
	}
	slices.Sort(ats)
	r.LastInstall = ats[len(ats)-1]
	for _, d := range ats {
		if d < mpsa.DefaultBackoff().Initial {
			r.BeforeRetransmit++
		}
	}
	return nil
}

// groupOf is the harness's group in a controller status (zero if absent).
func groupOf(st server.Status) server.GroupStatus {
	for _, g := range st.Groups {
		if g.Name == GroupName {
			return g
		}
	}
	return server.GroupStatus{}
}

// waitAcked waits until all N members acknowledged spi: first for the
// load generator to say that every member installed it (which costs
// mpsad nothing), then for the controller's status to list all N members
// with spi acknowledged (each acknowledges right after installing). It
// returns when the status showed that: within one status request of the
// moment the last acknowledgement arrived.
func (h *Harness) waitAcked(ctx context.Context, what, spi string) (time.Time, error) {
	if _, err := waitInstalled(ctx, h.recordSock, spi, h.o.Members); err != nil {
		rec, rerr := h.Record(context.WithoutCancel(ctx))
		if rerr != nil {
			return time.Time{}, fmt.Errorf("scale: waiting for %s: %w", what, err)
		}
		var missing []string
		for i := 1; i <= h.o.Members && len(missing) < 10; i++ {
			if _, ok := rec.Groups[MemberConn(i)].Installed(spi); !ok {
				missing = append(missing, MemberConn(i))
			}
		}
		return time.Time{}, fmt.Errorf("scale: waiting for %s: %w; members yet to install it include %v", what, err, missing)
	}
	start := time.Now()
	var last string
	for {
		asked := time.Now()
		st, err := h.ControllerStatus(ctx)
		now := time.Now()
		h.polls++
		h.pollTime += now.Sub(asked)
		if err == nil {
			g := groupOf(st)
			acked := 0
			for _, m := range g.Members {
				if m.AckedSPI == spi {
					acked++
				}
			}
			if acked == h.o.Members && len(g.Members) == h.o.Members {
				return now, nil
			}
			last = fmt.Sprintf("%d members listed, %d of them acknowledged %s", len(g.Members), acked, spi)
		} else {
			last = err.Error()
		}
		if !h.ctl.running() {
			return now, fmt.Errorf("scale: waiting for %s: the controller's mpsad exited (%v); its log ends:\n%s", what, h.ctl.cmd.ProcessState, h.ctl.tail(30))
		}
		select {
		case <-ctx.Done():
			return now, fmt.Errorf("scale: waiting for %s: %w; last seen: %s", what, ctx.Err(), last)
		case <-time.After(pollEvery(time.Since(start))):
		}
	}
}

// Result is the whole run, after Join, Rekey and Restart.
type Result struct {
	Members int
	Join    JoinResult
	Rekey   PushResult
	Restart PushResult
	// Ctl is the controller mpsad's CPU time over the whole run (both
	// processes, the set-up included) and its peak RSS (the larger of
	// the two processes').
	Ctl Usage
	// Sent, Received, Retransmits and the losses are the sums over the
	// three phases (see Phase).
	Sent, Received, Retransmits uint64
	CtlLost, FarmLost           Losses
	// BGP is the BGP phase and the resynchronization after the restart
	// (BGP mode), nil without.
	BGP *BGPResult
}

// Result sums up the run; call it after Restart.
func (h *Harness) Result() (Result, error) {
	if h.restart == nil {
		return Result{}, errors.New("scale: Result comes after Restart")
	}
	u, err := h.ctl.usage()
	if err != nil {
		return Result{}, err
	}
	if h.o.BGP && (h.bgp == nil || (h.bgp.Resync == 0 && !h.o.FRR)) {
		return Result{}, errors.New("scale: in BGP mode, Result comes after BGP and Restart")
	}
	r := Result{Members: h.o.Members, Join: *h.join, Rekey: *h.rekey, Restart: *h.restart, Ctl: h.ended.add(u), BGP: h.bgp}
	for _, p := range []Phase{r.Join.Phase, r.Rekey.Phase, r.Restart.Phase} {
		r.Sent += p.Sent
		r.Received += p.Received
		r.Retransmits += p.Retransmits
		r.CtlLost = r.CtlLost.add(p.CtlLost)
		r.FarmLost = r.FarmLost.add(p.FarmLost)
	}
	return r, nil
}

// childWatch follows the controller charon's child-updown events: when
// each member's control child came up.
type childWatch struct {
	c      *vici.Client
	events chan govici.Event
	n      int
	done   chan struct{}

	mu   sync.Mutex
	up   map[netip.Addr]time.Time
	down int
	last time.Time
	all  chan struct{} // closed once n distinct children are up
}

// watchChildren subscribes to child-updown on the charon at socket.
func watchChildren(ctx context.Context, socket string, n int) (*childWatch, error) {
	c, err := vici.Dial(ctx, socket)
	if err != nil {
		return nil, err
	}
	w := &childWatch{c: c, n: n, events: make(chan govici.Event, 4*n+256), done: make(chan struct{}),
		up: map[netip.Addr]time.Time{}, all: make(chan struct{})}
	c.NotifyEvents(w.events)
	if err := c.Subscribe(vici.EventChildUpdown); err != nil {
		c.Close()
		return nil, err
	}
	go w.run()
	return w, nil
}

func (w *childWatch) run() {
	defer close(w.done)
	for ev := range w.events {
		at := time.Now()
		e, err := vici.ParseEvent(ev.Name, ev.Message)
		if err != nil || len(e.IKE.Children) != 1 || e.IKE.Children[0].Name != ctlChild {
			continue
		}
		remote, ok := e.IKE.Children[0].RemoteHost()
		if !ok {
			continue
		}
		w.mu.Lock()
		switch e.Kind {
		case vici.ChildUp:
			if _, seen := w.up[remote]; !seen {
				w.up[remote] = at
				w.last = at
				if len(w.up) == w.n {
					close(w.all)
				}
			}
		case vici.ChildDown:
			w.down++
		}
		w.mu.Unlock()
	}
}

// wait returns when the last of the n children came up.
func (w *childWatch) wait(ctx context.Context) (time.Time, error) {
	select {
	case <-w.all:
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.last, nil
	case <-ctx.Done():
		w.mu.Lock()
		defer w.mu.Unlock()
		return time.Time{}, fmt.Errorf("%d of %d control children up at the controller: %w", len(w.up), w.n, ctx.Err())
	}
}

func (w *childWatch) upTimes() map[netip.Addr]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := make(map[netip.Addr]time.Time, len(w.up))
	for k, v := range w.up {
		m[k] = v
	}
	return m
}

func (w *childWatch) downs() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.down
}

// close ends the session; govici closes the event channel with it (or
// closed it already when charon went away).
func (w *childWatch) close() {
	w.c.Close()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
}
