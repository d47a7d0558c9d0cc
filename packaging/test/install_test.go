package packaging_test

import (
	"crypto/md5"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/packaging/internal/pkgbuild"
)

// dpkgOptIn is the environment variable that lets TestDebInstallUpgradeRemove
// install packages on a machine outside CI.
const dpkgOptIn = "MPSA_TEST_DPKG"

// enableLinks are the symlinks `systemctl enable mpsad` creates (the unit
// is WantedBy multi-user.target and strongswan.service).
func enableLinks() []string {
	return []string{
		"/etc/systemd/system/multi-user.target.wants/mpsad.service",
		"/etc/systemd/system/strongswan.service.wants/mpsad.service",
	}
}

// TestDebInstallUpgradeRemove installs the .deb on this machine with dpkg,
// checks every file, keeps an edited conffile across a reinstall and an
// upgrade, replaces an unedited one, and checks that remove and purge
// leave nothing behind. It changes the machine, so it runs only under
// CI=true or with MPSA_TEST_DPKG=1, and purges mpsa at the end even when it
// fails. It refuses to run where mpsa is already installed.
func TestDebInstallUpgradeRemove(t *testing.T) {
	if !testenv.InCI() && os.Getenv(dpkgOptIn) != "1" {
		t.Skipf("skipped: installs and purges the mpsa .deb on this machine; runs under CI=true, or set %s=1 to run it here", dpkgOptIn)
	}
	testenv.NeedRoot(t)
	dpkg := testenv.NeedCommand(t, "dpkg")
	dpkgQuery := testenv.NeedCommand(t, "dpkg-query")
	systemctl := testenv.NeedCommand(t, "systemctl")
	sa := testenv.NeedCommand(t, "systemd-analyze")
	for _, dep := range pkgbuild.DebDepends() {
		if out, _ := runErr(dpkgQuery, "-W", "-f=${Status}", dep); out != "install ok installed" {
			testenv.Unavailable(t, "Debian package %s (a dependency of the .deb) is not installed", dep)
		}
	}
	if out, _ := runErr(dpkgQuery, "-W", "-f=${Status}", "mpsa"); strings.Contains(out, "installed") {
		// Never purge an mpsa the developer installed.
		testenv.Unavailable(t, "mpsa is already installed here (%s); the test would purge it", out)
	}
	t.Cleanup(func() {
		if out, err := runErr(dpkg, "--purge", "mpsa"); err != nil {
			t.Errorf("cleanup: dpkg --purge mpsa: %v\n%s", err, out)
		}
		for _, l := range enableLinks() {
			os.Remove(l)
		}
	})

	const (
		v1conf = "# mpsa.conf as packaged in 0.1.0\n"
		v2conf = "# mpsa.conf as packaged in 0.2.0, changed\n"
		edited = "# edited by the operator\nmpsa {\n    role = member\n}\n"
	)
	v1 := buildPackages(t, pkgOptions{version: "0.1.0", conffile: v1conf})
	v2 := buildPackages(t, pkgOptions{version: "0.2.0", conffile: v2conf})
	conf := debConffile
	status := func() string {
		out, _ := runErr(dpkgQuery, "-W", "-f=${Status} ${Version}", "mpsa")
		return out
	}
	readConf := func() string {
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatalf("reading the conffile: %v", err)
		}
		return string(b)
	}

	// Install: every file in place, listed by dpkg -L, and working.
	run(t, dpkg, "-i", v1.Deb)
	if got := status(); got != "install ok installed 0.1.0-1" {
		t.Fatalf("after install: status %q", got)
	}
	listed := map[string]bool{}
	for _, l := range lines(run(t, dpkgQuery, "-L", "mpsa")) {
		listed[l] = true
	}
	for _, f := range debFiles() {
		if !listed[f] {
			t.Errorf("dpkg -L mpsa does not list %s", f)
		}
		if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s not installed as a file: %v", f, err)
		}
	}
	for _, f := range []string{pkgbuild.MpsadPath, pkgbuild.MpsactlPath} {
		if fi, err := os.Stat(f); err == nil && fi.Mode().Perm() != 0o755 {
			t.Errorf("%s has mode %v, want 0755", f, fi.Mode().Perm())
		}
	}
	if fi, err := os.Stat(conf); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600 (it will hold secrets)", conf, fi.Mode().Perm())
	}
	if out := run(t, pkgbuild.MpsactlPath, "--version"); !strings.HasPrefix(out, "mpsactl 0.1.0 ") {
		t.Errorf("installed mpsactl --version: %q", out)
	}
	if out := run(t, pkgbuild.MpsadPath, "--version"); !strings.HasPrefix(out, "mpsad 0.1.0 ") {
		t.Errorf("installed mpsad --version: %q", out)
	}
	if out := run(t, pkgbuild.MpsadPath, "--help"); !strings.Contains(out, "/etc/swanctl/swanctl.conf") || !strings.Contains(out, "unix:///var/run/charon.vici") {
		t.Errorf("installed mpsad --help lacks Debian's swanctl.conf or VICI socket:\n%s", out)
	}
	// The installed unit, with its real ExecStart and man pages.
	if out, err := runErr(sa, "verify", pkgbuild.UnitPath); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", pkgbuild.UnitPath, err, out)
	}
	if got := readConf(); got != v1conf {
		t.Errorf("conffile after install: %q, want the packaged %q", got, v1conf)
	}

	// An edited conffile survives a reinstall of the same version...
	if err := os.WriteFile(conf, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dpkg, "-i", "--force-confold", v1.Deb)
	if got := readConf(); got != edited {
		t.Errorf("conffile after reinstall: %q, want the edited %q", got, edited)
	}
	// ...and an upgrade that changes the packaged one: dpkg keeps the
	// operator's and puts the new default beside it.
	run(t, dpkg, "-i", "--force-confold", v2.Deb)
	if got := status(); got != "install ok installed 0.2.0-1" {
		t.Fatalf("after upgrade: status %q", got)
	}
	if got := readConf(); got != edited {
		t.Errorf("conffile after upgrade: %q, want the edited %q", got, edited)
	}
	if b, err := os.ReadFile(conf + ".dpkg-dist"); err != nil || string(b) != v2conf {
		t.Errorf("new default beside the edited conffile: %q, %v; want %s.dpkg-dist with %q", b, err, conf, v2conf)
	}

	// Enabled, then removed: binaries, unit and enablement links go, the
	// conffile stays until purge.
	run(t, systemctl, "enable", "mpsad.service")
	for _, l := range enableLinks() {
		if _, err := os.Lstat(l); err != nil {
			t.Errorf("systemctl enable mpsad did not create %s: %v", l, err)
		}
	}
	run(t, dpkg, "--remove", "mpsa")
	if got := status(); !strings.HasPrefix(got, "deinstall ok config-files") {
		t.Errorf("after remove: status %q, want config-files", got)
	}
	for _, f := range debFiles() {
		_, err := os.Lstat(f)
		if f == conf {
			if err != nil {
				t.Errorf("remove deleted the conffile: %v", err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s left after remove", f)
		}
	}
	for _, l := range enableLinks() {
		if _, err := os.Lstat(l); err == nil {
			t.Errorf("%s left after remove", l)
		}
	}

	// Purge: nothing left, not even the conffile or dpkg's copies of it.
	run(t, dpkg, "--purge", "mpsa")
	if got := status(); strings.Contains(got, "installed") || strings.Contains(got, "config-files") {
		t.Errorf("after purge: status %q", got)
	}
	leftovers := []string{conf, conf + ".dpkg-dist", conf + ".dpkg-old", pkgbuild.DocDir, pkgbuild.ExamplesDir}
	leftovers = append(leftovers, debFiles()...)
	for _, f := range leftovers {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s left after purge", f)
		}
	}
	if _, err := os.Stat(filepath.Dir(conf)); err != nil {
		t.Errorf("purge removed strongswan-swanctl's %s: %v", filepath.Dir(conf), err)
	}

	// An unedited conffile follows the package: an upgrade replaces it
	// without asking (stdin is /dev/null; a prompt would fail dpkg).
	run(t, dpkg, "-i", v1.Deb)
	run(t, dpkg, "-i", v2.Deb)
	if got := readConf(); got != v2conf {
		t.Errorf("unedited conffile after upgrade: %q, want the new %q", got, v2conf)
	}
	if _, err := os.Lstat(conf + ".dpkg-dist"); err == nil {
		t.Errorf("unedited upgrade left %s.dpkg-dist", conf)
	}
	if !slices.Contains(lines(run(t, dpkgQuery, "-W", "-f=${Conffiles}\n", "mpsa")), conf+" "+md5hex(v2conf)) {
		t.Errorf("dpkg does not record %s as a conffile with the new checksum", conf)
	}
}

// md5hex is the checksum dpkg records for a conffile.
func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
