package pkgbuild

import (
	"testing"

	"github.com/mpsa/mpsa/internal/paths"
)

func TestConffilePath(t *testing.T) {
	for format, want := range map[string]string{
		"deb": "/etc/swanctl/conf.d/mpsa.conf",
		"rpm": "/etc/strongswan/swanctl/conf.d/mpsa.conf",
	} {
		if got := ConffilePath(Distro(format)); got != want {
			t.Errorf("%s: ConffilePath %q, want %q", format, got, want)
		}
	}
}

func TestLocalize(t *testing.T) {
	const debian = "# Install it as /etc/swanctl/conf.d/mpsa.conf (the stock\n" +
		"# /etc/swanctl/swanctl.conf includes conf.d/*.conf)\n" +
		"    vici = unix:///var/run/charon.vici\n" +
		"# socket /var/run/charon.vici; status_socket = /run/mpsad/mpsad.sock\n"
	const fedora = "# Install it as /etc/strongswan/swanctl/conf.d/mpsa.conf (the stock\n" +
		"# /etc/strongswan/swanctl/swanctl.conf includes conf.d/*.conf)\n" +
		"    vici = unix:///run/strongswan/charon.vici\n" +
		"# socket /run/strongswan/charon.vici; status_socket = /run/mpsad/mpsad.sock\n"
	if got := localize(debian, paths.Fedora()); got != fedora {
		t.Errorf("localize for Fedora:\n%s\nwant\n%s", got, fedora)
	}
	if got := localize(debian, paths.Debian()); got != debian {
		t.Errorf("localize for Debian changed the text:\n%s", got)
	}
}
