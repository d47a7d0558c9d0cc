// Package testenv decides what a test does when something it needs is not on
// the machine: outside CI it skips and says why; in CI (CI=true), where
// .ci/run installs every dependency, it fails, so that nothing is skipped
// silently there.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (the environment variable CI
// is "true" or "1"), where every dependency must be present.
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Unavailable stops the test because something it needs is missing: it
// fails in CI and skips elsewhere, giving the reason either way.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required by this test but unavailable in CI: "+format, args...)
	}
	t.Skipf("skipped: "+format+" (run .ci/run or scripts/install-deps.sh to install it)", args...)
}

// NeedRoot stops the test unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root for network namespaces")
	}
}

// NeedCommand returns the path of an executable, or stops the test if it is
// not installed.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "command %q not found", name)
	}
	return p
}

// NeedFile stops the test unless path exists.
func NeedFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Unavailable(t, "file %s not found", path)
	}
}
