package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runDemoScript runs scripts/demo.sh with id, dpkg-query, apt-get, make and
// go replaced by stand-ins: missing names the packages dpkg-query calls
// not installed, and aptFails makes apt-get install fail. It returns
// stdout, stderr, what apt-get was asked and the exit error.
func runDemoScript(t *testing.T, missing string, aptFails bool) (stdout, stderr, apt string, err error) {
	t.Helper()
	bin := t.TempDir()
	aptLog := filepath.Join(bin, "apt.log")
	stubs := map[string]string{
		"id": `echo 0`,
		// dpkg-query -W -f='${Status}' PACKAGE
		"dpkg-query": `case " $MISSING " in *" $3 "*) exit 1;; esac; printf 'install ok installed'`,
		// apt-get is chatty on both streams
		"apt-get": `echo "apt-get $*" >>"$APT_LOG"
case "$*" in *install*) "$MPSA_DEPS_SYSROOT/usr/sbin/policy-rc.d" x start; echo "policy-rc.d says $?" >>"$APT_LOG";; esac
echo "Selecting previously unselected package $*."
echo "debconf: delaying package configuration, since apt-utils is not installed" >&2
case "$* $APT_FAIL" in *install*yes) echo "E: Unable to locate package $MISSING" >&2; exit 100;; esac
exit 0`,
		"make": `exit 0`,
		"go":   `case "$*" in "env GOVERSION") echo go1.26.8;; *) echo "go $*";; esac`,
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", filepath.Join("..", "..", "scripts", "demo.sh"))
	fail := "no"
	if aptFails {
		fail = "yes"
	}
	sysroot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sysroot, "usr", "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "MISSING="+missing, "APT_LOG="+aptLog, "APT_FAIL="+fail, "MPSA_DEPS_SYSROOT="+sysroot)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if _, serr := os.Lstat(filepath.Join(sysroot, "usr", "sbin", "policy-rc.d")); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("demo.sh left a policy-rc.d behind (stat: %v)", serr)
	}
	b, rerr := os.ReadFile(aptLog)
	if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		t.Fatal(rerr)
	}
	return out.String(), errOut.String(), string(b), err
}

// TestDemoScriptSaysWhatItInstalls: before the long apt-get run, make demo
// says which packages it installs and why, in two lines, and keeps apt's
// own output out of the way.
func TestDemoScriptSaysWhatItInstalls(t *testing.T) {
	out, errOut, apt, err := runDemoScript(t, "tcpdump strongswan-charon", false)
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s%s", err, out, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	want := "installing tcpdump strongswan-charon with apt-get"
	if len(lines) != 5 || !strings.HasPrefix(lines[0], want) || !strings.Contains(lines[1], "charon") ||
		!strings.HasPrefix(lines[2], "05-go: go1.26.8 at ") ||
		lines[3] != "building mpsad and mpsactl ..." || lines[4] != "go run ./test/demo --bin bin" {
		t.Fatalf("output\n%s\nwant a line starting %q, one saying why, the Go it uses, then the build and the demo", out, want)
	}
	if strings.Contains(out+errOut, "Selecting previously") || strings.Contains(out+errOut, "debconf") {
		t.Fatalf("apt-get's output shows:\n%s%s", out, errOut)
	}
	if !strings.Contains(apt, "install") || !strings.Contains(apt, " tcpdump strongswan-charon\npolicy-rc.d says 101\n") {
		t.Fatalf("apt-get was asked (and policy-rc.d said, while it installed):\n%s", apt)
	}
}

// TestDemoScriptNothingToInstall: with every package there, no apt-get and
// no word about installing.
func TestDemoScriptNothingToInstall(t *testing.T) {
	out, errOut, apt, err := runDemoScript(t, "", false)
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s%s", err, out, errOut)
	}
	goLine, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(goLine, "05-go: go1.26.8 at ") || rest != "building mpsad and mpsactl ...\ngo run ./test/demo --bin bin\n" || errOut != "" {
		t.Fatalf("output\n%s\nstderr\n%s", out, errOut)
	}
	if apt != "" {
		t.Fatalf("apt-get ran with nothing missing:\n%s", apt)
	}
}

// TestDemoScriptShowsAptFailure: when apt-get fails, its own words are
// shown and the demo stops.
func TestDemoScriptShowsAptFailure(t *testing.T) {
	out, errOut, _, err := runDemoScript(t, "strongswan-swanctl", true)
	if err == nil {
		t.Fatalf("demo.sh went on after apt-get failed:\n%s", out)
	}
	if !strings.Contains(errOut, "E: Unable to locate package strongswan-swanctl") {
		t.Fatalf("apt-get's error is not shown; stderr:\n%s", errOut)
	}
	if strings.Contains(out, "go run") {
		t.Fatalf("the demo ran after apt-get failed:\n%s", out)
	}
}

