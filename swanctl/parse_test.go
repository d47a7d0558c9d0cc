package swanctl

import (
	"slices"
	"strings"
	"testing"
)

// parseCases are inputs the reader (and strongSwan) accept, with the tree
// they give.
var parseCases = []struct {
	name string
	src  string
	want string // render() of the tree
}{
	{"empty file", "", ""},
	{"only comments and blanks", "# a\n\n   # b\n\t\n", ""},
	{"key value", "a = b\n", `a="b"@1`},
	{"value to end of line, trimmed", "a =   b c   \n", `a="b c"@1`},
	{"unquoted words join with one space", "a = b \t  c\n", `a="b c"@1`},
	{"no final newline", "a = b", `a="b"@1`},
	{"empty value", "a =\nb = \n", `a=""@1 b=""@2`},
	{"comment after value", "a = b # not c\n", `a="b"@1`},
	{"hash inside quotes", `a = "b # c"` + "\n", `a="b # c"@1`},
	{"quotes keep blanks", `a = "  b  "`, `a="  b  "@1`},
	{"quoted and unquoted parts", `a = x "y z" w`, `a="x y z w"@1`},
	{"escapes", `a = "q\"b\\s\tt\nn\x"`, "a=\"q\\\"b\\\\s\\tt\\nnx\"@1"},
	{"string spans lines", "a = \"one\ntwo\"\nb = c\n", `a="one\ntwo"@1 b="c"@3`},
	{"backslash newline joins lines", "a = \"one \\\ntwo\"\nb = c", `a="one two"@1 b="c"@3`},
	{"value chars", "a = x=y,z:w.v/24 [x] {y\n", `a="x=y,z:w.v/24 [x] {y"@1`},
	{"value ends at brace", "s { a = b }\n", `s@1{ a="b"@1 }`},
	{"section", "s {\n a = 1\n}\n", `s@1{ a="1"@2 }`},
	{"empty section", "s {\n}\nt {}\n", `s@1{ } t@3{ }`},
	{"brace on next line", "s\n{\n a = 1\n}", `s@1{ a="1"@3 }`},
	{"nested", "a { b { c { d = e } } }", `a@1{ b@1{ c@1{ d="e"@1 } } }`},
	{"sections merge", "s { a = 1 }\nt { }\ns { b = 2 }", `s@1{ a="1"@1 b="2"@3 } t@2{ }`},
	{"last value wins", "a = 1\nb = 2\na = 3\n", `a="3"@3 b="2"@2`},
	{"references", "s : base, other.sub {\n a = 1\n}", `s:base,other.sub@1{ a="1"@2 }`},
	{"CRLF", "a = b\r\ns {\r\n c = \"d\"\r\n}\r\n", `a="b"@1 s@2{ c="d"@3 }`},
	{"CR dropped in strings", "a = \"x\r\ny\"\r\n", `a="x\ny"@1`},
	{"include as key", "include = x\n", `include="x"@1`},
	{"include as key, tab before =", "include\t=x\n", `include="x"@1`},
	{"include as key, no blank before =", "include=x\n", `include="x"@1`},
	{"includes as key", "includes = x\n", `includes="x"@1`},
	{"key names with odd bytes", "a-b_c/d@e! = 1", `a-b_c/d@e!="1"@1`},
	{"comment with braces", "# { } {\ns { # }\n}", `s@2{ }`},
	{"tabs", "\ts\t{\ta\t=\tb\t}", `s@1{ a="b"@1 }`},
}

