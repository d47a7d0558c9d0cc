package swanctl

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	good := []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"30s", 30 * time.Second, "30s"},
		{"45", 45 * time.Second, "45s"},
		{"10m", 10 * time.Minute, "10m"},
		{"90m", 90 * time.Minute, "90m"},
		{"8h", 8 * time.Hour, "8h"},
		{"24h", 24 * time.Hour, "1d"},
		{"1d", 24 * time.Hour, "1d"},
		{"0", 0, "0s"},
		{" 7h ", 7 * time.Hour, "7h"},
		{"120s", 2 * time.Minute, "2m"},
		// strongSwan skips white space between number and unit.
		{"8 h", 8 * time.Hour, "8h"},
		{"30\ts", 30 * time.Second, "30s"},
		{"2  d", 48 * time.Hour, "2d"},
	}
	for _, tt := range good {
		d, err := ParseDuration(tt.in)
		if err != nil || d.Std() != tt.want || d.String() != tt.str {
			t.Errorf("ParseDuration(%q) = %v (%s), %v; want %v (%s)", tt.in, d.Std(), d, err, tt.want, tt.str)
		}
	}
	for _, in := range []string{"", "s", "h", "-1s", "+1s", "1.5h", "1w", "8 hours", "8 h h", "1h30m", "h 8", "0x10", "99999999999d", "4294967295d"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(struct{ D Duration }{Duration(90 * time.Second)})
	if err != nil || string(b) != `{"D":"90s"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var v struct{ D Duration }
	if err := json.Unmarshal([]byte(`{"D":"2h"}`), &v); err != nil || v.D.Std() != 2*time.Hour {
		t.Fatalf("Unmarshal = %v, %v", v.D, err)
	}
	if err := json.Unmarshal([]byte(`{"D":"2 hours"}`), &v); err == nil {
		t.Fatal("Unmarshal of a bad value succeeded")
	}
}

func TestParseBool(t *testing.T) {
	for in, want := range map[string]bool{"yes": true, "TRUE": true, "enabled": true, "1": true, "no": false, "False": false, "disabled": false, "0": false} {
		if got, err := ParseBool(in); err != nil || got != want {
			t.Errorf("ParseBool(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "y", "on", "2"} {
		if _, err := ParseBool(in); err == nil {
			t.Errorf("ParseBool(%q) succeeded", in)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":       "plain",
		"a b":         "a b",
		"a  b":        `"a  b"`,
		" lead":       `" lead"`,
		"a#b":         `"a#b"`,
		"}":           `"}"`,
		"q\"\\\n\t\r": `"q\"\\\n\t\r"`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
		root, err := Reader{FS: mapFS(nil)}.Parse("q", []byte("k = "+Quote(in)+"\n"))
		if err != nil || root.Key("k").Value != in {
			t.Errorf("Quote(%q) does not read back: %v", in, err)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"lifetime", "rekey_time", "rollover1", "rollover2", "local_ts"}
	for in, want := range map[string]string{"lifetme": "lifetime", "Rekey_Time": "rekey_time", "rollover3": "rollover1", "local-ts": "local_ts", "colour": ""} {
		if got := suggest(in, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
