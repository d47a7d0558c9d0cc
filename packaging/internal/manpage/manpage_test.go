package manpage

import (
	"bytes"
	"compress/gzip"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden .8 files in testdata")

func page(t *testing.T, name string) Page {
	t.Helper()
	help, err := os.ReadFile(filepath.Join("testdata", name+".help"))
	if err != nil {
		t.Fatal(err)
	}
	return Page{
		Name: name, Section: 8, Summary: "test page for " + name,
		Source: "mpsa 1.2.3", Manual: "System Manager's Manual",
		Date:        time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC),
		Help:        string(help),
		Description: "fallback description of " + name,
		Extra: []Section{
			{Title: "Files", Items: []Item{{Term: "/run/mpsad/mpsad.sock", Text: "status socket"}}},
			{Title: "See also", Text: "swanctl.conf(5), strongswan.conf(5)"},
		},
	}
}

// TestGolden renders the help texts of mpsad and mpsactl (captured in
// testdata) and compares with the reviewed pages. Run with -update after
// a deliberate change, and read the diff.
func TestGolden(t *testing.T) {
	for _, name := range []string{"mpsad", "mpsactl"} {
		t.Run(name, func(t *testing.T) {
			got, err := Render(page(t, name))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".8")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update once to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s:\n%s", name, golden, got)
			}
		})
	}
}

func TestStructure(t *testing.T) {
	got, err := Render(page(t, "mpsad"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	for _, want := range []string{
		`.TH MPSAD 8 "2026-11-23" "mpsa 1.2.3" "System Manager's Manual"`,
		".SH NAME\nmpsad \\- test page for mpsad\n",
		".SH SYNOPSIS\n.B mpsad\n[\\-\\-config FILE] [\\-\\-check [\\-\\-json]]\n.br\n.B mpsad\n\\-\\-version\n",
		".SH OPTIONS\n.TP\n\\fB\\-\\-config\\fR FILE\nread FILE and what it includes",
		".TP\n.B \\-\\-check\nload and validate",
		".SH FILES\n.TP\n.B /run/mpsad/mpsad.sock\nstatus socket\n",
		".SH SEE ALSO\nswanctl.conf(5), strongswan.conf(5)\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "fallback description") {
		t.Errorf("Description used although the help text has one:\n%s", s)
	}
	if strings.Contains(s, "\n--") {
		t.Errorf("an unescaped option starts a line:\n%s", s)
	}
}

func TestDescriptionWhenHelpHasNone(t *testing.T) {
	// mpsactl's --help opens with its status commands under a two-line
	// "Talking to mpsad (...):" line, which is no heading and so counts as
	// a paragraph before the first one: the description. Without that
	// block the help text goes straight to its first heading.
	p := page(t, "mpsactl")
	head, tail, ok := strings.Cut(p.Help, "\nTalking to mpsad")
	_, tail, ok2 := strings.Cut(tail, "\n\n")
	if !ok || !ok2 {
		t.Fatalf("testdata/mpsactl.help has no \"Talking to mpsad\" block:\n%s", p.Help)
	}
	p.Help = head + "\n" + tail
	got, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), ".SH DESCRIPTION\nfallback description of mpsactl\n.SH OFFLINE TOOLS\n") {
		t.Errorf("mpsactl page lacks the fallback description:\n%s", got)
	}
}

func TestEscapesRoffControlCharacters(t *testing.T) {
	got, err := Render(Page{Name: "x", Section: 1, Summary: "s", Help: "Usage: x\n\n.starts with a dot\n'quote\nback\\slash\n"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n\\&.starts with a dot\n", "\n\\&'quote\n", "\nback\\eslash\n"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

func TestRejectsHelpWithoutUsage(t *testing.T) {
	if _, err := Render(Page{Name: "x", Section: 8, Help: "no synopsis here\n"}); err == nil {
		t.Error("help without a Usage: line rendered without error")
	}
	if _, err := Render(Page{Name: "x", Section: 8}); err == nil {
		t.Error("empty help rendered without error")
	}
}

// TestGroffAcceptsPages runs the pages through groff with all warnings on:
// a page that man would render badly fails here.
func TestGroffAcceptsPages(t *testing.T) {
	groff := testenv.NeedCommand(t, "groff")
	for _, name := range []string{"mpsad", "mpsactl"} {
		src, err := Render(page(t, name))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = bytes.NewReader(src)
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff on %s: %v\n%s", name, err, out)
		}
	}
}

func TestGzipIsReproducible(t *testing.T) {
	a, err := Gzip([]byte("page"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Gzip([]byte("page"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two compressions of the same page differ")
	}
	zr, err := gzip.NewReader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header carries name %q, time %v; want neither", zr.Name, zr.ModTime)
	}
	if got, _ := io.ReadAll(zr); string(got) != "page" {
		t.Errorf("round trip gave %q", got)
	}
}
