package mpsa

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func info(spi uint32, life, r1, r2 int) PutInfo {
	return PutInfo{SPI: spi, Digest: [32]byte{byte(spi), byte(spi >> 8), 1},
		Lifetime: time.Duration(life) * time.Second, Rollover1: time.Duration(r1) * time.Second, Rollover2: time.Duration(r2) * time.Second}
}

// render prints actions as "t+S kind SPI" lines for exact comparison.
func render(acts []Action) string {
	var b strings.Builder
	for _, a := range acts {
		fmt.Fprintf(&b, "t+%d %s %x\n", int(a.At.Sub(t0)/time.Second), a.Kind, a.SPI)
	}
	return b.String()
}

// step is one call on the lifecycle: a Receive when put is set, else an
// Advance, and the exact actions expected.
type step struct {
	at   int
	put  *PutInfo
	want Received
	acts string
}

func p(i PutInfo) *PutInfo { return &i }

func runSteps(t *testing.T, steps []step) *Member {
	t.Helper()
	m := NewMember()
	for i, s := range steps {
		var acts []Action
		if s.put != nil {
			got, a, err := m.Receive(at(s.at), *s.put)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if got != s.want {
				t.Fatalf("step %d: outcome %s, want %s", i, got, s.want)
			}
			acts = a
		} else {
			acts = m.Advance(at(s.at))
		}
		want := strings.TrimLeft(strings.ReplaceAll(s.acts, "\t", ""), "\n")
		if got := render(acts); got != want {
			t.Fatalf("step %d at t+%d: actions\n%s\nwant\n%s", i, s.at, got, want)
		}
	}
	return m
}

func TestMemberFirstSAIgnoresRollover(t *testing.T) {
	m := runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 100, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 99, acts: ""},
		{at: 100, acts: `
			t+100 remove a00
		`},
	})
	if m.Outbound() != 0 || len(m.SAs()) != 0 {
		t.Fatalf("after expiry: outbound %x, %d SAs", m.Outbound(), len(m.SAs()))
	}
	if _, ok := m.NextDeadline(); ok {
		t.Fatal("deadline with no SA")
	}
}

func TestMemberRollover(t *testing.T) {
	m := runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 1000, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 500, put: p(info(0xb00, 1000, 30, 60)), want: Accepted, acts: `
			t+500 install-inbound b00
		`},
		{at: 529, acts: ""},
		{at: 530, acts: `
			t+530 set-outbound b00
		`},
		{at: 559, acts: ""},
		{at: 560, acts: `
			t+560 remove a00
		`},
		{at: 1499, acts: ""},
		{at: 1500, acts: `
			t+1500 remove b00
		`},
	})
	if m.Outbound() != 0 {
		t.Fatal("outbound left after expiry")
	}
}

// TestMemberAdvanceCatchesUp: one late Advance fires every timer in time
// order with the times they fell due.
func TestMemberAdvanceCatchesUp(t *testing.T) {
	runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 1000, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 500, put: p(info(0xb00, 1000, 30, 60)), want: Accepted, acts: `
			t+500 install-inbound b00
		`},
		{at: 2000, acts: `
			t+530 set-outbound b00
			t+560 remove a00
			t+1500 remove b00
		`},
	})
}

func TestMemberPutDuringRollover(t *testing.T) {
	runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 1000, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 500, put: p(info(0xb00, 1000, 30, 60)), want: Accepted, acts: `
			t+500 install-inbound b00
		`},
		// C arrives before B is outbound: A, B and C are all inbound.
		{at: 510, put: p(info(0xc00, 1000, 30, 60)), want: Accepted, acts: `
			t+510 install-inbound c00
		`},
		{at: 530, acts: `
			t+530 set-outbound b00
		`},
		{at: 540, acts: `
			t+540 set-outbound c00
		`},
		{at: 560, acts: `
			t+560 remove a00
		`},
		{at: 570, acts: `
			t+570 remove b00
		`},
		{at: 1510, acts: `
			t+1510 remove c00
		`},
	})
}

