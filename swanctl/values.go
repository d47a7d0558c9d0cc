package swanctl

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time span written in strongSwan's forms: a whole number
// with an optional unit, s (seconds), m (minutes), h (hours) or d (days),
// which blanks may separate from the number ("8h", "8 h"); a bare number
// is seconds. It prints in the same form, with the largest unit that
// divides it ("8h", "90s").
type Duration time.Duration

// ParseDuration parses a strongSwan time value ("30s", "10m", "8h", "1d",
// "45", "8 h"). strongSwan's own parser (timespan_from_string: strtoull,
// then white space, then the unit) also takes a sign and ignores anything
// after the unit letter ("8hours", "1h30m" as 1h); this one refuses those
// rather than read them other than the operator meant.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty time value")
	}
	unit := time.Second
	num := s
	switch s[len(s)-1] {
	case 's':
		num = s[:len(s)-1]
	case 'm':
		unit, num = time.Minute, s[:len(s)-1]
	case 'h':
		unit, num = time.Hour, s[:len(s)-1]
	case 'd':
		unit, num = 24*time.Hour, s[:len(s)-1]
	}
	num = strings.TrimRight(num, " \t\n\v\f\r") // C's isspace
	// ParseUint takes no sign, so "+1s" and "-1s" are refused here.
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a time value", s)
	}
	if n > uint64(math.MaxInt64/int64(unit)) {
		return 0, fmt.Errorf("%q is too long a time", s)
	}
	return Duration(time.Duration(n) * unit), nil
}

// String renders d in strongSwan's form with the largest exact unit.
func (d Duration) String() string {
	td := time.Duration(d)
	switch {
	case td == 0:
		return "0s"
	case td%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", td/(24*time.Hour))
	case td%time.Hour == 0:
		return fmt.Sprintf("%dh", td/time.Hour)
	case td%time.Minute == 0:
		return fmt.Sprintf("%dm", td/time.Minute)
	case td%time.Second == 0:
		return fmt.Sprintf("%ds", td/time.Second)
	}
	return td.String()
}

// MarshalText renders d as String does, so JSON shows "8h".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a strongSwan time value.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// ParseBool parses a strongSwan boolean: yes, true, enabled or 1; no,
// false, disabled or 0 (any case).
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "true", "enabled", "1":
		return true, nil
	case "no", "false", "disabled", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", s)
}

// SplitList splits a comma-separated list value ("a, b,c") into its
// trimmed elements, dropping empty ones.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
