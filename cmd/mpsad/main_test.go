package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/bgp/policy"
	"github.com/mpsa/mpsa/swanctl"
)

func runMpsad(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestCheckExamples runs --check on the packaged example configurations.
func TestCheckExamples(t *testing.T) {
	for _, tt := range []struct {
		file string
		role swanctl.Role
		want []string // lines the effective configuration must contain
	}{
		{"controller.conf", swanctl.RoleController, []string{"role = controller", "esp_proposal = aes256-sha256-prfsha256", "rekey_jitter = 5m", "nonce_length = 32", "metrics_listen = 127.0.0.1:9474", "    deferral_time = 30s", "            identity = site-a.branch.example.net", "            prefixes = 10.1.0.0/16 le 24, 2001:db8:a::/48 le 64", "            identity = site-c.branch.example.net", "            prefixes = 10.3.0.0/16 le 24"}},
		{"member.conf", swanctl.RoleMember, []string{"role = member", "vici = unix:///var/run/charon.vici", "dataplane = xfrm", "local_ts = 10.1.0.0/24, 2001:db8:a::/64", "peer = 198.51.100.12", "    asn = 64512", "    stale_time = 1h"}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("..", "..", "packaging", "examples", tt.file)
			code, out, errs := runMpsad("--config", path, "--check")
			if code != 0 || errs != "" {
				t.Fatalf("--check exit %d, stderr:\n%s", code, errs)
			}
			if !strings.HasPrefix(out, "# "+path+": valid; the effective configuration, defaults included:\nmpsa {\n") {
				t.Errorf("output starts %q", out[:min(len(out), 120)])
			}
			for _, w := range tt.want {
				if !strings.Contains(out, "    "+w+"\n") {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			code, out, errs = runMpsad("--config", path, "--check", "--json")
			if code != 0 || errs != "" {
				t.Fatalf("--check --json exit %d, stderr:\n%s", code, errs)
			}
			var cfg swanctl.Config
			if err := json.Unmarshal([]byte(out), &cfg); err != nil {
				t.Fatalf("JSON: %v\n%s", err, out)
			}
			if cfg.Role != tt.role || len(cfg.Groups) != 1 || cfg.Groups[0].Name != "branch" || cfg.Groups[0].Lifetime.String() != "8h" {
				t.Errorf("JSON config %+v", cfg)
			}
		})
	}
}

// TestExamplesAgree: the controller's BGP policy admits what the member
// example advertises (its local_ts, as site-a) and every site its static
// routes lead to (route site-x, identity site-x.branch.example.net), so
// that the two examples describe one group.
func TestExamplesAgree(t *testing.T) {
	dir := filepath.Join("..", "..", "packaging", "examples")
	ctl, err := swanctl.LoadMPSA(filepath.Join(dir, "controller.conf"))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := swanctl.LoadMPSA(filepath.Join(dir, "member.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ctl.Groups) != 1 || ctl.Groups[0].BGP == nil || len(mem.Groups) != 1 {
		t.Fatalf("want one group with bgp { } in controller.conf and one group in member.conf")
	}
	pol := policy.New(ctl.Groups[0].BGP.Rules())
	sites := map[string][]netip.Prefix{"site-a": mem.Groups[0].LocalTS}
	for _, rt := range mem.Groups[0].Routes {
		sites[rt.Name] = rt.Prefixes
	}
	for site, prefixes := range sites {
		id := site + ".branch.example.net"
		for _, p := range prefixes {
			if v := pol.Check(id, pol.Matching(id), p); !v.Allowed {
				t.Errorf("member.conf routes %s to %s, but controller.conf's policy does not admit it: %s", p, site, v.Reason)
			}
		}
	}
}

func TestCheckErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "swanctl.conf")
	src := "include conf.d/*.conf\nmpsa {\n  role = member\n  groups {\n    g {\n      connection = c\n      dataplane = kernel\n    }\n  }\n}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runMpsad("--check", "--config", path)
	want := path + ":5: mpsa.groups.g: member group has no local_ts; write local_ts = the prefixes behind this member (10.1.0.0/24)\n" +
		path + ":5: mpsa.groups.g: member group has no way to learn its peers; add bgp { asn = AS NUMBER } to learn them from the controller, or routes { NAME { prefixes = ...  peer = ... } } with static peers\n" +
		path + ":7: mpsa.groups.g: dataplane = kernel is not valid; write xfrm or userspace\n" +
		"mpsad: " + path + ": 3 errors in the configuration\n"
	if code != 1 || out != "" || errs != want {
		t.Errorf("exit %d, stdout %q, stderr\n%s\nwant\n%s", code, out, errs, want)
	}

	code, _, errs = runMpsad("--check", "--config", filepath.Join(dir, "none.conf"))
	if want := filepath.Join(dir, "none.conf") + ":1: cannot read configuration: no such file or directory; check the path\nmpsad: " + filepath.Join(dir, "none.conf") + ": 1 error in the configuration\n"; code != 1 || errs != want {
		t.Errorf("missing file: exit %d, stderr %q, want %q", code, errs, want)
	}
}

func TestCheckWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swanctl.conf")
	src := "mpsa {\n role = controller\n groups { g { connection = c\n mtu = 1500 } }\n}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runMpsad("--check", "--config", path)
	want := path + ":4: warning: mpsa.groups.g: mtu is ignored in role controller (a controller has no data plane); remove it\n"
	if code != 0 || errs != want || !strings.Contains(out, "role = controller") || strings.Contains(out, "mtu") {
		t.Errorf("exit %d, stderr %q (want %q), stdout\n%s", code, errs, want, out)
	}
}

