// Package manpage turns a command's --help text into a man page (roff,
// man macros). The help text is the single source: its "Usage:" lines
// become SYNOPSIS, the paragraphs before the first heading DESCRIPTION, and
// each "Heading:" line a section whose indented entries ("  --flag ARG
// text" with continuation lines indented deeper) become tagged paragraphs.
// The output depends only on the input, so packages build reproducibly.
package manpage

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Page describes one man page.
type Page struct {
	// Name is the command, e.g. "mpsad".
	Name string
	// Section is the manual section, e.g. 8.
	Section int
	// Summary is the one-line description after NAME's "\-".
	Summary string
	// Source and Manual fill the .TH footer and header, e.g. "mpsa
	// 1.2.0" and "System Manager's Manual".
	Source, Manual string
	// Date is the page's date (use the commit date, not the build time).
	Date time.Time
	// Help is the command's --help output.
	Help string
	// Description is the DESCRIPTION section's text when the help text
	// has no paragraph before its first heading; unused otherwise.
	Description string
	// Extra sections appended after those of the help text (FILES, SEE
	// ALSO, ...), in order.
	Extra []Section
}

// Section is an extra section of a page.
type Section struct {
	// Title is the section heading, e.g. "FILES".
	Title string
	// Text is paragraphs separated by blank lines, set as written.
	Text string
	// Items are tagged paragraphs after Text.
	Items []Item
}

// Item is one tagged paragraph: a term and its description.
type Item struct {
	Term, Text string
}

// Render returns the page in roff.
func Render(p Page) ([]byte, error) {
	if p.Name == "" || p.Section <= 0 || strings.TrimSpace(p.Help) == "" {
		return nil, errors.New("manpage: page needs a name, a section and help text")
	}
	lines := strings.Split(strings.ReplaceAll(strings.TrimRight(p.Help, "\n"), "\t", "        "), "\n")
	synopsis, rest := splitSynopsis(lines)
	if len(synopsis) == 0 {
		return nil, fmt.Errorf("manpage: %s: help text has no \"Usage:\" line", p.Name)
	}

	var b strings.Builder
	fmt.Fprintf(&b, ".\\\" Generated from `%s --help` by packaging/internal/manpage. Do not edit.\n", p.Name)
	fmt.Fprintf(&b, ".TH %s %d %q %q %q\n", strings.ToUpper(p.Name), p.Section, p.Date.UTC().Format("2006-01-02"), p.Source, p.Manual)
	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "%s \\- %s\n", escape(p.Name), escape(p.Summary))
	b.WriteString(".SH SYNOPSIS\n")
	for i, s := range synopsis {
		if i > 0 {
			b.WriteString(".br\n")
		}
		cmd, args, _ := strings.Cut(s, " ")
		fmt.Fprintf(&b, ".B %s\n", escape(cmd))
		if args = strings.TrimSpace(args); args != "" {
			b.WriteString(line(args))
		}
	}
	b.WriteString(".SH DESCRIPTION\n")
	if !hasDescription(rest) {
		writeParagraphs(&b, p.Description)
	}
	renderBody(&b, rest)
	for _, s := range p.Extra {
		fmt.Fprintf(&b, ".SH %s\n", escape(strings.ToUpper(s.Title)))
		writeParagraphs(&b, s.Text)
		for _, it := range s.Items {
			b.WriteString(".TP\n")
			b.WriteString(term(it.Term))
			b.WriteString(line(it.Text))
		}
	}
	return []byte(b.String()), nil
}

// splitSynopsis takes the leading "Usage:" line and the lines that
// continue it (indented, up to the first blank line), and returns them
// without the "Usage:" word, and the lines after them.
func splitSynopsis(lines []string) (synopsis, rest []string) {
	i := 0
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i == len(lines) {
		return nil, nil
	}
	first := strings.TrimSpace(lines[i])
	low := strings.ToLower(first)
	if !strings.HasPrefix(low, "usage:") {
		return nil, lines
	}
	synopsis = append(synopsis, strings.TrimSpace(first[len("usage:"):]))
	for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
		synopsis = append(synopsis, strings.TrimSpace(lines[i]))
	}
	return synopsis, lines[i:]
}

