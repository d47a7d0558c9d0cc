// Package packaging_test checks the .deb and .rpm that `make package`
// builds, the systemd unit, and (opt-in, see TestDebInstallUpgradeRemove)
// that the .deb installs, upgrades and purges cleanly on this machine.
package packaging_test

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
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
// returns its path. The packages build their own (pkgbuild.Build); this one
// is for the tests that need a binary outside a package.
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
// come from packaging/examples, pkgbuild's default; the binaries are
// stamped with commit "test".
func inputs(t *testing.T, o pkgOptions) pkgbuild.Inputs {
	t.Helper()
	if o.version == "" {
		o.version = "0.1.0"
	}
	return pkgbuild.Inputs{
		SourceDir: repoRoot(t),
		Version:   o.version,
		Commit:    "test",
		Date:      time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
	}
}

// The conffile of each package: under the swanctl directory of the
// distribution's strongSwan. Written out, not derived from pkgbuild, so
// that a wrong path there fails the tests.
const (
	debConffile = "/etc/swanctl/conf.d/mpsa.conf"
	rpmConffile = "/etc/strongswan/swanctl/conf.d/mpsa.conf"
)

// commonFiles are the files both packages install.
func commonFiles() []string {
	return []string{
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
func debFiles() []string {
	return sorted(append(commonFiles(), debConffile, "/usr/share/doc/mpsa/copyright"))
}

// rpmFiles is every file the .rpm installs, sorted.
func rpmFiles() []string {
	return sorted(append(commonFiles(), rpmConffile, "/usr/share/licenses/mpsa/LICENSE"))
}

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

// distroPaths are what a package's files and binaries must name: its
// distribution's paths, and never the other's (foreign).
type distroPaths struct {
	configFile, vici, socket, conffile string
	foreign                            []string
}

// Written out rather than taken from internal/paths, so that a wrong path
// there fails the tests.
var (
	debianPaths = distroPaths{
		configFile: "/etc/swanctl/swanctl.conf", vici: "unix:///var/run/charon.vici",
		socket: "/var/run/charon.vici", conffile: debConffile,
		foreign: []string{"/etc/strongswan/", "/run/strongswan/"},
	}
	fedoraPaths = distroPaths{
		configFile: "/etc/strongswan/swanctl/swanctl.conf", vici: "unix:///run/strongswan/charon.vici",
		socket: "/run/strongswan/charon.vici", conffile: rpmConffile,
		foreign: []string{"/etc/swanctl/", "/var/run/charon.vici", " /run/charon.vici"},
	}
)

// builtPackage is one package of a pkgbuild.Result.
type builtPackage struct {
	format, path string
	want         distroPaths
}

func packagesOf(res pkgbuild.Result) []builtPackage {
	return []builtPackage{{"deb", res.Deb, debianPaths}, {"rpm", res.RPM, fedoraPaths}}
}

// extract unpacks a package's files into a new directory and returns it:
// a .deb with dpkg-deb, an .rpm with rpm2archive and tar.
func extract(t *testing.T, format, pkg string) string {
	t.Helper()
	root := t.TempDir()
	switch format {
	case "deb":
		run(t, testenv.NeedCommand(t, "dpkg-deb"), "-x", pkg, root)
	case "rpm":
		r2a := testenv.NeedCommand(t, "rpm2archive")
		tar := testenv.NeedCommand(t, "tar")
		f, err := os.Open(pkg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		conv := exec.Command(r2a, "-")
		conv.Stdin = f
		untar := exec.Command(tar, "-xz", "-C", root)
		pipe, err := conv.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		untar.Stdin = pipe
		var stderr strings.Builder
		conv.Stderr, untar.Stderr = &stderr, &stderr
		if err := untar.Start(); err != nil {
			t.Fatal(err)
		}
		if err := conv.Run(); err != nil {
			untar.Wait()
			t.Fatalf("rpm2archive %s: %v\n%s", pkg, err, stderr.String())
		}
		if err := untar.Wait(); err != nil {
			t.Fatalf("tar -xz of rpm2archive's output: %v\n%s", err, stderr.String())
		}
	default:
		t.Fatalf("unknown format %q", format)
	}
	return root
}

// packagedBinary is the path of mpsad or mpsactl under an extracted root.
func packagedBinary(root, name string) string {
	if name == "mpsad" {
		return filepath.Join(root, filepath.FromSlash(pkgbuild.MpsadPath))
	}
	return filepath.Join(root, filepath.FromSlash(pkgbuild.MpsactlPath))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// gunzip returns the content of a gzipped file.
func gunzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// roffEscape is s as the man pages write it (a hyphen is \-).
func roffEscape(s string) string { return strings.ReplaceAll(s, "-", `\-`) }
