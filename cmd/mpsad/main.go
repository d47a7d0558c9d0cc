// Command mpsad runs beside strongSwan's charon and turns it into a
// multi-point VPN (draft-yamaya-ipsecme-mpsa): a controller hands one shared
// ESP SA to every member of a group, and members talk directly with it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mpsa/mpsa/internal/version"
	"github.com/mpsa/mpsa/swanctl"
)

// Exit codes.
const (
	exitOK      = 0
	exitInvalid = 1  // the configuration has errors
	exitUsage   = 2  // bad flags
	exitConfig  = 78 // EX_CONFIG: the daemon cannot start with this configuration
)

const usageText = `Usage: mpsad [--config FILE] [--check [--json]]
       mpsad --version

mpsad runs beside strongSwan's charon and turns it into a multi-point VPN
(draft-yamaya-ipsecme-mpsa): a controller hands one shared ESP SA to every
member of a group after IKEv2, and members then talk directly with it.

Its settings are the mpsa { } section of swanctl.conf, in strongSwan's
syntax; swanctl ignores that section. Every setting and its default:
docs/configuration.md in the source; annotated examples:
/usr/share/doc/mpsa/examples; status, members and rekeys: mpsactl(8).

Options:
  --config FILE  read FILE and what it includes; the default,
                 %s,
                 includes conf.d/*.conf; as for swanctl, the environment
                 variable SWANCTL_DIR replaces its directory
  --check        load and validate the configuration, print the effective
                 configuration with every default filled in, and exit:
                 0 when valid, 1 with every problem listed on stderr
  --json         with --check, print the effective configuration as JSON
  --version      print the version and exit
  --help         print this help and exit

mpsad connects to charon's VICI socket, by default
%s (setting mpsa.vici).
These two defaults are those of the strongSwan package this mpsad was
built for.

Without --check, mpsad runs until SIGTERM or SIGINT, removing the SAs it
installed on the way out; SIGHUP reloads the configuration. Logs go to
stderr (the journal under systemd). mpsactl talks to it through the status
socket (mpsa.status_socket, default /run/mpsad/mpsad.sock).

A member records how far each SA's sequence numbers went in the state
directory, so that they continue there after a restart, a reboot or a
power loss: $STATE_DIRECTORY (set by systemd's StateDirectory=), else
/var/lib/mpsad, in seq/GROUP/SPI.
`

// usage is the help text with this build's defaults.
func usage() string {
	return fmt.Sprintf(usageText, swanctl.DefaultConfigFile(), swanctl.DefaultVICI())
}

// defaultConfig is the file mpsad reads without --config: swanctl.conf in
// swanctlDir, the SWANCTL_DIR environment variable swanctl itself honours,
// or the build's default when that is empty.
func defaultConfig(swanctlDir string) string {
	if swanctlDir != "" {
		return filepath.Join(swanctlDir, "swanctl.conf")
	}
	return swanctl.DefaultConfigFile()
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is mpsad with its arguments and output streams; it returns the exit
// code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mpsad", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The usage is printed below: to stdout for --help, to stderr after a
	// bad flag. flag would print it to stderr in both cases.
	fs.Usage = func() {}
	var (
		config   = fs.String("config", defaultConfig(os.Getenv("SWANCTL_DIR")), "configuration file")
		check    = fs.Bool("check", false, "validate the configuration and exit")
		asJSON   = fs.Bool("json", false, "with --check, print JSON")
		showVers = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage())
			return exitOK
		}
		fmt.Fprint(stderr, usage())
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mpsad: unexpected argument %q; see mpsad --help\n", fs.Arg(0))
		return exitUsage
	}
	switch {
	case *showVers:
		fmt.Fprintln(stdout, version.String("mpsad"))
		return exitOK
	case *asJSON && !*check:
		fmt.Fprintln(stderr, "mpsad: --json works with --check only")
		return exitUsage
	case *check:
		return runCheck(*config, *asJSON, stdout, stderr)
	}
	return runDaemon(*config, stderr)
}
