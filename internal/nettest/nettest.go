// Package nettest builds throw-away network namespaces and veth links for
// tests, and removes them when the test ends, whether it passed or not. It
// takes a testenv.TB, so the demo (test/demo) uses it too.
package nettest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/testenv"
)

// NS is a network namespace made for one test.
type NS struct {
	// Name is the name under /run/netns, usable with `ip netns exec`.
	Name string
}

// NewNS creates a namespace whose name starts with "mpsat-" and the given
// label, brings its loopback up, and removes it when the test ends.
func NewNS(t testenv.TB, label string) *NS {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedCommand(t, "ip")
	name := fmt.Sprintf("mpsat-%s-%d-%s", label, os.Getpid(), randSuffix())
	if len(name) > 60 {
		name = name[:60]
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// randSuffix returns 8 random hex digits, to keep names of concurrent
// tests apart.
func randSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// CommandContext is Command killed when ctx is done. `ip netns exec`
// executes the command in its own place, so the process killed is the
// command itself.
func (n *NS) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and fails the test if it fails.
// It returns the combined output.
func (n *NS) Run(t testenv.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s %s: %v: %s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Do runs fn on an OS thread that has entered the namespace. Sockets, TUN
// devices and netlink handles that fn opens belong to the namespace and stay
// there after Do returns.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: if switching back fails, the
		// runtime discards it instead of reusing a thread in the wrong
		// namespace.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave netns %s: %w", n.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Veth joins two namespaces with a veth pair named aName (in a) and bName
// (in b), both up. The pair goes away with the namespaces.
func Veth(t testenv.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.Run(t, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.Run(t, "ip", "link", "set", aName, "up")
	b.Run(t, "ip", "link", "set", bName, "up")
}

// LAN gives ns a stand-in LAN: a veth pair name and name+"p" inside ns
// (some kernels have no dummy interfaces), both up, with cidr on name.
func LAN(t testenv.TB, ns *NS, name, cidr string) {
	t.Helper()
	ns.Run(t, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
	ns.Run(t, "ip", "link", "set", name, "up")
	ns.Run(t, "ip", "link", "set", name+"p", "up")
	AddrAdd(t, ns, name, cidr)
}

// Ping sends count pings from src to dst inside ns, one every interval
// seconds ("0.01"), and returns how many were sent and answered. It does
// not need a test, so it can run on any goroutine.
func Ping(ns *NS, src, dst netip.Addr, count int, interval string) (sent, received int, err error) {
	return PingContext(context.Background(), ns, src, dst, count, interval)
}

// PingContext is Ping that kills ping when ctx is done (and then returns
// an error): a test that gives up cancels ctx, so that no ping outlives
// it.
func PingContext(ctx context.Context, ns *NS, src, dst netip.Addr, count int, interval string) (sent, received int, err error) {
	out, _ := ns.CommandContext(ctx, "ping", "-n", "-q", "-c", fmt.Sprint(count), "-i", interval, "-W", "2",
		"-I", src.String(), dst.String()).CombinedOutput()
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("ping %s -> %s in %s: %w", src, dst, ns.Name, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(l, "%d packets transmitted, %d received", &sent, &received); err == nil {
			return sent, received, nil
		}
	}
	return 0, 0, fmt.Errorf("ping %s -> %s in %s: no summary in %q", src, dst, ns.Name, out)
}

// Bridge creates a bridge named name in ns, up, for joining several
// namespaces on one segment.
func Bridge(t testenv.TB, ns *NS, name string) {
	t.Helper()
	ns.Run(t, "ip", "link", "add", name, "type", "bridge")
	ns.Run(t, "ip", "link", "set", name, "up")
}

// AddrAdd assigns an address (CIDR form) to a link in ns. IPv6 addresses
// are added with nodad so that they are usable at once.
func AddrAdd(t testenv.TB, ns *NS, link, cidr string) {
	t.Helper()
	args := []string{"addr", "add", cidr, "dev", link}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	ns.Run(t, "ip", args...)
}

// HTTPGet fetches http://addr/path from inside the namespace (addr is
// host:port) and returns the body of a 200 answer. It dials on a thread in
// the namespace: an http.Client would dial from another goroutine,
// outside it.
func (n *NS) HTTPGet(ctx context.Context, addr, path string) ([]byte, error) {
	var body []byte
	err := n.Do(func() error {
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, err := d.DialContext(dctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			conn.SetDeadline(dl)
		} else {
			conn.SetDeadline(time.Now().Add(10 * time.Second))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return err
		}
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("GET http://%s%s in %s: %w", addr, path, n.Name, err)
	}
	return body, nil
}