// renderBody renders the help text after the synopsis.
func renderBody(b *strings.Builder, lines []string) {
	needPP := false  // a paragraph break is pending
	started := false // the current section has content
	inItems := false
	itemIndent := -1
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		t := strings.TrimSpace(l)
		ind := len(l) - len(strings.TrimLeft(l, " "))
		switch {
		case t == "":
			needPP = true
			itemIndent = -1
		case isHeading(t, ind):
			fmt.Fprintf(b, ".SH %s\n", escape(strings.ToUpper(strings.TrimSuffix(t, ":"))))
			needPP, inItems, itemIndent, started = false, false, -1, false
		case ind == 0:
			if started && (needPP || inItems) {
				b.WriteString(".PP\n")
			}
			b.WriteString(line(t))
			needPP, inItems, started = false, false, true
		case itemIndent < 0 || ind <= itemIndent:
			// A new entry: "  TERM  description" or "  TERM" with the
			// description on deeper-indented lines.
			itemIndent = ind
			termText, desc := splitTerm(t)
			b.WriteString(".TP\n")
			b.WriteString(term(termText))
			if desc != "" {
				b.WriteString(line(desc))
			}
			needPP, inItems, started = false, true, true
		default:
			// Continuation of the current entry.
			b.WriteString(line(t))
		}
	}
}

// hasDescription reports whether the help text has a paragraph before its
// first heading.
func hasDescription(lines []string) bool {
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" {
			continue
		}
		return !isHeading(t, len(l)-len(strings.TrimLeft(l, " ")))
	}
	return false
}

// isHeading reports whether a help line is a section heading: short,
// unindented, ending in a colon ("Options:", "Offline tools:").
func isHeading(t string, indent int) bool {
	return indent == 0 && len(t) <= 40 && strings.HasSuffix(t, ":") && !strings.ContainsAny(t, ".,;")
}

// splitTerm splits "--config FILE  read FILE" at the first run of two or
// more spaces.
func splitTerm(t string) (termText, desc string) {
	if i := strings.Index(t, "  "); i >= 0 {
		return t[:i], strings.TrimSpace(t[i:])
	}
	return t, ""
}

// term renders a tagged paragraph's tag: the first word bold, the rest
// roman.
func term(t string) string {
	w, rest, _ := strings.Cut(strings.TrimSpace(t), " ")
	if rest == "" {
		return ".B " + escape(w) + "\n"
	}
	return fmt.Sprintf("\\fB%s\\fR %s\n", escape(w), escape(rest))
}

// line renders one line of running text.
func line(t string) string {
	e := escape(t)
	if strings.HasPrefix(e, ".") || strings.HasPrefix(e, "'") {
		e = `\&` + e
	}
	return e + "\n"
}

// escape makes text safe inside roff: backslashes and hyphens (which roff
// would otherwise set as typographic hyphens, breaking copy and paste of
// options).
func escape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// writeParagraphs renders text's paragraphs as running text separated by
// .PP.
func writeParagraphs(b *strings.Builder, text string) {
	for i, para := range paragraphs(text) {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		for _, l := range para {
			b.WriteString(line(l))
		}
	}
}

// paragraphs splits text at blank lines into paragraphs of trimmed lines.
func paragraphs(text string) [][]string {
	var out [][]string
	var cur []string
	for _, l := range strings.Split(text, "\n") {
		if t := strings.TrimSpace(l); t != "" {
			cur = append(cur, t)
			continue
		}
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Gzip compresses a page as man expects it, reproducibly: no file name and
// a zero time in the gzip header.
func Gzip(page []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("manpage: gzip: %w", err)
	}
	if _, err := zw.Write(page); err != nil {
		return nil, fmt.Errorf("manpage: gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("manpage: gzip: %w", err)
	}
	return buf.Bytes(), nil
}
