package swanctl

import (
	"fmt"
	"strings"
)

// Pos is where a key, a section or a problem is in the configuration files.
// Line is 1-based; 0 means the file as a whole, as in the position of a
// file's root Section. Every problem this package reports has a line: one
// about a file as a whole is at its line 1.
type Pos struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

// String renders the position as "file:line", or "file" when Line is 0.
func (p Pos) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Error is one positioned problem in the configuration.
type Error struct {
	Pos Pos
	Msg string
}

// Error renders the problem as "file:line: message".
func (e *Error) Error() string {
	if e.Pos.File == "" {
		return e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// MarshalText renders the problem as Error does, for JSON.
func (e *Error) MarshalText() ([]byte, error) { return []byte(e.Error()), nil }

// Errors is every problem found in a configuration: in the order found
// from ReadFile and Parse, sorted by file and line from Decode and
// LoadMPSA.
// Functions of this package return it as their error when anything is
// wrong; use errors.As to get at the individual problems.
type Errors []*Error

// Error renders one problem per line.
func (l Errors) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// add appends a problem at pos.
func (l *Errors) add(pos Pos, format string, args ...any) {
	*l = append(*l, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// err returns l as an error, or nil when it is empty.
func (l Errors) err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
