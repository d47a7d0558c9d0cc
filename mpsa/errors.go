package mpsa

import "fmt"

// DecodeError reports malformed input: which field was wrong and where it
// starts, as a byte offset from the start of the decoded buffer.
type DecodeError struct {
	// Field names the field, with its path ("MPSA_PUT transform[4] (NONCE)
	// attribute length").
	Field string
	// Offset is the byte offset of the field in the input.
	Offset int
	// Reason says what is wrong with it.
	Reason string
}

// Error says which field of which message is malformed, and why.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s at offset %d: %s", e.Field, e.Offset, e.Reason)
}

func errAt(field string, off int, format string, args ...any) error {
	return &DecodeError{Field: field, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
