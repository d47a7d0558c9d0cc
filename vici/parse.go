package vici

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	govici "github.com/strongswan/govici/vici"
)

// ParseSA parses one list-sa message (one IKE SA, as streamed by the
// list-sas command): a single section keyed by the connection name.
func ParseSA(m *govici.Message) (IKESA, error) {
	name, sec, err := ikeSection(m)
	if err != nil {
		return IKESA{}, err
	}
	return parseIKE(name, sec, true)
}

// ikeSection returns the only section of m, skipping plain values such as
// the "up" flag of events.
func ikeSection(m *govici.Message) (string, *govici.Message, error) {
	if m == nil {
		return "", nil, errors.New("vici: nil message")
	}
	var name string
	var sec *govici.Message
	for _, k := range m.Keys() {
		s, ok := m.Get(k).(*govici.Message)
		if !ok {
			continue
		}
		if sec != nil {
			return "", nil, fmt.Errorf("vici: more than one IKE SA section (%q, %q)", name, k)
		}
		name, sec = k, s
	}
	if sec == nil {
		return "", nil, errors.New("vici: no IKE SA section in message")
	}
	return name, sec, nil
}

// fields reads typed values out of one section and remembers the first
// error.
type fields struct {
	m   *govici.Message
	ctx string
	err error
}

func (f *fields) fail(key string, err error) {
	if f.err == nil {
		f.err = fmt.Errorf("vici: %s: %s: %w", f.ctx, key, err)
	}
}

func (f *fields) str(key string) string {
	switch v := f.m.Get(key).(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		f.fail(key, fmt.Errorf("want a value, have %T", v))
		return ""
	}
}

func (f *fields) list(key string) []string {
	switch v := f.m.Get(key).(type) {
	case nil:
		return nil
	case []string:
		return v
	case string: // tolerate a single value where a list is expected
		return []string{v}
	default:
		f.fail(key, fmt.Errorf("want a list, have %T", v))
		return nil
	}
}

func (f *fields) yes(key string) bool { return f.str(key) == "yes" }

func (f *fields) uint(key string, base, size int, required bool) uint64 {
	s := f.str(key)
	if s == "" {
		if required {
			f.fail(key, errors.New("missing"))
		}
		return 0
	}
	n, err := strconv.ParseUint(s, base, size)
	if err != nil {
		f.fail(key, err)
	}
	return n
}

func (f *fields) addr(key string) netip.Addr {
	s := f.str(key)
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		f.fail(key, err)
	}
	return a.Unmap()
}

func (f *fields) ts(key string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range f.list(key) {
		ps, err := ParseTS(s)
		if err != nil {
			f.fail(key, err)
			return nil
		}
		out = append(out, ps...)
	}
	return out
}

// parseIKE parses the IKE SA fields of section m and, if children, its
// child-sas section.
func parseIKE(conn string, m *govici.Message, children bool) (IKESA, error) {
	f := &fields{m: m, ctx: "IKE SA " + conn}
	sa := IKESA{
		Conn:         conn,
		UniqueID:     uint32(f.uint("uniqueid", 10, 32, true)),
		Version:      int(f.uint("version", 10, 8, false)),
		State:        IKEState(f.str("state")),
		LocalHost:    f.addr("local-host"),
		LocalPort:    uint16(f.uint("local-port", 10, 16, false)),
		LocalID:      f.str("local-id"),
		RemoteHost:   f.addr("remote-host"),
		RemotePort:   uint16(f.uint("remote-port", 10, 16, false)),
		RemoteID:     f.str("remote-id"),
		Initiator:    f.yes("initiator"),
		InitiatorSPI: f.uint("initiator-spi", 16, 64, true),
		ResponderSPI: f.uint("responder-spi", 16, 64, false),
		NATLocal:     f.yes("nat-local"),
		NATRemote:    f.yes("nat-remote"),
		Established:  time.Duration(f.uint("established", 10, 63, false)) * time.Second,
	}
	if f.err != nil {
		return IKESA{}, f.err
	}
	if sa.State == "" {
		return IKESA{}, fmt.Errorf("vici: IKE SA %s: no state", conn)
	}
	f.ctx = fmt.Sprintf("IKE SA %s[%d]", conn, sa.UniqueID)
	if !children {
		return sa, nil
	}
	switch v := m.Get("child-sas").(type) {
	case nil:
	case *govici.Message:
		for _, k := range v.Keys() {
			cm, ok := v.Get(k).(*govici.Message)
			if !ok {
				return IKESA{}, fmt.Errorf("%s: child-sas: %q is not a section", f.ctx, k)
			}
			c, err := parseChild(f.ctx, k, cm)
			if err != nil {
				return IKESA{}, err
			}
			sa.Children = append(sa.Children, c)
		}
	default:
		return IKESA{}, fmt.Errorf("vici: %s: child-sas is a %T, not a section", f.ctx, v)
	}
	sortChildren(sa.Children)
	return sa, nil
}

