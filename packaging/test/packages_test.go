package packaging_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/testenv"
)

func TestRPMFilesAndDependencies(t *testing.T) {
	rpm := testenv.NeedCommand(t, "rpm")
	res := sharedPackages(t)
	if got, want := filepath.Base(res.RPM), "mpsa-0.1.0-1."; !strings.HasPrefix(got, want) || !strings.HasSuffix(got, ".rpm") {
		t.Errorf("rpm file name %q, want %s<arch>.rpm", got, want)
	}
	if got := lines(run(t, rpm, "-qpl", res.RPM)); !slices.Equal(got, rpmFiles()) {
		t.Errorf("rpm -qpl:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(rpmFiles(), "\n  "))
	}
	var reqs []string
	for _, l := range lines(run(t, rpm, "-qpR", res.RPM)) {
		if !strings.HasPrefix(l, "rpmlib(") {
			reqs = append(reqs, l)
		}
	}
	if !slices.Equal(reqs, []string{"strongswan"}) {
		t.Errorf("rpm -qpR (without rpmlib): %q, want [strongswan]", reqs)
	}
	// The one configuration file, under Fedora's swanctl directory
	// (strongSwan there has sysconfdir /etc/strongswan).
	if got := lines(run(t, rpm, "-qpc", res.RPM)); !slices.Equal(got, []string{rpmConffile}) {
		t.Errorf("rpm -qpc: %q, want [%s]", got, rpmConffile)
	}
	// %config(noreplace): flags c (config) and n (noreplace).
	flags := run(t, rpm, "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]", res.RPM)
	for _, want := range []string{
		rpmConffile + " cn -rw-------",
		"/usr/sbin/mpsad  -rwxr-xr-x",
		"/usr/bin/mpsactl  -rwxr-xr-x",
		"/usr/share/licenses/mpsa/LICENSE l -rw-r--r--",
	} {
		if !strings.Contains(flags, want+"\n") {
			t.Errorf("rpm file flags lack %q:\n%s", want, flags)
		}
	}
	info := run(t, rpm, "-qpi", res.RPM)
	for _, want := range []string{"Version     : 0.1.0", "Release     : 1", "License     : Apache-2.0"} {
		if !strings.Contains(info, want) {
			t.Errorf("rpm -qpi lacks %q:\n%s", want, info)
		}
	}
	scripts := run(t, rpm, "-qp", "--scripts", res.RPM)
	for _, want := range []string{"preuninstall scriptlet", "disable --now mpsad.service", "postuninstall scriptlet", "try-restart mpsad.service"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm scriptlets lack %q:\n%s", want, scripts)
		}
	}
}

func TestDebContents(t *testing.T) {
	dpkgDeb := testenv.NeedCommand(t, "dpkg-deb")
	res := sharedPackages(t)
	if got, want := filepath.Base(res.Deb), "mpsa_0.1.0-1_"; !strings.HasPrefix(got, want) {
		t.Errorf("deb file name %q, want %s<arch>.deb", got, want)
	}
	var files []string
	modes := map[string]string{}
	for _, l := range lines(run(t, dpkgDeb, "-c", res.Deb)) {
		f := strings.Fields(l)
		if strings.HasPrefix(f[0], "d") {
			continue
		}
		name := strings.TrimPrefix(f[len(f)-1], ".")
		files = append(files, name)
		modes[name] = f[0] + " " + f[1]
	}
	slices.Sort(files)
	if !slices.Equal(files, debFiles()) {
		t.Errorf("dpkg-deb -c files:\n  %s\nwant\n  %s", strings.Join(files, "\n  "), strings.Join(debFiles(), "\n  "))
	}
	for f, want := range map[string]string{
		"/usr/sbin/mpsad":               "-rwxr-xr-x root/root",
		"/usr/bin/mpsactl":              "-rwxr-xr-x root/root",
		debConffile:                     "-rw------- root/root",
		"/usr/share/doc/mpsa/copyright": "-rw-r--r-- root/root",
	} {
		if modes[f] != want {
			t.Errorf("%s: %q, want %q", f, modes[f], want)
		}
	}
	fields := map[string]string{"Package": "mpsa", "Version": "0.1.0-1", "Depends": "charon-systemd, strongswan-swanctl, libstrongswan-standard-plugins, procps", "Section": "net"}
	for k, want := range fields {
		if got := strings.TrimSpace(run(t, dpkgDeb, "-f", res.Deb, k)); got != want {
			t.Errorf("control field %s: %q, want %q", k, got, want)
		}
	}
	ctl := t.TempDir()
	run(t, dpkgDeb, "-e", res.Deb, ctl)
	conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(conffiles)); got != debConffile {
		t.Errorf("conffiles: %q, want only %s", got, debConffile)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if fi, err := os.Stat(filepath.Join(ctl, s)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("maintainer script %s missing or not executable: %v", s, err)
		}
	}
}

