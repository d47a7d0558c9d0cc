// Package version holds the version and commit of the binaries.
//
// `make build` and the packages stamp them at link time with
//
//	-ldflags "-X github.com/mpsa/mpsa/internal/version.Version=V -X github.com/mpsa/mpsa/internal/version.Commit=C"
//
// (the packages with their own package version, so that `mpsad --version`
// and `dpkg -l`/`rpm -q` agree). A plain `go build` or `go install` leaves
// them empty; they are then filled in at start-up from the build
// information the go command embeds (see FromBuildInfo), and "dev" and
// "unknown" are the last resort.
package version

import (
	"fmt"
	"runtime/debug"
)

// The version and commit of this binary: stamped at link time, else from
// the embedded build information (filled in by init, so always set when
// main runs).
var (
	Version string
	Commit  string
)

// Unstamped is what Version and Commit are when neither stamping nor build
// information says anything.
const (
	UnknownVersion = "dev"
	UnknownCommit  = "unknown"
)

func init() {
	bi, _ := debug.ReadBuildInfo()
	Version, Commit = Resolve(Version, Commit, bi)
}

// String is the one-line version report of a binary named prog.
func String(prog string) string {
	return fmt.Sprintf("%s %s (commit %s)", prog, Version, Commit)
}

// Resolve returns the version and commit to report: the stamped ones where
// set, else those of the build information bi (nil when the binary has
// none), else UnknownVersion and UnknownCommit.
func Resolve(stampedVersion, stampedCommit string, bi *debug.BuildInfo) (version, commit string) {
	v, c := FromBuildInfo(bi)
	version, commit = stampedVersion, stampedCommit
	if version == "" {
		version = v
	}
	if commit == "" {
		commit = c
	}
	if version == "" {
		version = UnknownVersion
	}
	if commit == "" {
		commit = UnknownCommit
	}
	return version, commit
}

// FromBuildInfo extracts a version and a commit from the build information
// the go command embeds: the main module's version (v1.2.3 after `go
// install ...@v1.2.3`; since Go 1.24 a pseudo-version derived from the
// checkout for `go build`, "(devel)" before that and in tests: none), and
// the VCS revision shortened to 12 hex digits, with "-dirty" when the
// working tree had changes. Either is "" when bi does not say.
func FromBuildInfo(bi *debug.BuildInfo) (version, commit string) {
	if bi == nil {
		return "", ""
	}
	if v := bi.Main.Version; v != "(devel)" {
		version = v
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit != "" && modified {
		commit += "-dirty"
	}
	return version, commit
}
