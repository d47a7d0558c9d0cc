package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestStateDirs: the state directory comes from systemd's STATE_DIRECTORY
// (its first path) or defaults to /var/lib/mpsad; each group's leases get
// a directory of their own, with names that could leave it encoded.
func TestStateDirs(t *testing.T) {
	for env, want := range map[string]string{"": DefaultStateDir, "/var/lib/mpsad": "/var/lib/mpsad", "/a:/b": "/a", ":/b": DefaultStateDir} {
		if got := stateDir(env); got != want {
			t.Errorf("stateDir(%q) = %q, want %q", env, got, want)
		}
	}
	for group, want := range map[string]string{
		"branch":     "/s/seq/branch",
		"g-1_x.y":    "/s/seq/g-1_x.y",
		"..":         "/s/seq/x-2e2e",
		"a/../../b":  "/s/seq/x-612f2e2e2f2e2e2f62",
		".hidden":    "/s/seq/x-2e68696464656e",
		"":           "/s/seq/x-",
		"grüße ohne": "/s/seq/x-6772c3bc c39f65206f686e65",
	} {
		want = strings.ReplaceAll(want, " ", "")
		if got := leaseDir("/s", group); got != want {
			t.Errorf("leaseDir(/s, %q) = %q, want %q", group, got, want)
		}
	}
}

// TestWarnSoftwareAES: without AES-NI (or in a purego build) a userspace
// data plane warns about table-based AES; with it, nothing is logged.
func TestWarnSoftwareAES(t *testing.T) {
	for _, hw := range []bool{false, true} {
		var buf bytes.Buffer
		warnSoftwareAES(slog.New(slog.NewTextHandler(&buf, nil)), hw)
		out := buf.String()
		switch {
		case hw && out != "":
			t.Errorf("with AES-NI: logged %q", out)
		case !hw && (!strings.Contains(out, "level=WARN") || !strings.Contains(out, "table-based") || !strings.Contains(out, "side channels")):
			t.Errorf("without AES-NI: logged %q, want a warning naming table-based AES and its side channels", out)
		}
	}
}
