// Package nettest builds throw-away network namespaces and veth links for
// tests, and removes them when the test ends, whether it passed or not.
package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

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
func NewNS(t testing.TB, label string) *NS {
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

// Run runs a command inside the namespace and fails the test if it fails.
// It returns the combined output.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
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
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	tmp := "mvt" + randSuffix()
	a.Run(t, "ip", "link", "add", tmp, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.Run(t, "ip", "link", "set", tmp, "name", aName)
	a.Run(t, "ip", "link", "set", aName, "up")
	b.Run(t, "ip", "link", "set", bName, "up")
}

// Bridge creates a bridge named name in ns, up, for joining several
// namespaces on one segment.
func Bridge(t testing.TB, ns *NS, name string) {
	t.Helper()
	ns.Run(t, "ip", "link", "add", name, "type", "bridge")
	ns.Run(t, "ip", "link", "set", name, "up")
}

// AddrAdd assigns an address (CIDR form) to a link in ns. IPv6 addresses
// are added with nodad so that they are usable at once.
func AddrAdd(t testing.TB, ns *NS, link, cidr string) {
	t.Helper()
	args := []string{"addr", "add", cidr, "dev", link}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	ns.Run(t, "ip", args...)
}
