package swanctl

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// includeCases read etc/main.conf from the files and give the tree and
// the errors.
var includeCases = []struct {
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
		errs: []string{"etc/main.conf:1: include conf.d: cannot read etc/conf.d: etc/conf.d is a directory; include conf.d/*.conf to read the files in it"},
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
	// Patterns are glob(3)'s, as strongSwan expands them.
	{
		name: "a [ that no ] closes is literal: the pattern names one file",
		files: map[string]string{
			"etc/main.conf": "include [x.conf\ninclude [y.conf\n",
			"etc/[x.conf":   "x = 1\n",
		},
		want: `x="1"@1`,
		errs: []string{"etc/main.conf:2: include [y.conf: file etc/[y.conf does not exist; fix the path, or use a glob pattern (conf.d/*.conf) if the file is optional"},
	},
	{
		name: "wildcards do not match a leading dot",
		files: map[string]string{
			"etc/main.conf":            "include conf.d/*\ninclude conf.d/?b.conf\ninclude conf.d/[.]c.conf\n",
			"etc/conf.d/.hidden.conf":  "{\n",
			"etc/conf.d/.b.conf":       "{\n",
			"etc/conf.d/.c.conf":       "{\n",
			"etc/conf.d/a.conf":        "a = 1\n",
			"etc/conf.d/.git/x.conf":   "{\n",
			"etc/conf.d/sub/.x/y.conf": "{\n",
		},
		want: `a="1"@1`,
	},
	{
		name: "a pattern starting with a dot matches hidden files",
		files: map[string]string{
			"etc/main.conf":           "include conf.d/.*.conf\n",
			"etc/conf.d/.hidden.conf": "h = 1\n",
			"etc/conf.d/a.conf":       "{\n",
		},
		want: `h="1"@1`,
	},
	{
		name: "[!x] and [^x] negate",
		files: map[string]string{
			"etc/main.conf":     "include conf.d/[!a].conf\ninclude conf.d/[^ab].conf\n",
			"etc/conf.d/a.conf": "{\n",
			"etc/conf.d/b.conf": "b = 1\n",
			"etc/conf.d/c.conf": "c = 1\n",
		},
		want: `b="1"@1 c="1"@1`,
	},
	{
		name: "] first in a bracket, ranges, classes and escapes",
		files: map[string]string{
			"etc/main.conf":      "include conf.d/[]x].conf\ninclude conf.d/[0-9][[:alpha:]].conf\ninclude conf.d/\\*.conf\n",
			"etc/conf.d/].conf":  "r = 1\n",
			"etc/conf.d/x.conf":  "x = 1\n",
			"etc/conf.d/1a.conf": "n = 1\n",
			"etc/conf.d/11.conf": "{\n",
			"etc/conf.d/*.conf":  "s = 1\n",
		},
		want: `r="1"@1 x="1"@1 n="1"@1 s="1"@1`,
	},
	{
		name: "wildcards in directories, sorted as whole paths",
		files: map[string]string{
			"etc/main.conf":      "include */x.conf\n",
			"etc/a/x.conf":       "a = 1\n",
			"etc/a-b/x.conf":     "ab = 1\n",
			"etc/b/y.conf":       "{\n",
			"etc/c.conf":         "c = 1\n",
			"etc/.hidden/x.conf": "{\n",
		},
		want: `ab="1"@1 a="1"@1`,
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

func TestInclude(t *testing.T) {
	for _, tt := range includeCases {
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
	want := []string{"etc/none.conf:1: cannot read configuration: file does not exist; check the path"}
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
	want := []string{main + ":2: include conf.d: cannot read " + d + ": " + d + " is a directory; include conf.d/*.conf to read the files in it"}
	if got := errorStrings(t, err); !slices.Equal(got, want) {
		t.Errorf("errors\n got %q\nwant %q", got, want)
	}
	_, err = ReadFile(dir)
	want = []string{dir + ":1: cannot read configuration: " + dir + " is a directory; name the configuration file, not a directory"}
	if got := errorStrings(t, err); !slices.Equal(got, want) {
		t.Errorf("errors\n got %q\nwant %q", got, want)
	}
}

// failDirFS is a MapFS whose directory dir cannot be listed.
type failDirFS struct {
	fstest.MapFS
	dir string
}

func (f failDirFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name == f.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrPermission}
	}
	return f.MapFS.ReadDir(name)
}

// TestLoadIncludeErrors: problems with includes do not hide the problems
// of the configuration; LoadMPSA reports both, sorted by file and line.
// A syntax error, or a file that cannot be read, stops everything.
func TestLoadIncludeErrors(t *testing.T) {
	const bad = "mpsa {\n role = boss\n groups { }\n}\n" // errors at lines 2 and 3
	tests := []struct {
		name    string
		files   map[string]string // etc/swanctl.conf is read
		failDir string            // a directory that cannot be listed
		want    []string
	}{
		{
			name:  "missing include",
			files: map[string]string{"etc/swanctl.conf": bad + "include missing.conf\n"},
			want: []string{
				"etc/swanctl.conf:2: mpsa: role = boss is not valid; write controller or member",
				"etc/swanctl.conf:3: mpsa: no groups; add groups { NAME { connection = ... } }",
				"etc/swanctl.conf:5: include missing.conf: file etc/missing.conf does not exist; fix the path, or use a glob pattern (conf.d/*.conf) if the file is optional",
			},
		},
		{
			name:  "include cycle, errors in two files",
			files: map[string]string{"etc/swanctl.conf": "include conf.d/*.conf\n" + bad, "etc/conf.d/a.conf": "include ../swanctl.conf\n"},
			want: []string{
				"etc/conf.d/a.conf:1: include cycle: etc/swanctl.conf includes etc/conf.d/a.conf includes etc/swanctl.conf; remove one of these includes",
				"etc/swanctl.conf:3: mpsa: role = boss is not valid; write controller or member",
				"etc/swanctl.conf:4: mpsa: no groups; add groups { NAME { connection = ... } }",
			},
		},
		{
			name:    "directory that cannot be listed",
			files:   map[string]string{"etc/swanctl.conf": "include conf.d/*.conf\n" + bad, "etc/conf.d/a.conf": "x = 1\n"},
			failDir: "etc/conf.d",
			want: []string{
				"etc/swanctl.conf:1: include conf.d/*.conf: cannot expand the pattern: permission denied; make it readable by the user mpsad runs as",
				"etc/swanctl.conf:3: mpsa: role = boss is not valid; write controller or member",
				"etc/swanctl.conf:4: mpsa: no groups; add groups { NAME { connection = ... } }",
			},
		},
		{
			name:  "the mpsa section in a missing file",
			files: map[string]string{"etc/swanctl.conf": "connections { }\ninclude conf.d/mpsa.conf\n"},
			want: []string{
				"etc/swanctl.conf:1: no mpsa { } section; add one with role and groups (examples: /usr/share/doc/mpsa/examples)",
				"etc/swanctl.conf:2: include conf.d/mpsa.conf: file etc/conf.d/mpsa.conf does not exist; fix the path, or use a glob pattern (conf.d/*.conf) if the file is optional",
			},
		},
		{
			name:  "a syntax error stops everything",
			files: map[string]string{"etc/swanctl.conf": "include missing.conf\n" + bad + "}\n"},
			want: []string{
				"etc/swanctl.conf:1: include missing.conf: file etc/missing.conf does not exist; fix the path, or use a glob pattern (conf.d/*.conf) if the file is optional",
				"etc/swanctl.conf:6: unexpected }: no section is open here; remove it",
			},
		},
		{
			name:  "a file that cannot be read",
			files: map[string]string{"etc/other.conf": bad},
			want:  []string{"etc/swanctl.conf:1: cannot read configuration: file does not exist; check the path"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fsys fs.FS = mapFS(tt.files)
			if tt.failDir != "" {
				fsys = failDirFS{mapFS(tt.files), tt.failDir}
			}
			cfg, err := Reader{FS: fsys}.LoadMPSA("etc/swanctl.conf")
			if got := errorStrings(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("errors\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
			}
			if cfg != nil {
				t.Errorf("config returned with errors: %+v", cfg)
			}
		})
	}
}
