package charon

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// Need stops the test (skip outside CI, fail in CI) unless root, charon,
// swanctl, unshare and the kernel-libipsec plugin are available.
func Need(t testenv.TB) {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedFile(t, DefaultBinary)
	testenv.NeedFile(t, "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
	testenv.NeedCommand(t, "swanctl")
	testenv.NeedCommand(t, "unshare")
	testenv.NeedCommand(t, "ip")
}

// Start launches charon in ns with cfg (cfg.NetNS is set from ns), failing
// the test if it does not come up. When the test ends charon is stopped and
// its directory removed; if the test failed, charon's log is copied into
// the test log first.
func Start(t testing.TB, ns *nettest.NS, cfg Config) *Instance {
	t.Helper()
	Need(t)
	cfg.NetNS = ns.Name
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, err := Launch(ctx, cfg)
	if err != nil {
		t.Fatalf("charon in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("MPSA_CHARON_LOG") != "" {
			t.Logf("charon in %s (%s):\n%s", ns.Name, in.cfg.Dir, in.Log())
		}
		if err := in.Close(); err != nil {
			t.Errorf("stop charon in %s: %v", ns.Name, err)
		}
	})
	return in
}

// MustSwanctl runs swanctl against the instance and fails the test on error.
func (in *Instance) MustSwanctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := in.Swanctl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
