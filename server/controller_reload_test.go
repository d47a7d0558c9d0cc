package server

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/swanctl"
	"github.com/mpsa/mpsa/vici"
)

// ctlConfWith is ctlConf with its group's timers replaced by settings.
func ctlConfWith(settings string) string {
	return strings.Replace(ctlConf, `lifetime = 1h
    rekey_time = 50m
    rollover1 = 1s
    rollover2 = 2s`, settings, 1)
}

const ctlTimers = `lifetime = 1h
    rekey_time = 50m
    rollover1 = 1s
    rollover2 = 2s`

// reloadCtl reloads the controller of b with src and checks the error.
func (b *bench) reloadCtl(src string, wantErr string) {
	b.t.Helper()
	err := b.ctl.reload(b.ctx, loadConfig(b.t, src))
	switch {
	case wantErr == "" && err != nil:
		b.t.Fatalf("reload: %v", err)
	case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
		b.t.Fatalf("reload: error %v, want one saying %q", err, wantErr)
	}
}

// expectNoPush checks that the controller sent nothing since the last
// drain.
func (b *bench) expectNoPush(what string) {
	b.t.Helper()
	if n := len(b.w.queue); n != 0 {
		b.t.Fatalf("%s: the controller sent %d datagrams", what, n)
	}
}

// TestControllerReloadUnchanged: a reload with the same settings (parsed
// anew) keeps the group as it is: the same group SA, no push.
func TestControllerReloadUnchanged(t *testing.T) {
	b := newBench(t)
	b.up()
	b.dp.take()
	g, spi := b.ctlGroup(), b.ctlGroup().group.Current().SPI()
	b.reloadCtl(ctlConf, "")
	b.expectNoPush("reload without a change")
	if b.ctlGroup() != g || g.group.Current().SPI() != spi {
		t.Fatalf("reload without a change replaced the group (SPI %08x, was %08x)", b.ctlGroup().group.Current().SPI(), spi)
	}
	b.advance(time.Minute)
	b.expectCalls()
}

// TestControllerReloadNewSA: a change the group SA depends on (lifetime,
// esp_proposal) gives a new group SA, pushed to the member, which rolls
// over to it as at a rekey.
func TestControllerReloadNewSA(t *testing.T) {
	for _, c := range []struct{ name, conf string }{
		{"lifetime", ctlConfWith(strings.Replace(ctlTimers, "lifetime = 1h", "lifetime = 2h", 1))},
		{"esp_proposal", strings.Replace(ctlConf, "control_child = ctl", "control_child = ctl\n    esp_proposal = aes128-sha256", 1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBench(t)
			b.up()
			b.dp.take()
			old := b.ctlGroup().group.Current().SPI()
			b.reloadCtl(c.conf, "")
			b.w.drain(b.ctx)
			cur := b.ctlGroup().group.Current()
			if cur.SPI() == old {
				t.Fatalf("%s changed and the group SA stayed %08x", c.name, old)
			}
			if c.name == "lifetime" && cur.Expires.Sub(cur.Created) != 2*time.Hour {
				t.Fatalf("new SA lives %v", cur.Expires.Sub(cur.Created))
			}
			if p := b.ctlGroup().group.PutAt(b.now); p.Suite != b.ctlGroup().cfg.Suite {
				t.Fatalf("new SA has suite %v, configured %v", p.Suite, b.ctlGroup().cfg.Suite)
			}
			b.expectCalls(fmt.Sprintf("install %08x", cur.SPI()))
			if st := b.ctlStatus(); len(st.Members) != 1 || st.Members[0].AckedSPI != spiString(cur.SPI()) {
				t.Fatalf("controller status after the reload: %+v", st.Members)
			}
			b.advance(time.Second)
			b.expectCalls(fmt.Sprintf("outbound %08x", cur.SPI()))
			b.advance(time.Second)
			b.expectCalls(fmt.Sprintf("remove %08x", old))
		})
	}
}

