package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{"no describe", []string{"-date", "1"}, 2, "-describe and -date are required"},
		{"no date", []string{"-describe", "v1.0.0"}, 2, "-describe and -date are required"},
		{"stray argument", []string{"-describe", "v1.0.0", "-date", "1", "extra"}, 2, "-describe and -date are required"},
		{"tag that is no version", []string{"-describe", "release-one", "-date", "1"}, 1, `tag "release-one" is not a version`},
		{"not a source tree", []string{"-describe", "v1.0.0", "-date", "1", "-src", "/nonexistent"}, 1, "missing input: stat /nonexistent/packaging/swanctl/mpsa.conf"},
		{"commit with a blank", []string{"-describe", "v1.0.0", "-date", "1", "-commit", "abc def"}, 1, `"abc def": a version or commit with blanks`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.message) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), tc.code, tc.message)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing on failure", stdout.String())
			}
		})
	}
}
