package swanctl

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/mpsa"
)

const testFile = "etc/swanctl.conf"

// load decodes src as etc/swanctl.conf.
func load(t *testing.T, src string) (*Config, []string) {
	t.Helper()
	cfg, err := Reader{FS: mapFS(map[string]string{testFile: src})}.LoadMPSA(testFile)
	return cfg, errorStrings(t, err)
}

// group wraps group body lines (starting at line 5) into an mpsa section
// of the given role with one group "g".
func group(role string, body ...string) string {
	return "mpsa {\n    role = " + role + "\n    groups {\n        g {\n" +
		strings.Join(body, "\n") + "\n        }\n    }\n}\n"
}

// memberOK is a valid member group body.
var memberOK = []string{
	"connection = c",
	"local_ts = 10.1.0.0/24",
	"routes { b { prefixes = 10.2.0.0/24\n peer = 192.0.2.2 } }",
}

func TestDecodeDefaults(t *testing.T) {
	cfg, errs := load(t, "connections { c { } }\n"+group("controller", "connection = c"))
	if errs != nil {
		t.Fatalf("errors: %q", errs)
	}
	suite, _ := mpsa.ParseProposal("aes256-sha256")
	want := &Config{
		Role:          RoleController,
		VICI:          "unix:///var/run/charon.vici",
		ControlPort:   4501,
		StatusSocket:  "/run/mpsad/mpsad.sock",
		LogLevel:      "info",
		MetricsListen: "",
		PushRate:      1000,
		PushBurst:     100,
		Pos:           Pos{testFile, 2},
		Groups: []*Group{{
			Name:         "g",
			Connection:   "c",
			ControlChild: "c",
			ESPProposal:  "aes256-sha256-prfsha256",
			Suite:        suite,
			Lifetime:     DefaultLifetime,
			RekeyTime:    DefaultRekeyTime,
			RekeyJitter:  0,
			Rollover1:    DefaultRollover1,
			Rollover2:    DefaultRollover2,
			RekeyOnJoin:  false,
			RekeyOnLeave: true,
			NonceLength:  32,
			Dataplane:    BackendXFRM,
			MTU:          1400,
			Pos:          Pos{testFile, 5},
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config\n got %+v\nwant %+v\n group got %+v\nwant %+v", cfg, want, cfg.Groups[0], want.Groups[0])
	}
	if DefaultLifetime.String() != "8h" || DefaultRekeyTime.String() != "7h" || DefaultRollover1.String() != "30s" || DefaultRollover2.String() != "1m" {
		t.Errorf("default durations %s %s %s %s", DefaultLifetime, DefaultRekeyTime, DefaultRollover1, DefaultRollover2)
	}
}

func TestDecodeMember(t *testing.T) {
	cfg, errs := load(t, group("member",
		"connection = ctl",
		"control_child = ctl-child",
		"dataplane = userspace",
		"mtu = 1300",
		"underlay = 2001:db8::1",
		"local_ts = 10.1.0.0/24, 2001:db8:a::/64, 10.9.9.9",
		"insecure_counter_mode_lab_only = yes",
		"routes {",
		"  b { prefixes = 10.2.0.0/24, 2001:db8:b::/64",
		"      peer = 2001:db8::2 }",
		"  c { prefixes = 10.3.0.0/24",
		"      peer = 2001:db8::3 }",
		"}",
		"bgp { asn = 64512\n router_id = 10.1.0.1 }",
	))
	if errs != nil {
		t.Fatalf("errors: %q", errs)
	}
	g := cfg.Groups[0]
	if g.ControlChild != "ctl-child" || g.Dataplane != BackendUserspace || g.TUN != "mpsa-g" || g.MTU != 1300 || !g.AllowCounterMode {
		t.Errorf("group %+v", g)
	}
	wantLocal := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("2001:db8:a::/64"), netip.MustParsePrefix("10.9.9.9/32")}
	if !slices.Equal(g.LocalTS, wantLocal) {
		t.Errorf("local_ts %v", g.LocalTS)
	}
	wantRoutes := []Route{
		{Name: "b", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("2001:db8:b::/64")}, Peer: netip.MustParseAddr("2001:db8::2"), Pos: Pos{testFile, 13}},
		{Name: "c", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24")}, Peer: netip.MustParseAddr("2001:db8::3"), Pos: Pos{testFile, 15}},
	}
	if !reflect.DeepEqual(g.Routes, wantRoutes) {
		t.Errorf("routes\n got %+v\nwant %+v", g.Routes, wantRoutes)
	}
	wantBGP := &BGP{Enabled: true, ASN: 64512, RouterID: netip.MustParseAddr("10.1.0.1"), Port: 179, HoldTime: DefaultBGPHoldTime,
		RestartTime: DefaultBGPRestartTime, StaleTime: DefaultBGPStaleTime, DeferralTime: DefaultBGPDeferralTime, NextHop: NextHopIKE, Pos: Pos{testFile, 18}}
	if !reflect.DeepEqual(g.BGP, wantBGP) {
		t.Errorf("bgp %+v", g.BGP)
	}
	if !g.PeersLearned() {
		t.Error("PeersLearned false")
	}
}

func TestDecodeWarnings(t *testing.T) {
	cfg, errs := load(t, group("member", append(slices.Clone(memberOK), "lifetime = 1h", "nonce_length = 16")...))
	if errs != nil {
		t.Fatalf("errors: %q", errs)
	}
	want := []string{
		"etc/swanctl.conf:9: mpsa.groups.g: lifetime is ignored in role member (a member receives it from its controller in MPSA_PUT); remove it",
		"etc/swanctl.conf:10: mpsa.groups.g: nonce_length is ignored in role member (a member receives it from its controller in MPSA_PUT); remove it",
	}
	if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
	// push_rate on a member: warned about, not checked.
	cfg, errs = load(t, strings.Replace(group("member", memberOK...), "role = member", "role = member\n    push_rate = 0", 1))
	if errs != nil {
		t.Fatalf("errors: %q", errs)
	}
	want = []string{"etc/swanctl.conf:3: mpsa: push_rate is ignored in role member (a member pushes nothing; the controller's push_rate paces its pushes); remove it"}
	if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) || cfg.PushRate != DefaultPushRate {
		t.Errorf("warnings\n got %q\nwant %q (push_rate %d)", got, want, cfg.PushRate)
	}
	cfg, errs = load(t, group("controller", "connection = c", "local_ts = 10.0.0.0/8", "routes { }"))
	if errs != nil {
		t.Fatalf("errors: %q", errs)
	}
	want = []string{
		"etc/swanctl.conf:6: mpsa.groups.g: local_ts is ignored in role controller (a controller has no data plane); remove it",
		"etc/swanctl.conf:7: mpsa.groups.g: routes is ignored in role controller (a controller has no data plane); remove it",
	}
	if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
	// The lab-only setting is valid, and says it is for labs whenever
	// it is on.
	for _, v := range []string{"yes", "no"} {
		cfg, errs = load(t, group("controller", "connection = c", "esp_proposal = aes256gcm16", "insecure_counter_mode_lab_only = "+v))
		if v == "no" {
			if errs == nil {
				t.Error("a counter mode with insecure_counter_mode_lab_only = no loaded")
			}
			continue
		}
		if errs != nil {
			t.Fatalf("errors: %q", errs)
		}
		want = []string{"etc/swanctl.conf:7: mpsa.groups.g: insecure_counter_mode_lab_only = yes permits counter-mode ciphers: " + counterModeRiskText + "; it is meant for a lab only: remove it anywhere else"}
		if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) || !cfg.Groups[0].AllowCounterMode {
			t.Errorf("warnings\n got %q\nwant %q (counter mode allowed: %v)", got, want, cfg.Groups[0].AllowCounterMode)
		}
	}
}

