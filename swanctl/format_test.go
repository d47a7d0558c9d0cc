package swanctl

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFormatRoundTrip checks that the effective configuration reads back
// as the same Config.
func TestFormatRoundTrip(t *testing.T) {
	for _, src := range []string{
		group("controller", "connection = c", "control_child = \"ctl # 1\"", "esp_proposal = aes128gcm16", "insecure_counter_mode_lab_only = yes", "lifetime = 2h", "rekey_time = 90m", "rekey_jitter = 5m",
			"bgp { asn = 65000\n hold_time = 30s\n deferral_time = 1m\n policy { branches { identity = cpe-*.example.net\n prefixes = 10.0.0.0/8 le 24, 2001:db8::/32 ge 48 le 64 }\n dn { identity = C=CH, O=Example, CN=*\n prefixes = 192.168.0.0/16 } } }"),
		group("member", "connection = c", "dataplane = userspace", "tun = tun7", "encap = yes", "encap_port = 4600", "mtu = 1500", "underlay = 2001:db8::1", "local_ts = 10.1.0.0/24, 2001:db8:1::/64",
			"routes { x { prefixes = 10.2.0.0/24\n peer = 2001:db8::2 } }", "bgp { enabled = no\n router_id = 10.0.0.1\n port = 1179\n stale_time = 10m\n restart_time = 1m }"),
		group("member", "connection = c", "local_ts = 10.1.0.0/24", "bgp { asn = 4200000000 }"),
		"mpsa {\n role = controller\n push_rate = 50\n push_burst = 5\n groups { g { connection = c } }\n}\n",
		"mpsa {\n role = member\n vici = tcp://127.0.0.1:4502\n metrics_listen = [::1]:9474\n log_level = debug\n groups { a { connection = a\n local_ts = 10.1.0.0/24\n if_id = 7\n routes { r { prefixes = 10.2.0.0/24\n peer = 192.0.2.2 } } }\n b { connection = b\n local_ts = 10.1.0.0/24\n routes { r { prefixes = 10.3.0.0/24\n peer = 192.0.2.3 } } } }\n}\n",
	} {
		cfg, errs := load(t, src)
		if errs != nil {
			t.Fatalf("errors: %q", errs)
		}
		text := cfg.Format()
		again, errs := load(t, text)
		if errs != nil {
			t.Fatalf("formatted config does not load: %q\n%s", errs, text)
		}
		clearPos(cfg)
		clearPos(again)
		if !reflect.DeepEqual(cfg, again) {
			t.Errorf("round trip differs\nfirst  %+v\nsecond %+v\n%s", cfg.Groups[0], again.Groups[0], text)
		}
		if !strings.HasPrefix(text, "mpsa {\n    role = ") {
			t.Errorf("format starts %q", text[:20])
		}
	}
}

func clearPos(c *Config) {
	c.Pos = Pos{}
	c.Warnings = nil // they name lines
	for _, g := range c.Groups {
		g.Pos = Pos{}
		for i := range g.Routes {
			g.Routes[i].Pos = Pos{}
		}
		if g.BGP != nil {
			g.BGP.Pos = Pos{}
			for i := range g.BGP.Policy {
				g.BGP.Policy[i].Pos = Pos{}
			}
		}
	}
}

