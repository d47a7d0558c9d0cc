package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mpsa/mpsa/swanctl"
)

// runCheck loads and validates the configuration at path and prints the
// effective configuration (as JSON with asJSON) to stdout, or every problem
// to stderr.
func runCheck(path string, asJSON bool, stdout, stderr io.Writer) int {
	cfg, err := swanctl.LoadMPSA(path)
	if err != nil {
		var list swanctl.Errors // what LoadMPSA returns
		errors.As(err, &list)
		for _, e := range list {
			fmt.Fprintln(stderr, e.Error())
		}
		fmt.Fprintf(stderr, "mpsad: %s: %d %s in the configuration\n", path, len(list), plural(len(list), "error", "errors"))
		return exitInvalid
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", w.Pos, w.Msg)
	}
	if asJSON {
		out, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "mpsad: encoding the configuration as JSON: %v\n", err)
			return exitInvalid
		}
		fmt.Fprintln(stdout, string(out))
		return exitOK
	}
	fmt.Fprintf(stdout, "# %s: valid; the effective configuration, defaults included:\n", path)
	fmt.Fprint(stdout, cfg.Format())
	return exitOK
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
