package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/test/charon"
)

// TestExamplesLoadInCharon loads the connections and secrets of each
// example configuration into a real charon with swanctl --load-all, so the
// examples stay complete swanctl.conf files (swanctl ignores their
// mpsa { } section). charon runs in a namespace of its own with a private
// /run and VICI socket (test/charon), so it cannot disturb another charon.
func TestExamplesLoadInCharon(t *testing.T) {
	in := charon.Start(t, nettest.NewNS(t, "ex"), charon.Config{})
	for _, name := range []string{"controller.conf", "member.conf"} {
		example, err := os.ReadFile(filepath.Join("..", "..", "packaging", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := in.WriteSwanctlConf(string(example)); err != nil {
			t.Fatal(err)
		}
		res := in.MustSwanctl(t, "--load-all")
		for _, want := range []string{"loaded ike secret 'ike-branch'", "loaded connection 'mpsa'", "successfully loaded 1 connections"} {
			if !strings.Contains(res, want) {
				t.Errorf("%s: swanctl output lacks %q:\n%s", name, want, res)
			}
		}
	}
}
