// Command mpsactl is the operator's tool for mpsa: it talks to a running
// mpsad (status, members, peers, rekey), removes a group's kernel objects
// (flush), and works offline on captured
// messages (decode) and key material (keymat).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mpsa/mpsa/internal/version"
	"github.com/mpsa/mpsa/xfrm/killswitch"
)

const usage = `usage: mpsactl COMMAND [OPTIONS]

Talking to mpsad (through its status socket, --socket PATH, default
/run/mpsad/mpsad.sock):
  status [--json]         the daemon, its groups, SPIs, timers and counters
  members GROUP [--json]  a controller's members and the SA each acknowledged
  peers GROUP [--json]    a member's peer prefixes and their underlay addresses
  routes GROUP [--json]   a member's routes (static and learned by BGP: peer,
                          origin, age) or a controller's route reflector
                          (each member's accepted and rejected prefixes)
  rekey GROUP [--json]    make the controller rekey GROUP now; print its new SPI

Kernel objects (works while mpsad is stopped):
  flush GROUP             remove GROUP's kill switch (XFRM block policies or
                          blackhole routes), SAs and XFRM interface; refused
                          while a running mpsad serves GROUP (remove it from
                          the configuration and reload instead)

Offline tools:
  decode [--hex] [--show-keys] [FILE|-]
        Decode an IKEv2 message or a bare MPSA_PUT Notify payload (raw bytes,
        or hex text with --hex) and print it as one JSON object. Nonce and
        SK_d are printed only with --show-keys.
  keymat --proposal PROPOSAL [--prf PRF] --sk-d-file FILE|- --nonce HEX
        Derive the ESP keys of a shared SA, KEYMAT = prf+(SK_d, Nonce), and
        print encr_key= and integ_key= lines. SK_d is read in hex from FILE
        or, with -, from stdin; never from the command line, where other
        users see it.

Options:
  --version   print the version and exit
  --help      this text

Run 'mpsactl COMMAND --help' for a command's options.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one mpsactl invocation and returns its exit status: 0 on
// success, 1 when the command failed (bad input, unreachable daemon), 2 on
// a usage error.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "--version", "-version", "version":
		fmt.Fprintln(stdout, version.String("mpsactl"))
		return 0
	case "--help", "-help", "-h", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "decode":
		return runDecode(args[1:], stdin, stdout, stderr)
	case "keymat":
		return runKeymat(args[1:], stdin, stdout, stderr)
	case "flush":
		return runFlush(args[1:], stdout, stderr, killswitch.FlushGroup)
	case "status", "members", "peers", "rekey", "routes":
		return runDaemonCmd(args[0], args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "mpsactl: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// parseInterleaved parses flags that may stand before or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newFlagSet returns the flag set of a command; help is its synopsis
// without "mpsactl". Its Usage prints to the flag set's output, stderr.
func newFlagSet(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mpsactl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: mpsactl %s\n\n", help)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses a command's arguments (parseInterleaved) and returns
// the positional ones. When the command should not run, ok is false and
// code is its exit status: 0 after printing the usage to stdout for
// --help, 2 after a bad flag, with the usage on stderr.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) (pos []string, code int, ok bool) {
	usage := fs.Usage
	fs.Usage = func() {} // flag would print it to stderr for --help too
	pos, err := parseInterleaved(fs, args)
	fs.Usage = usage
	switch {
	case err == nil:
		return pos, 0, true
	case errors.Is(err, flag.ErrHelp):
		stderr := fs.Output()
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return nil, 0, false
	}
	fs.Usage()
	return nil, 2, false
}