func TestMemberDuplicateStaleConflict(t *testing.T) {
	m := runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 1000, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		// A retransmission changes nothing, timers included.
		{at: 10, put: p(info(0xa00, 990, 30, 60)), want: Duplicate, acts: ""},
		{at: 100, put: p(info(0xb00, 1000, 30, 60)), want: Accepted, acts: `
			t+100 install-inbound b00
		`},
		{at: 110, put: p(info(0xa00, 990, 30, 60)), want: Stale, acts: ""},
		{at: 111, put: p(info(0xb00, 1000, 30, 60)), want: Duplicate, acts: ""},
	})
	other := info(0xb00, 1000, 30, 60)
	other.Digest[5] = 9
	got, acts, err := m.Receive(at(112), other)
	if err != nil || got != Conflict || len(acts) != 0 {
		t.Fatalf("same SPI, other keys: %s %v %v", got, acts, err)
	}
	if _, _, err := m.Receive(at(113), info(0xd00, 0, 1, 1)); err == nil {
		t.Fatal("lifetime 0 accepted")
	}
}

// TestMemberExpiryBeforeRollover: the old SA expires while the new one is
// still waiting for rollover time 1: outbound moves to the new SA at once
// instead of stopping.
func TestMemberExpiryBeforeRollover(t *testing.T) {
	runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 100, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 90, put: p(info(0xb00, 1000, 30, 60)), want: Accepted, acts: `
			t+90 install-inbound b00
		`},
		{at: 100, acts: `
			t+100 set-outbound b00
			t+100 remove a00
		`},
		{at: 120, acts: ""},
	})
}

func TestMemberZeroRollover(t *testing.T) {
	runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 100, 0, 0)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 50, put: p(info(0xb00, 100, 0, 0)), want: Accepted, acts: `
			t+50 install-inbound b00
			t+50 set-outbound b00
			t+50 remove a00
		`},
	})
}

// TestMemberRollover2BeforeRollover1: a removal of the outbound SA moves
// outbound to the newest SA first.
func TestMemberRollover2BeforeRollover1(t *testing.T) {
	runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 1000, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 10, put: p(info(0xb00, 1000, 50, 20)), want: Accepted, acts: `
			t+10 install-inbound b00
		`},
		{at: 100, acts: `
			t+30 set-outbound b00
			t+30 remove a00
		`},
	})
}

// TestMemberOutboundNeverGoesBack: a later SA with a shorter rollover time
// 1 becomes outbound first; the earlier one's switch then does nothing.
func TestMemberOutboundNeverGoesBack(t *testing.T) {
	m := runSteps(t, []step{
		{at: 0, put: p(info(0xa00, 1000, 30, 60)), want: Accepted, acts: `
			t+0 install-inbound a00
			t+0 set-outbound a00
		`},
		{at: 10, put: p(info(0xb00, 1000, 100, 200)), want: Accepted, acts: `
			t+10 install-inbound b00
		`},
		{at: 20, put: p(info(0xc00, 1000, 10, 200)), want: Accepted, acts: `
			t+20 install-inbound c00
		`},
		{at: 300, acts: `
			t+30 set-outbound c00
			t+210 remove a00
			t+220 remove b00
		`},
	})
	if m.Outbound() != 0xc00 {
		t.Fatalf("outbound %x", m.Outbound())
	}
}