// TestManPagesComeFromHelp checks that the packaged man pages are the
// packaged binaries' --help as roff: every option of --help is in the
// page, and FILES names the paths of the package's distribution.
func TestManPagesComeFromHelp(t *testing.T) {
	res := sharedPackages(t)
	optionRE := regexp.MustCompile(`(?m)^\s+(--[a-z][a-z-]*)`)
	var pages [][]byte
	for _, pkg := range packagesOf(res) {
		root := extract(t, pkg.format, pkg.path)
		for _, name := range []string{"mpsad", "mpsactl"} {
			help := run(t, packagedBinary(root, name), "--help")
			page := gunzip(t, filepath.Join(root, "usr", "share", "man", "man8", name+".8.gz"))
			if !bytes.Contains(page, []byte(".TH "+strings.ToUpper(name)+" 8 \"2026-11-23\" \"mpsa 0.1.0\"")) {
				t.Errorf("%s: %s.8: wrong or missing .TH line:\n%s", pkg.format, name, page)
			}
			opts := optionRE.FindAllStringSubmatch(help, -1)
			if len(opts) == 0 {
				t.Fatalf("%s: %s --help lists no options:\n%s", pkg.format, name, help)
			}
			for _, m := range opts {
				if esc := strings.ReplaceAll(m[1], "-", `\-`); !bytes.Contains(page, []byte(esc)) {
					t.Errorf("%s: %s.8 lacks option %s of --help", pkg.format, name, m[1])
				}
			}
			pages = append(pages, page)
		}
		mpsad8 := string(gunzip(t, filepath.Join(root, "usr", "share", "man", "man8", "mpsad.8.gz")))
		for _, want := range []string{pkg.want.configFile, pkg.want.conffile, pkg.want.socket} {
			if !strings.Contains(mpsad8, roffEscape(want)) {
				t.Errorf("%s: mpsad.8 does not name %s:\n%s", pkg.format, want, mpsad8)
			}
		}
	}
	// Last, so that without groff (outside CI) the checks above still run.
	groff := testenv.NeedCommand(t, "groff")
	for _, page := range pages {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = bytes.NewReader(page)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff warns about a page: %v\n%s\n%s", err, out, page)
		}
	}
}

// TestPackagedBinaries runs the binaries each package holds: they report
// the package's version, and mpsad's defaults (--help, and the vici
// setting of an effective configuration) are those of the package's
// distribution. The texts the package installs name that distribution's
// paths and none of the other's (the README, which covers both, aside).
func TestPackagedBinaries(t *testing.T) {
	res := sharedPackages(t)
	conf := filepath.Join(t.TempDir(), "swanctl.conf")
	if err := os.WriteFile(conf, []byte("mpsa {\n  role = controller\n  groups { g { connection = c } }\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, pkg := range packagesOf(res) {
		t.Run(pkg.format, func(t *testing.T) {
			root := extract(t, pkg.format, pkg.path)
			mpsad := packagedBinary(root, "mpsad")
			for _, name := range []string{"mpsad", "mpsactl"} {
				if got, want := run(t, packagedBinary(root, name), "--version"), name+" 0.1.0 (commit test)\n"; got != want {
					t.Errorf("%s --version: %q, want %q (the package version)", name, got, want)
				}
			}
			help := run(t, mpsad, "--help")
			for _, want := range []string{"the default,\n                 " + pkg.want.configFile + ",\n", pkg.want.vici + " (setting mpsa.vici)"} {
				if !strings.Contains(help, want) {
					t.Errorf("mpsad --help lacks %q:\n%s", want, help)
				}
			}
			var eff struct {
				VICI string `json:"vici"`
			}
			if err := json.Unmarshal([]byte(run(t, mpsad, "--check", "--json", "--config", conf)), &eff); err != nil {
				t.Fatal(err)
			}
			if eff.VICI != pkg.want.vici {
				t.Errorf("mpsad --check --json: vici = %q, want %q", eff.VICI, pkg.want.vici)
			}

			conffile := readFile(t, filepath.Join(root, pkg.want.conffile))
			if !strings.HasPrefix(conffile, "# "+pkg.want.conffile+":") || !strings.Contains(conffile, pkg.want.configFile) {
				t.Errorf("%s does not name itself and %s:\n%s", pkg.want.conffile, pkg.want.configFile, conffile)
			}
			if ex := readFile(t, filepath.Join(root, "usr/share/doc/mpsa/examples/controller.conf")); !strings.Contains(ex, "vici = "+pkg.want.vici+"\n") {
				t.Errorf("examples/controller.conf does not set vici = %s:\n%s", pkg.want.vici, ex)
			}
			texts := map[string]string{
				pkg.want.conffile:                       conffile,
				"/usr/lib/systemd/system/mpsad.service": readFile(t, filepath.Join(root, "usr/lib/systemd/system/mpsad.service")),
			}
			for _, e := range []string{"controller.conf", "member.conf"} {
				p := "/usr/share/doc/mpsa/examples/" + e
				texts[p] = readFile(t, filepath.Join(root, p))
			}
			for _, name := range []string{"mpsad", "mpsactl"} {
				p := "/usr/share/man/man8/" + name + ".8.gz"
				texts[p] = string(gunzip(t, filepath.Join(root, p)))
			}
			for p, text := range texts {
				for _, foreign := range pkg.want.foreign {
					if strings.Contains(text, foreign) || strings.Contains(text, roffEscape(foreign)) {
						t.Errorf("%s names %s, a path of the other distribution", p, foreign)
					}
				}
			}
		})
	}
}

func TestPackagesAreReproducible(t *testing.T) {
	a := buildPackages(t, pkgOptions{version: "0.1.0"})
	b := buildPackages(t, pkgOptions{version: "0.1.0"})
	for _, p := range [][2]string{{a.Deb, b.Deb}, {a.RPM, b.RPM}} {
		x, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(p[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("two builds of %s differ", filepath.Base(p[0]))
		}
	}
}
