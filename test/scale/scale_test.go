package scale_test

import (
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/server"
	"github.com/mpsa/mpsa/test/charon"
	"github.com/mpsa/mpsa/test/scale"
)

// suiteMembers is the harness's N in the suite: enough for one charon to
// carry many IKE SAs and one load generator many groups, small enough for
// a CI machine with two cores.
const suiteMembers = 50

// TestScaleHarness runs the scale harness with a small N and checks
// correctness only (speed is measured by `make scale`): every member
// acknowledged the same SA after the join, after a rekey and after the
// controller's mpsad restarted; no member was lost or reconnected on the
// way; every member installed exactly those three SAs, in order, with the
// same keys as every other member, and switched to the rekeyed one.
func TestScaleHarness(t *testing.T) {
	charon.Need(t)
	bin := buildBinaries(t)
	h := scale.New(t, scale.Options{Members: suiteMembers, Bin: bin, Log: logWriter{t}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", h.Logs())
		}
	})
	ctx := t.Context()

	join, err := h.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	joined := checkAcked(t, h, "join", join.SPI)

	rekey, err := h.Rekey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rekey.SPI == join.SPI {
		t.Fatalf("the rekey kept SPI %s", join.SPI)
	}
	rekeyed := checkAcked(t, h, "rekey", rekey.SPI)
	sameMembers(t, "the rekey", joined, rekeyed)
	// After rollover1 (1 s) every member sends with the new SA.
	testenv.WaitFor(t, time.Minute, "every member to send with "+rekey.SPI, func() (bool, string) {
		rec, err := h.Record(ctx)
		if err != nil {
			return false, err.Error()
		}
		var behind []string
		for i := 1; i <= suiteMembers; i++ {
			if g := rec.Groups[scale.MemberConn(i)]; g.Outbound != rekey.SPI {
				behind = append(behind, fmt.Sprintf("%s=%q", scale.MemberConn(i), g.Outbound))
			}
		}
		return len(behind) == 0, fmt.Sprint(behind)
	})

	restart, err := h.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if restart.SPI == rekey.SPI || restart.SPI == join.SPI {
		t.Fatalf("the restarted mpsad pushed SPI %s again (join %s, rekey %s)", restart.SPI, join.SPI, rekey.SPI)
	}
	restarted := checkAcked(t, h, "restart", restart.SPI)
	sameMembers(t, "the restart", rekeyed, restarted)

	rec, err := h.Record(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{join.SPI, rekey.SPI, restart.SPI}
	for i := 1; i <= suiteMembers; i++ {
		name := scale.MemberConn(i)
		g, ok := rec.Groups[name]
		if !ok {
			t.Errorf("the load generator has no group %s", name)
			continue
		}
		var installed []string
		for _, c := range g.Calls {
			if c.Err != "" {
				t.Errorf("%s: %s %s failed: %s", name, c.Op, c.SPI, c.Err)
			}
			if c.Op == scale.OpInstall {
				installed = append(installed, c.SPI)
			}
		}
		if !slices.Equal(installed, want) {
			t.Errorf("%s installed %v, want %v", name, installed, want)
		}
	}
	for _, spi := range want {
		if n := rec.KeySets[spi]; n != 1 {
			t.Errorf("SA %s was installed with %d different key sets; every member must derive the same keys", spi, n)
		}
	}
	if n := h.ChildDowns(); n != 0 {
		t.Errorf("%d control children went down at the controller during the run", n)
	}
	r, err := h.Result()
	if err != nil {
		t.Fatal(err)
	}
	if r.Members != suiteMembers || r.Rekey.SPI != rekey.SPI || r.Restart.SPI != restart.SPI {
		t.Errorf("result %+v does not match the phases", r)
	}
	// Every phase pushed at least one datagram to every member.
	for _, p := range []scale.Phase{r.Join.Phase, r.Rekey.Phase, r.Restart.Phase} {
		if p.Sent < suiteMembers || p.Received < suiteMembers {
			t.Errorf("a phase counted %d datagrams sent and %d received through the controller's ipsec0, want at least %d each", p.Sent, p.Received, suiteMembers)
		}
	}
	t.Log(r.Line())
}

