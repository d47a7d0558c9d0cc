package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/test/charon"
)

// TestSystemdNotify runs a built mpsad as systemd would run mpsad.service
// (Type=notify, WatchdogSec), with the notification socket played by the
// test, and a real charon in a namespace: the sd_notify contract of
// docs/operations.md.
//
//   - charon's VICI socket absent: STATUS=waiting..., watchdog keep-alives
//     from the main loop, and no READY=1;
//   - charon up: READY=1 with the STATUS= summary, keep-alives go on;
//   - SIGHUP: RELOADING=1, then READY=1;
//   - SIGTERM: STOPPING=1 at once (with the STATUS= that only the signal
//     path sends, before the clean-up), then exit 0.
//
// mpsad and charon are stopped by PID and the namespaces removed when the
// test ends, whether it passed or not. Like every charon test, it skips
// outside CI and fails under CI=true when root or charon is missing.
func TestSystemdNotify(t *testing.T) {
	lab := charon.NewLab(t, charon.LabOptions{Members: 1})
	// A short directory: unix socket paths must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "mpsa-nfy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vici := filepath.Join(dir, "charon.vici") // where charon will listen
	conf := filepath.Join(dir, "mpsad.conf")
	src := lab.Group.ControllerConf() + lab.Group.MPSASection(charon.MPSA{
		Role: "controller", Dir: dir, StatusSocket: filepath.Join(dir, "mpsad.sock"),
		Globals: []string{"log_level = debug"},
	})
	if err := os.WriteFile(conf, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := buildMpsad(t, dir)
	n := listenNotify(t, filepath.Join(dir, "notify.sock"))
	const watchdogUSec = 1_000_000 // keep-alives every 0.5 s
	p := startMpsad(t, lab.Controller.NS.Name, bin, conf, filepath.Join(dir, "mpsad.log"),
		"NOTIFY_SOCKET="+n.path, fmt.Sprintf("WATCHDOG_USEC=%d", watchdogUSec))

	// 1. No charon yet.
	n.expect(t, 20*time.Second, "STATUS=waiting for charon's VICI socket unix://"+vici, p)
	if _, err := os.Stat(vici); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists before charon started: %v", vici, err)
	}
	waiting := n.collect(3 * time.Second)
	if slices.Contains(waiting, "READY=1") {
		t.Fatalf("READY=1 while charon's VICI socket is absent; notifications: %q", waiting)
	}
	if c := count(waiting, "WATCHDOG=1"); c < 3 {
		t.Errorf("%d WATCHDOG=1 in 3 s while waiting for charon, want 3 or more (every 0.5 s): %q", c, waiting)
	}

	// 2. charon comes up: READY=1, and keep-alives continue.
	charon.Start(t, lab.Controller.NS, charon.Config{Dir: dir, SwanctlConf: lab.Group.ControllerConf()})
	ready := n.expect(t, 30*time.Second, "READY=1", p)
	if !slices.Contains(ready, "STATUS=controller of 1 group(s), connected to charon") {
		t.Errorf("READY=1 came with %q, want the STATUS= summary in the same message", ready)
	}
	if running := n.collect(3 * time.Second); count(running, "WATCHDOG=1") < 3 {
		t.Errorf("%d WATCHDOG=1 in 3 s once ready, want 3 or more: %q", count(running, "WATCHDOG=1"), running)
	}

	// 3. Reload.
	p.signal(t, syscall.SIGHUP)
	n.expect(t, 10*time.Second, "RELOADING=1", p)
	n.expect(t, 10*time.Second, "READY=1", p)

	// 4. Stop.
	p.signal(t, syscall.SIGTERM)
	stopping := n.expect(t, 10*time.Second, "STOPPING=1", p)
	if !slices.ContainsFunc(stopping, func(l string) bool { return strings.HasPrefix(l, "STATUS=stopping") }) {
		t.Errorf("STOPPING=1 came with %q, want the STATUS=stopping... sent when the signal arrives, before the clean-up", stopping)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("mpsad did not exit within 20 s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("mpsad exited with %d after SIGTERM (%v), want 0", code, p.cmd.ProcessState)
	}
	if after := n.collect(200 * time.Millisecond); slices.Contains(after, "READY=1") {
		t.Errorf("READY=1 after STOPPING=1: %q", after)
	}
}

// buildMpsad builds this command into dir.
func buildMpsad(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "mpsad")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// notifySocket plays systemd's notification socket: a unixgram socket
// whose datagrams are split into lines (one assignment each).
type notifySocket struct {
	path string
	msgs chan []string

	mu  sync.Mutex
	all [][]string // every message, for failure reports
}

func listenNotify(t *testing.T, path string) *notifySocket {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, msgs: make(chan []string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return // closed at cleanup
			}
			lines := strings.Split(strings.TrimRight(string(buf[:k]), "\n"), "\n")
			n.mu.Lock()
			n.all = append(n.all, lines)
			n.mu.Unlock()
			select {
			case n.msgs <- lines:
			default:
				t.Errorf("notification dropped, the test reads too slowly: %q", lines)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
		if t.Failed() {
			n.mu.Lock()
			t.Logf("notifications received: %q", n.all)
			n.mu.Unlock()
		}
	})
	return n
}

// expect waits for a message with the assignment want and returns that
// message; WATCHDOG=1 and STATUS= messages on the way are skipped, any
// other fails the test, as does mpsad exiting first.
func (n *notifySocket) expect(t *testing.T, timeout time.Duration, want string, p *process) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-n.msgs:
			if slices.Contains(m, want) {
				return m
			}
			for _, l := range m {
				if l != "WATCHDOG=1" && !strings.HasPrefix(l, "STATUS=") {
					t.Fatalf("waiting for %s, got %q", want, m)
				}
			}
		case <-p.done:
			t.Fatalf("mpsad exited (%v) while the test waited for %s", p.cmd.ProcessState, want)
		case <-deadline:
			t.Fatalf("no %s within %v", want, timeout)
		}
	}
}

// collect returns the assignments of every message received within d.
func (n *notifySocket) collect(d time.Duration) []string {
	var got []string
	deadline := time.After(d)
	for {
		select {
		case m := <-n.msgs:
			got = append(got, m...)
		case <-deadline:
			return got
		}
	}
}

func count(lines []string, s string) int {
	c := 0
	for _, l := range lines {
		if l == s {
			c++
		}
	}
	return c
}

// process is an mpsad started by startMpsad.
type process struct {
	cmd  *exec.Cmd
	done <-chan struct{} // closed once it has been waited for
}

// startMpsad starts bin --config conf in network namespace ns with the
// extra environment, its output in logPath. When the test ends it is
// stopped by PID (SIGTERM, SIGKILL after 10 s) if still running, and its
// log is copied into the test log if the test failed. If the test binary
// dies first, the kernel sends mpsad SIGKILL.
func startMpsad(t *testing.T, ns, bin, conf, logPath string, env ...string) *process {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// ip netns exec replaces its process image with mpsad's: the PID of
	// cmd is mpsad's.
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "--config", conf)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	done, err := testenv.StartTied(cmd)
	if err != nil {
		t.Fatalf("start mpsad: %v", err)
	}
	p := &process{cmd: cmd, done: done}
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Errorf("mpsad (pid %d) ignored SIGTERM; killing it", cmd.Process.Pid)
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() || os.Getenv("MPSA_E2E_LOG") != "" {
			b, _ := os.ReadFile(logPath)
			t.Logf("mpsad log:\n%s", b)
		}
	})
	return p
}

// signal sends sig to the running mpsad.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to mpsad: %v", sig, err)
	}
}
