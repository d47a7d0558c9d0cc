package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReload: SIGHUP applies a changed peer table without touching the
// SA; a broken configuration is refused and the running one kept.
func TestReload(t *testing.T) {
	e := newEnv(t, envOptions{members: 3})
	spi := e.waitSPI(e.mems...)
	m1 := e.mems[0]
	conf := filepath.Join(m1.charon.SwanctlDir(), "swanctl.conf")
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	pingOK(t, m1, e.mems[2])

	// Drop member3 from member1's routes.
	start := strings.Index(string(orig), "                m3 {")
	if start < 0 {
		t.Fatalf("no m3 route in\n%s", orig)
	}
	n := strings.Index(string(orig[start:]), "}\n")
	if n < 0 {
		t.Fatalf("m3 route does not end in\n%s", orig)
	}
	end := start + n + 2
	writeConf(t, conf, string(orig[:start])+string(orig[end:]))
	m1.mpsad.Process.Signal(syscall.SIGHUP)
	waitFor(t, "member1 to apply its new peer table", func() (bool, string) {
		g := m1.status(t).Groups[0]
		return len(g.Peers) == 1 && g.Peers[0].Prefix == e.mems[1].lan.String(), ""
	})
	g := m1.status(t).Groups[0]
	if g.OutboundSPI != spi || len(g.InboundSPIs) != 1 {
		t.Fatalf("reloading routes changed the SA: %+v", g)
	}
	pingOK(t, m1, e.mems[1])
	if s, r := ping(t, m1, e.mems[2], 2, "0.1"); r != 0 {
		t.Errorf("member3 still reachable after its route was removed: %d of %d", r, s)
	}

	// A broken configuration is refused; the running one stays.
	writeConf(t, conf, string(orig)+"\nmpsa { colour = blue }\n")
	m1.mpsad.Process.Signal(syscall.SIGHUP)
	waitFor(t, "member1 to log the refused reload", func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(m1.dir, "mpsad.log"))
		return strings.Contains(string(b), "reload: configuration has errors; keeping the running one"), ""
	})
	if g := m1.status(t).Groups[0]; len(g.Peers) != 1 || g.OutboundSPI != spi {
		t.Fatalf("a refused reload changed the member: %+v", g)
	}
	pingOK(t, m1, e.mems[1])

	// Another change (the TUN's name) rebuilds the group: the old device
	// goes, the new one comes, and the member gets the SA again.
	writeConf(t, conf, strings.Replace(string(orig), "tun = mpsa0", "tun = mpsa1", 1))
	m1.mpsad.Process.Signal(syscall.SIGHUP)
	waitFor(t, "member1 to rebuild its group on mpsa1", func() (bool, string) {
		g := m1.status(t).Groups[0]
		_, err := m1.ns.Command("ip", "link", "show", "mpsa1").CombinedOutput()
		return err == nil && g.OutboundSPI == spi && len(g.Peers) == 2, g.OutboundSPI
	})
	if out, err := m1.ns.Command("ip", "link", "show", "mpsa0").CombinedOutput(); err == nil {
		t.Errorf("mpsa0 survived the rebuild: %s", out)
	}
	pingOK(t, m1, e.mems[2])
}

func writeConf(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
