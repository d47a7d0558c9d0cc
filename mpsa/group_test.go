package mpsa

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

func testParams() GroupParams {
	return GroupParams{
		Suite:       Suite{Encr: EncrAESCBC, KeyBits: 256, PRF: PRFHMACSHA2_256, Integ: IntegHMACSHA2_256},
		Lifetime:    8 * time.Hour,
		RekeyTime:   7 * time.Hour,
		RekeyJitter: 10 * time.Minute,
		Rollover1:   30 * time.Second,
		Rollover2:   60 * time.Second,
	}
}

// seeded is a deterministic random source for tests.
func seeded(seed uint64) io.Reader { return rand.NewChaCha8([32]byte{byte(seed)}) }

func TestGroupGeneratesValidSA(t *testing.T) {
	g, err := NewGroup(testParams(), seeded(1), t0)
	if err != nil {
		t.Fatal(err)
	}
	p := g.PutAt(t0)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(p.Nonce) != DefaultNonceLen || len(p.SKd) != 32 {
		t.Fatalf("nonce %d SK_d %d octets", len(p.Nonce), len(p.SKd))
	}
	if bytes.Equal(p.Nonce, make([]byte, len(p.Nonce))) || bytes.Equal(p.SKd[:16], p.Nonce[:16]) {
		t.Fatal("nonce or SK_d not random")
	}
	if p.Lifetime != 8*3600 || p.Rollover1 != 30 || p.Rollover2 != 60 {
		t.Fatalf("times %v", p)
	}
	// Lifetime is the time left.
	if q := g.PutAt(t0.Add(90*time.Minute + 500*time.Millisecond)); q.Lifetime != 8*3600-90*60-1 {
		t.Fatalf("lifetime left %d", q.Lifetime)
	}
	if q := g.PutAt(t0.Add(9 * time.Hour)); q.Lifetime != 1 {
		t.Fatalf("lifetime after expiry %d, want 1", q.Lifetime)
	}
}

// scripted returns the given uint32s as SPIs, then random bytes.
type scripted struct {
	spis []uint32
	rest io.Reader
}

func (s *scripted) Read(b []byte) (int, error) {
	if len(b) == 4 && len(s.spis) > 0 {
		binary.BigEndian.PutUint32(b, s.spis[0])
		s.spis = s.spis[1:]
		return 4, nil
	}
	return s.rest.Read(b)
}

func TestGroupSPIRules(t *testing.T) {
	r := &scripted{spis: []uint32{0, 255, 0xc0000000, 0xcfffffff, 0xc1234567, 0x00000100}, rest: seeded(2)}
	g, err := NewGroup(testParams(), r, t0)
	if err != nil {
		t.Fatal(err)
	}
	if g.Current().SPI() != 0x100 {
		t.Fatalf("SPI %08x, want the first allowed draw 00000100", g.Current().SPI())
	}
	// A repeat of the current SPI is drawn again.
	r.spis = []uint32{0x100, 0xcfffffff, 0xd0000000}
	if _, err := g.Rekey(t0); err != nil {
		t.Fatal(err)
	}
	if g.Current().SPI() != 0xd0000000 || g.Previous().SPI() != 0x100 {
		t.Fatalf("SPIs %08x %08x", g.Current().SPI(), g.Previous().SPI())
	}
	for spi, ok := range map[uint32]bool{0: false, 255: false, 256: true, 0xbfffffff: true, 0xc0000000: false, 0xcfffffff: false, 0xd0000000: true, 0xffffffff: true} {
		if ValidGroupSPI(spi) != ok {
			t.Errorf("ValidGroupSPI(%08x) = %v", spi, !ok)
		}
	}
	if _, err := NewGroup(testParams(), &scripted{spis: make([]uint32, 1000), rest: seeded(0)}, t0); err == nil {
		t.Error("a source giving only SPI 0 should fail")
	}
}

func TestGroupRekeyScheduleAndJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for seed := range uint64(50) {
		g, err := NewGroup(testParams(), seeded(seed), t0)
		if err != nil {
			t.Fatal(err)
		}
		d := g.NextRekey().Sub(t0)
		if d > 7*time.Hour || d <= 7*time.Hour-10*time.Minute {
			t.Fatalf("seed %d: rekey after %s, want in (6h50m, 7h]", seed, d)
		}
		seen[d] = true
		if g.RekeyDue(g.NextRekey().Add(-time.Nanosecond)) || !g.RekeyDue(g.NextRekey()) {
			t.Fatal("RekeyDue does not switch at NextRekey")
		}
	}
	if len(seen) < 40 {
		t.Fatalf("jitter gave only %d distinct rekey times in 50 groups", len(seen))
	}
}

func TestGroupRekeyZeroesOldKeys(t *testing.T) {
	g, _ := NewGroup(testParams(), seeded(3), t0)
	first := g.Current()
	g.Rekey(t0.Add(time.Hour))
	if g.Previous() != first || bytes.Equal(first.put.SKd, make([]byte, 32)) {
		t.Fatal("previous SA lost or zeroed too early")
	}
	g.Rekey(t0.Add(2 * time.Hour))
	if !bytes.Equal(first.put.SKd, make([]byte, 32)) || !bytes.Equal(first.put.Nonce, make([]byte, DefaultNonceLen)) {
		t.Fatal("SA two rekeys old still holds keys")
	}
	g.Close()
	if !bytes.Equal(g.Current().put.SKd, make([]byte, 32)) {
		t.Fatal("Close left keys")
	}
}