// checkAcked checks, in the controller's status and the load generator's
// record, that all N members acknowledged and installed spi, and returns
// the controller's members.
func checkAcked(t *testing.T, h *scale.Harness, phase, spi string) []server.MemberStatus {
	t.Helper()
	st, err := h.ControllerStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Groups) != 1 || st.Groups[0].Name != scale.GroupName {
		t.Fatalf("%s: controller groups %+v, want one, %s", phase, st.Groups, scale.GroupName)
	}
	g := st.Groups[0]
	if g.SPI != spi {
		t.Errorf("%s: the controller's SPI is %s, want %s", phase, g.SPI, spi)
	}
	var addrs []string
	for _, m := range g.Members {
		addrs = append(addrs, m.Address)
		if m.AckedSPI != spi {
			t.Errorf("%s: member %s (%s) acknowledged %q, want %s", phase, m.ID, m.Address, m.AckedSPI, spi)
		}
	}
	var want []string
	for i := 1; i <= suiteMembers; i++ {
		want = append(want, scale.MemberControl(i).String())
	}
	slices.Sort(addrs)
	slices.Sort(want)
	if !slices.Equal(addrs, want) {
		t.Errorf("%s: the controller lists members %v, want %v", phase, addrs, want)
	}
	rec, err := h.Record(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= suiteMembers; i++ {
		if _, ok := rec.Groups[scale.MemberConn(i)].Installed(spi); !ok {
			t.Errorf("%s: member %d did not install %s", phase, i, spi)
		}
	}
	return g.Members
}

// sameMembers checks that no member reconnected: the same addresses on
// the same IKE SAs.
func sameMembers(t *testing.T, what string, before, after []server.MemberStatus) {
	t.Helper()
	key := func(ms []server.MemberStatus) []string {
		var out []string
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%s@%d/%s", m.Address, m.IKE, m.IKESPIs))
		}
		slices.Sort(out)
		return out
	}
	if b, a := key(before), key(after); !slices.Equal(b, a) {
		t.Errorf("the members' IKE SAs changed across %s:\nbefore %v\nafter  %v", what, b, a)
	}
}

// buildBinaries builds mpsad, mpsactl and mpsa-scale for the harness.
func buildBinaries(t *testing.T) string {
	t.Helper()
	testenv.NeedCommand(t, "go")
	d := t.TempDir()
	out, err := exec.Command("go", "build", "-o", d+"/", "../../cmd/mpsad", "../../cmd/mpsactl", "./cmd/mpsa-scale").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return d
}

// logWriter sends the harness's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// TestScaleHarnessBGP runs the harness's BGP mode with a small N and
// checks correctness only: the route reflector in the controller's mpsad
// accepts every member's prefixes, every member learns every other's
// (the harness waits for that), and after the controller's mpsad restarts
// every member has a new session and all the prefixes again.
func TestScaleHarnessBGP(t *testing.T) {
	charon.Need(t)
	const n = 20
	bin := buildBinaries(t)
	h := scale.New(t, scale.Options{Members: n, Bin: bin, Log: logWriter{t}, BGP: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", h.Logs())
		}
	})
	ctx := t.Context()
	if _, err := h.Join(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := h.BGP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Prefixes != scale.BGPPrefixes*(n-1) || b.Accepted != scale.BGPPrefixes*n || b.Rejected != 0 || b.Reflector != "mpsad" {
		t.Errorf("bgp phase %+v", b)
	}
	if _, err := h.Rekey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := h.Result()
	if err != nil {
		t.Fatal(err)
	}
	if r.BGP == nil || r.BGP.Resync <= 0 || r.BGP.Converged <= 0 {
		t.Errorf("result's bgp %+v", r.BGP)
	}
	t.Log(r.Line())
}
