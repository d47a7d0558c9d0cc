// Package paths holds the two defaults of mpsad that depend on how the
// distribution built strongSwan: the configuration file mpsad reads
// (swanctl.conf, under strongSwan's sysconfdir) and charon's VICI socket
// (under strongSwan's piddir). strongSwan compiles these paths in at build
// time, so mpsad does too: the variables below are set at link time with
//
//	go build -ldflags "$(Distro.LDFlags)"   # e.g. -X github.com/mpsa/mpsa/internal/paths.VICI=unix:///run/strongswan/charon.vici
//
// and default to Debian's paths, those of strongSwan's own defaults
// (sysconfdir /etc, piddir /var/run). packaging builds the .deb's binaries
// with Debian and the .rpm's with Fedora.
package paths

import (
	"fmt"
	"path"
	"strings"
)

// Set at link time (see the package comment); Debian's when not.
var (
	// ConfigFile is the file mpsad reads without --config: swanctl's
	// swanctl.conf, which includes conf.d/*.conf.
	ConfigFile = debianConfigFile
	// VICI is the default of the vici setting: charon's VICI socket as
	// a URI.
	VICI = debianVICI
)

// Debian and Fedora build strongSwan with different directories:
//
//	         sysconfdir           piddir
//	Debian   /etc                 /var/run (= /run)
//	Fedora   /etc/strongswan      /run/strongswan
//
// swanctl reads SYSCONFDIR/swanctl/swanctl.conf and charon's vici plugin
// listens on unix://PIDDIR/charon.vici.
const (
	debianConfigFile = "/etc/swanctl/swanctl.conf"
	debianVICI       = "unix:///var/run/charon.vici"
	fedoraConfigFile = "/etc/strongswan/swanctl/swanctl.conf"
	fedoraVICI       = "unix:///run/strongswan/charon.vici"
)

// Distro is the set of defaults for one distribution's strongSwan.
type Distro struct {
	// Name is the distribution family, "debian" or "fedora".
	Name string
	// ConfigFile is swanctl.conf; VICI charon's VICI socket URI.
	ConfigFile, VICI string
}

// Debian is Debian's and Ubuntu's strongSwan, and strongSwan's own
// defaults: what a plain `go build` uses.
func Debian() Distro {
	return Distro{Name: "debian", ConfigFile: debianConfigFile, VICI: debianVICI}
}

// Fedora is Fedora's and RHEL's strongSwan (configured with
// --sysconfdir=/etc/strongswan --with-piddir=/run/strongswan).
func Fedora() Distro {
	return Distro{Name: "fedora", ConfigFile: fedoraConfigFile, VICI: fedoraVICI}
}

// Current is the defaults this binary was built with.
func Current() Distro {
	d := Distro{ConfigFile: ConfigFile, VICI: VICI}
	for _, k := range []Distro{Debian(), Fedora()} {
		if d.ConfigFile == k.ConfigFile && d.VICI == k.VICI {
			d.Name = k.Name
		}
	}
	return d
}

// SwanctlDir is the directory of ConfigFile: swanctl's configuration
// directory, whose conf.d/*.conf swanctl.conf includes.
func (d Distro) SwanctlDir() string { return path.Dir(d.ConfigFile) }

// SocketPath is the file system path of the VICI socket, or "" when VICI
// is not a unix:// URI.
func (d Distro) SocketPath() string {
	p, ok := strings.CutPrefix(d.VICI, "unix://")
	if !ok {
		return ""
	}
	return p
}

// LDFlags are the go build -ldflags arguments that make a binary use d's
// defaults. Neither path contains a blank, so the result can be joined
// with other -ldflags arguments by a space.
func (d Distro) LDFlags() string {
	const pkg = "github.com/mpsa/mpsa/internal/paths"
	return fmt.Sprintf("-X %s.ConfigFile=%s -X %s.VICI=%s", pkg, d.ConfigFile, pkg, d.VICI)
}