// TestDecodeIgnoresOtherRole checks that settings the role does not use
// draw only the warning that they are ignored, even when their values
// would be wrong in the other role, and that the configuration holds
// their defaults.
func TestDecodeIgnoresOtherRole(t *testing.T) {
	why := map[Role]string{RoleController: "a controller has no data plane", RoleMember: "a member receives it from its controller in MPSA_PUT"}
	for _, tt := range []struct {
		role    Role
		src     string
		ignored []string // "line group setting"
	}{
		{RoleController, "mpsa {\n    role = controller\n    groups {\n        g {\n connection = c\n" +
			" tun = t0\n mtu = 1x\n dataplane = kernel\n if_id = -1\n xfrm_interface = a/b\n encap = maybe\n encap_port = 0\n underlay = host.example\n local_ts = 10.1.0.1/24\n routes { r { prefixes = bogus } }\n }\n" +
			"        h {\n connection = d\n tun = t0\n routes { r { prefixes = 10.0.0.0/8\n peer = 192.0.2.1 } }\n }\n    }\n}\n",
			[]string{"6 g tun", "7 g mtu", "8 g dataplane", "9 g if_id", "10 g xfrm_interface", "11 g encap", "12 g encap_port", "13 g underlay", "14 g local_ts", "15 g routes", "19 h tun", "20 h routes"}},
		{RoleMember, group("member", append(slices.Clone(memberOK), "esp_proposal = blowfish", "lifetime = 1x", "rekey_time = 9h", "rekey_jitter = -1", "rollover1 = 2m", "rollover2 = 1m", "rekey_on_join = maybe", "rekey_on_leave = 2", "nonce_length = 8")...),
			[]string{"9 g esp_proposal", "10 g lifetime", "11 g rekey_time", "12 g rekey_jitter", "13 g rollover1", "14 g rollover2", "15 g rekey_on_join", "16 g rekey_on_leave", "17 g nonce_length"}},
	} {
		t.Run(string(tt.role), func(t *testing.T) {
			cfg, errs := load(t, tt.src)
			if errs != nil {
				t.Fatalf("errors: %q", errs)
			}
			var want []string
			for _, ig := range tt.ignored {
				f := strings.Fields(ig)
				want = append(want, fmt.Sprintf("etc/swanctl.conf:%s: mpsa.groups.%s: %s is ignored in role %s (%s); remove it", f[0], f[1], f[2], tt.role, why[tt.role]))
			}
			if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) {
				t.Errorf("warnings\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
			}
			g := cfg.Groups[0]
			suite, _ := mpsa.ParseProposal(DefaultESPProposal)
			switch tt.role {
			case RoleController:
				if g.Dataplane != DefaultDataplane || g.MTU != DefaultMTU || g.TUN != "" || g.IfID != 0 || g.XFRMInterface != "" || g.Encap || g.EncapPort != 0 || g.Underlay.IsValid() || g.LocalTS != nil || g.Routes != nil {
					t.Errorf("controller group holds member settings: %+v", g)
				}
			case RoleMember:
				if g.Suite != suite || g.ESPProposal != suite.String() || g.Lifetime != DefaultLifetime || g.RekeyTime != DefaultRekeyTime || g.RekeyJitter != DefaultRekeyJitter ||
					g.Rollover1 != DefaultRollover1 || g.Rollover2 != DefaultRollover2 || g.RekeyOnJoin != DefaultRekeyOnJoin || g.RekeyOnLeave != DefaultRekeyOnLeave || g.NonceLength != DefaultNonceLength {
					t.Errorf("member group does not hold the controller defaults: %+v", g)
				}
			}
		})
	}
}

// f starts the position of an error in testFile.
const f = testFile + ":"

// decodeErrorCases are configurations with the errors LoadMPSA reports.
// counterModeRiskText is the reason counter modes are refused, as the
// errors and the warning give it; written out here so that a change of
// the wording shows in the tests.
const counterModeRiskText = "with one key shared by every member, each sender must never use a counter (IV) another sender uses, which a group SA without sender IDs cannot ensure (RFC 6054) and neither data plane guarantees (the kernel's seqiv draws a random salt per state, so about one pair of senders in 2^32 reuses IVs, and the userspace data plane has no counter mode)"

