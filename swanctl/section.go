package swanctl

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// sectionReader decodes the settings of one section, recording problems
// instead of stopping at the first.
type sectionReader struct {
	sec  *Section
	path string // dotted path for messages, "mpsa.groups.branch"
	errs *Errors
	// warns collects problems that do not make the configuration
	// invalid; nil to drop them.
	warns *Errors
}

// warnf records a warning at pos, prefixed with the section path.
func (r *sectionReader) warnf(pos Pos, format string, args ...any) {
	if r.warns != nil {
		r.warns.add(pos, "%s: %s", r.path, fmt.Sprintf(format, args...))
	}
}

// errorf records a problem at pos, prefixed with the section path.
func (r *sectionReader) errorf(pos Pos, format string, args ...any) {
	r.errs.add(pos, "%s: %s", r.path, fmt.Sprintf(format, args...))
}

// checkNames reports keys and subsections that the schema does not know,
// and section references, which mpsa does not support. A key in retired
// (settings that were renamed or removed) gets the error retired gives for
// its value instead of "unknown setting".
func (r *sectionReader) checkNames(keys, sections []string, retired map[string]func(value string) string) {
	r.checkRefs()
	for _, kv := range r.sec.Keys {
		switch {
		case slices.Contains(keys, kv.Name):
		case retired[kv.Name] != nil:
			r.errorf(kv.Pos, "%s", retired[kv.Name](strings.TrimSpace(kv.Value)))
		case slices.Contains(sections, kv.Name):
			r.errorf(kv.Pos, "%s is a section, not a setting; write %s { ... }", kv.Name, kv.Name)
		default:
			r.errorf(kv.Pos, "unknown setting %q; %s", kv.Name, unknownHint(kv.Name, keys))
		}
	}
	for _, s := range r.sec.Sections {
		switch {
		case slices.Contains(sections, s.Name):
		case slices.Contains(keys, s.Name):
			r.errorf(s.Pos, "%s is a setting, not a section; write %s = VALUE", s.Name, s.Name)
		case len(sections) == 0:
			r.errorf(s.Pos, "unexpected section %q: %s takes no subsections; remove it, and write settings as KEY = VALUE (known here: %s)", s.Name, r.sec.Name, strings.Join(keys, ", "))
		default:
			r.errorf(s.Pos, "unknown section %q; %s", s.Name, unknownHint(s.Name, sections))
		}
	}
}

// checkRefs reports section references, which mpsa does not support.
func (r *sectionReader) checkRefs() {
	if len(r.sec.Refs) > 0 {
		r.errorf(r.sec.RefsPos, "section references (%s : %s) are not supported in mpsa { }; write the settings out in full", r.sec.Name, strings.Join(r.sec.Refs, ", "))
	}
}

// child returns a reader for sec, a subsection of r's section.
func (r *sectionReader) child(sec *Section) *sectionReader {
	return &sectionReader{sec: sec, path: r.path + "." + sec.Name, errs: r.errs, warns: r.warns}
}

// sub returns a reader for the subsection name, or nil if it is absent.
func (r *sectionReader) sub(name string) *sectionReader {
	if s := r.sec.Section(name); s != nil {
		return r.child(s)
	}
	return nil
}

// get returns the setting key, or nil when it is absent or empty: an empty
// value (`key =`) means the default, as in strongSwan.
func (r *sectionReader) get(key string) *KeyValue {
	kv := r.sec.Key(key)
	if kv == nil || strings.TrimSpace(kv.Value) == "" {
		return nil
	}
	return kv
}

// pos returns where key is set, or the section's position.
func (r *sectionReader) pos(key string) Pos {
	if kv := r.sec.Key(key); kv != nil {
		return kv.Pos
	}
	return r.sec.Pos
}

// str returns the value of key, or def.
func (r *sectionReader) str(key, def string) string {
	if kv := r.get(key); kv != nil {
		return strings.TrimSpace(kv.Value)
	}
	return def
}

