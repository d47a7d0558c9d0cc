package paths

import (
	"strings"
	"testing"
)

func TestDefaultsAreDebians(t *testing.T) {
	if ConfigFile != "/etc/swanctl/swanctl.conf" || VICI != "unix:///var/run/charon.vici" {
		t.Errorf("unstamped defaults %q, %q; want Debian's (strongSwan's own)", ConfigFile, VICI)
	}
	if got := Current(); got != Debian() {
		t.Errorf("Current() = %+v, want Debian %+v", got, Debian())
	}
}

func TestDistros(t *testing.T) {
	for _, tc := range []struct {
		d                  Distro
		swanctlDir, socket string
	}{
		{Debian(), "/etc/swanctl", "/var/run/charon.vici"},
		// Fedora's strongswan.spec: --sysconfdir=/etc/strongswan
		// --with-piddir=/run/strongswan.
		{Fedora(), "/etc/strongswan/swanctl", "/run/strongswan/charon.vici"},
	} {
		if got := tc.d.SwanctlDir(); got != tc.swanctlDir {
			t.Errorf("%s: SwanctlDir %q, want %q", tc.d.Name, got, tc.swanctlDir)
		}
		if got := tc.d.SocketPath(); got != tc.socket {
			t.Errorf("%s: SocketPath %q, want %q", tc.d.Name, got, tc.socket)
		}
		want := "-X github.com/mpsa/mpsa/internal/paths.ConfigFile=" + tc.d.ConfigFile +
			" -X github.com/mpsa/mpsa/internal/paths.VICI=" + tc.d.VICI
		if got := tc.d.LDFlags(); got != want {
			t.Errorf("%s: LDFlags %q, want %q", tc.d.Name, got, want)
		}
	}
	if got := (Distro{VICI: "tcp://127.0.0.1:4502"}).SocketPath(); got != "" {
		t.Errorf("SocketPath of a tcp URI: %q, want empty", got)
	}
	if strings.ContainsAny(Fedora().ConfigFile+Fedora().VICI+Debian().ConfigFile+Debian().VICI, " \t'\"") {
		t.Error("a default path has a blank or a quote; LDFlags would split it")
	}
}
