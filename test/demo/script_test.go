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
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "MISSING="+missing, "APT_LOG="+aptLog, "APT_FAIL="+fail)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
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
	if !strings.Contains(apt, "install") || !strings.HasSuffix(strings.TrimSpace(apt), " tcpdump strongswan-charon") {
		t.Fatalf("apt-get was asked:\n%s", apt)
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