// TestControllerReloadTimersAndFlags: a reload that changes only timers
// and the membership flags keeps the group SA (no rekey, no push);
// rekey_on_leave holds from the next leave, a new rekey_time reschedules
// the current SA's rekey, and the next SA carries the new rollover times.
func TestControllerReloadTimersAndFlags(t *testing.T) {
	b := newBench(t)
	b.up()
	b.dp.take()
	g := b.ctlGroup()
	first := g.group.Current()
	spi := first.SPI()
	b.now = b.now.Add(10 * time.Minute)
	// rekey_on_leave was on (the default); also new rollover times and
	// rekey_time.
	b.reloadCtl(ctlConfWith(`lifetime = 1h
    rekey_time = 40m
    rollover1 = 3s
    rollover2 = 5s
    rekey_on_leave = no`), "")
	b.expectNoPush("reload of timers and flags")
	if b.ctlGroup() != g || g.group.Current().SPI() != spi {
		t.Fatalf("a reload of timers and flags replaced the group SA %08x with %08x", spi, b.ctlGroup().group.Current().SPI())
	}
	if want := first.Created.Add(40 * time.Minute); !g.group.NextRekey().Equal(want) {
		t.Fatalf("next rekey %v, want %v (creation + the new rekey_time)", g.group.NextRekey(), want)
	}
	if !strings.Contains(b.logs.String(), "changed=\"[rekey_time rollover1 rollover2 rekey_on_leave]\"") {
		t.Errorf("the log does not say what changed:\n%s", b.logs.String())
	}
	b.advance(time.Minute)
	b.expectCalls()

	// The member leaves: with rekey_on_leave now off, no rekey.
	b.ctl.onUpdate(b.ctx, vici.Update{Snapshot: vici.Snapshot{Connected: true}})
	if len(g.members) != 0 {
		t.Fatalf("member still there: %v", g.members)
	}
	if !g.group.NextRekey().Equal(first.Created.Add(40 * time.Minute)) {
		t.Fatalf("a leave scheduled a rekey at %v with rekey_on_leave = no", g.group.NextRekey())
	}
	b.advance(time.Minute)
	if g.group.Current().SPI() != spi {
		t.Fatal("the group rekeyed after a leave with rekey_on_leave = no")
	}
	// It comes back and gets the same SA (which it has already).
	b.up()
	b.expectCalls()
	if st := b.ctlStatus(); len(st.Members) != 1 || st.Members[0].AckedSPI != spiString(spi) {
		t.Fatalf("controller status after the return: %+v", st.Members)
	}

	// The rekey at the new rekey_time makes an SA with the new rollover
	// times: the member sends with it after 3 s, drops the old after 5 s.
	b.advance(first.Created.Add(40 * time.Minute).Sub(b.now))
	second := g.group.Current().SPI()
	if second == spi {
		t.Fatal("no rekey at the new rekey_time")
	}
	b.expectCalls(fmt.Sprintf("install %08x", second))
	if st := b.ctlStatus(); st.PreviousSPI != spiString(spi) {
		t.Errorf("previous SPI %q, want %s", st.PreviousSPI, spiString(spi))
	}
	p := g.group.PutAt(b.now)
	if p.Rollover1 != 3 || p.Rollover2 != 5 {
		t.Fatalf("new SA carries rollover %d/%d, want 3/5", p.Rollover1, p.Rollover2)
	}
	if cur := g.group.Current(); !cur.RekeyAt.Equal(cur.Created.Add(40 * time.Minute)) {
		t.Errorf("the new SA rekeys at %v, want creation + 40m", cur.RekeyAt)
	}
	b.advance(2999 * time.Millisecond)
	b.expectCalls()
	b.advance(time.Millisecond)
	b.expectCalls(fmt.Sprintf("outbound %08x", second))
	b.advance(2 * time.Second)
	b.expectCalls(fmt.Sprintf("remove %08x", spi))
	// Another rekey: the previous SPI follows as usual.
	if _, err := g.rekey(b.now, "manual"); err != nil {
		t.Fatal(err)
	}
	b.w.drain(b.ctx)
	if st := b.ctlStatus(); st.PreviousSPI != spiString(second) || st.SPI == spiString(second) {
		t.Errorf("after another rekey: SPI %s, previous %s (want %s)", st.SPI, st.PreviousSPI, spiString(second))
	}
}

