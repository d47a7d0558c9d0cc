//go:build mpsavm

package vm

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpsa/mpsa/test/charon"
)

func containsModule(procModules, name string) bool {
	for _, line := range strings.Split(procModules, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return true
		}
	}
	return false
}

func ipnet(cidr string) *net.IPNet {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	return n
}

// timeline records when the steps of a scenario happened, to line a lost
// datagram up with what the test was doing at the time.
type timeline struct {
	mu     sync.Mutex
	events []string
}

// mark records one step.
func (tl *timeline) mark(format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, time.Now().Format("15:04:05.000000")+" "+fmt.Sprintf(format, args...))
}

// String returns the steps, one per line.
func (tl *timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return strings.Join(tl.events, "\n")
}

// needHost stops the test unless the host's root is mounted in the guest
// with charon, swanctl and ip, and mpsad and mpsactl were built for it; it
// returns the directory of mpsad and mpsactl. The host side turns a
// skipped guest test into a failure under CI=true.
func needHost(t *testing.T) string {
	t.Helper()
	if b, err := os.ReadFile(hostRootErr); err == nil {
		t.Skipf("the host's root is not mounted in the guest: %s", b)
	}
	bin := os.Getenv(BinEnv)
	if bin == "" {
		t.Skipf("no %s on the kernel command line: mpsad was not built for the guest", BinEnv)
	}
	for _, f := range []string{charon.DefaultBinary, filepath.Join(bin, "mpsad"), filepath.Join(bin, "mpsactl")} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("not in the guest: %v", err)
		}
	}
	for _, c := range []string{"swanctl", "ip", "unshare", "sh", "mount"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("command %q not in the guest: %v", c, err)
		}
	}
	return bin
}

// memAvailable returns the guest's MemAvailable line of /proc/meminfo.
func memAvailable() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
