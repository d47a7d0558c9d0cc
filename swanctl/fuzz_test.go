package swanctl

import (
	"bytes"
	"testing"
)

// FuzzRead feeds arbitrary bytes to the reader, with a file system that
// holds a few files to include. The reader must not panic; what it accepts
// must carry positions inside the file, must print back (Section.Format)
// to a text that reads as the same tree, and must decode (or fail to) as a
// configuration without panicking. Every error must have a line.
func FuzzRead(f *testing.F) {
	for _, seed := range []string{
		"a = b\n",
		"s { k = \"v # x\" }\r\n",
		"include inc/*.conf\n",
		"mpsa { role = member\n groups { g { connection = c\n local_ts = 10.1.0.0/24\n routes { r { prefixes = 10.2.0.0/24\n peer = 192.0.2.2 } } } } }",
		"s : a, b.c { }",
		"include: a { k = v }\ninclude{ }",
		"include inc/[!b]*.conf\ninclude inc/.*\ninclude  = x\n",
	} {
		f.Add([]byte(seed))
	}
	files := mapFS(map[string]string{
		"etc/inc/a.conf":    "x = 1\nt { y = \"2\" }\n",
		"etc/inc/loop.conf": "include loop.conf\n",
		"etc/inc/bad.conf":  "{\n",
	})
	f.Fuzz(func(t *testing.T, src []byte) {
		rd := Reader{FS: files}
		root, err := rd.Parse("etc/main.conf", src)
		if err != nil {
			if len(err.Error()) == 0 {
				t.Fatal("empty error")
			}
			checkErrorLines(t, err)
			return
		}
		lines := bytes.Count(src, []byte("\n")) + 1
		var check func(s *Section)
		check = func(s *Section) {
			for _, kv := range s.Keys {
				if kv.Pos.Line < 1 || (kv.Pos.File == "etc/main.conf" && kv.Pos.Line > lines) {
					t.Fatalf("key %q at %v, file has %d lines", kv.Name, kv.Pos, lines)
				}
			}
			for _, c := range s.Sections {
				if c.Pos.Line < 1 || (c.Pos.File == "etc/main.conf" && c.Pos.Line > lines) {
					t.Fatalf("section %q at %v, file has %d lines", c.Name, c.Pos, lines)
				}
				check(c)
			}
		}
		check(root)
		text := root.Format()
		again, err := rd.Parse("formatted.conf", []byte(text))
		if err != nil {
			t.Fatalf("formatted tree does not read back: %v\n%s", err, text)
		}
		if a, b := again.Format(), text; a != b {
			t.Fatalf("formatted tree reads back differently:\n%s\nvs\n%s", a, b)
		}
		_, err = Decode(root)
		checkErrorLines(t, err)
	})
}

// checkErrorLines fails unless every problem in err has a file and a line.
func checkErrorLines(t *testing.T, err error) {
	t.Helper()
	list, _ := err.(Errors)
	for _, e := range list {
		if e.Pos.File == "" || e.Pos.Line < 1 {
			t.Fatalf("error without a line: %q", e.Error())
		}
	}
}
