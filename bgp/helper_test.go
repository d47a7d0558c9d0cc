package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/bgp/policy"
	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// The package tests run each speaker in a helper process inside its own
// network namespace, as mpsad runs on its own host: GoBGP opens its
// sockets from goroutines on arbitrary threads, so two speakers of one
// process cannot live in different namespaces. The helper is this test
// binary, told by helperEnv what to be; it reads commands as JSON lines on
// stdin and writes replies and route changes as JSON lines on stdout.

const helperEnv = "MPSA_BGP_TEST_HELPER"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(runHelper(cfg))
	}
	os.Exit(m.Run())
}

// helperConfig configures a helper process.
type helperConfig struct {
	Role         string        `json:"role"` // member or reflector
	ASN          uint32        `json:"asn"`
	RouterID     netip.Addr    `json:"router_id,omitzero"`
	Port         uint16        `json:"port"`
	HoldTime     time.Duration `json:"hold_time"`
	StaleTime    time.Duration `json:"stale_time"`
	DeferralTime time.Duration `json:"deferral_time"`
	Policy       []policy.Rule `json:"policy"`
	CheckNextHop bool          `json:"check_next_hop,omitempty"`
	// Quiet logs at Info instead of Debug (GoBGP's per-path debug lines
	// would dominate a benchmark).
	Quiet bool `json:"quiet,omitempty"`
}

// command is one request to a helper.
type command struct {
	Op       string         `json:"op"`
	Ctl      netip.Addr     `json:"ctl,omitzero"`
	Local    netip.Addr     `json:"local,omitzero"`
	Prefixes []netip.Prefix `json:"prefixes,omitempty"`
	Underlay netip.Addr     `json:"underlay,omitzero"`
	Member   MemberInfo     `json:"member,omitzero"`
	Policy   []policy.Rule  `json:"policy,omitempty"`
}

// message is one line a helper writes: a reply or route changes.
type message struct {
	Reply     bool             `json:"reply,omitempty"`
	Err       string           `json:"err,omitempty"`
	Member    *MemberStatus    `json:"member,omitempty"`
	Reflector *ReflectorStatus `json:"reflector,omitempty"`
	Changes   []Change         `json:"changes,omitempty"`
}

func runHelper(raw string) int {
	var cfg helperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	level := slog.LevelDebug
	if cfg.Quiet {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	stopProfile := func() {}
	if path := os.Getenv("MPSA_BGP_TEST_PPROF"); path != "" && cfg.Role == "reflector" {
		if f, err := os.Create(path); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
			}
		}
	}
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	write := func(m message) {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(m); err != nil {
			log.Error("write", "err", err)
		}
	}
	ctx := context.Background()
	var mem *Member
	var refl *Reflector
	switch cfg.Role {
	case "member":
		var err error
		mem, err = NewMember(MemberConfig{
			ASN: cfg.ASN, RouterID: cfg.RouterID, Port: cfg.Port, HoldTime: cfg.HoldTime, StaleTime: cfg.StaleTime,
			Logger:   log,
			OnChange: func(c []Change) { write(message{Changes: c}) },
		})
		if err != nil {
			log.Error("member", "err", err)
			return 2
		}
		mem.Start(ctx)
		defer mem.Close()
	case "reflector":
		var err error
		if refl, err = newReflector(ctx, cfg, log, nil); err != nil {
			log.Error("reflector", "err", err)
			return 2
		}
		defer func() { refl.Close() }()
	default:
		log.Error("unknown role", "role", cfg.Role)
		return 2
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var c command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			write(message{Reply: true, Err: err.Error()})
			continue
		}
		reply := message{Reply: true}
		var err error
		switch c.Op {
		case "set-controller":
			err = mem.SetController(c.Ctl, c.Local)
		case "controller-down":
			mem.ControllerDown()
		case "advertise":
			err = mem.Advertise(c.Prefixes, c.Underlay)
		case "add":
			err = refl.AddMember(c.Member)
		case "remove":
			refl.RemoveMember(c.Member.Addr)
		case "policy":
			err = refl.SetPolicy(c.Policy)
		case "abandon":
			// As the engine replaces a reflector: the old one's
			// sessions and listener end at once, and a new one takes
			// the port while GoBGP stops in the background.
			refl.Abandon()
			refl, err = newReflector(ctx, cfg, log, refl.Done())
		case "status":
			if mem != nil {
				var st MemberStatus
				st, err = mem.Status()
				reply.Member = &st
			} else {
				var st ReflectorStatus
				st, err = refl.Status()
				reply.Reflector = &st
			}
		case "close":
			stopProfile()
			write(reply)
			return 0
		default:
			err = fmt.Errorf("unknown op %q", c.Op)
		}
		if err != nil {
			reply.Err = err.Error()
		}
		write(reply)
	}
	return 0
}

