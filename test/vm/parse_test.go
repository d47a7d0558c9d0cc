//go:build !mpsavm

package vm

import (
	"strings"
	"testing"
)

func TestParseGuest(t *testing.T) {
	console := strings.Join([]string{
		"\x1bc\x1b[?7l=== RUN   TestA",
		"--- PASS: TestA (0.01s)",
		"=== RUN   TestB",
		"=== RUN   TestB/one",
		"    b_test.go:10: detail of one",
		"=== RUN   TestB/two",
		"    b_test.go:20: two broke",
		"--- FAIL: TestB (0.20s)",
		"    --- PASS: TestB/one (0.10s)",
		"    --- FAIL: TestB/two (0.10s)",
		"=== RUN   TestC",
		"panic: boom",
		"MPSA-VM-RESULT: FAIL",
	}, "\r\n")
	results, verdict := parseGuest(console)
	if verdict != "FAIL" {
		t.Errorf("verdict %q", verdict)
	}
	if len(results) != 3 {
		t.Fatalf("%d top-level results, want 3", len(results))
	}
	a, b, c := results[0], results[1], results[2]
	if a.name != "TestA" || a.status != "PASS" {
		t.Errorf("A: %+v", a)
	}
	if b.status != "FAIL" || len(b.children) != 2 {
		t.Fatalf("B: status %q, %d children", b.status, len(b.children))
	}
	if one := b.children[0]; one.status != "PASS" || !strings.Contains(strings.Join(one.output, "\n"), "detail of one") {
		t.Errorf("B/one: %+v", one)
	}
	if two := b.children[1]; two.status != "FAIL" || !strings.Contains(strings.Join(two.output, "\n"), "two broke") {
		t.Errorf("B/two: %+v", two)
	}
	if c.status != "" || !strings.Contains(strings.Join(c.output, "\n"), "panic: boom") {
		t.Errorf("C must be unfinished with the panic in its output: %+v", c)
	}
}
