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
	return strongSwanAcceptsFile(t, swanctl, path)
}

// strongSwanAcceptsFile reports whether strongSwan's parser accepts the
// file at path and what it includes.
func strongSwanAcceptsFile(t *testing.T, swanctl, path string) (bool, string) {
	t.Helper()
	cmd := exec.Command(swanctl, "--version", "--uri", "unix://"+filepath.Join(t.TempDir(), "none.vici"))
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+path)
	out, _ := cmd.CombinedOutput()
	return !strings.Contains(string(out), "invalid config file"), string(out)
}

// strongSwanIncludeCases are include patterns that strongSwan expands with
// glob(3). A file holding "{" is a syntax error, so whether strongSwan and
// mpsa accept main.conf shows whether they included it.
var strongSwanIncludeCases = []struct {
	name   string
	files  map[string]string // main.conf is read
	accept bool
}{
	{"* skips names with a leading dot", map[string]string{"main.conf": "include conf.d/*.conf\n", "conf.d/.hidden.conf": "{\n", "conf.d/a.conf": "a = 1\n"}, true},
	{"a pattern with a leading dot matches them", map[string]string{"main.conf": "include conf.d/.*.conf\n", "conf.d/.hidden.conf": "{\n", "conf.d/a.conf": "a = 1\n"}, false},
	{"? and [...] skip a leading dot", map[string]string{"main.conf": "include conf.d/?b\ninclude conf.d/[.]c\n", "conf.d/.b": "{\n", "conf.d/.c": "{\n"}, true},
	{"[!x] negates", map[string]string{"main.conf": "include conf.d/[!a].conf\n", "conf.d/a.conf": "{\n", "conf.d/b.conf": "b = 1\n"}, true},
	{"[!x] matches the others", map[string]string{"main.conf": "include conf.d/[!b].conf\n", "conf.d/a.conf": "{\n", "conf.d/b.conf": "b = 1\n"}, false},
	{"] first in a bracket is a member", map[string]string{"main.conf": "include conf.d/[]b].conf\n", "conf.d/].conf": "r = 1\n", "conf.d/a.conf": "{\n"}, true},
	{"an escaped * is literal", map[string]string{"main.conf": "include conf.d/\\*.conf\n", "conf.d/*.conf": "s = 1\n", "conf.d/a.conf": "{\n"}, true},
	{"* in a directory skips hidden directories", map[string]string{"main.conf": "include */x.conf\n", ".git/x.conf": "{\n", "d/x.conf": "x = 1\n"}, true},
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
	for _, tt := range strongSwanIncludeCases {
		dir := t.TempDir()
		for name, data := range tt.files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		main := filepath.Join(dir, "main.conf")
		ssOK, out := strongSwanAcceptsFile(t, swanctl, main)
		_, err := ReadFile(main)
		if ssOK != tt.accept || (err == nil) != tt.accept {
			t.Errorf("%s: strongSwan accepts: %v, mpsa: %v (error %v), want %v\n%s", tt.name, ssOK, err == nil, err, tt.accept, out)
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
