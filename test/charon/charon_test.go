package charon_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/test/charon"
)

// waitFor polls cond every 50 ms until it holds or the (generous) deadline
// passes.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last state:\n%s", what, last)
}

func TestLabMembersEstablish(t *testing.T) {
	lab := charon.NewLab(t, charon.LabOptions{Members: 2})
	ctl, members := lab.StartCharons(t)
	if ctl.PIDFile() == 0 || ctl.PIDFile() != ctl.PID() {
		t.Errorf("pid file in private /run says %d, process is %d", ctl.PIDFile(), ctl.PID())
	}
	if _, err := os.Stat("/run/charon.pid"); err == nil {
		// Not fatal (the host may run its own charon) but worth a note.
		t.Logf("note: host /run/charon.pid exists")
	}
	waitFor(t, "two control children on the controller", func() (bool, string) {
		out := ctl.MustSwanctl(t, "--list-sas")
		return strings.Count(out, "INSTALLED") == 2 && strings.Count(out, "ESTABLISHED") == 2, out
	})
	for i, m := range members {
		out := m.MustSwanctl(t, "--list-sas")
		if !strings.Contains(out, "INSTALLED") || !strings.Contains(out, lab.Members[i].Peer.Control.String()) {
			t.Errorf("member %d has no installed control child:\n%s", i, out)
		}
	}
	// Restart keeps the instance usable: the member initiates again.
	if err := members[0].Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "member 0 to come back", func() (bool, string) {
		out := members[0].MustSwanctl(t, "--list-sas")
		return strings.Contains(out, "INSTALLED"), out
	})
}
