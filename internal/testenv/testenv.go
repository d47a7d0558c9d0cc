// Package testenv decides what a test does when something it needs is not on
// the machine: outside CI it skips and says why; in CI (CI=true), where
// .ci/run installs every dependency, it fails, so that nothing is skipped
// silently there.
package testenv

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// TB is the part of testing.TB that this package, internal/nettest and
// test/charon's Lab use. testing.TB satisfies it; a program that builds
// namespaces with them (test/demo) supplies its own.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
}

var _ TB = testing.TB(nil)

// InCI reports whether the tests run under CI (the environment variable CI
// is "true" or "1"), where every dependency must be present.
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Unavailable stops the test because something it needs is missing: it
// fails in CI and skips elsewhere, giving the reason either way.
func Unavailable(t TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required by this test but unavailable in CI: "+format, args...)
	}
	t.Skipf("skipped: "+format+" (run .ci/run or scripts/install-deps.sh to install it)", args...)
}

// NeedRoot stops the test unless it runs as root.
func NeedRoot(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root for network namespaces")
	}
}

// NeedCommand returns the path of an executable, or stops the test if it is
// not installed.
func NeedCommand(t TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "command %q not found", name)
	}
	return p
}

// NeedFile stops the test unless path exists.
func NeedFile(t TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Unavailable(t, "file %s not found", path)
	}
}

// WaitFor polls cond every 100 ms until it holds, and fails the test if it
// does not within timeout, with what it waited for and the description of
// the state that cond returned last. cond runs on the test's goroutine, so
// it may fail the test itself.
func WaitFor(t TB, timeout time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last seen:\n%s", timeout, what, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StartTied starts cmd, whose SysProcAttr should set Pdeathsig, from a
// locked OS thread that lives exactly as long as the process: the kernel
// sends the parent-death signal when the forking *thread* ends, not the
// test binary, so an unlocked goroutine's thread could trigger it early.
// The channel is closed once the process has been waited for.
func StartTied(cmd *exec.Cmd) (<-chan struct{}, error) {
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	return done, <-started
}