func parseChild(ikeCtx, key string, m *govici.Message) (ChildSA, error) {
	f := &fields{m: m, ctx: ikeCtx + ": CHILD SA " + key}
	c := ChildSA{
		Name:         f.str("name"),
		UniqueID:     uint32(f.uint("uniqueid", 10, 32, true)),
		ReqID:        uint32(f.uint("reqid", 10, 32, false)),
		State:        ChildState(f.str("state")),
		Mode:         f.str("mode"),
		Protocol:     f.str("protocol"),
		Encap:        f.yes("encap"),
		SPIIn:        uint32(f.uint("spi-in", 16, 32, false)),
		SPIOut:       uint32(f.uint("spi-out", 16, 32, false)),
		LocalTS:      f.ts("local-ts"),
		RemoteTS:     f.ts("remote-ts"),
		LocalTSText:  f.list("local-ts"),
		RemoteTSText: f.list("remote-ts"),
		EncrAlg:      f.str("encr-alg"),
		IntegAlg:     f.str("integ-alg"),
		IfIDIn:       uint32(f.uint("if-id-in", 16, 32, false)),
		IfIDOut:      uint32(f.uint("if-id-out", 16, 32, false)),
		MarkIn:       uint32(f.uint("mark-in", 16, 32, false)),
		MarkOut:      uint32(f.uint("mark-out", 16, 32, false)),
	}
	if f.err != nil {
		return ChildSA{}, f.err
	}
	if c.Name == "" {
		// Older charon keys children by name only.
		c.Name, _, _ = strings.Cut(key, "-")
	}
	return c, nil
}

