package swanctl

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestInclude(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // etc/main.conf is read
		want  string
		errs  []string
		// noTree: the tree left by a syntax error is not compared.
		noTree bool
	}{
		{
			name: "glob relative to the including file, sorted",
			files: map[string]string{
				"etc/main.conf":      "a = 1\ninclude conf.d/*.conf\nz = 9\n",
				"etc/conf.d/b.conf":  "b = 2\n",
				"etc/conf.d/a.conf":  "c = 3\n",
				"etc/conf.d/x.other": "x = 0\n",
			},
			want: `a="1"@1 c="3"@1 b="2"@1 z="9"@3`,
		},
		{
			name: "glob matching nothing is fine",
			files: map[string]string{
				"etc/main.conf": "include conf.d/*.conf\na = 1\n",
			},
			want: `a="1"@2`,
		},
		{
			name: "include inside a section fills that section",
			files: map[string]string{
				"etc/main.conf":  "s {\n  include s.inc\n  b = 2\n}\n",
				"etc/s.inc":      "a = 1\nt { }\n",
				"etc/unused.inc": "x = 1",
			},
			want: `s@1{ a="1"@1 b="2"@3 t@2{ } }`,
		},
		{
			name: "nested includes relative to each file",
			files: map[string]string{
				"etc/main.conf":      "include d1/one.conf",
				"etc/d1/one.conf":    "include d2/two.conf\none = 1",
				"etc/d1/d2/two.conf": "two = 2",
			},
			want: `two="2"@1 one="1"@2`,
		},
		{
			name: "absolute include",
			files: map[string]string{
				"etc/main.conf": "include /opt/x.conf\n",
				"opt/x.conf":    "x = 1\n",
			},
			want: `x="1"@1`,
		},
		{
			name: "quoted pattern with a blank",
			files: map[string]string{
				"etc/main.conf":     "include \"my dir/*.conf\" # comment\n",
				"etc/my dir/a.conf": "a = 1",
			},
			want: `a="1"@1`,
		},
		{
			name: "escaped blank in pattern",
			files: map[string]string{
				"etc/main.conf":     "include my\\ dir/a.conf\n",
				"etc/my dir/a.conf": "a = 1",
			},
			want: `a="1"@1`,
		},
		{
			name: "same file twice is not a cycle",
			files: map[string]string{
				"etc/main.conf": "include x.conf\ninclude x.conf\n",
				"etc/x.conf":    "s { }",
			},
			want: `s@1{ }`,
		},
		{
			name: "directories matched by a glob are skipped",
			files: map[string]string{
				"etc/main.conf":         "include conf.d/*\n",
				"etc/conf.d/a.conf":     "a = 1",
				"etc/conf.d/sub/b.conf": "b = 1",
			},
			want: `a="1"@1`,
		},
		{
			name: "missing literal include is an error, parsing goes on",
			files: map[string]string{
				"etc/main.conf": "a = 1\ninclude missing.conf\nb = 2\n",
			},
			want: `a="1"@1 b="2"@3`,
			errs: []string{"etc/main.conf:2: include missing.conf: file etc/missing.conf does not exist; fix the path, or use a glob pattern (conf.d/*.conf) if the file is optional"},
		},
		{
			name: "literal include of a directory",
			files: map[string]string{
				"etc/main.conf":     "include conf.d\n",
				"etc/conf.d/a.conf": "a = 1",
			},
			want: ``,
			errs: []string{"etc/main.conf:1: include conf.d: cannot read etc/conf.d: etc/conf.d is a directory"},
		},
		{
			name: "include cycle",
			files: map[string]string{
				"etc/main.conf": "a = 1\ninclude b.conf\n",
				"etc/b.conf":    "b = 1\ninclude c.conf\n",
				"etc/c.conf":    "c = 1\ninclude ../etc/main.conf\n",
			},
			want: `a="1"@1 b="1"@1 c="1"@1`,
			errs: []string{"etc/c.conf:2: include cycle: etc/main.conf includes etc/b.conf includes etc/c.conf includes etc/main.conf; remove one of these includes"},
		},
		{
			name: "self include through a glob",
			files: map[string]string{
				"etc/main.conf": "include *.conf\na = 1\n",
			},
			want: `a="1"@2`,
			errs: []string{"etc/main.conf:1: include cycle: etc/main.conf includes etc/main.conf; remove one of these includes"},
		},
		{
			name: "empty pattern",
			files: map[string]string{
				"etc/main.conf": "include \"\"\na = 1\n",
			},
			want: `a="1"@2`,
			errs: []string{"etc/main.conf:1: include without a file pattern; write include PATH or include DIR/*.conf"},
		},
		{
			name: "bad glob",
			files: map[string]string{
				"etc/main.conf": "include [x.conf\n",
			},
			errs: []string{"etc/main.conf:1: include [x.conf: bad pattern: syntax error in pattern; escape literal *, ? and [ with a backslash"},
		},
		{
			name: "syntax error in an included file stops everything",
			files: map[string]string{
				"etc/main.conf": "include a.conf\nb = 1\n",
				"etc/a.conf":    "s {\n",
			},
			errs:   []string{`etc/a.conf:2: unexpected end of file: section "s" opened at line 1 is not closed; add a closing }`},
			noTree: true,
		},
		{
			name: "braces must balance within an included file",
			files: map[string]string{
				"etc/main.conf": "s {\ninclude a.conf\n",
				"etc/a.conf":    "}\n",
			},
			errs:   []string{`etc/a.conf:1: unexpected }: no section is open here; remove it`},
			noTree: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := Reader{FS: mapFS(tt.files)}.ReadFile("etc/main.conf")
			if got := errorStrings(t, err); !slices.Equal(got, tt.errs) {
				t.Errorf("errors\n got %q\nwant %q", got, tt.errs)
			}
			if tt.noTree {
				return
			}
			if got := render(root); got != tt.want {
				t.Errorf("tree\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestReadFileMissing(t *testing.T) {
	_, err := Reader{FS: mapFS(nil)}.ReadFile("etc/none.conf")
	want := []string{"etc/none.conf: cannot read configuration: file does not exist"}
	if got := errorStrings(t, err); !slices.Equal(got, want) {
		t.Errorf("errors\n got %q\nwant %q", got, want)
	}
}

// TestIncludeOS runs the operating-system reader on real files: relative
// and absolute includes, a glob, and a cycle through a symbolic link.
func TestIncludeOS(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	abs := filepath.Join(dir, "abs.conf")
	write("swanctl.conf", "include conf.d/*.conf\ninclude "+abs+"\n")
	write("conf.d/a.conf", "a = 1\ninclude ../link/loop.conf\n")
	write("abs.conf", "b = 2\n")
	write("real/loop.conf", "include ../conf.d/a.conf\n")
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "swanctl.conf")
	root, err := ReadFile(main)
	a := filepath.Join(dir, "conf.d", "a.conf")
	loop := filepath.Join(dir, "real", "loop.conf")
	want := []string{filepath.Join(dir, "link", "loop.conf") + ":1: include cycle: " + a + " includes " + loop + " includes " + a + "; remove one of these includes"}
	if got := errorStrings(t, err); !slices.Equal(got, want) {
		t.Errorf("errors\n got %q\nwant %q", got, want)
	}
	if got := render(root); got != `a="1"@1 b="2"@1` {
		t.Errorf("tree %s", got)
	}
}

// TestIncludeOSDirectory: the operating-system reader skips directories a
// glob matches and refuses a directory named literally.
func TestIncludeOSDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "conf.d", "sub.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "swanctl.conf")
	if err := os.WriteFile(main, []byte("include conf.d/*.conf\ninclude conf.d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(main)
	d := filepath.Join(dir, "conf.d")
	want := []string{main + ":2: include conf.d: cannot read " + d + ": " + d + " is a directory"}
	if got := errorStrings(t, err); !slices.Equal(got, want) {
		t.Errorf("errors\n got %q\nwant %q", got, want)
	}
	_, err = ReadFile(dir)
	want = []string{dir + ": cannot read configuration: " + dir + " is a directory"}
	if got := errorStrings(t, err); !slices.Equal(got, want) {
		t.Errorf("errors\n got %q\nwant %q", got, want)
	}
}
