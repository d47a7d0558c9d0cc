package testenv

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestProgram(t *testing.T) {
	var out bytes.Buffer
	p := &Program{Errors: &out, Prefix: "prog: "}
	var order []int
	work := func() (err error) {
		defer p.Recover(&err)
		p.Cleanup(func() { order = append(order, 1) })
		p.Cleanup(func() { order = append(order, 2) })
		p.Errorf("soft %d", 7)
		p.Fatalf("hard %s", "stop")
		return errors.New("not reached")
	}
	err := work()
	if err == nil || err.Error() != "hard stop" {
		t.Errorf("work returned %v, want the Fatalf", err)
	}
	if got := out.String(); !strings.Contains(got, "prog: soft 7\n") {
		t.Errorf("Errorf wrote %q", got)
	}
	if len(order) != 0 {
		t.Fatal("cleanups ran before RunCleanups")
	}
	p.RunCleanups()
	p.RunCleanups()
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("cleanups ran in order %v, want [2 1], once", order)
	}
	defer func() {
		if r := recover(); r != "other" {
			t.Errorf("recovered %v, want the other panic to go on", r)
		}
	}()
	func() (err error) {
		defer p.Recover(&err)
		panic("other")
	}()
}