// installMissing runs lib.sh's install_missing PACKAGES with id, dpkg-query,
// apt-get, dpkg and systemctl replaced by stand-ins for a machine that has
// libc6 and strongswan-starter (whose service is enabled) and installs frr
// (which pulls in libyang2) and bird2; with systemd, sysroot has
// run/systemd/system. It returns the output, what apt-get and systemctl
// were asked, and what policy-rc.d answered while apt-get installed.
func installMissing(t *testing.T, sysroot string, packages ...string) (out, apt, systemctl string) {
	t.Helper()
	bin := t.TempDir()
	stubs := map[string]string{
		"id": `echo 0`,
		// dpkg-query -W -f='${Status}' PACKAGE, or the list of all
		// installed packages (-W -f='${db:Status-Abbrev} ${binary:Package}\n').
		"dpkg-query": `if [ -n "$3" ]; then grep -qx "ii  $3" "$STUB/installed" || exit 1; printf 'install ok installed'; else cat "$STUB/installed"; fi`,
		"apt-get": `echo "apt-get $*" >>"$STUB/apt.log"
case "$1" in install)
  "$MPSA_DEPS_SYSROOT/usr/sbin/policy-rc.d" frr start; echo "policy-rc.d says $?" >>"$STUB/apt.log"
  shift 4; for p in "$@" libyang2; do echo "ii  $p" >>"$STUB/installed"; done;;
esac`,
		// dpkg -L PACKAGE
		"dpkg": `case "$2" in
frr) printf '/lib/systemd/system\n/lib/systemd/system/frr.service\n/usr/lib/frr/bgpd\n';;
bird2) printf '/usr/lib/systemd/system/bird.service\n/usr/sbin/bird\n';;
strongswan-starter) printf '/lib/systemd/system/strongswan-starter.service\n';;
libyang2) printf '/usr/lib/x86_64-linux-gnu/libyang.so.2\n';;
esac`,
		"systemctl": `case "$1" in is-enabled) echo enabled;; *) echo "systemctl $*" >>"$STUB/systemctl.log";; esac`,
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "installed"), []byte("ii  libc6\nii  strongswan-starter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join("..", "..", "scripts", "deps.d", "lib.sh")
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", `. "$0"; install_missing "$@"`, lib)
	cmd.Args = append(cmd.Args, packages...)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "STUB="+bin, "MPSA_DEPS_SYSROOT="+sysroot)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install_missing: %v\n%s", err, b)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(bin, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return string(b)
	}
	return string(b), read("apt.log"), read("systemctl.log")
}

// sysroot makes a folder with usr/sbin, and run/systemd/system when
// systemd, as on a machine that runs systemd.
func sysroot(t *testing.T, systemd bool) string {
	t.Helper()
	root := t.TempDir()
	dirs := []string{filepath.Join(root, "usr", "sbin")}
	if systemd {
		dirs = append(dirs, filepath.Join(root, "run", "systemd", "system"))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestInstallMissingStartsNoService: packages are installed under a
// policy-rc.d that lets no service start, which is removed afterwards,
// and with systemd the services the new packages ship (frr's and bird2's,
// not strongswan-starter's, installed before) are disabled and named.
func TestInstallMissingStartsNoService(t *testing.T) {
	root := sysroot(t, true)
	out, apt, systemctl := installMissing(t, root, "frr", "bird2", "libc6")
	if !strings.Contains(apt, "install -y -qq --no-install-recommends frr bird2\npolicy-rc.d says 101\n") {
		t.Errorf("apt-get was asked (and policy-rc.d said):\n%s", apt)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr", "sbin", "policy-rc.d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("install_missing left its policy-rc.d (stat: %v)", err)
	}
	if systemctl != "systemctl disable --quiet bird.service frr.service\n" {
		t.Errorf("systemctl was asked:\n%s\nwant to disable bird.service and frr.service only", systemctl)
	}
	if !strings.Contains(out, "services: not started, and disabled again (systemctl enable --now UNIT starts one): bird.service frr.service\n") {
		t.Errorf("install_missing does not name the services it disabled:\n%s", out)
	}
}

// TestInstallMissingWithoutSystemd: where systemd is not PID 1 (a chroot,
// a container), nothing is disabled, and a policy-rc.d that was there
// before is there again afterwards.
func TestInstallMissingWithoutSystemd(t *testing.T) {
	root := sysroot(t, false)
	policy := filepath.Join(root, "usr", "sbin", "policy-rc.d")
	const theirs = "#!/bin/sh\nexit 0\n"
	if err := os.WriteFile(policy, []byte(theirs), 0o755); err != nil {
		t.Fatal(err)
	}
	out, apt, systemctl := installMissing(t, root, "frr")
	if !strings.Contains(apt, "policy-rc.d says 101\n") {
		t.Errorf("apt-get installed without the policy-rc.d that starts nothing:\n%s", apt)
	}
	if systemctl != "" || strings.Contains(out, "services:") {
		t.Errorf("without systemd, systemctl was asked:\n%s\noutput:\n%s", systemctl, out)
	}
	if b, err := os.ReadFile(policy); err != nil || string(b) != theirs {
		t.Errorf("the policy-rc.d that was there is not put back: %q, %v", b, err)
	}
	if m, _ := filepath.Glob(policy + ".*"); len(m) > 0 {
		t.Errorf("install_missing left %v", m)
	}
}