// TestSectionFormatInclude checks that sections named include, with and
// without references, print as sections and not as include statements.
func TestSectionFormatInclude(t *testing.T) {
	src := "s {\n include: a, b.c { k = v }\n}\ninclude{ x = 1 }\nt { include{ y = 2 } }\n"
	rd := Reader{FS: mapFS(nil)}
	root, err := rd.Parse("etc/a.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	const want = `s@1{ include:a,b.c@2{ k="v"@2 } } include@4{ x="1"@4 } t@5{ include@5{ y="2"@5 } }`
	if got := render(root); got != want {
		t.Fatalf("tree\n got %s\nwant %s", got, want)
	}
	text := root.Format()
	again, err := rd.Parse("etc/b.conf", []byte(text))
	if err != nil {
		t.Fatalf("formatted tree does not read back: %v\n%s", err, text)
	}
	strip := func(s string) string { return regexp.MustCompile(`@\d+`).ReplaceAllString(s, "") }
	if got := render(again); strip(got) != strip(want) {
		t.Errorf("formatted tree reads back as\n%s\nwant\n%s\nfrom\n%s", got, want, text)
	}
}

// TestJSONShowsEverySetting: the JSON of --check --json has every
// setting, and one that the role or data plane does not use shows its
// default, as docs/configuration.md says.
func TestJSONShowsEverySetting(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		global map[string]any // expected values of global settings
		group  map[string]any // expected values of the group's settings
	}{
		{"controller", group("controller", "connection = c"),
			map[string]any{"control_interface": "", "metrics_listen": ""},
			map[string]any{"tun": "mpsa-g", "encap": false, "encap_port": 4502.0, "xfrm_interface": "mpsa-g", "if_id": 0.0, "dataplane": "xfrm", "mtu": 1400.0, "underlay": "", "local_ts": nil, "routes": nil}},
		{"member, xfrm in policy mode", group("member", memberOK...),
			map[string]any{"control_interface": ""},
			map[string]any{"tun": "mpsa-g", "encap": false, "encap_port": 4502.0, "xfrm_interface": "mpsa-g", "if_id": 0.0, "lifetime": "8h"}},
		{"member, userspace without encap", group("member", append(slices.Clone(memberOK), "dataplane = userspace", "tun = t0")...),
			map[string]any{"control_interface": ""},
			map[string]any{"tun": "t0", "encap": false, "encap_port": 4502.0, "xfrm_interface": "mpsa-g"}},
		{"member, userspace with encap", "mpsa {\n role = member\n control_interface = ipsec0\n groups { g {\n" + strings.Join(memberOK, "\n") + "\n dataplane = userspace\n encap = yes\n encap_port = 4600\n } }\n}\n",
			map[string]any{"control_interface": "ipsec0"},
			map[string]any{"tun": "mpsa-g", "encap": true, "encap_port": 4600.0}},
		{"member, xfrm in route mode", group("member", append(slices.Clone(memberOK), "if_id = 7", "xfrm_interface = x7")...),
			nil,
			map[string]any{"xfrm_interface": "x7", "if_id": 7.0, "tun": "mpsa-g"}},
	}
	// Every field with a JSON name and no omitempty must appear.
	keys := func(v any) []string {
		var out []string
		ty := reflect.TypeOf(v)
		for i := 0; i < ty.NumField(); i++ {
			tag := ty.Field(i).Tag.Get("json")
			if tag != "-" && !strings.Contains(tag, "omitempty") {
				out = append(out, tag)
			}
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, errs := load(t, tt.src)
			if errs != nil {
				t.Fatalf("errors: %q", errs)
			}
			b, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			g := m["groups"].([]any)[0].(map[string]any)
			for obj, want := range map[string]struct {
				m      map[string]any
				keys   []string
				values map[string]any
			}{"config": {m, keys(Config{}), tt.global}, "group": {g, keys(Group{}), tt.group}} {
				for _, k := range want.keys {
					if _, ok := want.m[k]; !ok {
						t.Errorf("%s JSON lacks %q: %s", obj, k, b)
					}
				}
				for k, v := range want.values {
					if got := want.m[k]; !reflect.DeepEqual(got, v) {
						t.Errorf("%s JSON %q = %#v, want %#v", obj, k, got, v)
					}
				}
			}
			// The Group itself keeps zero for what is not in use.
			if grp := cfg.Groups[0]; !grp.Encap && grp.EncapPort != 0 {
				t.Errorf("group without encap holds encap_port %d", grp.EncapPort)
			}
		})
	}
}
