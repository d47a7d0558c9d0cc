package packaging_test

import (
	"bytes"
	"compress/gzip"
	"io"
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
	// %config(noreplace): flags c (config) and n (noreplace).
	flags := run(t, rpm, "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]", res.RPM)
	for _, want := range []string{
		"/etc/swanctl/conf.d/mpsa.conf cn -rw-------",
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
		"/etc/swanctl/conf.d/mpsa.conf": "-rw------- root/root",
		"/usr/share/doc/mpsa/copyright": "-rw-r--r-- root/root",
	} {
		if modes[f] != want {
			t.Errorf("%s: %q, want %q", f, modes[f], want)
		}
	}
	fields := map[string]string{"Package": "mpsa", "Version": "0.1.0-1", "Depends": "charon-systemd, strongswan-swanctl", "Section": "net"}
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
	if got := strings.TrimSpace(string(conffiles)); got != "/etc/swanctl/conf.d/mpsa.conf" {
		t.Errorf("conffiles: %q, want only /etc/swanctl/conf.d/mpsa.conf", got)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if fi, err := os.Stat(filepath.Join(ctl, s)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("maintainer script %s missing or not executable: %v", s, err)
		}
	}
}

// TestManPagesComeFromHelp checks that the packaged man pages are the
// binaries' --help as roff: every option of --help is in the page.
func TestManPagesComeFromHelp(t *testing.T) {
	dpkgDeb := testenv.NeedCommand(t, "dpkg-deb")
	res := sharedPackages(t)
	root := t.TempDir()
	run(t, dpkgDeb, "-x", res.Deb, root)
	optionRE := regexp.MustCompile(`(?m)^\s+(--[a-z][a-z-]*)`)
	pages := map[string][]byte{}
	for _, name := range []string{"mpsad", "mpsactl"} {
		bin := filepath.Join(root, "usr", "bin", name)
		if name == "mpsad" {
			bin = filepath.Join(root, "usr", "sbin", name)
		}
		help, err := exec.Command(bin, "--help").Output()
		if err != nil {
			t.Fatalf("%s --help: %v", name, err)
		}
		f, err := os.Open(filepath.Join(root, "usr", "share", "man", "man8", name+".8.gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s.8.gz: %v", name, err)
		}
		page, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(page, []byte(".TH "+strings.ToUpper(name)+" 8 \"2026-11-23\" \"mpsa 0.1.0\"")) {
			t.Errorf("%s.8: wrong or missing .TH line:\n%s", name, page)
		}
		opts := optionRE.FindAllStringSubmatch(string(help), -1)
		if len(opts) == 0 {
			t.Fatalf("%s --help lists no options:\n%s", name, help)
		}
		for _, m := range opts {
			if esc := strings.ReplaceAll(m[1], "-", `\-`); !bytes.Contains(page, []byte(esc)) {
				t.Errorf("%s.8 lacks option %s of --help", name, m[1])
			}
		}
		pages[name] = page
	}
	// Last, so that without groff (outside CI) the checks above still run.
	groff := testenv.NeedCommand(t, "groff")
	for _, name := range []string{"mpsad", "mpsactl"} {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = bytes.NewReader(pages[name])
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff warns about %s.8: %v\n%s", name, err, out)
		}
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
