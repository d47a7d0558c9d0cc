package packaging_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/packaging/internal/pkgbuild"
)

// maxExposure is the highest `systemd-analyze security` exposure the unit
// may have; docs/operations.md records the current score. Raise it only
// with a reason written there.
const maxExposure = 2.5

// unitPath is the unit in the repository.
func unitPath(t *testing.T) string {
	return filepath.Join(repoRoot(t), "packaging", "systemd", "mpsad.service")
}

// unitSettings parses a unit file into section.key -> values (a key may
// repeat).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: malformed line %q", path, l)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// TestUnitSettings pins the settings that docs/operations.md promises.
func TestUnitSettings(t *testing.T) {
	s := unitSettings(t, unitPath(t))
	for key, want := range map[string]string{
		"Unit.BindsTo":                     "strongswan.service",
		"Service.Type":                     "notify",
		"Service.NotifyAccess":             "main",
		"Service.ExecStart":                pkgbuild.MpsadPath,
		"Service.ExecReload":               "/bin/kill -HUP $MAINPID",
		"Service.WatchdogSec":              "30s",
		"Service.Restart":                  "on-failure",
		"Service.RestartPreventExitStatus": "78",
		"Service.RuntimeDirectory":         "mpsad",
		"Service.StateDirectory":           "mpsad",
		"Service.StateDirectoryMode":       "0700",
		"Service.CapabilityBoundingSet":    "CAP_NET_ADMIN CAP_NET_RAW",
		"Service.AmbientCapabilities":      "CAP_NET_ADMIN CAP_NET_RAW",
		"Service.NoNewPrivileges":          "yes",
		"Service.ProtectSystem":            "strict",
		"Service.ProtectHome":              "yes",
		"Service.PrivateTmp":               "yes",
		"Service.DevicePolicy":             "closed",
		"Service.DeviceAllow":              "/dev/net/tun rw",
		"Service.RestrictAddressFamilies":  "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"Service.SystemCallArchitectures":  "native",
	} {
		if got := s[key]; !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %q, want exactly %q", key, got, want)
		}
	}
	for _, kv := range [][2]string{
		{"Unit.After", "strongswan.service"},
		{"Service.SystemCallFilter", "@system-service"},
		{"Install.WantedBy", "multi-user.target"},
		{"Install.WantedBy", "strongswan.service"},
	} {
		key, want := kv[0], kv[1]
		var words []string
		for _, v := range s[key] {
			words = append(words, strings.Fields(v)...)
		}
		if !slices.Contains(words, want) {
			t.Errorf("%s = %q, want it to include %s", key, s[key], want)
		}
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit, with
// ExecStart pointing at a freshly built mpsad (verify checks that it is
// executable) and man pages not checked (they are only installed by the
// package; the install test verifies the installed unit with them). A
// broken copy must fail, so that a verify that accepts anything is caught.
func TestUnitVerifies(t *testing.T) {
	sa := testenv.NeedCommand(t, "systemd-analyze")
	testenv.NeedFile(t, "/usr/lib/systemd/system/strongswan.service") // from charon-systemd
	mpsad := binary(t, "0.1.0", "mpsad")
	src, err := os.ReadFile(unitPath(t))
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(string(src), "ExecStart="+pkgbuild.MpsadPath, "ExecStart="+mpsad, 1)
	if unit == string(src) {
		t.Fatalf("unit has no ExecStart=%s", pkgbuild.MpsadPath)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "mpsad.service")
	if err := os.WriteFile(good, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr(sa, "verify", "--man=no", good); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	badDir := filepath.Join(dir, "bad")
	if err := os.Mkdir(badDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(badDir, "mpsad.service")
	broken := strings.Replace(unit, "ExecStart="+mpsad, "ExecStart=/nonexistent/mpsad", 1)
	if err := os.WriteFile(bad, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr(sa, "verify", "--man=no", bad); err == nil {
		t.Errorf("systemd-analyze verify accepted a unit whose ExecStart does not exist:\n%s", out)
	}
}

// TestUnitExposure keeps the hardening from regressing: the exposure
// score of `systemd-analyze security` must stay at or below maxExposure.
func TestUnitExposure(t *testing.T) {
	sa := testenv.NeedCommand(t, "systemd-analyze")
	out, err := runErr(sa, "security", "--offline=true", "--no-pager", unitPath(t))
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for mpsad\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exposure level %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure level %.1f > %.1f; the unit lost hardening:\n%s", score, maxExposure, out)
	}
}
