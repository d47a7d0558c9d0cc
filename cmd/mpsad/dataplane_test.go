package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm/groupid"
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

// TestKernelPlaneKeepsLeases builds a group's kernel data plane the way
// mpsad does, in a network namespace (no ESP needed): it gets the group's
// marks and the group's lease directory under the state directory, the
// one the userspace data plane uses, which it creates.
func TestKernelPlaneKeepsLeases(t *testing.T) {
	state := t.TempDir()
	f := dataPlanes{stateDir: state}
	g := &swanctl.Group{Name: "branch", Dataplane: swanctl.BackendXFRM}
	local := netip.MustParseAddr("192.0.2.1")
	cfg := f.kernelConfig(g, local, nil)
	if id := groupid.Of("branch"); cfg.SeqLeaseDir != leaseDir(state, "branch") || cfg.ReqID != id.ReqID() || cfg.Priority != id.Priority() {
		t.Fatalf("kernel config: lease directory %q, reqid %#x, priority %d; want %q, %#x, %d",
			cfg.SeqLeaseDir, cfg.ReqID, cfg.Priority, leaseDir(state, "branch"), id.ReqID(), id.Priority())
	}
	ns := nettest.NewNS(t, "mdp")
	if err := ns.Do(func() error {
		dp, err := f.new(context.Background(), g, local, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		return dp.Close()
	}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(state, "seq", "branch")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("lease directory of the kernel plane: %v, %v", fi, err)
	}
}