var decodeErrorCases = []struct {
	name string
	src  string
	want []string
}{
	{"no mpsa section", "connections { }\n", []string{"etc/swanctl.conf:1: no mpsa { } section; add one with role and groups (examples: /usr/share/doc/mpsa/examples)"}},
	{"empty groups section", "mpsa {\n role = controller\n\n groups {\n }\n}\n", []string{
		f + "4: mpsa: no groups; add groups { NAME { connection = ... } }",
	}},
	{"misspelt mpsa section", "connections { }\nmspa {\n role = member\n}\n", []string{"etc/swanctl.conf:2: unknown section \"mspa\" and no mpsa { } section; did you mean mpsa?"}},
	{"no role, no groups", "mpsa {\n}\n", []string{
		f + "1: mpsa: role is not set; write role = controller or role = member",
		f + "1: mpsa: no groups; add groups { NAME { connection = ... } }",
	}},
	{"bad globals", "mpsa {\n role = boss\n vici = http://x\n control_port = 0\n status_socket = run/x.sock\n log_level = loud\n metrics_listen = :http\n colour = blue\n groups {\n  x = 1\n }\n}\n", []string{
		f + "2: mpsa: role = boss is not valid; write controller or member",
		f + "3: mpsa: vici = http://x: unsupported scheme \"http\"; write unix:///PATH or tcp://HOST:PORT",
		f + "4: mpsa: control_port = 0 is out of range; write a whole number from 1 to 65535",
		f + "5: mpsa: status_socket = run/x.sock is not an absolute path; write one such as /run/mpsad/mpsad.sock",
		f + "6: mpsa: log_level = loud is not valid; write debug, info, warn or error",
		f + "7: mpsa: metrics_listen = :http: port \"http\" is not a number from 1 to 65535; write a port number, for example 127.0.0.1:9474 or [::1]:9474",
		f + "8: mpsa: unknown setting \"colour\"; known here: role, vici, control_port, control_interface, status_socket, log_level, metrics_listen, push_rate, push_burst",
		f + "9: mpsa: no groups; add groups { NAME { connection = ... } }",
		f + "10: mpsa.groups: unexpected setting \"x\": groups holds only named sections; write groups { NAME { connection = ... } }",
	}},
	{"typos suggest the nearest name", "mpsa {\n role = member\n grups { }\n groups { g {\n conection = c\n rekey_tme = 1h\n rout { }\n routes = x\n} }\n}\n", []string{
		f + "3: mpsa: unknown section \"grups\"; did you mean groups?",
		f + "4: mpsa.groups.g: connection is not set; write connection = NAME, the swanctl connection between this member and its controller",
		f + "4: mpsa.groups.g: member group has no local_ts; write local_ts = the prefixes behind this member (10.1.0.0/24)",
		f + "4: mpsa.groups.g: member group has no way to learn its peers; add bgp { asn = AS NUMBER } to learn them from the controller, or routes { NAME { prefixes = ...  peer = ... } } with static peers",
		f + "5: mpsa.groups.g: unknown setting \"conection\"; did you mean connection?",
		f + "6: mpsa.groups.g: unknown setting \"rekey_tme\"; did you mean rekey_time?",
		f + "7: mpsa.groups.g: unknown section \"rout\"; did you mean routes?",
		f + "8: mpsa.groups.g: routes is a section, not a setting; write routes { ... }",
	}},
	{"setting written as a section", group("controller", "connection = c", "lifetime { }"), []string{
		f + "6: mpsa.groups.g: lifetime is a setting, not a section; write lifetime = VALUE",
	}},
	{"section references", "mpsa : base {\n role = member\n groups { g : tmpl { connection = c\n local_ts = 10.0.0.0/8\n routes { r { prefixes = 10.1.0.0/16\n peer = 192.0.2.1 } } } }\n}\n", []string{
		f + "1: mpsa: section references (mpsa : base) are not supported in mpsa { }; write the settings out in full",
		f + "3: mpsa.groups.g: section references (g : tmpl) are not supported in mpsa { }; write the settings out in full",
		f + "5: mpsa.groups.g: route r: prefix 10.1.0.0/16 overlaps local_ts 10.0.0.0/8: traffic for this member's own LAN would be sent to a peer; remove one of them",
	}},
	{"controller without connection", group("controller", "esp_proposal = aes128-sha1"), []string{
		f + "4: mpsa.groups.g: connection is not set; write connection = NAME, the swanctl connection between this controller and its members",
	}},
	{"wrong types", group("controller", "connection = c", "lifetime = 8 hours", "rekey_time = -1h", "rekey_on_leave = maybe", "nonce_length = 8", "rekey_jitter = 1.5m"), []string{
		f + "6: mpsa.groups.g: lifetime = 8 hours is not a time value; write a whole number with s, m, h or d (for example 8h)",
		f + "7: mpsa.groups.g: rekey_time = -1h is not a time value; write a whole number with s, m, h or d (for example 7h)",
		f + "8: mpsa.groups.g: rekey_on_leave = maybe is not a boolean; write yes or no",
		f + "9: mpsa.groups.g: nonce_length = 8 is out of range; write a whole number from 16 to 256",
		f + "10: mpsa.groups.g: rekey_jitter = 1.5m is not a time value; write a whole number with s, m, h or d (for example 0s)",
	}},
	{"rollover2 below rollover1", group("controller", "connection = c", "rollover1 = 2m", "rollover2 = 90s"), []string{
		f + "7: mpsa.groups.g: rollover2 (90s) is shorter than rollover1 (2m): members would stop receiving with the old SA while others still send with it; write rollover2 = 2m or more",
	}},
	{"rekey_time not below lifetime", group("controller", "connection = c", "lifetime = 1h", "rekey_time = 60m"), []string{
		f + "7: mpsa.groups.g: rekey_time (1h) is not below lifetime (1h): the SA would expire before it is replaced; write a rekey_time below 1h, such as 52m",
	}},
	{"rollover longer than the margin", group("controller", "connection = c", "lifetime = 1h", "rekey_time = 59m", "rollover2 = 2m"), []string{
		f + "8: mpsa.groups.g: rollover2 (2m) is longer than the margin between rekey_time and lifetime (1m): the old SA would expire while members still use it; lower rollover2 to 1m or less, or raise lifetime to 61m or more",
	}},
	{"compound time values are not strongSwan's", group("controller", "connection = c", "rekey_time = 7h59m50s"), []string{
		f + "6: mpsa.groups.g: rekey_time = 7h59m50s is not a time value; write a whole number with s, m, h or d (for example 7h)",
	}},
	{"default rollovers longer than the margin", group("controller", "connection = c", "lifetime = 3600", "rekey_time = 3580"), []string{
		f + "4: mpsa.groups.g: rollover1 (30s) is longer than the margin between rekey_time and lifetime (20s): the old SA would expire while members still use it; lower rollover1 to 20s or less, or raise lifetime to 3610s or more",
		f + "4: mpsa.groups.g: rollover2 (1m) is longer than the margin between rekey_time and lifetime (20s): the old SA would expire while members still use it; lower rollover2 to 20s or less, or raise lifetime to 3640s or more",
	}},
	{"jitter not below rekey_time", group("controller", "connection = c", "lifetime = 2h", "rekey_time = 1h", "rekey_jitter = 1h"), []string{
		f + "8: mpsa.groups.g: rekey_jitter (1h) is not below rekey_time (1h); write a smaller rekey_jitter, such as 0s (the default)",
	}},
	{"zero timers", group("controller", "connection = c", "rollover1 = 0", "rollover2 = 0s"), []string{
		f + "6: mpsa.groups.g: rollover1 must be longer than 0s; write rollover1 = 30s (the default) or another time above 0s",
		f + "7: mpsa.groups.g: rollover2 must be longer than 0s; write rollover2 = 1m (the default) or another time above 0s",
	}},
	// A timer that is zero or not a time value is reported alone: the
	// relations would compare a value the operator did not mean.
	{"zero lifetime, no relation checks", group("controller", "connection = c", "lifetime = 0", "rekey_time = 1"), []string{
		f + "6: mpsa.groups.g: lifetime must be longer than 0s; write lifetime = 8h (the default) or another time above 0s",
	}},
	{"bad lifetime, no relation checks", group("controller", "connection = c", "lifetime = 8 hours", "rekey_time = 9h"), []string{
		f + "6: mpsa.groups.g: lifetime = 8 hours is not a time value; write a whole number with s, m, h or d (for example 8h)",
	}},
	// Members accept lifetimes up to mpsa.MaxLifetime; LIFE, ROLL1 and
	// ROLL2 are 4-octet seconds on the wire.
	{"lifetime beyond what members accept", group("controller", "connection = c", "lifetime = 8d", "rekey_time = 1d"), []string{
		f + "6: mpsa.groups.g: lifetime = 8d is longer than members accept (7d: an SA whose keys every member holds should not live longer); write lifetime = 8h (the default) or another time up to 7d",
	}},
	{"rollover beyond MPSA_PUT's 4 octets", group("controller", "connection = c", "rollover2 = 60000d"), []string{
		f + "6: mpsa.groups.g: rollover2 = 60000d does not fit MPSA_PUT's 4-octet seconds (at most 4294967295 s, about 136 years); write rollover2 = 1m (the default) or another time below that",
	}},
	// No suggestion is itself invalid: with lifetime = 1s no rekey_time
	// fits below it, so the lifetime must grow.
	{"lifetime too short for any rekey_time", group("controller", "connection = c", "lifetime = 1", "rekey_time = 1"), []string{
		f + "7: mpsa.groups.g: rekey_time (1s) is not below lifetime (1s): the SA would expire before it is replaced; write a longer lifetime, such as lifetime = 61s (rekey_time plus the rollover)",
	}},
	// 7/8 of 90s would be 1m, leaving 30s for a rollover2 of 1m.
	{"suggested rekey_time leaves room for the rollover", group("controller", "connection = c", "lifetime = 90s", "rekey_time = 2m"), []string{
		f + "7: mpsa.groups.g: rekey_time (2m) is not below lifetime (90s): the SA would expire before it is replaced; write a rekey_time below 90s, such as 30s",
	}},
	{"counter mode without opt-in", group("controller", "connection = c", "esp_proposal = aes128gcm16"), []string{
		f + "6: mpsa.groups.g: esp_proposal = aes128gcm16 is a counter mode: " + counterModeRiskText + "; use a CBC proposal such as aes256-sha256, or, in a lab only, write insecure_counter_mode_lab_only = yes",
	}},
	// The old name of insecure_counter_mode_lab_only is refused, with
	// or without a counter mode, and not reported again as unknown.
	{"allow_counter_mode renamed", group("controller", "connection = c", "esp_proposal = aes128gcm16", "allow_counter_mode = yes"), []string{
		f + "6: mpsa.groups.g: esp_proposal = aes128gcm16 is a counter mode: " + counterModeRiskText + "; use a CBC proposal such as aes256-sha256, or, in a lab only, write insecure_counter_mode_lab_only = yes",
		f + "7: mpsa.groups.g: allow_counter_mode was renamed insecure_counter_mode_lab_only, which says what it risks: " + counterModeRiskText + "; remove it and use a CBC proposal such as aes256-sha256, or, in a lab only, write insecure_counter_mode_lab_only = yes",
	}},
	{"allow_counter_mode renamed, member", group("member", append(slices.Clone(memberOK), "allow_counter_mode = no")...), []string{
		f + "9: mpsa.groups.g: allow_counter_mode was renamed insecure_counter_mode_lab_only, which says what it risks: " + counterModeRiskText + "; remove it and use a CBC proposal such as aes256-sha256, or, in a lab only, write insecure_counter_mode_lab_only = no",
	}},
	{"bad proposal", group("controller", "connection = c", "esp_proposal = aes256-sha256-modp2048"), []string{
		f + "6: mpsa.groups.g: ESP proposal \"aes256-sha256-modp2048\": \"modp2048\" is a Diffie-Hellman group, which MPSA does not use (the controller distributes the keys); remove it; write a single proposal such as aes256-sha256",
	}},
	{"address errors", group("member", "connection = c", "underlay = 192.0.2.300", "local_ts = 10.1.0.0/33, 10.1.0.1/24, fe80::1%eth0, ::ffff:10.0.0.0/104",
		"routes { r { prefixes = 10.2.0.0\n peer = 10.0.0.0/8 } }", "routes { s { peer = host.example } }"), []string{
		f + "6: mpsa.groups.g: underlay = 192.0.2.300: \"192.0.2.300\" is not an IP address; write an IPv4 or IPv6 address (192.0.2.1 or 2001:db8::1), not a host name",
		f + "7: mpsa.groups.g: local_ts: \"10.1.0.0/33\" is not a prefix; write ADDRESS/LENGTH (10.1.0.0/24 or 2001:db8:1::/64)",
		f + "7: mpsa.groups.g: local_ts: \"10.1.0.1/24\" has host bits set; write 10.1.0.0/24",
		f + "7: mpsa.groups.g: local_ts: \"fe80::1%eth0\" is not a prefix; write ADDRESS/LENGTH (10.1.0.0/24 or 2001:db8:1::/64)",
		f + "7: mpsa.groups.g: local_ts: \"::ffff:10.0.0.0/104\" is an IPv4-mapped IPv6 prefix; write the IPv4 prefix",
		f + "9: mpsa.groups.g.routes.r: peer = 10.0.0.0/8: \"10.0.0.0/8\" is a prefix; write a single address (192.0.2.1 or 2001:db8::1)",
		f + "10: mpsa.groups.g.routes.s: peer = host.example: \"host.example\" is not an IP address; write an IPv4 or IPv6 address (192.0.2.1 or 2001:db8::1), not a host name",
		f + "10: mpsa.groups.g.routes.s: route has no prefixes; write prefixes = the prefixes behind that peer (10.2.0.0/24)",
	}},
	{"overlapping prefixes", group("member", "connection = c", "local_ts = 10.1.0.0/16, 10.1.2.0/24, 2001:db8:a::/48",
		"routes {", " r1 { prefixes = 10.2.0.0/16, 2001:db8:a:1::/64\n peer = 192.0.2.1 }", " r2 { prefixes = 10.2.3.0/24\n peer = 192.0.2.2 }", " r3 { prefixes = 10.2.0.0/16\n peer = 192.0.2.3 }", "}"), []string{
		f + "6: mpsa.groups.g: local_ts lists overlapping prefixes 10.1.0.0/16 and 10.1.2.0/24; keep only the wider one",
		f + "8: mpsa.groups.g: route r1: prefix 2001:db8:a:1::/64 overlaps local_ts 2001:db8:a::/48: traffic for this member's own LAN would be sent to a peer; remove one of them",
		f + "10: mpsa.groups.g: route r2: prefix 10.2.3.0/24 overlaps 10.2.0.0/16 of route r1: each destination must map to exactly one peer; remove or narrow one of them",
		f + "12: mpsa.groups.g: route r3: prefix 10.2.0.0/16 overlaps 10.2.0.0/16 of route r1: each destination must map to exactly one peer; remove or narrow one of them",
		f + "12: mpsa.groups.g: route r3: prefix 10.2.0.0/16 overlaps 10.2.3.0/24 of route r2: each destination must map to exactly one peer; remove or narrow one of them",
	}},
	{"member with no way to learn peers", group("member", "connection = c", "local_ts = 10.1.0.0/24", "bgp { enabled = no }"), []string{
		f + "4: mpsa.groups.g: member group has no way to learn its peers; add bgp { asn = AS NUMBER } to learn them from the controller, or routes { NAME { prefixes = ...  peer = ... } } with static peers",
	}},
	{"bgp checks", group("member", append(slices.Clone(memberOK), "bgp {\n router_id = 2001:db8::1\n port = 99999\n neighbour = x\n peers { }\n hold_time = 2s\n restart_time = 2h\n stale_time = 0s\n}")...), []string{
		f + "9: mpsa.groups.g.bgp: asn is not set; write asn = the group's AS number (a private one such as 64512)",
		f + "10: mpsa.groups.g.bgp: router_id = 2001:db8::1 is not an IPv4 address; write a BGP router ID as an IPv4 address, such as 192.0.2.1",
		f + "11: mpsa.groups.g.bgp: port = 99999 is out of range; write a whole number from 1 to 65535",
		f + "12: mpsa.groups.g.bgp: unknown setting \"neighbour\"; known here: enabled, asn, router_id, port, hold_time, restart_time, stale_time, deferral_time, next_hop",
		f + "13: mpsa.groups.g.bgp: unknown section \"peers\"; known here: policy",
		f + "14: mpsa.groups.g.bgp: hold_time = 2s is too short; write hold_time = 90s (the default) or at least 3s",
		f + "15: mpsa.groups.g.bgp: restart_time = 2h is too long (the graceful restart capability carries at most 4095 s); write restart_time = 2m (the default) or at most 4095s",
		f + "16: mpsa.groups.g.bgp: stale_time = 0s is too short; write stale_time = 1h (the default) or at least 1s",
	}},
	{"bgp policy checks", group("controller", "connection = c", "bgp {\n asn = 64512\n deferral_time = 20h\n policy {\n x = 1\n a { prefixes = 10.0.0.0/8 le 33, 10.1.0.1/16, 10.0.0.0/8 ge 24 le 16 }\n b { identity = cpe-*.example.net\n peer = 1 }\n c { identity =\n prefixes = 10.0.0.0/8 le 24\n d { } }\n }\n}"), []string{
		f + "8: mpsa.groups.g.bgp: deferral_time = 20h is too long (GoBGP keeps the deferral time in 16 bits); write deferral_time = 30s (the default) or at most 65535s",
		f + "10: mpsa.groups.g.bgp.policy: unexpected setting \"x\": policy holds only named sections; write policy { NAME { identity = cpe-*.example.net  prefixes = 10.0.0.0/8 le 24 } }; strongSwan names may not contain . or :, so an identity cannot be a key",
		f + "11: mpsa.groups.g.bgp.policy.a: policy has no identity; write identity = the IKE identity of the members it admits, * matching any characters (cpe-*.example.net)",
		f + "11: mpsa.groups.g.bgp.policy.a: prefixes: \"10.0.0.0/8 le 33\": \"33\" is not a prefix length from 0 to 32; write a length from 8 to 32",
		f + "11: mpsa.groups.g.bgp.policy.a: prefixes: \"10.1.0.1/16\" has host bits set; write 10.1.0.0/16",
		f + "11: mpsa.groups.g.bgp.policy.a: prefixes: \"10.0.0.0/8 ge 24 le 16\": le 16 is below ge 24; write le 24 or more",
		f + "12: mpsa.groups.g.bgp.policy.b: policy has no prefixes; write prefixes = the prefixes those members may advertise (10.1.0.0/16 le 24, 2001:db8:1::/48 le 64)",
		f + "13: mpsa.groups.g.bgp.policy.b: unknown setting \"peer\"; known here: identity, prefixes",
		f + "14: mpsa.groups.g.bgp.policy.c: policy has no identity; write identity = the IKE identity of the members it admits, * matching any characters (cpe-*.example.net)",
		f + "16: mpsa.groups.g.bgp.policy.c: unexpected section \"d\": c takes no subsections; remove it, and write settings as KEY = VALUE (known here: identity, prefixes)",
	}},
	{"two reflectors on one port", "mpsa {\n role = controller\n groups {\n  a {\n   connection = a\n   bgp { asn = 1\n policy { p { identity = *\n prefixes = 10.0.0.0/8 le 24 } } }\n  }\n  b {\n   connection = b\n   bgp { asn = 2\n policy { p { identity = *\n prefixes = 10.0.0.0/8 le 24 } } }\n  }\n }\n}\n", []string{
		f + "12: mpsa.groups.b.bgp: port 179 is already used by the route reflector of group a (each listens on every address); write a different port, such as port = 1179, and the same in the members' bgp { }",
	}},
	{"subsection in a route", group("member", "connection = c", "local_ts = 10.1.0.0/24", "routes { r { prefixes = 10.2.0.0/24\n peer = 192.0.2.2\n via { } } }"), []string{
		f + "9: mpsa.groups.g.routes.r: unexpected section \"via\": r takes no subsections; remove it, and write settings as KEY = VALUE (known here: prefixes, peer)",
	}},
	{"interface names", "mpsa {\n role = member\n control_interface = ipsec 0\n groups {\n  g {\n connection = c\n local_ts = 10.1.0.0/24\n routes { r { prefixes = 10.2.0.0/24\n peer = 192.0.2.2 } }\n if_id = 3\n xfrm_interface = a/b\n }\n }\n}\n", []string{
		f + "3: mpsa: control_interface = ipsec 0: an interface name may not contain /, : or blanks; write the name of charon's TUN device, such as ipsec0",
		f + "11: mpsa.groups.g: xfrm_interface = a/b: an interface name may not contain /, : or blanks; write a name of at most 15 characters without /, : or blanks, such as mpsa-g",
	}},
	{"push rate", "mpsa {\n role = controller\n push_rate = 0\n push_burst = 2000000\n groups { g { connection = c } }\n}\n", []string{
		f + "3: mpsa: push_rate = 0 is out of range; write a whole number from 1 to 1000000",
		f + "4: mpsa: push_burst = 2000000 is out of range; write a whole number from 1 to 1000000",
	}},
	{"ports", "mpsa {\n role = member\n vici = tcp://127.0.0.1:0\n metrics_listen = 127.0.0.1\n groups { }\n}\n", []string{
		f + "3: mpsa: vici = tcp://127.0.0.1:0: port \"0\" is not a number from 1 to 65535; write a port number, for example tcp://127.0.0.1:4502",
		f + "4: mpsa: metrics_listen = 127.0.0.1: not HOST:PORT; write for example 127.0.0.1:9474 or [::1]:9474",
		f + "5: mpsa: no groups; add groups { NAME { connection = ... } }",
	}},
	{"data plane options", group("member", append(slices.Clone(memberOK), "dataplane = kernel", "tun = x", "if_id = -1", "mtu = 100")...), []string{
		f + "9: mpsa.groups.g: dataplane = kernel is not valid; write xfrm or userspace",
		f + "10: mpsa.groups.g: tun applies to dataplane = userspace only; remove it or write dataplane = userspace",
		f + "11: mpsa.groups.g: if_id = -1 is out of range; write a whole number from 0 to 4294967295",
		f + "12: mpsa.groups.g: mtu = 100 is out of range; write a whole number from 576 to 9000",
	}},
	{"whole numbers are decimal", group("member", append(slices.Clone(memberOK), "if_id = 0x10", "mtu = 1_400")...), []string{
		f + "9: mpsa.groups.g: if_id = 0x10 is not a decimal number; write if_id = 16",
		f + "10: mpsa.groups.g: mtu = 1_400 is not a decimal number; write mtu = 1400",
	}},
	{"userspace options", group("member", append(slices.Clone(memberOK), "dataplane = userspace", "tun = a-very-long-tun-name", "if_id = 7", "local_ts = 2001:db8::/64", "mtu = 1000")...), []string{
		f + "10: mpsa.groups.g: tun = a-very-long-tun-name: longer than 15 characters, the Linux limit; write a name of at most 15 characters without /, : or blanks, such as mpsa-g",
		f + "11: mpsa.groups.g: if_id applies to dataplane = xfrm only; remove it or write dataplane = xfrm",
		f + "13: mpsa.groups.g: mtu = 1000 is below 1280, the minimum for IPv6 traffic; write mtu = 1280 or more",
	}},
	{"encap options", group("member", append(slices.Clone(memberOK), "dataplane = userspace", "encap_port = 4503", "encap = maybe")...), []string{
		f + "10: mpsa.groups.g: encap_port needs encap = yes; write encap = yes or remove encap_port",
		f + "11: mpsa.groups.g: encap = maybe is not a boolean; write yes or no",
	}},
	{"encap with the kernel data plane", group("member", append(slices.Clone(memberOK), "encap = yes", "encap_port = 4600")...), []string{
		f + "9: mpsa.groups.g: encap applies to dataplane = userspace only: the kernel data plane sends plain ESP (IP protocol 50); remove it or write dataplane = userspace",
		f + "10: mpsa.groups.g: encap_port applies to dataplane = userspace only: the kernel data plane sends plain ESP (IP protocol 50); remove it or write dataplane = userspace",
	}},
	{"encap port is the control port", group("member", append(slices.Clone(memberOK), "dataplane = userspace", "encap = yes", "encap_port = 4501")...), []string{
		f + "4: mpsa.groups.g: encap_port 4501 is the control_port; write a different encap_port",
	}},
	{"default tun name too long", strings.Replace(group("member", append(slices.Clone(memberOK), "dataplane = userspace")...), " g {", " group-with-a-long-name {", 1), []string{
		f + "4: mpsa.groups.group-with-a-long-name: the default TUN device name \"mpsa-group-with-a-long-name\": longer than 15 characters, the Linux limit; write tun = NAME, at most 15 characters without /, : or blanks",
	}},
	// A route may overlap another group's local_ts no more than its own
	// group's: either way it sends the member's own LAN to a peer. The
	// same local_ts in two groups is fine (10.9.0.0/24).
	{"routes against local_ts across groups", "mpsa {\n role = member\n groups {\n  a {\n   connection = a\n   local_ts = 10.1.0.0/24, 10.9.0.0/24\n   routes { r { prefixes = 10.2.0.0/24\n   peer = 192.0.2.2 } }\n  }\n" +
		"  b {\n   connection = b\n   local_ts = 10.2.0.0/16, 10.9.0.0/24\n   routes { s { prefixes = 10.1.0.0/25\n   peer = 192.0.2.3 } }\n  }\n }\n}\n", []string{
		f + "7: mpsa.groups.a: route r: prefix 10.2.0.0/24 overlaps local_ts 10.2.0.0/16 of group b: traffic for this member's own LAN would be sent to a peer; remove or narrow one of them",
		f + "13: mpsa.groups.b: route s: prefix 10.1.0.0/25 overlaps local_ts 10.1.0.0/24 of group a: traffic for this member's own LAN would be sent to a peer; remove or narrow one of them",
	}},
	{"underlay and peer families differ", group("member", "connection = c", "underlay = 192.0.2.1", "local_ts = 10.1.0.0/24", "routes { r { prefixes = 10.2.0.0/24\n peer = 2001:db8::2 } }"), []string{
		f + "9: mpsa.groups.g: route r: peer 2001:db8::2 and underlay 192.0.2.1 are of different address families: ESP cannot travel between them; write a peer address of the underlay's family",
	}},
}

