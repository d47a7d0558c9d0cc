package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpsa/mpsa/test/charon"
)

// TestDemoFailureSaysWhy runs the demo with a controller charon that lacks
// the gcm and openssl plugins, as a fresh Debian without
// libstrongswan-standard-plugins did: the control children cannot be
// installed. The demo fails within seconds rather than a minute, with the
// daemons' own explanation (control child not installed, charon's words,
// what charon lacks), the lines of charon's log that say what failed, and
// keeps the files it points to.
func TestDemoFailureSaysWhy(t *testing.T) {
	charon.Need(t)
	demo, bin := buildDemo(t)
	cmd := demoCommand(t, demo, bin)
	cmd.Env = append(os.Environ(), "MPSA_DEMO_CONTROLLER_OMIT_PLUGINS=gcm openssl")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	kept := namedDirs(stderr.String())
	t.Cleanup(func() {
		for _, d := range kept {
			os.RemoveAll(d)
		}
	})
	if err == nil {
		t.Fatalf("the demo passed without the controller's gcm and openssl plugins:\n%s", stdout.String())
	}
	out := stderr.String()
	for _, want := range []string{
		"the daemons say why",
		"control child mpsa-ctl of connection mpsa not installed",
		"no loaded plugin provides AES_GCM_16",
		"charon.log, what failed",
		"unsupported AEAD algorithm AES_GCM_16",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's failure does not say %q:\n%s", want, out)
		}
	}
	if len(kept) == 0 {
		t.Fatalf("the demo names no files it kept:\n%s", out)
	}
	if want := "rm -r " + strings.Join(kept, " ") + " removes them"; !strings.Contains(out, want) {
		t.Errorf("the demo does not say %q:\n%s", want, out)
	}
	for _, d := range kept {
		if _, err := os.Stat(filepath.Join(d, "charon.log")); err != nil {
			t.Errorf("the demo points at %s but did not keep its charon.log: %v", d, err)
		}
	}
}

// demoDirs matches the nodes' folders the demo names: under the temporary
// directory, as os.MkdirTemp makes them.
var demoDirs = regexp.MustCompile(regexp.QuoteMeta(filepath.Join(os.TempDir(), "mpsa-demo-")) + `[0-9]+`)

// namedDirs are the nodes' folders named in s, in order, each once.
func namedDirs(s string) []string {
	var dirs []string
	for _, d := range demoDirs.FindAllString(s, -1) {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// demoCommand runs the demo binary with the mpsad and mpsactl in bin,
// for at most 3 minutes: then, or when the test ends, it is asked to stop
// with SIGTERM, as Ctrl-C would, and killed 30 s later.
func demoCommand(t *testing.T, demo, bin string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, demo, "--bin", bin)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	return cmd
}

// buildDemo builds mpsad, mpsactl and the demo into a temporary folder and
// returns the demo's path and the folder.
func buildDemo(t *testing.T) (demo, bin string) {
	t.Helper()
	bin = t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "../../cmd/mpsad", "../../cmd/mpsactl").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	demo = filepath.Join(bin, "demo")
	if out, err := exec.Command("go", "build", "-o", demo, ".").CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	return demo, bin
}

// TestDemoInterrupted: Ctrl-C while the daemons run stops the demo, which
// says it was interrupted rather than explaining a failure, stops mpsad,
// and removes the nodes' folders.
func TestDemoInterrupted(t *testing.T) {
	charon.Need(t)
	demo, bin := buildDemo(t)
	cmd := demoCommand(t, demo, bin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var pids []int
	mpsadStarted := regexp.MustCompile(`mpsad started \(pid ([0-9]+),`)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && len(pids) < 4 {
		out.WriteString(sc.Text() + "\n")
		if m := mpsadStarted.FindStringSubmatch(sc.Text()); m != nil {
			pid, _ := strconv.Atoi(m[1])
			pids = append(pids, pid)
		}
	}
	dirs := namedDirs(out.String())
	t.Cleanup(func() {
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	})
	if len(pids) < 4 || len(dirs) < 4 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the demo did not start four mpsad with their folders:\n%s%s", out.String(), stderr.String())
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("the interrupted demo ended with %v, want exit status 130", err)
	}
	if !strings.Contains(stderr.String(), "demo interrupted") || strings.Contains(stderr.String(), "what the daemons say") {
		t.Errorf("the interrupted demo does not say it was interrupted, or explains a failure:\n%s", stderr.String())
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the interrupted demo left %s (stat: %v)", d, err)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("mpsad %d still runs after the interrupted demo (kill -0: %v)", pid, err)
		}
	}
}
