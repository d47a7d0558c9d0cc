package scale

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/bgp/policy"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm/groupid"
)

// loadConf writes conf to a file and decodes its mpsa section as mpsad
// does.
func loadConf(t *testing.T, conf string) *swanctl.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "swanctl.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := swanctl.LoadMPSA(p)
	if err != nil {
		t.Fatalf("generated configuration does not load:\n%v", err)
	}
	return cfg
}

func TestControllerConf(t *testing.T) {
	cfg := loadConf(t, controllerSwanctl(psk)+controllerMPSA("/run/x", "/run/x/mpsad.sock", false))
	if cfg.Role != swanctl.RoleController || len(cfg.Groups) != 1 {
		t.Fatalf("role %s, %d groups", cfg.Role, len(cfg.Groups))
	}
	g := cfg.Group(GroupName)
	if g == nil || g.Connection != ctlConn || g.ControlChild != ctlChild {
		t.Fatalf("group %+v", g)
	}
	if g.Rollover1.Std() != time.Second || g.Rollover2.Std() != 2*time.Second || g.RekeyOnJoin {
		t.Errorf("timers: rollover1 %v, rollover2 %v, rekey_on_join %v", g.Rollover1, g.Rollover2, g.RekeyOnJoin)
	}
	if cfg.MetricsListen != metricsListen || cfg.ControlInterface != "ipsec0" || cfg.VICI != "unix:///run/x/charon.vici" {
		t.Errorf("globals %+v", cfg)
	}
}

// TestBGPConf: in BGP mode the controller's group has a reflector whose
// one rule admits every member's prefixes, and no two members' prefixes
// overlap.
func TestBGPConf(t *testing.T) {
	g := loadConf(t, controllerSwanctl(psk)+controllerMPSA("/run/x", "/run/x/mpsad.sock", true)).Group(GroupName)
	if !g.BGPEnabled() || g.BGP.ASN != bgpASN || g.BGP.DeferralTime.Std() != 2*time.Minute || g.BGP.NextHop != swanctl.NextHopIKE {
		t.Fatalf("bgp %+v", g.BGP)
	}
	pol := policy.New(g.BGP.Rules())
	seen := map[netip.Prefix]int{}
	for _, i := range []int{1, 255, 256, 1000, 16383} {
		id := memberID(i)
		rules := pol.Matching(id)
		for _, p := range MemberPrefixes(i) {
			if v := pol.Check(id, rules, p); !v.Allowed {
				t.Errorf("member %d: %s rejected: %s", i, p, v.Reason)
			}
			for q, j := range seen {
				if q.Overlaps(p) {
					t.Errorf("member %d's %s overlaps member %d's %s", i, p, j, q)
				}
			}
			seen[p] = i
		}
	}
}

func TestFarmConf(t *testing.T) {
	const n = 300 // past 255: the control addresses' third octet counts
	conf := farmSwanctl(n, psk) + farmMPSA(n, "/run/f", "/run/f/farm.sock")
	cfg := loadConf(t, conf)
	if cfg.Role != swanctl.RoleMember || len(cfg.Groups) != n {
		t.Fatalf("role %s, %d groups, want member with %d", cfg.Role, len(cfg.Groups), n)
	}
	seen := map[string]bool{}
	for i := 1; i <= n; i++ {
		g := cfg.Group(MemberConn(i))
		if g == nil || g.Connection != MemberConn(i) || g.ControlChild != memberChild(i) {
			t.Fatalf("group %d: %+v", i, g)
		}
		a := MemberControl(i).String()
		if seen[a] || !memberNet.Contains(MemberControl(i)) || MemberControl(i) == ctlControl {
			t.Fatalf("member %d has control address %s (duplicate, or outside %s)", i, a, memberNet)
		}
		seen[a] = true
		// Each connection initiates its own control child from its own
		// control address with its own identity.
		for _, want := range []string{
			"  " + MemberConn(i) + " {", "id = " + memberID(i), memberChild(i) + " {",
			"local_ts = " + a + "/32",
		} {
			if !strings.Contains(conf, want+"\n") {
				t.Fatalf("farm swanctl.conf lacks %q", want)
			}
		}
	}
	if got := strings.Count(conf, "start_action = start"); got != n {
		t.Errorf("%d connections start their control child, want %d", got, n)
	}
}

// TestMemberConnSlots: every member's group has its own kernel identity,
// slot i-1, up to MaxMembers, and its name is one swanctl.conf takes.
func TestMemberConnSlots(t *testing.T) {
	seen := map[string]bool{}
	for i := 1; i <= MaxMembers; i++ {
		name := MemberConn(i)
		if got := groupid.Of(name).Slot; int(got) != i-1 {
			t.Fatalf("MemberConn(%d) = %q has slot %d, want %d", i, name, got, i-1)
		}
		if seen[name] || !strings.HasPrefix(name, fmt.Sprintf("m%d-", i)) || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			t.Fatalf("MemberConn(%d) = %q: repeated or not a plain name", i, name)
		}
		seen[name] = true
	}
}

func TestMemberControl(t *testing.T) {
	for i, want := range map[int]string{1: "10.98.0.1", 255: "10.98.0.255", 256: "10.98.1.0", MaxMembers: "10.98.128.0", 1<<16 - 2: "10.98.255.254"} {
		if got := MemberControl(i).String(); got != want {
			t.Errorf("MemberControl(%d) = %s, want %s", i, got, want)
		}
	}
}