func TestDecodeErrors(t *testing.T) {
	for _, tt := range decodeErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			cfg, got := load(t, tt.src)
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
			}
			if cfg != nil {
				t.Errorf("config returned with errors: %+v", cfg)
			}
		})
	}
}

// TestAcrossGroups checks what two member groups may not share: the
// control connection, the TUN, the ESP-in-UDP port, the XFRM interface
// and if_id, and overlapping routes.
func TestAcrossGroups(t *testing.T) {
	body := func(name, conn, extra string, route string) string {
		return "        " + name + " {\n connection = " + conn + "\n local_ts = 10.1.0.0/24\n" + extra +
			" routes { r { prefixes = " + route + "\n peer = 192.0.2.2 } }\n }\n"
	}
	src := "mpsa {\n    role = member\n    groups {\n" +
		body("a", "c", " dataplane = userspace\n tun = t0\n encap = yes\n", "10.2.0.0/16") +
		body("b", "c", " dataplane = userspace\n tun = t0\n encap = yes\n", "10.2.3.0/24") +
		body("x", "d", " if_id = 5\n xfrm_interface = x0\n", "10.3.0.0/24") +
		body("y", "e", " if_id = 5\n xfrm_interface = x0\n", "10.4.0.0/24") +
		"    }\n}\n"
	_, got := load(t, src)
	want := []string{
		f + "13: mpsa.groups.b: connection c with control_child c is already used by group a: the control exchange identifies a group by its IKE SA; give each group its own connection or control_child",
		f + "13: mpsa.groups.b: tun t0 is already used by group a; write a different tun = NAME",
		f + "13: mpsa.groups.b: encap_port 4502 is already used by group a; write a different encap_port",
		f + "19: mpsa.groups.b: route r: prefix 10.2.3.0/24 overlaps 10.2.0.0/16 of route r in group a: each destination must map to one group and peer; remove or narrow one of them",
		f + "30: mpsa.groups.y: xfrm_interface x0 is already used by group x; write a different xfrm_interface = NAME",
		f + "30: mpsa.groups.y: if_id 5 is already used by group x; write a different if_id",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// TestGroupIdentityCollision: two groups whose names hash to one kernel
// identity are refused at load, naming both and what to change, since
// the kernel objects of one would be taken for the other's.
func TestGroupIdentityCollision(t *testing.T) {
	g := func(name, conn, route string) string {
		return "  " + name + " {\n   connection = " + conn + "\n   local_ts = 10.1.0.0/24\n   routes { r { prefixes = " + route + "\n   peer = 192.0.2.2 } }\n  }\n"
	}
	// g0 and g620 share slot 9986;
	// east and mgmt, who shared priority 7120 before, do not collide.
	src := "mpsa {\n role = member\n groups {\n" + g("g0", "a", "10.2.0.0/24") + g("east", "b", "10.3.0.0/24") +
		g("mgmt", "c", "10.4.0.0/24") + g("g620", "d", "10.5.0.0/24") + " }\n}\n"
	_, got := load(t, src)
	want := []string{f + "22: mpsa.groups.g620: the name hashes to the kernel identity of group g0 (slot 9986: reqid 0x6d712702, XFRM policy priorities 36356 and 36357, route metric 1836132098), by which mpsad and mpsactl flush tell a group's kernel objects apart; rename one of the two groups"}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// TestErrorsSayWhatToWrite: every error the test inputs produce reads
// `file:line: what is wrong; what to write instead`, with a line.
func TestErrorsSayWhatToWrite(t *testing.T) {
	form := regexp.MustCompile(`^[^ ]+:[1-9][0-9]*: [^;]+; .+`)
	check := func(name string, err error) {
		t.Helper()
		for _, e := range errorStrings(t, err) {
			if !form.MatchString(e) {
				t.Errorf("%s: %q is not `file:line: what is wrong; what to write instead`", name, e)
			}
		}
	}
	for _, tt := range decodeErrorCases {
		_, err := Reader{FS: mapFS(map[string]string{testFile: tt.src})}.LoadMPSA(testFile)
		check(tt.name, err)
	}
	for _, tt := range parseErrorCases {
		_, err := Reader{FS: mapFS(nil)}.Parse("x.conf", []byte(tt.src))
		check(tt.name, err)
	}
	for _, tt := range includeCases {
		_, err := Reader{FS: mapFS(tt.files)}.LoadMPSA("etc/main.conf")
		check(tt.name, err)
	}
	_, err := Reader{FS: mapFS(nil)}.LoadMPSA("etc/none.conf")
	check("missing file", err)
}

// TestTimerSuggestionsAreValid: what the rekey_time error suggests,
// written in, gives a valid configuration, whatever the lifetime.
func TestTimerSuggestionsAreValid(t *testing.T) {
	rekey := regexp.MustCompile(`write a rekey_time below \S+, such as (\S+)$`)
	life := regexp.MustCompile(`such as lifetime = (\S+) `)
	for _, lifetime := range []string{"1", "2s", "30s", "59s", "60s", "61s", "90s", "2m", "1h", "8h"} {
		for _, rollover2 := range []string{"1m", "5m", "1s"} {
			src := func(l, r string) string {
				return group("controller", "connection = c", "lifetime = "+l, "rekey_time = "+r, "rollover1 = 1s", "rollover2 = "+rollover2)
			}
			_, errs := load(t, src(lifetime, lifetime))
			if len(errs) != 1 {
				t.Fatalf("lifetime %s: errors %q", lifetime, errs)
			}
			var fixed string
			if m := rekey.FindStringSubmatch(errs[0]); m != nil {
				fixed = src(lifetime, m[1])
			} else if m := life.FindStringSubmatch(errs[0]); m != nil {
				fixed = src(m[1], lifetime)
			} else {
				t.Fatalf("lifetime %s: no suggestion in %q", lifetime, errs[0])
			}
			if _, errs := load(t, fixed); errs != nil {
				t.Errorf("lifetime %s, rollover2 %s: the suggestion of %q gives errors %q", lifetime, rollover2, errs[0], errs)
			}
		}
	}
}

// TestControlChildConf: the control child's proposals are read from the
// connections section of the same configuration, so that mpsad can check
// them against what charon has; without that section it is nil.
func TestControlChildConf(t *testing.T) {
	conns := "connections {\n  c {\n    children {\n      c {\n        esp_proposals = aes128gcm16 , aes256-sha256\n      }\n" +
		"      other {\n        ah_proposals = sha256\n      }\n    }\n  }\n}\n"
	cfg, errs := load(t, conns+group("member", memberOK...))
	if errs != nil {
		t.Fatalf("errors: %q", errs)
	}
	got := cfg.Groups[0].ControlChildConf
	want := &ChildConf{ESPProposals: []string{"aes128gcm16", "aes256-sha256"}, Pos: Pos{testFile, 4}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("control child c: got %+v, want %+v", got, want)
	}
	cfg, errs = load(t, conns+group("member", append([]string{"control_child = other"}, memberOK...)...))
	if errs != nil {
		t.Fatalf("errors: %q", errs)
	}
	if got := cfg.Groups[0].ControlChildConf; got == nil || got.ESPProposals != nil || !slices.Equal(got.AHProposals, []string{"sha256"}) {
		t.Errorf("control child other: got %+v, want AH sha256 and no ESP proposals", got)
	}
	cfg, _ = load(t, group("member", memberOK...))
	if got := cfg.Groups[0].ControlChildConf; got != nil {
		t.Errorf("no connections section: got %+v, want nil", got)
	}
}

// TestDecodeBGP: bgp { } on a member is a source of peers of its own; on a
// controller it carries the prefix policy; settings of the other role
// draw warnings and hold their defaults; --check --json shows every key.
func TestDecodeBGP(t *testing.T) {
	cfg, errs := load(t, group("member", "connection = c", "local_ts = 10.1.0.0/24", "bgp { asn = 64512\n stale_time = 10m\n deferral_time = 1m\n policy { p { identity = x\n prefixes = bogus } } }"))
	if errs != nil {
		t.Fatalf("a member with only bgp { }: %q", errs)
	}
	g := cfg.Groups[0]
	if !g.PeersLearned() || !g.BGPEnabled() || g.BGP.StaleTime.String() != "10m" || g.BGP.DeferralTime != DefaultBGPDeferralTime || g.BGP.Policy != nil {
		t.Errorf("member bgp %+v", g.BGP)
	}
	want := []string{
		f + "9: mpsa.groups.g.bgp: deferral_time is ignored in role member (only a reflector defers); remove it",
		f + "10: mpsa.groups.g.bgp: policy is ignored in role member (the controller filters the routes); remove it",
	}
	if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) {
		t.Errorf("member warnings\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}

	cfg, errs = load(t, group("controller", "connection = c", "bgp {\n asn = 64512\n port = 1179\n stale_time = 5m\n next_hop = any\n policy {\n  branches { identity = cpe-*.example.net\n prefixes = 10.0.0.0/8 le 24, 2001:db8::/32 ge 48 le 64 }\n  hq { identity = C=CH, O=Example, CN=hq\n prefixes = 0.0.0.0/0, 192.168.0.0/16 }\n }\n}"))
	if errs != nil {
		t.Fatalf("controller: %q", errs)
	}
	b := cfg.Groups[0].BGP
	if b.Port != 1179 || b.StaleTime != DefaultBGPStaleTime || len(b.Policy) != 2 || b.NextHop != NextHopAny {
		t.Fatalf("controller bgp %+v", b)
	}
	rules := b.Rules()
	if rules[0].Name != "branches" || rules[0].Identity != "cpe-*.example.net" || len(rules[0].Prefixes) != 2 || rules[0].Prefixes[1].String() != "2001:db8::/32 ge 48 le 64" {
		t.Errorf("rule %+v", rules[0])
	}
	if rules[1].Identity != "C=CH, O=Example, CN=hq" || rules[1].Prefixes[0].String() != "0.0.0.0/0" {
		t.Errorf("rule %+v", rules[1])
	}
	want = []string{f + "9: mpsa.groups.g.bgp: stale_time is ignored in role controller (a controller learns no routes); remove it"}
	if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) {
		t.Errorf("controller warnings\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"hold_time":"90s"`, `"restart_time":"2m"`, `"stale_time":"1h"`, `"deferral_time":"30s"`, `"next_hop":"any"`, `"prefixes":["10.0.0.0/8 le 24","2001:db8::/32 ge 48 le 64"]`} {
		if !strings.Contains(string(js), key) {
			t.Errorf("JSON lacks %s: %s", key, js)
		}
	}

	// A controller with BGP and no policy rejects everything: a warning.
	cfg, errs = load(t, group("controller", "connection = c", "bgp { asn = 64512 }"))
	if errs != nil {
		t.Fatal(errs)
	}
	want = []string{f + "6: mpsa.groups.g.bgp: no policy: the route reflector rejects every prefix a member advertises; add policy { NAME { identity = cpe-*.example.net  prefixes = 10.0.0.0/8 le 24 } }"}
	if got := errorStrings(t, cfg.Warnings); !slices.Equal(got, want) {
		t.Errorf("no-policy warning\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	if js, _ := json.Marshal(cfg); !strings.Contains(string(js), `"policy":[]`) || !strings.Contains(string(js), `"next_hop":"ike"`) {
		t.Errorf("JSON of an empty policy, default next hop: %s", js)
	}
	_, errs = load(t, group("controller", "connection = c", "bgp { asn = 64512\n next_hop = self }"))
	want = []string{f + "7: mpsa.groups.g.bgp: next_hop = self is not a choice; write next_hop = ike (a member's routes must lead to its IKE address, the default) or next_hop = any (members whose ESP address is not their IKE address)"}
	if got := errs; !slices.Equal(got, want) {
		t.Errorf("next_hop error\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}