// boolean returns the boolean value of key, or def.
func (r *sectionReader) boolean(key string, def bool) bool {
	kv := r.get(key)
	if kv == nil {
		return def
	}
	v, err := ParseBool(kv.Value)
	if err != nil {
		r.errorf(kv.Pos, "%s = %s is not a boolean; write yes or no", key, kv.Value)
		return def
	}
	return v
}

// duration returns the time value of key, or def; ok is false when the
// value is not a time value (which is reported).
func (r *sectionReader) duration(key string, def Duration) (d Duration, ok bool) {
	kv := r.get(key)
	if kv == nil {
		return def, true
	}
	v, err := ParseDuration(kv.Value)
	if err != nil {
		r.errorf(kv.Pos, "%s = %s is not a time value; write a whole number with s, m, h or d (for example %s)", key, kv.Value, def)
		return def, false
	}
	return v, true
}

// uinteger returns the decimal integer value of key within [lo, hi], or
// def.
func (r *sectionReader) uinteger(key string, def, lo, hi uint64) uint64 {
	kv := r.get(key)
	if kv == nil {
		return def
	}
	s := strings.TrimSpace(kv.Value)
	v, err := strconv.ParseUint(s, 10, 64)
	if n, err0 := strconv.ParseUint(s, 0, 64); err != nil && err0 == nil && n >= lo && n <= hi {
		// 0x10, 0o17, 1_000: Go's forms, which strongSwan does not read.
		r.errorf(kv.Pos, "%s = %s is not a decimal number; write %s = %d", key, kv.Value, key, n)
		return def
	}
	if err != nil || v < lo || v > hi {
		r.errorf(kv.Pos, "%s = %s is out of range; write a whole number from %d to %d", key, kv.Value, lo, hi)
		return def
	}
	return v
}

// enum returns the value of key, which must be one of allowed, or def.
func (r *sectionReader) enum(key, def string, allowed ...string) string {
	kv := r.get(key)
	if kv == nil {
		return def
	}
	v := strings.ToLower(strings.TrimSpace(kv.Value))
	if !slices.Contains(allowed, v) {
		r.errorf(kv.Pos, "%s = %s is not valid; write %s", key, kv.Value, orList(allowed))
		return def
	}
	return v
}

// addr returns the IP address value of key, or the zero Addr.
func (r *sectionReader) addr(key string) netip.Addr {
	kv := r.get(key)
	if kv == nil {
		return netip.Addr{}
	}
	a, err := parseAddr(kv.Value)
	if err != nil {
		r.errorf(kv.Pos, "%s = %s: %v", key, kv.Value, err)
	}
	return a
}

// prefixes returns the list of prefixes of key.
func (r *sectionReader) prefixes(key string) []netip.Prefix {
	kv := r.get(key)
	if kv == nil {
		return nil
	}
	var out []netip.Prefix
	for _, s := range SplitList(kv.Value) {
		p, err := parsePrefix(s)
		if err != nil {
			r.errorf(kv.Pos, "%s: %v", key, err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// parseAddr parses an IPv4 or IPv6 address without a zone.
func parseAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		if strings.Contains(s, "/") {
			return netip.Addr{}, fmt.Errorf("%q is a prefix; write a single address (192.0.2.1 or 2001:db8::1)", s)
		}
		return netip.Addr{}, fmt.Errorf("%q is not an IP address; write an IPv4 or IPv6 address (192.0.2.1 or 2001:db8::1), not a host name", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q has a zone; write the address without %%%s", s, a.Zone())
	}
	return a.Unmap(), nil
}

// parsePrefix parses a prefix in CIDR notation, or a single address as a
// host prefix, as swanctl's traffic selectors do. Host bits must be zero.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := parseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a prefix; write ADDRESS/LENGTH (10.1.0.0/24 or 2001:db8:1::/64)", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix; write ADDRESS/LENGTH (10.1.0.0/24 or 2001:db8:1::/64)", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix; write the IPv4 prefix", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; write %s", s, m)
	}
	return p, nil
}

// orList renders "a, b or c".
func orList(l []string) string {
	switch len(l) {
	case 0:
		return ""
	case 1:
		return l[0]
	}
	return strings.Join(l[:len(l)-1], ", ") + " or " + l[len(l)-1]
}
