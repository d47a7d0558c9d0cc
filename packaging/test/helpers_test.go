// Package packaging_test checks the .deb and .rpm that `make package`
// builds, the systemd unit, and (opt-in, see TestDebInstallUpgradeRemove)
// that the .deb installs, upgrades and purges cleanly on this machine.
package packaging_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpsa/mpsa/packaging/internal/pkgbuild"
)

// repoRoot is the repository root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

// run runs a command and returns its combined output, failing the test
// if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// runErr runs a command non-interactively and returns its combined output.
func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = nil // /dev/null: a dpkg conffile prompt fails instead of hanging
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestMain gives the tests a directory shared between them (binaries and
// the 0.1.0 package set are built once per run) and removes it at the end.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	d, err := os.MkdirTemp("", "mpsa-packaging-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(d)
	sharedDir = d
	return m.Run()
}

var (
	// sharedDir holds what several tests use; see TestMain.
	sharedDir string
	// built caches the binaries by version and name: path, or the build
	// error.
	builtMu sync.Mutex
	built   = map[string]buildResult{}
	// shared is the 0.1.0 package set that tests only read.
	sharedOnce sync.Once
	shared     pkgbuild.Result
	sharedErr  error
)

type buildResult struct {
	path string
	err  error
}

// binary builds cmd/NAME once per version, stamped with that version, and
// returns its path.
func binary(t *testing.T, version, name string) string {
	t.Helper()
	builtMu.Lock()
	defer builtMu.Unlock()
	key := version + "/" + name
	r, ok := built[key]
	if !ok {
		r.path = filepath.Join(sharedDir, "bin-"+version, name)
		ldflags := fmt.Sprintf("-X github.com/mpsa/mpsa/internal/version.Version=%s -X github.com/mpsa/mpsa/internal/version.Commit=test", version)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", r.path, "./cmd/"+name)
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, b)
		}
		built[key] = r
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.path
}

// binaries returns mpsad and mpsactl built for version (see binary).
func binaries(t *testing.T, version string) (mpsad, mpsactl string) {
	t.Helper()
	return binary(t, version, "mpsad"), binary(t, version, "mpsactl")
}

// pkgOptions vary a test build.
type pkgOptions struct {
	version  string // upstream version
	conffile string // content of the conffile; the repository's when empty
}

// buildPackages builds the .deb and .rpm into a temporary directory.
func buildPackages(t *testing.T, o pkgOptions) pkgbuild.Result {
	t.Helper()
	in := inputs(t, o)
	if o.conffile != "" {
		in.Conffile = filepath.Join(t.TempDir(), "mpsa.conf")
		if err := os.WriteFile(in.Conffile, []byte(o.conffile), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := pkgbuild.Build(context.Background(), in, t.TempDir())
	if err != nil {
		t.Fatalf("building packages: %v", err)
	}
	return res
}

// sharedPackages is the 0.1.0 package set with the repository's conffile,
// built once for the tests that only read it.
func sharedPackages(t *testing.T) pkgbuild.Result {
	t.Helper()
	in := inputs(t, pkgOptions{})
	sharedOnce.Do(func() {
		shared, sharedErr = pkgbuild.Build(context.Background(), in, filepath.Join(sharedDir, "pkg-0.1.0"))
	})
	if sharedErr != nil {
		t.Fatalf("building packages: %v", sharedErr)
	}
	return shared
}

// inputs are the pkgbuild inputs of o, without its conffile. The examples
// come from packaging/examples, pkgbuild's default.
func inputs(t *testing.T, o pkgOptions) pkgbuild.Inputs {
	t.Helper()
	if o.version == "" {
		o.version = "0.1.0"
	}
	mpsad, mpsactl := binaries(t, o.version)
	return pkgbuild.Inputs{
		Mpsad: mpsad, Mpsactl: mpsactl,
		SourceDir: repoRoot(t),
		Version:   o.version,
		Date:      time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
	}
}

// commonFiles are the files both packages install.
func commonFiles() []string {
	return []string{
		"/etc/swanctl/conf.d/mpsa.conf",
		"/usr/bin/mpsactl",
		"/usr/lib/systemd/system/mpsad.service",
		"/usr/sbin/mpsad",
		"/usr/share/doc/mpsa/README.md",
		"/usr/share/doc/mpsa/examples/controller.conf",
		"/usr/share/doc/mpsa/examples/member.conf",
		"/usr/share/man/man8/mpsactl.8.gz",
		"/usr/share/man/man8/mpsad.8.gz",
	}
}

// debFiles is every file the .deb installs, sorted.
func debFiles() []string { return sorted(append(commonFiles(), "/usr/share/doc/mpsa/copyright")) }

// rpmFiles is every file the .rpm installs, sorted.
func rpmFiles() []string { return sorted(append(commonFiles(), "/usr/share/licenses/mpsa/LICENSE")) }

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

// lines splits command output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
