package mpsa

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"
)

// SPIs that charon allocates for its own CHILD_SAs by default
// (charon.spi_min and spi_max); group SPIs stay out of this range so that
// they never collide with the control child on the same host.
const (
	CharonSPIMin uint32 = 0xc0000000
	CharonSPIMax uint32 = 0xcfffffff
)

// DefaultNonceLen is the Nonce length a controller sends when none is
// configured.
const DefaultNonceLen = 32

// GroupParams configure the group SA of one group on the controller.
type GroupParams struct {
	Suite Suite
	// NonceLen is the Nonce length, 16 to 256 (DefaultNonceLen if 0).
	NonceLen int
	// Lifetime is the SA lifetime; RekeyTime, shorter, is when the
	// controller replaces the SA, minus a random jitter up to RekeyJitter.
	Lifetime    time.Duration
	RekeyTime   time.Duration
	RekeyJitter time.Duration
	// Rollover1 and Rollover2 are sent to members in every MPSA_PUT.
	Rollover1 time.Duration
	Rollover2 time.Duration
	// RekeyOnJoin and RekeyOnLeave rekey when a member joins (so that it
	// cannot read what was sent before) or leaves (so that it cannot read
	// what is sent after), draft section 5.3. Joins and leaves within
	// MembershipHoldDown of the first one share one rekey.
	RekeyOnJoin        bool
	RekeyOnLeave       bool
	MembershipHoldDown time.Duration
}

// Validate checks the parameters.
func (gp GroupParams) Validate() error {
	if err := gp.Suite.Validate(); err != nil {
		return err
	}
	if n := gp.nonceLen(); n < MinNonceLen || n > MaxNonceLen {
		return fmt.Errorf("nonce length %d, want %d to %d", n, MinNonceLen, MaxNonceLen)
	}
	switch {
	case gp.Lifetime < time.Second || gp.Lifetime > MaxLifetime:
		return fmt.Errorf("lifetime %s out of range (1s to %s, the longest members accept)", gp.Lifetime, MaxLifetime)
	case gp.RekeyTime <= 0 || gp.RekeyTime >= gp.Lifetime:
		return fmt.Errorf("rekey time %s must be above 0 and below the lifetime %s", gp.RekeyTime, gp.Lifetime)
	case gp.RekeyJitter < 0 || gp.RekeyJitter >= gp.RekeyTime:
		return fmt.Errorf("rekey jitter %s must be below the rekey time %s", gp.RekeyJitter, gp.RekeyTime)
	case gp.Rollover1 < 0 || gp.Rollover2 < gp.Rollover1:
		return fmt.Errorf("rollover times %s and %s: want 0 <= rollover1 <= rollover2", gp.Rollover1, gp.Rollover2)
	case gp.Rollover2 > gp.Lifetime-gp.RekeyTime:
		// Equal is fine: the old SA goes at its expiry at the latest.
		// swanctl's check draws the same line.
		return fmt.Errorf("rollover2 %s must not be longer than the margin between rekey and expiry (%s)", gp.Rollover2, gp.Lifetime-gp.RekeyTime)
	}
	return nil
}

func (gp GroupParams) nonceLen() int {
	if gp.NonceLen == 0 {
		return DefaultNonceLen
	}
	return gp.NonceLen
}

// GroupSA is one generated group SA with its schedule.
type GroupSA struct {
	put     Put
	Created time.Time
	Expires time.Time
	// RekeyAt is when the controller replaces it.
	RekeyAt time.Time
}

// SPI is the SA's SPI.
func (s *GroupSA) SPI() uint32 { return s.put.SPI }

// Group is the controller side of one group's SA (draft section 3.3.1): it
// generates the SA before any member connects, hands every member the same
// SA with the lifetime left, and schedules rekeys before expiry with
// jitter. It is pure: time is passed in, randomness comes from the reader
// given to NewGroup. Not safe for concurrent use.
type Group struct {
	params GroupParams
	rand   io.Reader
	cur    *GroupSA
	prev   *GroupSA
	// pending is when a membership-triggered rekey falls due; zero if
	// none is pending.
	pending time.Time
}

