package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlChildNotInstalledSaysWhy reproduces what a fresh Debian
// without libstrongswan-standard-plugins did: the controller's charon runs
// kernel-libipsec without the gcm and openssl plugins, negotiates charon's
// default ESP proposal (AES-GCM) for the control child and cannot install
// it; the member's IKE SA is up, its control child is not. Both mpsads say
// so, in `mpsactl status` and in their logs, with charon's own words, and
// the controller names what its charon lacks as soon as it connects.
func TestControlChildNotInstalledSaysWhy(t *testing.T) {
	e := newEnv(t, envOptions{members: 2, ctlOmitPlugins: []string{"gcm", "openssl"}})
	m1 := e.mems[0]
	problem := func(n *node, words ...string) func() (bool, string) {
		return func() (bool, string) {
			st, err := n.tryStatus()
			if err != nil || len(st.Groups) != 1 {
				return false, fmt.Sprint(err)
			}
			g := st.Groups[0]
			all := strings.Join(g.CharonProblems, "\n")
			for _, p := range g.ControlProblems {
				all += "\n" + p.Problem
			}
			for _, w := range words {
				if !strings.Contains(all, w) {
					return false, all
				}
			}
			return true, all
		}
	}
	const notInstalled = "control child mpsa-ctl of connection mpsa not installed: IKE SA mpsa["
	waitFor(t, "the member's status to say its control child is not installed",
		problem(m1, notInstalled, "is ESTABLISHED but has no CHILD_SA mpsa-ctl"))
	// The member's mpsad started after its charon had tried, so it has
	// not heard charon's words. It asks charon for the child again (after
	// 10 s, then backing off), and charon says why it fails again.
	waitFor(t, "the member's status to say why, in charon's words, after asking charon for the child again",
		problem(m1, notInstalled, "is ESTABLISHED but has no CHILD_SA mpsa-ctl", "charon said: [IKE] received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built"))
	if n := m1.logCount(t, "asking charon to establish the control child again"); n == 0 {
		t.Errorf("the member did not log asking charon for the control child again")
	}
	waitFor(t, "the controller's status to say the member's control child is not installed, and why",
		problem(e.ctl, notInstalled, "(member1.mpsa.test)", "unsupported AEAD algorithm AES_GCM_16"))
	// What the controller's charon lacks, said at its connection.
	ok, all := problem(e.ctl, "no loaded plugin provides AES_GCM_16", "libstrongswan-standard-plugins")()
	if !ok {
		t.Errorf("the controller does not name what its charon lacks:\n%s", all)
	}
	// The member holds no SA; the controller no member.
	if g := m1.status(t).Groups[0]; g.OutboundSPI != "" || g.Controller.State != "down" {
		t.Errorf("member: %+v", g)
	}
	if g := e.ctl.status(t).Groups[0]; len(g.Members) != 0 {
		t.Errorf("controller has members: %+v", g.Members)
	}
	// The logs say it too, and mpsactl status prints it.
	for _, n := range []*node{m1, e.ctl} {
		b, err := os.ReadFile(filepath.Join(n.dir, "mpsad.log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "level=WARN msg=\""+notInstalled) {
			t.Errorf("%s's log does not say it:\n%s", n.name, b)
		}
		out := n.ns.Run(t, filepath.Join(binDir, "mpsactl"), "status", "--socket", n.sock())
		if !strings.Contains(out, "PROBLEM since ") || !strings.Contains(out, notInstalled) {
			t.Errorf("mpsactl status on %s:\n%s", n.name, out)
		}
	}
	// Fix the cause without touching the member: the controller's charon
	// gets a proposal it can install. The member, still asking for its
	// control child, recovers by itself and gets the group SA; the
	// problems go.
	conf := e.lab.Group.ControllerConf()
	fixed := strings.Replace(conf, "        remote_ts = ", "        esp_proposals = aes256-sha256\n        remote_ts = ", 1)
	if fixed == conf {
		t.Fatal("no remote_ts line in the controller's swanctl.conf")
	}
	if err := e.ctl.charon.WriteSwanctlConf(fixed + e.controllerMPSA()); err != nil {
		t.Fatal(err)
	}
	e.ctl.charon.MustSwanctl(t, "--load-conns")
	e.waitSPI(m1)
	if p := m1.status(t).Groups[0].ControlProblems; len(p) != 0 {
		t.Errorf("member1 still reports problems with its control child up: %+v", p)
	}
}
