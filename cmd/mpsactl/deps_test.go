package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/testenv"
)

// TestLinksNoEngine: mpsactl talks to mpsad through package api and links
// neither the engine nor what only the engine needs (Prometheus, govici).
func TestLinksNoEngine(t *testing.T) {
	gobin := testenv.NeedCommand(t, "go")
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages: %q", len(deps), out)
	}
	for _, d := range deps {
		for _, banned := range []string{"github.com/mpsa/mpsa/server", "github.com/prometheus/", "github.com/strongswan/govici/"} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("mpsactl links %s; use package api for the status socket", d)
			}
		}
	}
}