// NewGroup validates params and generates the first group SA at now.
// A nil rnd means crypto/rand.
func NewGroup(params GroupParams, rnd io.Reader, now time.Time) (*Group, error) {
	if err := params.Validate(); err != nil {
		return nil, fmt.Errorf("group parameters: %w", err)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	g := &Group{params: params, rand: rnd}
	if _, err := g.Rekey(now); err != nil {
		return nil, err
	}
	return g, nil
}

// Current is the SA in force.
func (g *Group) Current() *GroupSA { return g.cur }

// Previous is the SA that the current one replaced, nil if none.
func (g *Group) Previous() *GroupSA { return g.prev }

// PutAt returns the MPSA_PUT of the current SA as sent at now: its Lifetime
// is the time left in whole seconds (at least 1). The Put is a copy: Zero it
// when sent.
func (g *Group) PutAt(now time.Time) *Put {
	p := g.cur.put
	p.Nonce = append([]byte(nil), p.Nonce...)
	p.SKd = append([]byte(nil), p.SKd...)
	left := g.cur.Expires.Sub(now) / time.Second
	p.Lifetime = uint32(max(left, 1))
	return &p
}

// NextRekey is when the next rekey falls due: the current SA's rekey time,
// or earlier when a membership change asked for one.
func (g *Group) NextRekey() time.Time {
	if !g.pending.IsZero() && g.pending.Before(g.cur.RekeyAt) {
		return g.pending
	}
	return g.cur.RekeyAt
}

// RekeyDue reports whether a rekey has fallen due by now.
func (g *Group) RekeyDue(now time.Time) bool { return !now.Before(g.NextRekey()) }

// MemberJoined records a member joining at now and, with RekeyOnJoin,
// schedules a rekey after the hold-down unless one is already pending. It
// reports whether a rekey is pending.
func (g *Group) MemberJoined(now time.Time) bool {
	return g.membershipChange(now, g.params.RekeyOnJoin)
}

// MemberLeft records a member leaving at now and, with RekeyOnLeave,
// schedules a rekey after the hold-down unless one is already pending.
func (g *Group) MemberLeft(now time.Time) bool {
	return g.membershipChange(now, g.params.RekeyOnLeave)
}

func (g *Group) membershipChange(now time.Time, rekey bool) bool {
	if rekey && g.pending.IsZero() {
		g.pending = now.Add(g.params.MembershipHoldDown)
	}
	return !g.pending.IsZero()
}

// Rekey generates a new SA at now; the current one becomes Previous and the
// SA before it is zeroed and forgotten.
func (g *Group) Rekey(now time.Time) (*GroupSA, error) {
	spi, err := g.newSPI()
	if err != nil {
		return nil, err
	}
	prf, _ := LookupPRF(g.params.Suite.PRF)
	s := &GroupSA{
		put: Put{
			SPI:       spi,
			Suite:     g.params.Suite,
			Nonce:     make([]byte, g.params.nonceLen()),
			SKd:       make([]byte, prf.KeyBytes),
			Rollover1: uint32(g.params.Rollover1 / time.Second),
			Rollover2: uint32(g.params.Rollover2 / time.Second),
		},
		Created: now,
		Expires: now.Add(g.params.Lifetime),
	}
	if _, err := io.ReadFull(g.rand, s.put.Nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	if _, err := io.ReadFull(g.rand, s.put.SKd); err != nil {
		return nil, fmt.Errorf("generate SK_d: %w", err)
	}
	jitter, err := g.jitter()
	if err != nil {
		return nil, err
	}
	s.RekeyAt = now.Add(g.params.RekeyTime - jitter)
	if g.prev != nil {
		g.prev.put.Zero()
	}
	g.prev, g.cur = g.cur, s
	g.pending = time.Time{}
	return s, nil
}

// jitter draws how much earlier than RekeyTime an SA is rekeyed: uniform
// in [0, RekeyJitter).
func (g *Group) jitter() (time.Duration, error) {
	if g.params.RekeyJitter <= 0 {
		return 0, nil
	}
	n, err := rand.Int(g.rand, big.NewInt(int64(g.params.RekeyJitter)))
	if err != nil {
		return 0, fmt.Errorf("draw rekey jitter: %w", err)
	}
	return time.Duration(n.Int64()), nil
}

// Retime changes the group's schedule without a new SA: params may differ
// from the group's only in RekeyTime, RekeyJitter, Rollover1, Rollover2,
// RekeyOnJoin, RekeyOnLeave and MembershipHoldDown. A new Suite, nonce
// length or Lifetime is an error, since it needs a new SA. A new RekeyTime
// or RekeyJitter reschedules the current SA's rekey (Created + RekeyTime -
// a new jitter; due at once when that has passed); new rollover times go
// with the next SA, since the current SA's members hold the old ones. On
// error nothing changes.
func (g *Group) Retime(params GroupParams) error {
	if err := params.Validate(); err != nil {
		return fmt.Errorf("group parameters: %w", err)
	}
	if params.Suite != g.params.Suite || params.nonceLen() != g.params.nonceLen() || params.Lifetime != g.params.Lifetime {
		return errors.New("group parameters: a new proposal, nonce length or lifetime needs a new group SA")
	}
	old := g.params
	g.params = params
	if params.RekeyTime == old.RekeyTime && params.RekeyJitter == old.RekeyJitter {
		return nil
	}
	jitter, err := g.jitter()
	if err != nil {
		g.params = old
		return err
	}
	g.cur.RekeyAt = g.cur.Created.Add(params.RekeyTime - jitter)
	return nil
}

// newSPI draws a random SPI of at least 256, outside charon's range and
// different from the current and previous SPIs.
func (g *Group) newSPI() (uint32, error) {
	var b [4]byte
	for range 1000 {
		if _, err := io.ReadFull(g.rand, b[:]); err != nil {
			return 0, fmt.Errorf("generate SPI: %w", err)
		}
		spi := binary.BigEndian.Uint32(b[:])
		if ValidGroupSPI(spi) && (g.cur == nil || spi != g.cur.SPI()) && (g.prev == nil || spi != g.prev.SPI()) {
			return spi, nil
		}
	}
	return 0, fmt.Errorf("generate SPI: no usable value in 1000 draws (broken random source?)")
}

// ValidGroupSPI reports whether spi may be a group SPI: not reserved and
// outside charon's default CHILD_SA range.
func ValidGroupSPI(spi uint32) bool {
	return spi >= MinSPI && (spi < CharonSPIMin || spi > CharonSPIMax)
}

// Close zeroes the key material of every SA the group holds.
func (g *Group) Close() {
	for _, s := range []*GroupSA{g.cur, g.prev} {
		if s != nil {
			s.put.Zero()
		}
	}
}
