package policy

import (
	"net/netip"
	"testing"
)

func TestParseRange(t *testing.T) {
	for _, tt := range []struct {
		in       string
		min, max int
		str      string
	}{
		{"10.1.0.0/16", 16, 16, "10.1.0.0/16"},
		{"10.0.0.0/8 le 24", 8, 24, "10.0.0.0/8 le 24"},
		{"10.0.0.0/8 ge 16 le 24", 16, 24, "10.0.0.0/8 ge 16 le 24"},
		{"10.0.0.0/8 GE 24", 24, 32, "10.0.0.0/8 ge 24"},
		{"10.0.0.0/8 ge 8 le 32", 8, 32, "10.0.0.0/8 le 32"},
		{"0.0.0.0/0", 0, 0, "0.0.0.0/0"},
		{"192.0.2.1", 32, 32, "192.0.2.1/32"},
		{"2001:db8::/32 le 64", 32, 64, "2001:db8::/32 le 64"},
		{"  2001:db8::/32   ge 48  ", 48, 128, "2001:db8::/32 ge 48"},
	} {
		r, err := ParseRange(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if r.Min != tt.min || r.Max != tt.max || r.String() != tt.str {
			t.Errorf("%q: got %d..%d %q, want %d..%d %q", tt.in, r.Min, r.Max, r.String(), tt.min, tt.max, tt.str)
		}
		back, err := ParseRange(r.String())
		if err != nil || back != r {
			t.Errorf("%q: String %q reads back as %v, %v", tt.in, r.String(), back, err)
		}
	}
	for _, in := range []string{
		"", "10.1.0.1/16", "10.0.0.0/8 le", "10.0.0.0/8 le 33", "10.0.0.0/8 le 4", "10.0.0.0/16 ge 8",
		"10.0.0.0/8 ge 24 le 16", "10.0.0.0/8 le 24 ge 16", "10.0.0.0/8 eq 24", "::ffff:10.0.0.0/104",
		"host.example", "10.0.0.0/8 le x", "fe80::1%eth0",
	} {
		if r, err := ParseRange(in); err == nil {
			t.Errorf("%q: accepted as %v", in, r)
		}
	}
}

func TestRangeContains(t *testing.T) {
	r, _ := ParseRange("10.0.0.0/8 ge 16 le 24")
	for p, want := range map[string]bool{
		"10.1.0.0/16":   true,
		"10.1.2.0/24":   true,
		"10.1.2.128/25": false,
		"10.0.0.0/8":    false,
		"11.1.0.0/16":   false,
		"0.0.0.0/0":     false,
		"::/0":          false,
	} {
		if got := r.Contains(netip.MustParsePrefix(p)); got != want {
			t.Errorf("%v contains %s: %v, want %v", r, p, got, want)
		}
	}
	def, _ := ParseRange("0.0.0.0/0")
	if !def.Contains(netip.MustParsePrefix("0.0.0.0/0")) || def.Contains(netip.MustParsePrefix("10.0.0.0/8")) {
		t.Error("0.0.0.0/0 must admit exactly the default route")
	}
	v6, _ := ParseRange("2001:db8::/32 le 64")
	if !v6.Contains(netip.MustParsePrefix("2001:db8:1::/48")) || v6.Contains(netip.MustParsePrefix("10.0.0.0/8")) || v6.Contains(netip.MustParsePrefix("2001:db9::/48")) {
		t.Error("IPv6 range")
	}
}

func TestMatchIdentity(t *testing.T) {
	for _, tt := range []struct {
		pattern, id string
		want        bool
	}{
		{"cpe-*.example.net", "cpe-1.example.net", true},
		{"cpe-*.example.net", "CPE-12.Example.NET", true},
		{"cpe-*.example.net", "cpe-.example.net", true},
		{"cpe-*.example.net", "cpe-1.example.net.evil", false},
		{"cpe-*.example.net", "xcpe-1.example.net", false},
		{"cpe-*.example.net", "cpe-1.sub.example.net", true},
		{"*", "anything", true},
		{"*", "", true},
		{"hq.example.net", "hq.example.net", true},
		{"hq.example.net", "hq.example.ne", false},
		{"*@example.net", "alice@example.net", true},
		{"C=CH, O=Example, CN=*", "C=CH, O=Example, CN=cpe-3", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"**x", "x", true},
	} {
		if got := MatchIdentity(tt.pattern, tt.id); got != tt.want {
			t.Errorf("MatchIdentity(%q, %q) = %v, want %v", tt.pattern, tt.id, got, tt.want)
		}
	}
}

func TestPolicyCheck(t *testing.T) {
	mk := func(s ...string) []Range {
		var out []Range
		for _, x := range s {
			r, err := ParseRange(x)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}
	p := New([]Rule{
		{Name: "branches", Identity: "cpe-*.example.net", Prefixes: mk("10.0.0.0/8 le 24")},
		{Name: "cpe-1", Identity: "cpe-1.example.net", Prefixes: mk("2001:db8:1::/48 le 64")},
		{Name: "hq", Identity: "hq.example.net", Prefixes: mk("0.0.0.0/0", "192.168.0.0/16")},
	})
	check := func(id, prefix string) Verdict {
		return p.Check(id, p.Matching(id), netip.MustParsePrefix(prefix))
	}
	if v := check("cpe-1.example.net", "10.1.0.0/24"); !v.Allowed || v.Rule != "branches" {
		t.Errorf("cpe-1 10.1.0.0/24: %+v", v)
	}
	if v := check("cpe-1.example.net", "2001:db8:1:2::/64"); !v.Allowed || v.Rule != "cpe-1" {
		t.Errorf("cpe-1 v6: %+v", v)
	}
	if v := check("cpe-2.example.net", "2001:db8:1:2::/64"); v.Allowed {
		t.Errorf("cpe-2 may not advertise cpe-1's IPv6 prefix: %+v", v)
	}
	if v := check("cpe-1.example.net", "0.0.0.0/0"); v.Allowed || v.Reason == "" {
		t.Errorf("cpe-1 default route: %+v", v)
	}
	if v := check("hq.example.net", "0.0.0.0/0"); !v.Allowed {
		t.Errorf("hq default route: %+v", v)
	}
	if v := check("stranger.example.org", "10.1.0.0/24"); v.Allowed || v.Reason == "" {
		t.Errorf("unknown identity: %+v", v)
	}
	rules := p.Rules()
	rules[0].Prefixes[0] = mk("0.0.0.0/0 le 32")[0]
	if v := check("cpe-1.example.net", "11.0.0.0/8"); v.Allowed {
		t.Error("Rules returned the policy's own slices")
	}
}
