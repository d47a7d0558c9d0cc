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

// binaries builds mpsactl and mpsad into a temporary directory, stamped
// with version, and returns their paths. When the tree has no cmd/mpsad
// yet, mpsad is the PLACEHOLDER in testdata/mpsad-placeholder (the test
// log says so).
func binaries(t *testing.T, version string) (mpsad, mpsactl string) {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	ldflags := fmt.Sprintf("-X github.com/mpsa/mpsa/internal/version.Version=%s -X github.com/mpsa/mpsa/internal/version.Commit=test", version)
	build := func(out, pkg string) {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	mpsactl = filepath.Join(dir, "mpsactl")
	build(mpsactl, "./cmd/mpsactl")
	mpsad = filepath.Join(dir, "mpsad")
	if _, err := os.Stat(filepath.Join(root, "cmd", "mpsad")); err == nil {
		build(mpsad, "./cmd/mpsad")
	} else {
		t.Logf("cmd/mpsad is not in this tree: packaging the PLACEHOLDER packaging/test/testdata/mpsad-placeholder")
		build(mpsad, "./packaging/test/testdata/mpsad-placeholder")
	}
	return mpsad, mpsactl
}

// examplesDir returns packaging/examples when it holds both examples, or
// else a temporary directory with PLACEHOLDER examples (logged).
func examplesDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "packaging", "examples")
	ok := true
	for _, e := range []string{"controller.conf", "member.conf"} {
		if _, err := os.Stat(filepath.Join(dir, e)); err != nil {
			ok = false
		}
	}
	if ok {
		return dir
	}
	t.Logf("packaging/examples is not complete in this tree: packaging PLACEHOLDER examples")
	dir = t.TempDir()
	for _, e := range []string{"controller.conf", "member.conf"} {
		if err := os.WriteFile(filepath.Join(dir, e), []byte("# PLACEHOLDER "+e+" for the packaging tests\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pkgOptions vary a test build.
type pkgOptions struct {
	version  string // upstream version
	conffile string // content of the conffile; the repository's when empty
}

// buildPackages builds the .deb and .rpm into a temporary directory.
func buildPackages(t *testing.T, o pkgOptions) pkgbuild.Result {
	t.Helper()
	if o.version == "" {
		o.version = "0.1.0"
	}
	mpsad, mpsactl := binaries(t, o.version)
	in := pkgbuild.Inputs{
		Mpsad: mpsad, Mpsactl: mpsactl,
		SourceDir:   repoRoot(t),
		ExamplesDir: examplesDir(t),
		Version:     o.version,
		Date:        time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
	}
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