func TestMemberStateAndDeadline(t *testing.T) {
	m := NewMember()
	m.Receive(at(0), info(0xa00, 1000, 30, 60))
	m.Receive(at(100), info(0xb00, 1000, 30, 60))
	d, ok := m.NextDeadline()
	if !ok || !d.Equal(at(130)) {
		t.Fatalf("next deadline %v %v, want t+130", d, ok)
	}
	sas := m.SAs()
	if len(sas) != 2 || sas[0].SPI != 0xa00 || !sas[0].RemoveAt.Equal(at(160)) || !sas[1].ActivateAt.Equal(at(130)) || !sas[1].Expires.Equal(at(1100)) {
		t.Fatalf("state %+v", sas)
	}
	if m.Outbound() != 0xa00 {
		t.Fatalf("outbound %x", m.Outbound())
	}
}

func TestMemberForget(t *testing.T) {
	m := NewMember()
	m.Receive(at(0), info(0xa00, 1000, 30, 60))
	m.Receive(at(100), info(0xb00, 1000, 30, 60))
	if acts := m.Forget(at(101), 0xb00); len(acts) != 0 {
		t.Fatalf("forgetting a pending SA: %v", acts)
	}
	sas := m.SAs()
	if len(sas) != 1 || !sas[0].RemoveAt.IsZero() || m.Outbound() != 0xa00 {
		t.Fatalf("after forget: %+v outbound %x", sas, m.Outbound())
	}
	// the same SA again is new
	if r, _, _ := m.Receive(at(102), info(0xb00, 1000, 30, 60)); r != Accepted {
		t.Fatalf("re-sent SA: %s", r)
	}
	// forgetting the only, outbound SA leaves none
	m2 := NewMember()
	m2.Receive(at(0), info(0xa00, 1000, 30, 60))
	if acts := m2.Forget(at(1), 0xa00); len(acts) != 0 || m2.Outbound() != 0 || len(m2.SAs()) != 0 {
		t.Fatalf("forget only SA: %v", acts)
	}
	if acts := m2.Forget(at(1), 0xdead); acts != nil {
		t.Fatal("forget of unknown SPI did something")
	}
}

// TestMemberForgetOutbound forgets a new SA that a zero rollover time 1
// already made outbound: outbound falls back to the previous SA, which
// then no longer has a removal pending.
func TestMemberForgetOutbound(t *testing.T) {
	m := NewMember()
	m.Receive(at(0), info(0xa00, 1000, 30, 60))
	_, acts, err := m.Receive(at(100), info(0xb00, 1000, 0, 60))
	if err != nil {
		t.Fatal(err)
	}
	if want := "t+100 install-inbound b00\nt+100 set-outbound b00\n"; render(acts) != want {
		t.Fatalf("zero rollover1: actions\n%s\nwant\n%s", render(acts), want)
	}
	if m.Outbound() != 0xb00 {
		t.Fatalf("outbound %x, want b00", m.Outbound())
	}
	acts = m.Forget(at(101), 0xb00)
	if want := "t+101 set-outbound a00\n"; render(acts) != want {
		t.Fatalf("forget outbound: actions\n%s\nwant\n%s", render(acts), want)
	}
	if acts[0].Reason != "install failed" {
		t.Fatalf("reason %q", acts[0].Reason)
	}
	sas := m.SAs()
	if len(sas) != 1 || sas[0].SPI != 0xa00 || !sas[0].RemoveAt.IsZero() || m.Outbound() != 0xa00 {
		t.Fatalf("after forget: %+v outbound %x", sas, m.Outbound())
	}
	if d, ok := m.NextDeadline(); !ok || !d.Equal(at(1000)) {
		t.Fatalf("next deadline %v %v, want expiry at t+1000", d, ok)
	}
}