func TestParse(t *testing.T) {
	for _, tt := range parseCases {
		t.Run(tt.name, func(t *testing.T) {
			root, err := Reader{FS: mapFS(nil)}.Parse("x.conf", []byte(tt.src))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := render(root); got != tt.want {
				t.Errorf("tree\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// parseErrorCases are inputs the reader rejects, with the error; all but
// the ones marked mpsaOnly are syntax errors to strongSwan too.
var parseErrorCases = []struct {
	name     string
	src      string
	want     string
	mpsaOnly bool
}{
	{"unclosed section", "s {\n a = 1\n", `x.conf:3: unexpected end of file: section "s" opened at line 1 is not closed; add a closing }`, false},
	{"stray close", "a = 1\n}\n", `x.conf:2: unexpected }: no section is open here; remove it`, false},
	{"nameless section", "{ a = 1 }", `x.conf:1: unexpected {: a section needs a name; write NAME {`, false},
	{"nameless setting", "\n = 1", `x.conf:2: unexpected =: a setting needs a name; write KEY = VALUE`, false},
	{"quoted name", `"a" = 1`, `x.conf:1: unexpected string: quotes are allowed in values and include patterns only; write names without quotes`, false},
	{"dot in key", "10.1.0.0/24 = x", `x.conf:1: unexpected '.' in name "10.": names may not contain . , : = { } " # or blanks; put addresses and prefixes in values`, false},
	{"colon in key", "2001:db8::/32 = x", `x.conf:1: unexpected ':' after "2001:db8": names may not contain . , : = { } " # or blanks; put addresses and prefixes in values`, false},
	{"name alone", "a\n", `x.conf:2: unexpected end of file after "a"; write a = VALUE or a { ... }`, false},
	{"two names", "a b = c", `x.conf:1: unexpected "b" after "a"; write a = VALUE or a { ... }`, false},
	{"unterminated string", "a = \"b\nc = d\n", `x.conf:1: unterminated string: no closing " before the end of the file; add the closing " (write \" for a quote inside the string)`, false},
	{"unterminated string escape", `a = "b\`, `x.conf:1: unterminated string: no closing " before the end of the file; add the closing " (write \" for a quote inside the string)`, false},
	{"reference without name", "s : { }", `x.conf:1: section "s": expected the name of a referenced section after : or ,; write s : OTHER { ... }`, false},
	{"reference list unfinished", "s : a, { }", `x.conf:1: section "s": expected the name of a referenced section after : or ,; write s : OTHER { ... }`, false},
	{"reference without brace", "s : a\nb = c", `x.conf:2: section "s": expected , or { after reference "a"; write s : a { ... }`, false},
	{"control byte", "a \x01", `x.conf:1: unexpected byte 0x01 after "a"; write a = VALUE or a { ... }`, false},
	{"prefix key with equals", "s : a = b", `x.conf:1: unexpected '=' after "s:a": names may not contain . , : = { } " # or blanks; put addresses and prefixes in values`, false},
	{"leading comma", ", a", `x.conf:1: unexpected ',': names may not contain . , : = { } " # or blanks; remove it, or put it in a value`, false},
	{"error after include-free lines", "a = 1\nb = 2\n\nc {\n", `x.conf:5: unexpected end of file: section "c" opened at line 4 is not closed; add a closing }`, false},
	{"too deep", strings.Repeat("a {", maxSectionDepth+1) + strings.Repeat("}", maxSectionDepth+1), `x.conf:1: sections nested more than 64 deep; nest them at most 64 deep (mpsa { } needs 5 levels)`, true},
	// strongSwan's lexer reads include, blanks and a byte other than =
	// as an include statement (longest match): with two blanks before =
	// the second blank is that byte, so the = is a syntax error.
	{"include, two blanks, =", "include  = x\n", `x.conf:1: include followed by two or more blanks is an include statement to strongSwan, and the = after it a syntax error; write include PATTERN to include files, or a single blank before = for a setting called include`, false},
	{"include, blank and tab, =", "s {\n include \t=x\n}\n", `x.conf:2: include followed by two or more blanks is an include statement to strongSwan, and the = after it a syntax error; write include PATTERN to include files, or a single blank before = for a setting called include`, false},
	{"include and one blank at the end of the file is a name alone", "include ", `x.conf:1: unexpected end of file after "include"; write include = VALUE or include { ... }`, false},
	// With two blanks it is an include without a pattern, which
	// strongSwan ignores and mpsa refuses.
	{"include and two blanks at the end of the file", "include  ", `x.conf:1: include without a file pattern; write include PATH or include DIR/*.conf`, true},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range parseErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Reader{FS: mapFS(nil)}.Parse("x.conf", []byte(tt.src))
			got := errorStrings(t, err)
			if !slices.Equal(got, []string{tt.want}) {
				t.Errorf("errors\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