// TestCheckIgnoresOtherRole: settings of the other role only draw
// warnings, whatever their values.
func TestCheckIgnoresOtherRole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swanctl.conf")
	src := "mpsa {\n role = controller\n groups {\n  a { connection = a\n   tun = t0\n   mtu = 1x\n  }\n  b { connection = b\n   tun = t0\n  }\n }\n}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runMpsad("--check", "--config", path)
	const why = " is ignored in role controller (a controller has no data plane); remove it\n"
	want := path + ":5: warning: mpsa.groups.a: tun" + why + path + ":6: warning: mpsa.groups.a: mtu" + why + path + ":9: warning: mpsa.groups.b: tun" + why
	if code != 0 || errs != want || strings.Contains(out, "tun") {
		t.Errorf("exit %d, stderr\n%s\nwant\n%s\nstdout\n%s", code, errs, want, out)
	}
}

func TestFlags(t *testing.T) {
	code, out, errs := runMpsad("--version")
	if code != 0 || out != "mpsad dev (commit unknown)\n" || errs != "" {
		t.Errorf("--version: %d %q %q", code, out, errs)
	}
	// The help text goes to stdout once on request, and to stderr once
	// after a bad flag.
	for _, help := range []string{"--help", "-h"} {
		code, out, errs = runMpsad(help)
		if code != 0 || strings.Count(out, "Usage: mpsad [--config FILE] [--check [--json]]") != 1 || !strings.Contains(out, "/etc/swanctl/swanctl.conf") || errs != "" {
			t.Errorf("%s: %d, stdout %q, stderr %q", help, code, out, errs)
		}
	}
	// The daemon refuses to start on a configuration it cannot load, with
	// EX_CONFIG so that systemd does not restart it in a loop.
	code, _, errs = runMpsad("--config", "/nonexistent")
	if code != 78 || !strings.Contains(errs, "/nonexistent:1: cannot read configuration") {
		t.Errorf("daemon mode with a missing file: %d %q", code, errs)
	}
	code, _, errs = runMpsad("--json")
	if code != 2 || errs != "mpsad: --json works with --check only\n" {
		t.Errorf("--json alone: %d %q", code, errs)
	}
	code, _, errs = runMpsad("--check", "extra")
	if code != 2 || errs != "mpsad: unexpected argument \"extra\"; see mpsad --help\n" {
		t.Errorf("extra argument: %d %q", code, errs)
	}
	code, out, errs = runMpsad("--bogus")
	if code != 2 || out != "" || !strings.HasPrefix(errs, "flag provided but not defined: -bogus\nUsage: mpsad ") || strings.Count(errs, "Usage: mpsad") != 1 {
		t.Errorf("unknown flag: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestSwanctlDir: without --config, mpsad reads swanctl.conf in
// SWANCTL_DIR when it is set, as swanctl does, with its conf.d includes.
func TestSwanctlDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	member, err := os.ReadFile(filepath.Join("..", "..", "packaging", "examples", "member.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string][]byte{
		"swanctl.conf":     []byte("connections {\n}\ninclude conf.d/*.conf\n"),
		"conf.d/mpsa.conf": member,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), text, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("SWANCTL_DIR", dir)
	code, out, errs := runMpsad("--check")
	want := "# " + filepath.Join(dir, "swanctl.conf") + ": valid;"
	if code != 0 || !strings.HasPrefix(out, want) || !strings.Contains(out, "    role = member\n") {
		t.Fatalf("--check with SWANCTL_DIR: exit %d, stderr %q, output starts %q, want %q and the member's settings", code, errs, out[:min(len(out), 120)], want)
	}
	if got := defaultConfig(""); got != swanctl.DefaultConfigFile() {
		t.Errorf("defaultConfig without SWANCTL_DIR = %q, want the build's %q", got, swanctl.DefaultConfigFile())
	}
}
