package testenv

import (
	"fmt"
	"io"
	"os"
)

// Program is the TB of a program, not a test, that builds namespaces,
// charons and daemons with the test helpers (the demo, the scale
// harness): Fatalf and Skipf panic with the failure, which Recover turns
// into an error, and the functions given to Cleanup run, last first, at
// RunCleanups.
type Program struct {
	// Errors receives Errorf's messages; os.Stderr if nil.
	Errors io.Writer
	// Prefix starts every Errorf message, such as "demo: ".
	Prefix string

	cleanups []func()
}

var _ TB = (*Program)(nil)

// programFailure is the panic of Fatalf.
type programFailure struct{ error }

// Helper does nothing.
func (p *Program) Helper() {}

// Errorf reports a failure that does not stop the program.
func (p *Program) Errorf(format string, args ...any) {
	w := p.Errors
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, p.Prefix+format+"\n", args...)
}

// Fatalf stops the work under Recover with the failure.
func (p *Program) Fatalf(format string, args ...any) {
	panic(programFailure{fmt.Errorf(format, args...)})
}

// Skipf is Fatalf: a program has nothing to skip to.
func (p *Program) Skipf(format string, args ...any) { p.Fatalf(format, args...) }

// Cleanup registers f to run at RunCleanups.
func (p *Program) Cleanup(f func()) { p.cleanups = append(p.cleanups, f) }

// Recover, deferred by the function that does the work, turns a Fatalf of
// its program into *err; any other panic goes on.
func (p *Program) Recover(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(programFailure)
		if !ok {
			panic(r)
		}
		*err = f.error
	}
}

// RunCleanups runs the registered functions, last first, and forgets them.
func (p *Program) RunCleanups() {
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
	p.cleanups = nil
}
