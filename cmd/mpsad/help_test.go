package main

import (
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/paths"
)

// TestHelpShowsBuildDefaults: --help, which is also the man page, names
// the two defaults this binary was linked with (packaging links the .rpm's
// with Fedora's, see packaging/test TestPackagedBinaries) and points to
// other pages rather than to mpsad(8), which it is.
func TestHelpShowsBuildDefaults(t *testing.T) {
	code, out, errs := runMpsad("--help")
	if code != 0 || errs != "" {
		t.Fatalf("--help: exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{
		"the default,\n                 " + paths.ConfigFile + ",\n",
		paths.VICI + " (setting mpsa.vici)",
		"mpsactl(8)",
		"docs/configuration.md",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "mpsad(8)") {
		t.Errorf("--help (the source of mpsad(8)) refers to mpsad(8):\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 80 {
			t.Errorf("--help line longer than 80 columns: %q", l)
		}
	}
}
