package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "../../cmd/mpsad", "../../cmd/mpsactl").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	demo := filepath.Join(bin, "demo")
	if out, err := exec.Command("go", "build", "-o", demo, ".").CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(t.Context(), demo, "--bin", bin)
	cmd.Env = append(os.Environ(), "MPSA_DEMO_CONTROLLER_OMIT_PLUGINS=gcm openssl")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	kept := regexp.MustCompile(`/tmp/mpsa-demo-[A-Za-z0-9]+`).FindAllString(stderr.String(), -1)
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
	for _, d := range kept {
		if _, err := os.Stat(filepath.Join(d, "charon.log")); err != nil {
			t.Errorf("the demo points at %s but did not keep its charon.log: %v", d, err)
		}
	}
}