// TestControllerReloadRekeyOnLeaveTurnedOn: turning rekey_on_leave on
// takes effect for the next leave without a rekey of its own.
func TestControllerReloadRekeyOnLeaveTurnedOn(t *testing.T) {
	b := newBench(t)
	b.reloadCtl(ctlConfWith(ctlTimers+"\n    rekey_on_leave = no"), "")
	b.up()
	g := b.ctlGroup()
	spi := g.group.Current().SPI()
	b.reloadCtl(ctlConf, "") // rekey_on_leave back to the default, yes
	b.expectNoPush("turning rekey_on_leave on")
	if b.ctlGroup() != g || g.group.Current().SPI() != spi {
		t.Fatal("turning rekey_on_leave on replaced the group SA")
	}
	b.ctl.onUpdate(b.ctx, vici.Update{Snapshot: vici.Snapshot{Connected: true}})
	if want := b.now.Add(membershipHoldDown); !g.group.NextRekey().Equal(want) {
		t.Fatalf("after a leave the next rekey is at %v, want %v", g.group.NextRekey(), want)
	}
}

// TestControllerReloadRefused: a configuration the controller cannot run
// is refused as a whole and the running group stays as it was.
func TestControllerReloadRefused(t *testing.T) {
	for _, c := range []struct {
		name, conf, err string
		edit            func(*swanctl.Config)
	}{
		// The protocol core refuses it (2^32-1 s at most); swanctl's
		// check does too, so the configuration is edited after loading,
		// as an embedder of the server could hand it over. With a
		// second, valid group that must not be set up.
		{"lifetime out of range", ctlConf + "\nmpsa { groups { h { connection = d } } }", "out of range",
			func(cfg *swanctl.Config) { cfg.Groups[0].Lifetime = swanctl.Duration(60000 * 24 * time.Hour) }},
		{"role", memConf, "role changed", nil},
		{"control port", ctlConf + "\nmpsa { control_port = 4600 }", "control_port changed", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBench(t)
			b.up()
			b.dp.take()
			cfg, g, spi := b.ctl.cfg, b.ctlGroup(), b.ctlGroup().group.Current().SPI()
			n := loadConfig(t, c.conf)
			if c.edit != nil {
				c.edit(n)
			}
			if err := b.ctl.reload(b.ctx, n); err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("reload: error %v, want one saying %q", err, c.err)
			}
			b.expectNoPush("refused reload")
			if b.ctl.cfg != cfg || len(b.ctl.groups) != 1 || b.ctlGroup() != g || g.group.Current().SPI() != spi {
				t.Fatalf("a refused reload changed the controller: %d groups, SPI %08x (was %08x)", len(b.ctl.groups), b.ctlGroup().group.Current().SPI(), spi)
			}
			// the group still serves its member
			if _, err := g.rekey(b.now, "manual"); err != nil {
				t.Fatal(err)
			}
			b.w.drain(b.ctx)
			b.expectCalls(fmt.Sprintf("install %08x", g.group.Current().SPI()))
		})
	}
}

