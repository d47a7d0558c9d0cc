//go:build mpsavm

package vm

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
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