func TestGroupMembershipRekey(t *testing.T) {
	gp := testParams()
	gp.RekeyOnLeave = true
	gp.MembershipHoldDown = 5 * time.Second
	g, _ := NewGroup(gp, seeded(4), t0)
	if g.MemberJoined(t0.Add(time.Minute)) {
		t.Fatal("join scheduled a rekey without rekey_on_join")
	}
	if !g.MemberLeft(t0.Add(time.Minute)) || !g.NextRekey().Equal(t0.Add(time.Minute+5*time.Second)) {
		t.Fatalf("leave: next rekey %v", g.NextRekey())
	}
	// A second leave inside the hold-down shares the rekey.
	g.MemberLeft(t0.Add(time.Minute + 3*time.Second))
	if !g.NextRekey().Equal(t0.Add(time.Minute + 5*time.Second)) {
		t.Fatalf("second leave moved the rekey to %v", g.NextRekey())
	}
	now := t0.Add(time.Minute + 5*time.Second)
	if !g.RekeyDue(now) {
		t.Fatal("rekey not due")
	}
	g.Rekey(now)
	if g.RekeyDue(now.Add(time.Second)) || g.NextRekey().Before(now.Add(6*time.Hour)) {
		t.Fatalf("after rekey: next %v", g.NextRekey())
	}
}

func TestGroupParamsValidate(t *testing.T) {
	for name, mut := range map[string]func(*GroupParams){
		"rekey after lifetime": func(g *GroupParams) { g.RekeyTime = 9 * time.Hour },
		"jitter too big":       func(g *GroupParams) { g.RekeyJitter = 8 * time.Hour },
		"rollover2 < 1":        func(g *GroupParams) { g.Rollover2 = 10 * time.Second },
		"rollover past margin": func(g *GroupParams) { g.Rollover1, g.Rollover2 = time.Hour, time.Hour+time.Second },
		"nonce 8":              func(g *GroupParams) { g.NonceLen = 8 },
		"no lifetime":          func(g *GroupParams) { g.Lifetime = 0 },
		"bad suite":            func(g *GroupParams) { g.Suite.KeyBits = 1 },
	} {
		gp := testParams()
		mut(&gp)
		if _, err := NewGroup(gp, seeded(0), t0); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A rollover as long as the margin is what swanctl's check allows.
	gp := testParams()
	gp.Rollover1, gp.Rollover2 = time.Hour, time.Hour
	if _, err := NewGroup(gp, seeded(0), t0); err != nil {
		t.Errorf("rollover2 equal to the margin: %v", err)
	}
}

// TestGroupRetime: new timers without a new SA. The current SA keeps its
// SPI, keys and rollover times; a new rekey_time reschedules its rekey;
// the next SA has the new rollover times; a new proposal or lifetime is
// refused and changes nothing.
func TestGroupRetime(t *testing.T) {
	gp := testParams()
	gp.RekeyJitter = 0
	g, err := NewGroup(gp, seeded(0), t0)
	if err != nil {
		t.Fatal(err)
	}
	cur := g.Current()
	spi, nonce := cur.SPI(), append([]byte(nil), cur.put.Nonce...)

	n := gp
	n.RekeyTime, n.Rollover1, n.Rollover2 = 6*time.Hour, 10*time.Second, 20*time.Second
	if err := g.Retime(n); err != nil {
		t.Fatal(err)
	}
	if g.Current() != cur || cur.SPI() != spi || !bytes.Equal(cur.put.Nonce, nonce) {
		t.Fatal("Retime replaced the current SA")
	}
	if want := t0.Add(6 * time.Hour); !g.NextRekey().Equal(want) {
		t.Errorf("next rekey %v, want %v", g.NextRekey(), want)
	}
	if p := g.PutAt(t0); p.Rollover1 != 30 || p.Rollover2 != 60 {
		t.Errorf("the current SA's rollover times changed to %d/%d", p.Rollover1, p.Rollover2)
	}
	// A rekey_time already past: due at once.
	n.RekeyTime = time.Hour
	if err := g.Retime(n); err != nil {
		t.Fatal(err)
	}
	if !g.RekeyDue(t0.Add(2 * time.Hour)) {
		t.Errorf("rekey not due after rekey_time was shortened below the SA's age")
	}
	next, err := g.Rekey(t0.Add(2 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if next.put.Rollover1 != 10 || next.put.Rollover2 != 20 || !next.RekeyAt.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("next SA: rollovers %d/%d, rekey at %v", next.put.Rollover1, next.put.Rollover2, next.RekeyAt)
	}

	before := g.NextRekey()
	for name, mut := range map[string]func(*GroupParams){
		"lifetime": func(p *GroupParams) { p.Lifetime = 9 * time.Hour },
		"proposal": func(p *GroupParams) { p.Suite.KeyBits = 128 },
		"nonce":    func(p *GroupParams) { p.NonceLen = 64 },
		"invalid":  func(p *GroupParams) { p.RekeyTime = 0 },
	} {
		bad := n
		mut(&bad)
		if err := g.Retime(bad); err == nil {
			t.Errorf("%s: Retime accepted it", name)
		}
		if !g.NextRekey().Equal(before) || g.params != n {
			t.Errorf("%s: a refused Retime changed the group", name)
		}
	}
}
