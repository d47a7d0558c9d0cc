package swanctl

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/testenv"
)

// strongSwanAccepts reports whether strongSwan's own settings parser (run
// through swanctl, which parses STRONGSWAN_CONF at start) accepts src.
func strongSwanAccepts(t *testing.T, swanctl, src string) (bool, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "strongswan.conf")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(swanctl, "--version", "--uri", "unix://"+filepath.Join(t.TempDir(), "none.vici"))
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+path)
	out, _ := cmd.CombinedOutput()
	return !strings.Contains(string(out), "invalid config file"), string(out)
}

// TestStrongSwanAgrees checks the reader against strongSwan's parser: what
// one accepts, the other accepts, and likewise for syntax errors, and the
// example configurations are valid to both.
func TestStrongSwanAgrees(t *testing.T) {
	swanctl := testenv.NeedCommand(t, "swanctl")
	for _, tt := range parseCases {
		if ok, out := strongSwanAccepts(t, swanctl, tt.src); !ok {
			t.Errorf("%s: strongSwan rejects what mpsa accepts:\n%s", tt.name, out)
		}
	}
	for _, tt := range parseErrorCases {
		if tt.mpsaOnly {
			continue
		}
		if ok, _ := strongSwanAccepts(t, swanctl, tt.src); ok {
			t.Errorf("%s: strongSwan accepts what mpsa rejects (%s)", tt.name, tt.want)
		}
	}
	for _, name := range []string{"controller.conf", "member.conf"} {
		src, err := os.ReadFile(filepath.Join("..", "packaging", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if ok, out := strongSwanAccepts(t, swanctl, string(src)); !ok {
			t.Errorf("%s: strongSwan rejects it:\n%s", name, out)
		}
	}
}
