package swanctl

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLongFile reads 100,000 lines: many keys in one section, many
// sections, long values, and an error on the last line with its number.
func TestLongFile(t *testing.T) {
	const n = 100_000
	var b strings.Builder
	b.WriteString("big {\n")
	for i := 0; i < n/2; i++ {
		fmt.Fprintf(&b, "  key%d = value %d # comment\n", i, i)
	}
	b.WriteString("}\n")
	for i := 0; i < n/2-3; i++ {
		fmt.Fprintf(&b, "s%d { }\n", i)
	}
	b.WriteString("last = " + strings.Repeat("x", 1<<16) + "\n")
	src := b.String()
	start := time.Now()
	root, err := Reader{FS: mapFS(nil)}.Parse("long.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("parsing %d lines took %v", n, d)
	}
	big := root.Section("big")
	if len(big.Keys) != n/2 || big.Key("key49999").Value != "value 49999" || big.Key("key49999").Pos.Line != n/2+1 {
		t.Errorf("big: %d keys, last %+v", len(big.Keys), big.Key("key49999"))
	}
	if len(root.Sections) != n/2-2 || root.Key("last").Pos.Line != n || len(root.Key("last").Value) != 1<<16 {
		t.Errorf("%d sections, last at %+v", len(root.Sections), root.Key("last").Pos)
	}

	_, err = Reader{FS: mapFS(nil)}.Parse("long.conf", []byte(src+"oops\n"))
	want := fmt.Sprintf("long.conf:%d: unexpected end of file after \"oops\"; write oops = VALUE or oops { ... }", n+2)
	if got := errorStrings(t, err); len(got) != 1 || got[0] != want {
		t.Errorf("error %q, want %q", got, want)
	}
}
