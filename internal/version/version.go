// Package version holds the version and commit stamped into the binaries at
// build time with -ldflags "-X".
package version

import "fmt"

// Stamped at build time by the Makefile; these are the values of a plain
// `go build`.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line version report of a binary named prog.
func String(prog string) string {
	return fmt.Sprintf("%s %s (commit %s)", prog, Version, Commit)
}