// TestMemberRetiredNeverBack: an MPSA_PUT for an SA the member removed,
// after rollover time 2 or after its lifetime, and with its keys or any
// other, is Retired: no action, outbound stays on the current SA. Before,
// a replayed old MPSA_PUT was a new SA again and became outbound after its
// rollover1.
func TestMemberRetiredNeverBack(t *testing.T) {
	old, cur := info(0x1000, 3600, 2, 4), info(0x2000, 3600, 2, 4)
	m := runSteps(t, []step{
		{at: 0, put: p(old), want: Accepted, acts: "t+0 install-inbound 1000\nt+0 set-outbound 1000\n"},
		{at: 10, put: p(cur), want: Accepted, acts: "t+10 install-inbound 2000\n"},
		{at: 20, acts: "t+12 set-outbound 2000\nt+14 remove 1000\n"},
		// the same PUT again, and one with other keys under the SPI
		{at: 30, put: p(old), want: Retired},
		{at: 31, put: p(PutInfo{SPI: old.SPI, Digest: [32]byte{9}, Lifetime: time.Hour}), want: Retired},
		// long after the old SA would have expired anyway
		{at: 3000, put: p(old), want: Retired},
	})
	if m.Outbound() != cur.SPI || len(m.SAs()) != 1 {
		t.Fatalf("outbound %x, SAs %+v; want only %x", m.Outbound(), m.SAs(), cur.SPI)
	}
	// An SA removed at its expiry is retired too.
	m = runSteps(t, []step{
		{at: 0, put: p(info(0x3000, 60, 2, 4)), want: Accepted, acts: "t+0 install-inbound 3000\nt+0 set-outbound 3000\n"},
		{at: 61, acts: "t+60 remove 3000\n"},
		{at: 62, put: p(info(0x3000, 60, 2, 4)), want: Retired},
	})
	if m.Outbound() != 0 {
		t.Fatalf("outbound %x after the expired SA was offered again", m.Outbound())
	}
}

// TestMemberRetiredMemoryBounded: the member remembers the last
// RetiredMemory removed SAs, no more.
func TestMemberRetiredMemoryBounded(t *testing.T) {
	m := NewMember()
	now := t0
	for i := range RetiredMemory + 2 {
		spi := uint32(0x10000 + i)
		if r, _, err := m.Receive(now, PutInfo{SPI: spi, Digest: [32]byte{byte(i)}, Lifetime: time.Hour}); err != nil || r != Accepted {
			t.Fatalf("PUT %d: %v %v", i, r, err)
		}
		now = now.Add(time.Second) // rollover times 0: the previous SA goes at once
	}
	m.Advance(now)
	if len(m.retired) != RetiredMemory || len(m.retiredOrder) != RetiredMemory {
		t.Fatalf("remembers %d (%d in order), want %d", len(m.retired), len(m.retiredOrder), RetiredMemory)
	}
	if r, _, _ := m.Receive(now, PutInfo{SPI: 0x10001, Digest: [32]byte{1}, Lifetime: time.Hour}); r != Retired {
		t.Fatalf("a recently removed SA: %v, want retired", r)
	}
}

// TestMemberPutBounds: lifetimes above MaxLifetime and rollover times
// above the lifetime are refused; nothing is installed.
func TestMemberPutBounds(t *testing.T) {
	for name, pi := range map[string]PutInfo{
		"lifetime above the maximum": {SPI: 0x100, Lifetime: MaxLifetime + time.Second},
		"lifetime of 2^32-1 s":       {SPI: 0x100, Lifetime: (1<<32 - 1) * time.Second},
		"rollover1 above lifetime":   {SPI: 0x100, Lifetime: time.Minute, Rollover1: time.Hour},
		"rollover2 above lifetime":   {SPI: 0x100, Lifetime: time.Minute, Rollover2: time.Hour},
	} {
		m := NewMember()
		r, acts, err := m.Receive(t0, pi)
		if err == nil || len(acts) != 0 || m.Outbound() != 0 {
			t.Errorf("%s: %v %v %v, want an error and nothing installed", name, r, acts, err)
		}
	}
	if r, _, err := NewMember().Receive(t0, PutInfo{SPI: 0x100, Lifetime: MaxLifetime, Rollover1: MaxLifetime, Rollover2: MaxLifetime}); err != nil || r != Accepted {
		t.Errorf("at the bounds: %v %v, want accepted", r, err)
	}
}
