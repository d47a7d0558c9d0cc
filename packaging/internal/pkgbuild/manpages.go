package pkgbuild

import (
	"github.com/mpsa/mpsa/internal/paths"
	"github.com/mpsa/mpsa/packaging/internal/manpage"
)

// manPages are the pages Build generates, without their help text: the
// binaries' --help supplies NAME's neighbours SYNOPSIS, DESCRIPTION and
// OPTIONS; these add what a man page has and --help does not. FILES names
// the paths of distribution d, whose defaults the binaries have.
func manPages(in *Inputs, d paths.Distro) []manpage.Page {
	source := "mpsa " + in.Version
	const manual = "System Manager's Manual"
	return []manpage.Page{
		{
			Name: "mpsad", Section: 8, Source: source, Manual: manual, Date: in.Date,
			Summary: "multi-point IPsec SAs beside strongSwan's charon",
			Extra: []manpage.Section{
				{Title: "Signals", Items: []manpage.Item{
					{Term: "SIGHUP", Text: "Reload the configuration and apply the difference (systemctl reload mpsad). An invalid configuration is reported and the running one kept."},
					{Term: "SIGTERM, SIGINT", Text: "Shut down gracefully, removing the SAs, policies and devices mpsad installed."},
				}},
				{Title: "Systemd", Text: "mpsad.service is Type=notify: mpsad reports READY=1 once it is connected to charon's VICI socket and has loaded its configuration, and sends watchdog keep-alives from its main loop (WatchdogSec=30s). It requires strongswan.service, the unit of charon-systemd. Logs: journalctl -u mpsad."},
				{Title: "Files", Items: []manpage.Item{
					{Term: d.ConfigFile, Text: "read by default; includes conf.d/*.conf. mpsad reads its mpsa { } section."},
					{Term: ConffilePath(d), Text: "the place for mpsa's settings and the connections they use; kept on upgrades."},
					{Term: ExamplesDir + "/", Text: "annotated controller and member configurations."},
					{Term: d.SocketPath(), Text: "charon's VICI socket (the default of mpsa.vici)."},
					{Term: "/run/mpsad/mpsad.sock", Text: "the status socket mpsactl talks to."},
					{Term: "/var/lib/mpsad/seq/", Text: "the sequence-number leases of both data planes, one file per group and SA (StateDirectory=mpsad; STATE_DIRECTORY names it)."},
				}},
				{Title: "See also", Text: "mpsactl(8), swanctl(8), swanctl.conf(5), charon-systemd(8), systemctl(1), journalctl(1)"},
			},
		},
		{
			Name: "mpsactl", Section: 8, Source: source, Manual: manual, Date: in.Date,
			Summary:     "control and inspect mpsad, decode MPSA messages",
			Description: "mpsactl is the operator's tool for mpsa. It talks to a running mpsad over its status socket and works offline on captured MPSA messages and key material.",
			Extra: []manpage.Section{
				{Title: "Files", Items: []manpage.Item{
					{Term: "/run/mpsad/mpsad.sock", Text: "the status socket of mpsad."},
				}},
				{Title: "See also", Text: "mpsad(8), swanctl(8)"},
			},
		},
	}
}
