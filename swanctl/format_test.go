package swanctl

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestFormatRoundTrip checks that the effective configuration reads back
// as the same Config.
func TestFormatRoundTrip(t *testing.T) {
	for _, src := range []string{
		group("controller", "connection = c", "control_child = \"ctl # 1\"", "esp_proposal = aes128gcm16", "allow_counter_mode = yes", "lifetime = 2h", "rekey_time = 90m", "rekey_jitter = 5m", "bgp { asn = 65000 }"),
		group("member", "connection = c", "dataplane = userspace", "tun = tun7", "encap = yes", "encap_port = 4600", "mtu = 1500", "underlay = 2001:db8::1", "local_ts = 10.1.0.0/24, 2001:db8:1::/64",
			"routes { x { prefixes = 10.2.0.0/24\n peer = 2001:db8::2 } }", "bgp { enabled = no\n router_id = 10.0.0.1\n port = 1179 }"),
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
	for _, g := range c.Groups {
		g.Pos = Pos{}
		for i := range g.Routes {
			g.Routes[i].Pos = Pos{}
		}
		if g.BGP != nil {
			g.BGP.Pos = Pos{}
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
