// Package policy is the route reflector's access control (draft section
// 5): which prefixes a member may advertise, by its IKE identity. It has
// no dependency on the BGP implementation, so that the configuration
// reader (swanctl) can parse and validate the same rules the reflector
// enforces.
//
// A Rule names an identity pattern and the prefix ranges that members
// whose identity matches may advertise. A member matched by several rules
// may advertise the union of their ranges; a member matched by none may
// advertise nothing.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Range is a prefix and the prefix lengths it admits, written as in FRR's
// and Cisco's prefix lists: "10.1.0.0/16" admits exactly 10.1.0.0/16;
// "10.0.0.0/8 le 24" admits every prefix inside 10.0.0.0/8 from /8 to
// /24; "10.0.0.0/8 ge 16 le 24" those from /16 to /24; "10.0.0.0/8 ge
// 24" those from /24 to /32.
type Range struct {
	// Prefix is the covering prefix, with no host bits.
	Prefix netip.Prefix
	// Min and Max are the admitted prefix lengths, Prefix.Bits() <= Min
	// <= Max <= the address length.
	Min, Max int
}

// ParseRange parses "PREFIX [ge N] [le N]". A single address stands for
// its host prefix (/32 or /128), as in swanctl's traffic selectors.
func ParseRange(s string) (Range, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Range{}, errors.New("empty prefix range; write PREFIX, PREFIX le N, PREFIX ge N or PREFIX ge N le M")
	}
	p, err := parsePrefix(f[0])
	if err != nil {
		return Range{}, err
	}
	r := Range{Prefix: p, Min: p.Bits(), Max: p.Bits()}
	maxBits := p.Addr().BitLen()
	var ge, le bool
	rest := f[1:]
	for len(rest) > 0 {
		if len(rest) < 2 {
			return Range{}, fmt.Errorf("%q: %q needs a length after it; write for example %s le %d", s, rest[0], p, min(p.Bits()+8, maxBits))
		}
		kw, num := strings.ToLower(rest[0]), rest[1]
		rest = rest[2:]
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 || n > maxBits {
			return Range{}, fmt.Errorf("%q: %q is not a prefix length from 0 to %d; write a length from %d to %d", s, num, maxBits, p.Bits(), maxBits)
		}
		switch {
		case kw == "ge" && !ge && !le:
			ge = true
			r.Min = n
			r.Max = maxBits
		case kw == "le" && !le:
			le = true
			r.Max = n
		default:
			return Range{}, fmt.Errorf("%q: unexpected %q; write PREFIX, PREFIX le N, PREFIX ge N or PREFIX ge N le M", s, kw)
		}
	}
	switch {
	case r.Min < p.Bits():
		return Range{}, fmt.Errorf("%q: ge %d is shorter than the prefix length %d; write ge %d or more", s, r.Min, p.Bits(), p.Bits())
	case r.Max < p.Bits():
		return Range{}, fmt.Errorf("%q: le %d is shorter than the prefix length %d; write le %d or more", s, r.Max, p.Bits(), p.Bits())
	case r.Max < r.Min:
		return Range{}, fmt.Errorf("%q: le %d is below ge %d; write le %d or more", s, r.Max, r.Min, r.Min)
	}
	return r, nil
}

// parsePrefix parses a prefix without host bits, or a single address as
// its host prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a prefix; write ADDRESS/LENGTH (10.1.0.0/16 or 2001:db8:1::/48)", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix; write ADDRESS/LENGTH (10.1.0.0/16 or 2001:db8:1::/48)", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix; write the IPv4 prefix", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; write %s", s, m)
	}
	return p, nil
}

// Contains reports whether the range admits p: p lies inside Prefix, is
// of the same address family and its length is within Min and Max.
func (r Range) Contains(p netip.Prefix) bool {
	if !r.Prefix.IsValid() || !p.IsValid() || p.Addr().Is4() != r.Prefix.Addr().Is4() {
		return false
	}
	return p.Bits() >= r.Min && p.Bits() <= r.Max && r.Prefix.Contains(p.Addr())
}

