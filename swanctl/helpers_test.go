package swanctl

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
)

// mapFS builds an in-memory file system from name/content pairs.
func mapFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for name, data := range files {
		m[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return m
}

// render prints a section tree compactly: keys as k=value, sections as
// name{...}, references as name:ref{...}, with positions.
func render(s *Section) string {
	var b strings.Builder
	var walk func(s *Section)
	walk = func(s *Section) {
		for _, kv := range s.Keys {
			fmt.Fprintf(&b, "%s=%q@%d ", kv.Name, kv.Value, kv.Pos.Line)
		}
		for _, c := range s.Sections {
			fmt.Fprintf(&b, "%s", c.Name)
			if len(c.Refs) > 0 {
				fmt.Fprintf(&b, ":%s", strings.Join(c.Refs, ","))
			}
			fmt.Fprintf(&b, "@%d{ ", c.Pos.Line)
			walk(c)
			b.WriteString("} ")
		}
	}
	walk(s)
	return strings.TrimSpace(b.String())
}

// errorStrings returns the messages of an Errors error, one per problem.
func errorStrings(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	list, ok := err.(Errors)
	if !ok {
		t.Fatalf("error is %T, not Errors: %v", err, err)
	}
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = e.Error()
	}
	return out
}