// ParseTS parses one traffic selector as VICI prints it: "10.0.0.0/24",
// "10.0.0.1/32[udp/4501]", "fd00::1/128", a range "10.0.0.1..10.0.0.6"
// (returned as the prefixes that cover it exactly) or "dynamic" (no
// prefix). Protocol and port restrictions are dropped.
func ParseTS(s string) ([]netip.Prefix, error) {
	addr, _, _ := strings.Cut(s, "[")
	addr = strings.TrimSpace(addr)
	if addr == "dynamic" {
		return nil, nil
	}
	if from, to, ok := strings.Cut(addr, ".."); ok {
		a, err := netip.ParseAddr(from)
		if err != nil {
			return nil, fmt.Errorf("traffic selector %q: %w", s, err)
		}
		b, err := netip.ParseAddr(to)
		if err != nil {
			return nil, fmt.Errorf("traffic selector %q: %w", s, err)
		}
		ps, err := RangePrefixes(a.Unmap(), b.Unmap())
		if err != nil {
			return nil, fmt.Errorf("traffic selector %q: %w", s, err)
		}
		return ps, nil
	}
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		return nil, fmt.Errorf("traffic selector %q: %w", s, err)
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return nil, fmt.Errorf("traffic selector %q: IPv4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return []netip.Prefix{p.Masked()}, nil
}

// RangePrefixes returns the shortest list of prefixes that covers exactly
// the addresses from a to b inclusive.
func RangePrefixes(a, b netip.Addr) ([]netip.Prefix, error) {
	if a.BitLen() != b.BitLen() || !a.IsValid() {
		return nil, fmt.Errorf("range %v..%v mixes address families", a, b)
	}
	if b.Less(a) {
		return nil, fmt.Errorf("range %v..%v is reversed", a, b)
	}
	var out []netip.Prefix
	for {
		// The largest aligned block starting at a that does not pass b.
		bitsLen := a.BitLen()
		host := trailingZeros(a)
		var p netip.Prefix
		for h := host; h >= 0; h-- {
			p = netip.PrefixFrom(a, bitsLen-h)
			if last := lastAddr(p); !b.Less(last) {
				break
			}
		}
		out = append(out, p)
		last := lastAddr(p)
		if last == b {
			return out, nil
		}
		a = last.Next()
	}
}

// trailingZeros counts the trailing zero bits of a (its alignment).
func trailingZeros(a netip.Addr) int {
	s := a.AsSlice()
	n := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == 0 {
			n += 8
			continue
		}
		return n + bits.TrailingZeros8(s[i])
	}
	return n
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	s := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(s)*8; i++ {
		s[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(s)
	return a
}

// sortChildren orders CHILD SAs by unique id.
func sortChildren(cs []ChildSA) {
	slices.SortFunc(cs, func(a, b ChildSA) int { return cmp.Compare(a.UniqueID, b.UniqueID) })
}

// EventKind says which VICI event an Event came from and in which
// direction.
type EventKind int

// Event kinds.
const (
	IKEUp EventKind = iota + 1
	IKEDown
	ChildUp
	ChildDown
	IKERekey
	ChildRekey
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case IKEUp:
		return "ike-up"
	case IKEDown:
		return "ike-down"
	case ChildUp:
		return "child-up"
	case ChildDown:
		return "child-down"
	case IKERekey:
		return "ike-rekey"
	case ChildRekey:
		return "child-rekey"
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is a parsed ike-updown, child-updown, ike-rekey or child-rekey
// event.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// IKE is the IKE SA concerned: for IKEUp and IKEDown without
	// children; for ChildUp and ChildDown with the one CHILD SA concerned;
	// for IKERekey the new IKE SA (without children: they move over from
	// OldIKE); for ChildRekey with the one new CHILD SA.
	IKE IKESA
	// OldIKE is the rekeyed IKE SA of an IKERekey event.
	OldIKE IKESA
	// OldChild is the rekeyed CHILD SA of a ChildRekey event.
	OldChild ChildSA
}

// The VICI events the watcher subscribes to.
const (
	EventIKEUpdown   = "ike-updown"
	EventChildUpdown = "child-updown"
	EventIKERekey    = "ike-rekey"
	EventChildRekey  = "child-rekey"
)

// ParseEvent parses a VICI event message of the named type.
func ParseEvent(name string, m *govici.Message) (Event, error) {
	ev, err := parseEvent(name, m)
	if err != nil {
		return Event{}, fmt.Errorf("%s: %w", name, err)
	}
	return ev, nil
}

func parseEvent(name string, m *govici.Message) (Event, error) {
	conn, sec, err := ikeSection(m)
	if err != nil {
		return Event{}, err
	}
	switch name {
	case EventIKERekey:
		// conn { old { IKE SA } new { IKE SA } }
		oldM, ok1 := sec.Get("old").(*govici.Message)
		newM, ok2 := sec.Get("new").(*govici.Message)
		if !ok1 || !ok2 {
			return Event{}, errors.New("vici: no old and new sections")
		}
		oldSA, err := parseIKE(conn, oldM, false)
		if err != nil {
			return Event{}, err
		}
		newSA, err := parseIKE(conn, newM, false)
		if err != nil {
			return Event{}, err
		}
		return Event{Kind: IKERekey, IKE: newSA, OldIKE: oldSA}, nil
	case EventChildRekey:
		// conn { IKE SA fields, child-sas { name { old { } new { } } } }
		sa, err := parseIKE(conn, sec, false)
		if err != nil {
			return Event{}, err
		}
		kids, ok := sec.Get("child-sas").(*govici.Message)
		if !ok || len(kids.Keys()) != 1 {
			return Event{}, errors.New("vici: want one section in child-sas")
		}
		k := kids.Keys()[0]
		pair, ok := kids.Get(k).(*govici.Message)
		if !ok {
			return Event{}, fmt.Errorf("vici: child-sas: %q is not a section", k)
		}
		oldM, ok1 := pair.Get("old").(*govici.Message)
		newM, ok2 := pair.Get("new").(*govici.Message)
		if !ok1 || !ok2 {
			return Event{}, fmt.Errorf("vici: child-sas: %q has no old and new sections", k)
		}
		ctx := fmt.Sprintf("IKE SA %s[%d]", conn, sa.UniqueID)
		oldC, err := parseChild(ctx, k, oldM)
		if err != nil {
			return Event{}, err
		}
		newC, err := parseChild(ctx, k, newM)
		if err != nil {
			return Event{}, err
		}
		sa.Children = []ChildSA{newC}
		return Event{Kind: ChildRekey, IKE: sa, OldChild: oldC}, nil
	case EventIKEUpdown, EventChildUpdown:
	default:
		return Event{}, fmt.Errorf("vici: unexpected event %q", name)
	}
	up := m.Get("up") == "yes"
	sa, err := parseIKE(conn, sec, true)
	if err != nil {
		return Event{}, err
	}
	var k EventKind
	switch {
	case name == EventIKEUpdown && up:
		k = IKEUp
	case name == EventIKEUpdown:
		k = IKEDown
	case up:
		k = ChildUp
	default:
		k = ChildDown
	}
	if name == EventChildUpdown && len(sa.Children) != 1 {
		return Event{}, fmt.Errorf("vici: IKE SA %s[%d] has %d CHILD SAs, want 1", sa.Conn, sa.UniqueID, len(sa.Children))
	}
	return Event{Kind: k, IKE: sa}, nil
}