// String writes the range as ParseRange reads it, in the shortest form.
func (r Range) String() string {
	s := r.Prefix.String()
	maxBits := r.Prefix.Addr().BitLen()
	switch {
	case r.Min == r.Prefix.Bits() && r.Max == r.Prefix.Bits():
	case r.Min == r.Prefix.Bits():
		s += " le " + strconv.Itoa(r.Max)
	case r.Max == maxBits:
		s += " ge " + strconv.Itoa(r.Min)
	default:
		s += " ge " + strconv.Itoa(r.Min) + " le " + strconv.Itoa(r.Max)
	}
	return s
}

// MarshalText writes the range as String does, so JSON shows
// "10.0.0.0/8 le 24".
func (r Range) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a range as ParseRange does.
func (r *Range) UnmarshalText(b []byte) error {
	v, err := ParseRange(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Rule lets the members whose IKE identity matches Identity advertise the
// prefixes in Prefixes.
type Rule struct {
	// Name names the rule in logs and status.
	Name string `json:"name"`
	// Identity is a pattern for the member's IKE identity (charon's
	// remote-id, such as cpe-1.example.net, "C=CH, O=Example, CN=cpe-1"
	// or 192.0.2.10): * matches any run of characters, including none
	// and including dots; the comparison ignores ASCII case.
	Identity string `json:"identity"`
	// Prefixes are the ranges such members may advertise.
	Prefixes []Range `json:"prefixes"`
}

// CheckIdentityPattern reports a pattern that cannot match anything
// useful: an empty one.
func CheckIdentityPattern(p string) error {
	if strings.TrimSpace(p) == "" {
		return errors.New("empty identity pattern")
	}
	return nil
}

// MatchIdentity reports whether identity matches pattern: * matches any
// run of characters (including none); other characters match themselves,
// ignoring ASCII case.
func MatchIdentity(pattern, identity string) bool {
	p, s := strings.ToLower(pattern), strings.ToLower(identity)
	// Iterative glob with one backtracking point, linear in practice.
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// Policy is an immutable set of rules.
type Policy struct {
	rules []Rule
}

// New returns the policy of rules, which it copies.
func New(rules []Rule) *Policy {
	c := make([]Rule, len(rules))
	for i, r := range rules {
		c[i] = Rule{Name: r.Name, Identity: r.Identity, Prefixes: append([]Range(nil), r.Prefixes...)}
	}
	return &Policy{rules: c}
}

// Rules returns a copy of the rules.
func (p *Policy) Rules() []Rule {
	return New(p.rules).rules
}

// Matching returns the indexes of the rules whose identity pattern
// matches identity, in order.
func (p *Policy) Matching(identity string) []int {
	var out []int
	for i, r := range p.rules {
		if MatchIdentity(r.Identity, identity) {
			out = append(out, i)
		}
	}
	return out
}

// Verdict is the result of checking one advertised prefix.
type Verdict struct {
	// Allowed is true when a matching rule admits the prefix.
	Allowed bool
	// Rule names the rule that admits it, when Allowed.
	Rule string
	// Reason says why it is rejected, when not Allowed.
	Reason string
}

// Check decides whether the member with identity, matched by the rules at
// indexes rules (Matching(identity)), may advertise prefix.
func (p *Policy) Check(identity string, rules []int, prefix netip.Prefix) Verdict {
	if len(rules) == 0 {
		return Verdict{Reason: fmt.Sprintf("identity %q matches no policy rule", identity)}
	}
	names := make([]string, 0, len(rules))
	for _, i := range rules {
		r := p.rules[i]
		for _, rg := range r.Prefixes {
			if rg.Contains(prefix) {
				return Verdict{Allowed: true, Rule: r.Name}
			}
		}
		names = append(names, r.Name)
	}
	return Verdict{Reason: fmt.Sprintf("%s is outside the prefixes of policy %s", prefix, strings.Join(names, ", "))}
}

// Rule returns the rule at index i.
func (p *Policy) Rule(i int) Rule { return p.rules[i] }

// Len is the number of rules.
func (p *Policy) Len() int { return len(p.rules) }
