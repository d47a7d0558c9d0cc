package scale

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/xfrm"
)

// testSA is an SA of suite with keys filled with b.
func testSA(t *testing.T, spi uint32, b byte) xfrm.SA {
	t.Helper()
	s, err := mpsa.ParseProposal("aes256-sha256")
	if err != nil {
		t.Fatal(err)
	}
	return xfrm.SA{SPI: spi, Suite: s, EncrKey: bytes.Repeat([]byte{b}, s.EncrKeyBytes()), IntegKey: bytes.Repeat([]byte{b}, s.IntegKeyBytes())}
}

// fakeClock advances a second at every reading.
func fakeClock() func() time.Time {
	t := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	return func() time.Time { t = t.Add(time.Second); return t }
}

func TestRecorderLifecycle(t *testing.T) {
	ctx := context.Background()
	r := NewRecorder(fakeClock())
	local := netip.MustParseAddr("192.0.2.2")
	a, err := r.NewDataPlane(ctx, &swanctl.Group{Name: "m1"}, local, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.NewDataPlane(ctx, &swanctl.Group{Name: "m2"}, local, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewDataPlane(ctx, &swanctl.Group{Name: "m1"}, local, nil); err == nil {
		t.Error("a second data plane for an open group was accepted")
	}
	steps := []struct {
		name string
		err  error
		fail bool
	}{
		{"outbound before install", a.SetOutbound(ctx, 0x11), true},
		{"install", a.InstallInbound(ctx, testSA(t, 0x11, 1)), false},
		{"install again", a.InstallInbound(ctx, testSA(t, 0x11, 1)), true},
		{"outbound", a.SetOutbound(ctx, 0x11), false},
		{"install next", a.InstallInbound(ctx, testSA(t, 0x22, 2)), false},
		{"outbound next", a.SetOutbound(ctx, 0x22), false},
		{"remove old", a.Remove(ctx, 0x11), false},
		{"remove unknown", a.Remove(ctx, 0x33), true},
		{"short key", b.InstallInbound(ctx, xfrm.SA{SPI: 0x11, Suite: testSA(t, 0x11, 1).Suite, EncrKey: []byte{1}}), true},
		{"same keys elsewhere", b.InstallInbound(ctx, testSA(t, 0x11, 1)), false},
		{"other keys, same SPI", b.InstallInbound(ctx, testSA(t, 0x22, 9)), false},
	}
	for _, s := range steps {
		if (s.err != nil) != s.fail {
			t.Errorf("%s: err %v, want failure %v", s.name, s.err, s.fail)
		}
	}
	rec := r.Snapshot()
	g := rec.Groups["m1"]
	if g.Underlay != local || g.Outbound != "0x00000022" || strings.Join(g.Inbound, ",") != "0x00000022" {
		t.Errorf("m1: %+v", g)
	}
	if len(g.Calls) != 8 || g.Calls[0].Err == "" || g.Calls[1].Op != OpInstall || g.Calls[1].Err != "" {
		t.Errorf("m1 calls: %+v", g.Calls)
	}
	at, ok := g.Installed("0x00000011")
	if !ok || !at.Equal(g.Calls[1].At) {
		t.Errorf("Installed(0x00000011) = %v, %v; want the second call's time %v", at, ok, g.Calls[1].At)
	}
	if _, ok := rec.Groups["m2"].Installed("0x00000033"); ok {
		t.Error("Installed reports an SPI never installed")
	}
	if rec.KeySets["0x00000011"] != 1 || rec.KeySets["0x00000022"] != 2 {
		t.Errorf("key sets %v, want 0x00000011:1 (the same keys twice), 0x00000022:2", rec.KeySets)
	}
	cs, _ := b.Counters(ctx)
	if len(cs) != 2 || cs[0].SPI != 0x11 || cs[1].SPI != 0x22 {
		t.Errorf("m2 counters %+v", cs)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if g := r.Snapshot().Groups["m1"]; !g.Closed || len(g.Inbound) != 0 || g.Outbound != "" {
		t.Errorf("m1 after close: %+v", g)
	}
	if _, err := r.NewDataPlane(ctx, &swanctl.Group{Name: "m1"}, local, nil); err != nil {
		t.Errorf("a new data plane after close: %v", err)
	}
}

func TestRecorderWaitInstalled(t *testing.T) {
	ctx := context.Background()
	r := NewRecorder(fakeClock())
	local := netip.MustParseAddr("192.0.2.2")
	var dps []xfrm.DataPlane
	for _, name := range []string{"m1", "m2", "m3"} {
		dp, err := r.NewDataPlane(ctx, &swanctl.Group{Name: name}, local, nil)
		if err != nil {
			t.Fatal(err)
		}
		dps = append(dps, dp)
	}
	done := make(chan time.Time, 1)
	go func() {
		_, last, err := r.WaitInstalled(ctx, 0x11, 3)
		if err != nil {
			t.Error(err)
		}
		done <- last
	}()
	// A failed install and a second install in one group do not count.
	dps[0].InstallInbound(ctx, testSA(t, 0x11, 1))
	dps[0].InstallInbound(ctx, testSA(t, 0x11, 1))
	dps[1].InstallInbound(ctx, xfrm.SA{SPI: 0x11})
	dps[1].InstallInbound(ctx, testSA(t, 0x11, 1))
	select {
	case <-done:
		t.Fatal("WaitInstalled returned after two of three groups")
	case <-time.After(50 * time.Millisecond):
	}
	dps[2].InstallInbound(ctx, testSA(t, 0x11, 1))
	last := <-done
	if at, _ := r.Snapshot().Groups["m3"].Installed("0x00000011"); !last.Equal(at) {
		t.Errorf("last install at %v, want m3's %v", last, at)
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if n, _, err := r.WaitInstalled(tctx, 0x11, 4); err == nil || n != 3 {
		t.Errorf("waiting for a fourth group: %d, %v; want 3 and the context's error", n, err)
	}
}