// newReflector starts a reflector of the helper's configuration; after
// is the Done of the reflector it replaces, if any.
func newReflector(ctx context.Context, cfg helperConfig, log *slog.Logger, after <-chan struct{}) (*Reflector, error) {
	r, err := NewReflector(ReflectorConfig{
		ASN: cfg.ASN, RouterID: cfg.RouterID, Port: cfg.Port, HoldTime: cfg.HoldTime, DeferralTime: cfg.DeferralTime,
		Policy: cfg.Policy, CheckNextHop: cfg.CheckNextHop, Logger: log, RejectLogInterval: time.Second, After: after,
	})
	if err != nil {
		return nil, err
	}
	if err := r.Start(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// speakerProc is a helper process seen from the test.
type speakerProc struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	done    <-chan struct{}
	stdin   io.WriteCloser
	replies chan message
	logPath string

	mu      sync.Mutex
	changes []timedChange
	routes  map[netip.Prefix]Change // current learned view from the changes
}

type timedChange struct {
	at time.Time
	Change
}

// startSpeaker runs a helper with cfg in ns; it is stopped (by PID) when
// the test ends, and its log is printed when the test failed.
func startSpeaker(t testing.TB, ns *nettest.NS, name string, cfg helperConfig) *speakerProc {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &speakerProc{t: t, name: name, replies: make(chan message, 1), routes: map[netip.Prefix]Change{},
		logPath: filepath.Join(t.TempDir(), name+".log")}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = ns.Command(exe)
	p.cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.done, err = testenv.StartTied(p.cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go p.read(stdout)
	t.Cleanup(func() {
		p.stop()
		logf.Close()
		// A helper built with -race reports races on its stderr.
		if b, err := os.ReadFile(p.logPath); err == nil && strings.Contains(string(b), "WARNING: DATA RACE") {
			t.Errorf("%s: data race (see its log)", name)
		}
		if t.Failed() {
			if b, err := os.ReadFile(p.logPath); err == nil {
				t.Logf("log of %s:\n%s", name, tail(string(b), 200))
			}
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *speakerProc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Reply {
			p.replies <- m
			continue
		}
		now := time.Now()
		p.mu.Lock()
		for _, c := range m.Changes {
			p.changes = append(p.changes, timedChange{now, c})
			if c.Withdrawn {
				delete(p.routes, c.Prefix)
			} else {
				p.routes[c.Prefix] = c
			}
		}
		p.mu.Unlock()
	}
	close(p.replies)
}

// call sends c and returns the reply; a failed call fails the test.
func (p *speakerProc) call(c command) message {
	p.t.Helper()
	m, err := p.tryCall(c)
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, c.Op, err)
	}
	return m
}

func (p *speakerProc) tryCall(c command) (message, error) {
	b, _ := json.Marshal(c)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		return message{}, err
	}
	select {
	case m, ok := <-p.replies:
		if !ok {
			return message{}, fmt.Errorf("helper exited")
		}
		if m.Err != "" {
			return m, fmt.Errorf("%s", m.Err)
		}
		return m, nil
	case <-time.After(20 * time.Second):
		return message{}, fmt.Errorf("no reply")
	}
}

// stop asks the helper to close (its speaker stops without NOTIFICATION,
// as at an mpsad restart) and kills it by PID if it does not exit.
func (p *speakerProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_, _ = p.tryCall(command{Op: "close"})
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the helper with SIGKILL, as a crash would.
func (p *speakerProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// learned returns the routes the member's changes add up to.
func (p *speakerProc) learned() map[netip.Prefix]Change {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[netip.Prefix]Change, len(p.routes))
	for k, v := range p.routes {
		out[k] = v
	}
	return out
}

// history returns every change received so far.
func (p *speakerProc) history() []timedChange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]timedChange(nil), p.changes...)
}

func (p *speakerProc) memberStatus() MemberStatus {
	p.t.Helper()
	return *p.call(command{Op: "status"}).Member
}

func (p *speakerProc) reflectorStatus() ReflectorStatus {
	p.t.Helper()
	return *p.call(command{Op: "status"}).Reflector
}

// waitRoutes waits until the member's learned routes are exactly want
// (prefix -> peer) and returns how long that took from start.
func (p *speakerProc) waitRoutes(t *testing.T, timeout time.Duration, start time.Time, want map[string]string) time.Duration {
	t.Helper()
	var took time.Duration
	testenv.WaitFor(t, timeout, p.name+" to learn "+fmt.Sprint(want), func() (bool, string) {
		got := p.learned()
		state := fmt.Sprint(routeStrings(got))
		if len(got) != len(want) {
			return false, state
		}
		for pfx, peer := range want {
			c, ok := got[netip.MustParsePrefix(pfx)]
			if !ok || c.Peer != netip.MustParseAddr(peer) {
				return false, state
			}
		}
		took = time.Since(start)
		return true, state
	})
	return took
}

func routeStrings(m map[netip.Prefix]Change) map[string]string {
	out := map[string]string{}
	for p, c := range m {
		out[p.String()] = c.Peer.String()
	}
	return out
}

// mustRanges parses prefix ranges.
func mustRanges(t testing.TB, s ...string) []policy.Range {
	t.Helper()
	var out []policy.Range
	for _, x := range s {
		r, err := policy.ParseRange(x)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, x := range s {
		out[i] = netip.MustParsePrefix(x)
	}
	return out
}

var addr = netip.MustParseAddr
