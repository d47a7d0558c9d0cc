package mpsa

import (
	"fmt"
	"time"
)

// ActionKind is what a member's data plane must do.
type ActionKind int

// The data-plane actions of the member SA lifecycle.
const (
	// InstallInbound installs an SA for receiving.
	InstallInbound ActionKind = iota + 1
	// SetOutbound makes an installed SA the one used for sending.
	SetOutbound
	// Remove deletes an SA in both directions.
	Remove
)

// String names the action kind.
func (k ActionKind) String() string {
	switch k {
	case InstallInbound:
		return "install-inbound"
	case SetOutbound:
		return "set-outbound"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("action(%d)", int(k))
}

// Action is one data-plane step, due at At.
type Action struct {
	Kind ActionKind
	SPI  uint32
	At   time.Time
	// Reason says why, for logs: "new SA", "rollover1", "rollover2",
	// "lifetime", "superseded outbound".
	Reason string
}

// String describes the action for logs; it never shows key material.
func (a Action) String() string {
	return fmt.Sprintf("%s %08x (%s) at %s", a.Kind, a.SPI, a.Reason, a.At.Format(time.RFC3339Nano))
}

// Received says what a member made of an MPSA_PUT.
type Received int

// Outcomes of Member.Receive.
const (
	// Accepted: a new SA, with its actions.
	Accepted Received = iota + 1
	// Duplicate: the newest SA again (a retransmission); nothing changes.
	Duplicate
	// Stale: an SA that a newer one has already replaced; ignored.
	Stale
	// Conflict: a known SPI with different keys; ignored. A controller
	// never does this; it points at a bug or an attack.
	Conflict
	// Retired: an SA this member installed and has since removed (at
	// rollover time 2 or expiry); ignored, whatever its keys, so that a
	// replayed MPSA_PUT never brings an old SA back.
	Retired
)

// String names the verdict on a received SA.
func (r Received) String() string {
	switch r {
	case Accepted:
		return "accepted"
	case Duplicate:
		return "duplicate"
	case Stale:
		return "stale"
	case Conflict:
		return "conflict"
	case Retired:
		return "retired"
	}
	return fmt.Sprintf("received(%d)", int(r))
}

// PutInfo is what the lifecycle needs of an MPSA_PUT: no keys, only the
// SPI, a digest to recognise the same SA again (Put.Digest), and the times.
type PutInfo struct {
	SPI       uint32
	Digest    [32]byte
	Lifetime  time.Duration
	Rollover1 time.Duration
	Rollover2 time.Duration
}

// PutInfoOf extracts the PutInfo of p.
func PutInfoOf(p *Put) PutInfo {
	return PutInfo{
		SPI:       p.SPI,
		Digest:    p.Digest(),
		Lifetime:  time.Duration(p.Lifetime) * time.Second,
		Rollover1: time.Duration(p.Rollover1) * time.Second,
		Rollover2: time.Duration(p.Rollover2) * time.Second,
	}
}

// SAState is the lifecycle state of one installed SA.
type SAState struct {
	SPI      uint32
	Received time.Time
	Expires  time.Time
	// ActivateAt is when it becomes outbound; zero when not pending.
	ActivateAt time.Time
	// RemoveAt is when a newer SA retires it (rollover time 2); zero
	// when it is the newest.
	RemoveAt time.Time
	// digest identifies the keys it came with (PutInfo.Digest), to tell
	// a duplicate from a conflict.
	digest [32]byte
}

// Member is the member side of the SA lifecycle (draft sections 3.3.2 and
// 3.3.3), pure: it is told the time with every call and answers with the
// data-plane actions that fall due, in order. The rules:
//
//   - The first SA (no SA installed) is installed inbound and made outbound
//     at once: the rollover times do not apply.
//   - A further SA is installed inbound at once; it becomes outbound
//     Rollover1 after it arrived; the SA that was the newest until then is
//     removed Rollover2 after it arrived.
//   - An SA is removed in both directions when its lifetime expires.
//   - Outbound never goes to an SA older than the current outbound one,
//     and when the outbound SA is removed (expiry, or a rollover time 2
//     shorter than rollover time 1) outbound first moves to the newest
//     other SA, so that sending never stops while an SA is installed.
//   - An MPSA_PUT during a rollover is a further SA like any other: the
//     earlier pending switch and removal keep their times, so every member
//     goes through the same steps whenever its copy arrives.
//   - The newest SA again (same SPI, same keys) is a Duplicate: nothing
//     changes, timers included. An older SA again is Stale. A known SPI
//     with other keys is a Conflict. None of these produce actions.
//   - At the same instant, switching outbound comes before removing.
//   - An SA once removed is never installed again: its SPI is Retired
//     (the last RetiredMemory of them are remembered).
//   - A lifetime of 0 or above MaxLifetime, or a rollover time above the
//     lifetime, is refused with an error: no SA is installed.
//
// A Member is not safe for concurrent use.
type Member struct {
	sas      []*SAState // oldest first
	outbound uint32
	// retired are the SPIs of removed SAs, the newest RetiredMemory of
	// them; retiredOrder is the same set oldest first, to forget the
	// oldest.
	retired      map[uint32]struct{}
	retiredOrder []uint32
}

// MaxLifetime is the longest SA lifetime a member accepts in an MPSA_PUT,
// and the longest a controller may configure: an SA whose keys every
// member holds should not outlive a week.
const MaxLifetime = 7 * 24 * time.Hour

// RetiredMemory is how many removed SAs a member remembers, to refuse
// them when an MPSA_PUT offers them again: at the default rekey time of 7
// hours, about ten months of rekeys.
const RetiredMemory = 1024

// NewMember returns a member lifecycle with no SA.
func NewMember() *Member {
	return &Member{}
}

// Receive handles an MPSA_PUT arriving at now. Timers due by now fire first,
// and their actions lead the returned list.
func (m *Member) Receive(now time.Time, p PutInfo) (Received, []Action, error) {
	switch {
	case p.Lifetime <= 0:
		return 0, nil, fmt.Errorf("MPSA_PUT for SPI %08x has lifetime 0", p.SPI)
	case p.Lifetime > MaxLifetime:
		return 0, nil, fmt.Errorf("MPSA_PUT for SPI %08x has lifetime %s, above the %s a member accepts", p.SPI, p.Lifetime, MaxLifetime)
	case p.Rollover1 > p.Lifetime || p.Rollover2 > p.Lifetime:
		return 0, nil, fmt.Errorf("MPSA_PUT for SPI %08x has rollover times %s and %s, longer than its lifetime %s", p.SPI, p.Rollover1, p.Rollover2, p.Lifetime)
	}
	acts := m.Advance(now)
	if _, ok := m.retired[p.SPI]; ok {
		return Retired, acts, nil
	}
	if i := m.index(p.SPI); i >= 0 {
		switch {
		case m.sas[i].digest != p.Digest:
			return Conflict, acts, nil
		case m.sas[len(m.sas)-1].SPI == p.SPI:
			return Duplicate, acts, nil
		default:
			return Stale, acts, nil
		}
	}
	n := &SAState{SPI: p.SPI, Received: now, Expires: now.Add(p.Lifetime), digest: p.Digest}
	acts = append(acts, Action{InstallInbound, p.SPI, now, "new SA"})
	if len(m.sas) == 0 {
		m.outbound = p.SPI
		acts = append(acts, Action{SetOutbound, p.SPI, now, "first SA"})
	} else {
		n.ActivateAt = now.Add(p.Rollover1)
		if prev := m.sas[len(m.sas)-1]; prev.RemoveAt.IsZero() {
			prev.RemoveAt = now.Add(p.Rollover2)
		}
	}
	m.sas = append(m.sas, n)
	// Zero rollover times take effect at once.
	acts = append(acts, m.Advance(now)...)
	return Accepted, acts, nil
}

type event struct {
	at   time.Time
	kind ActionKind // SetOutbound (activation) or Remove
	sa   *SAState
	why  string
}

// next returns the earliest pending event, activations first at a tie.
func (m *Member) next() (event, bool) {
	var best event
	found := false
	better := func(e event) bool {
		if !found {
			return true
		}
		if !e.at.Equal(best.at) {
			return e.at.Before(best.at)
		}
		return e.kind == SetOutbound && best.kind != SetOutbound
	}
	for _, s := range m.sas {
		cands := []event{{s.Expires, Remove, s, "lifetime"}}
		if !s.ActivateAt.IsZero() {
			cands = append(cands, event{s.ActivateAt, SetOutbound, s, "rollover1"})
		}
		if !s.RemoveAt.IsZero() && s.RemoveAt.Before(s.Expires) {
			cands = append(cands, event{s.RemoveAt, Remove, s, "rollover2"})
		}
		for _, e := range cands {
			if better(e) {
				best, found = e, true
			}
		}
	}
	return best, found
}

// Advance fires every timer due by now, in time order, and returns the
// resulting actions, each stamped with the time it fell due.
func (m *Member) Advance(now time.Time) []Action {
	var acts []Action
	for {
		e, ok := m.next()
		if !ok || e.at.After(now) {
			return acts
		}
		switch e.kind {
		case SetOutbound:
			e.sa.ActivateAt = time.Time{}
			if m.index(m.outbound) < m.index(e.sa.SPI) {
				m.outbound = e.sa.SPI
				acts = append(acts, Action{SetOutbound, e.sa.SPI, e.at, e.why})
			}
		case Remove:
			if m.outbound == e.sa.SPI {
				acts = m.moveOutbound(acts, e.sa, e.at, "superseded outbound "+e.why)
			}
			m.retire(e.sa)
			acts = append(acts, Action{Remove, e.sa.SPI, e.at, e.why})
		}
	}
}

// moveOutbound moves outbound off gone, the outbound SA that is about to
// go, to the newest other SA, which stops waiting for its own switch, and
// appends that SetOutbound to acts. With no other SA outbound becomes 0.
func (m *Member) moveOutbound(acts []Action, gone *SAState, at time.Time, why string) []Action {
	m.outbound = 0
	for i := len(m.sas) - 1; i >= 0; i-- {
		if s := m.sas[i]; s != gone {
			m.outbound = s.SPI
			s.ActivateAt = time.Time{}
			return append(acts, Action{SetOutbound, s.SPI, at, why})
		}
	}
	return acts
}

func (m *Member) index(spi uint32) int {
	for i, s := range m.sas {
		if s.SPI == spi {
			return i
		}
	}
	return -1
}

func (m *Member) drop(sa *SAState) {
	i := m.index(sa.SPI)
	m.sas = append(m.sas[:i], m.sas[i+1:]...)
}

// retire drops an SA that the data plane removes and remembers its SPI.
func (m *Member) retire(sa *SAState) {
	m.drop(sa)
	if m.retired == nil {
		m.retired = map[uint32]struct{}{}
	}
	if len(m.retiredOrder) == RetiredMemory {
		delete(m.retired, m.retiredOrder[0])
		m.retiredOrder = append(m.retiredOrder[:0], m.retiredOrder[1:]...)
	}
	m.retired[sa.SPI] = struct{}{}
	m.retiredOrder = append(m.retiredOrder, sa.SPI)
}

// Forget drops the SA with this SPI without any action, for when the data
// plane could not install it: the next MPSA_PUT for it is then new again.
// If it was outbound, outbound falls back to the newest other SA, as at a
// removal, and that SetOutbound is returned.
func (m *Member) Forget(now time.Time, spi uint32) []Action {
	i := m.index(spi)
	if i < 0 {
		return nil
	}
	sa := m.sas[i]
	var acts []Action
	if m.outbound == spi {
		acts = m.moveOutbound(acts, sa, now, "install failed")
	}
	// the SA it would have retired keeps going until it expires
	if i > 0 && i == len(m.sas)-1 {
		m.sas[i-1].RemoveAt = time.Time{}
	}
	m.drop(sa)
	return acts
}

// NextDeadline is when the next timer falls due; false when none is set.
func (m *Member) NextDeadline() (time.Time, bool) {
	e, ok := m.next()
	return e.at, ok
}

// Outbound is the SPI used for sending, 0 when there is none.
func (m *Member) Outbound() uint32 { return m.outbound }

// SAs returns the installed SAs, oldest first.
func (m *Member) SAs() []SAState {
	out := make([]SAState, len(m.sas))
	for i, s := range m.sas {
		out[i] = *s
	}
	return out
}
