package version

import (
	"runtime/debug"
	"testing"
)

func buildInfo(mainVersion string, settings ...string) *debug.BuildInfo {
	bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/mpsa/mpsa", Version: mainVersion}}
	for i := 0; i+1 < len(settings); i += 2 {
		bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
	}
	return bi
}

func TestResolve(t *testing.T) {
	const rev = "b150cdabbdff531f4a0818718fe34b9b11186814"
	for _, tc := range []struct {
		name                   string
		stampedV, stampedC     string
		bi                     *debug.BuildInfo
		wantVersion, wantCommt string
	}{
		{"stamped wins", "1.2.0", "abc1234", buildInfo("v9.9.9", "vcs.revision", rev), "1.2.0", "abc1234"},
		{"stamped version, commit from VCS", "1.2.0", "", buildInfo("(devel)", "vcs.revision", rev, "vcs.modified", "false"), "1.2.0", "b150cdabbdff"},
		{"go install module@version", "", "", buildInfo("v1.3.0"), "v1.3.0", UnknownCommit},
		{"go build in a dirty checkout (Go 1.24+)", "", "", buildInfo("v0.0.0-20261123220508-b150cdabbdff+dirty", "vcs", "git", "vcs.revision", rev, "vcs.modified", "true"),
			"v0.0.0-20261123220508-b150cdabbdff+dirty", "b150cdabbdff-dirty"},
		{"go build without VCS stamping", "", "", buildInfo("(devel)"), UnknownVersion, UnknownCommit},
		{"short revision kept whole", "", "", buildInfo("", "vcs.revision", "abc1234"), UnknownVersion, "abc1234"},
		{"no build information", "", "", nil, UnknownVersion, UnknownCommit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, c := Resolve(tc.stampedV, tc.stampedC, tc.bi)
			if v != tc.wantVersion || c != tc.wantCommt {
				t.Errorf("Resolve(%q, %q, ...) = %q, %q; want %q, %q", tc.stampedV, tc.stampedC, v, c, tc.wantVersion, tc.wantCommt)
			}
		})
	}
}

// TestInitFilledIn: whatever the build, the variables are set by the time
// main runs (a test binary has neither stamps nor VCS information).
func TestInitFilledIn(t *testing.T) {
	if Version == "" || Commit == "" {
		t.Errorf("Version %q, Commit %q: init left them empty", Version, Commit)
	}
	if got, want := String("mpsad"), "mpsad "+Version+" (commit "+Commit+")"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}