// TestEngineOverloadLogged: datagrams the loop could not take are counted
// under "overload", logged through the rate-limited drop log (at once,
// then the rest when the interval has passed) and shown in the status.
func TestEngineOverloadLogged(t *testing.T) {
	b := newBench(t)
	b.up()
	d := Datagram{Src: netip.AddrPortFrom(netip.MustParseAddr("10.98.9.9"), 4501), Dst: ctlAddr, Data: []byte("x")}
	fill := func() {
		for len(b.ctl.datagrams) < cap(b.ctl.datagrams) {
			b.ctl.deliver(d)
		}
	}
	fill()
	for range 3 {
		b.ctl.deliver(d)
	}
	if strings.Contains(b.logs.String(), "reason=overload") {
		t.Fatal("overload logged from the transport's goroutine")
	}
	b.ctl.onDatagram(b.ctx, <-b.ctl.datagrams)
	if !strings.Contains(b.logs.String(), "reason=overload dropped_since_last_report=3") {
		t.Fatalf("overload not logged:\n%s", b.logs.String())
	}
	fill()
	b.ctl.deliver(d)
	b.ctl.deliver(d)
	st := b.ctl.status(b.ctx)
	if st.Drops[dropOverload] != 5 {
		t.Fatalf("status drops %v, want overload 5", st.Drops)
	}
	if n := strings.Count(b.logs.String(), "reason=overload"); n != 1 {
		t.Fatalf("%d overload lines within one interval", n)
	}
	// the held-back two are logged when the interval has passed
	if next := b.ctl.nextDeadline(); next > 10*time.Second {
		t.Fatalf("next deadline in %v, want at most the drop log's interval", next)
	}
	b.advance(10 * time.Second)
	if !strings.Contains(b.logs.String(), "reason=overload dropped_since_last_report=2") {
		t.Fatalf("the held-back overload drops were not logged:\n%s", b.logs.String())
	}
	// overload is not a metrics reason (metrics.DropReasons)
	mfs, err := b.ctl.opts.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == dropOverload {
					t.Errorf("metric %s has reason %s", mf.GetName(), dropOverload)
				}
			}
		}
	}
}

// withChild is conf with a connections section before it that defines
// the control child, after lines blank lines (which move the section).
func withChild(conf string, lines int, proposals string) string {
	return strings.Repeat("# moved\n", lines) + "connections { c { children {\n ctl { esp_proposals = " + proposals + " } } } }\n" + conf
}

// TestReloadControlChildMoved: a reload that only moves the control
// child's section in the file (a comment line added above it) keeps both
// groups as they are: the same group SA, no push, no new data plane; the
// group takes the new position for its messages. A changed esp_proposals
// of the child is checked again.
func TestReloadControlChildMoved(t *testing.T) {
	b := newBench(t)
	if err := b.ctl.reload(b.ctx, loadConfig(t, withChild(ctlConf, 0, "aes256-sha256"))); err != nil {
		t.Fatal(err)
	}
	if err := b.mem.reload(b.ctx, loadConfig(t, withChild(memConf, 0, "aes256-sha256"))); err != nil {
		t.Fatal(err)
	}
	b.up()
	b.dp.take()
	g, mg, spi := b.ctlGroup(), b.mem.groups[0].(*memGroup), b.ctlGroup().group.Current().SPI()
	if err := b.ctl.reload(b.ctx, loadConfig(t, withChild(ctlConf, 1, "aes256-sha256"))); err != nil {
		t.Fatal(err)
	}
	if err := b.mem.reload(b.ctx, loadConfig(t, withChild(memConf, 1, "aes256-sha256"))); err != nil {
		t.Fatal(err)
	}
	b.expectNoPush("the control child's section moved")
	b.expectCalls()
	if b.ctlGroup() != g || g.group.Current().SPI() != spi || b.mem.groups[0] != mg {
		t.Fatalf("moving the control child's section replaced a group (SPI %08x, was %08x)", b.ctlGroup().group.Current().SPI(), spi)
	}
	for side, cc := range map[string]*swanctl.ChildConf{"controller": g.cfg.ControlChildConf, "member": mg.cfg.ControlChildConf} {
		if cc == nil || cc.Pos.Line != 3 {
			t.Errorf("%s: control child at %+v, want line 3", side, cc)
		}
	}
	if err := b.mem.reload(b.ctx, loadConfig(t, withChild(memConf, 1, "null-sha256"))); err != nil {
		t.Fatal(err)
	}
	b.expectCalls()
	if st := b.memStatus(); b.mem.groups[0] != mg || len(st.CharonProblems) != 1 || !strings.Contains(st.CharonProblems[0], "NULL encryption (null-sha256, test.conf:3)") {
		t.Fatalf("after esp_proposals changed to NULL: charon problems %q", st.CharonProblems)
	}
}
