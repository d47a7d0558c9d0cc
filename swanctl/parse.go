package swanctl

import (
	"bytes"
	"fmt"
	"strings"
)

// Limits that keep a hostile or broken file from exhausting the stack.
const (
	maxSectionDepth = 64
	maxIncludeDepth = 32
)

// nameSpecial are the bytes that end a section or key name: strongSwan's
// lexer allows any other byte in names.
const nameSpecial = "#{}:.,=\"\r\n\t "

// nameRule is nameSpecial for messages.
const nameRule = "names may not contain . , : = { } \" # or blanks"

// syntaxError stops the parse of all files: like strongSwan, the reader
// does not try to recover from a syntax error.
type syntaxError struct{ err *Error }

func (e syntaxError) Error() string { return e.err.Error() }

// parser scans one file's bytes. It implements strongSwan's lexer states
// (main, val, str, inc, ref) as methods and its grammar by recursive
// descent.
type parser struct {
	r    *reader
	file string
	src  []byte
	off  int
	line int
}

func (p *parser) pos() Pos { return Pos{File: p.file, Line: p.line} }

func (p *parser) fail(pos Pos, format string, args ...any) error {
	return syntaxError{&Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}}
}

func (p *parser) eof() bool { return p.off >= len(p.src) }

func (p *parser) peek() byte {
	if p.off >= len(p.src) {
		return 0
	}
	return p.src[p.off]
}

// next consumes one byte, counting lines.
func (p *parser) next() byte {
	c := p.src[p.off]
	p.off++
	if c == '\n' {
		p.line++
	}
	return c
}

// skipComment consumes a `#` comment up to (not including) the line end.
func (p *parser) skipComment() {
	for !p.eof() && p.peek() != '\n' {
		p.off++
	}
}

// skipBlank consumes whitespace, line ends and comments, as strongSwan's
// main state does between statements.
func (p *parser) skipBlank() {
	for !p.eof() {
		switch p.peek() {
		case ' ', '\t', '\r', '\n':
			p.next()
		case '#':
			p.skipComment()
		default:
			return
		}
	}
}

// readName consumes a section or key name.
func (p *parser) readName() string {
	start := p.off
	for !p.eof() && strings.IndexByte(nameSpecial, p.peek()) < 0 {
		p.off++
	}
	return string(p.src[start:p.off])
}

// isInclude reports whether an include statement starts here, as
// strongSwan's lexer decides it: its rule is `"include"[\t ]+/[^=]`, the
// word include, blanks and then any byte but `=`, and flex takes the
// longest match. So `include = x` and `include\t=x` set a key called
// include, but with two or more blanks before a `=` the last blank serves
// as the byte that is not `=`: the statement is an include with an empty
// pattern, and the `=` that follows is a syntax error. noPattern reports
// that case. (Likewise `include` and two blanks at the end of the file is
// an include without a pattern, and with one blank a name alone.)
func (p *parser) isInclude() (include, noPattern bool) {
	const kw = "include"
	rest := p.src[p.off:]
	if !bytes.HasPrefix(rest, []byte(kw)) {
		return false, false
	}
	i := len(kw)
	for i < len(rest) && (rest[i] == ' ' || rest[i] == '\t') {
		i++
	}
	blanks := i - len(kw)
	switch {
	case blanks == 0:
		return false, false
	case i == len(rest):
		return blanks >= 2, false
	case rest[i] != '=':
		return true, false
	}
	return blanks >= 2, true
}

// parseBody parses statements into sec until the end of the file or, when
// open is the position of sec's opening brace, until its closing brace.
func (p *parser) parseBody(sec *Section, open *Pos, depth int) error {
	for {
		p.skipBlank()
		if p.eof() {
			if open != nil {
				return p.fail(p.pos(), "unexpected end of file: section %q opened at line %d is not closed; add a closing }", sec.Name, open.Line)
			}
			return nil
		}
		switch c := p.peek(); c {
		case '}':
			if open == nil {
				return p.fail(p.pos(), "unexpected }: no section is open here; remove it")
			}
			p.next()
			return nil
		case '{':
			return p.fail(p.pos(), "unexpected {: a section needs a name; write NAME {")
		case '=':
			return p.fail(p.pos(), "unexpected =: a setting needs a name; write KEY = VALUE")
		case '"':
			return p.fail(p.pos(), "unexpected string: quotes are allowed in values and include patterns only; write names without quotes")
		case '.', ',', ':':
			return p.fail(p.pos(), "unexpected %q: %s; remove it, or put it in a value", c, nameRule)
		}
		if include, noPattern := p.isInclude(); include {
			if noPattern {
				return p.parseIncludeNoPattern()
			}
			if err := p.parseInclude(sec, depth); err != nil {
				return err
			}
			continue
		}
		if err := p.parseStatement(sec, depth); err != nil {
			return err
		}
	}
}

// parseStatement parses `name { ... }`, `name : refs { ... }` or
// `name = value`.
func (p *parser) parseStatement(sec *Section, depth int) error {
	pos := p.pos()
	name := p.readName()
	p.skipBlank()
	switch c := p.peek(); {
	case c == '{':
		return p.parseSectionBody(sec.open(name, pos), depth)
	case c == ':':
		p.next()
		refs, refsPos, err := p.parseRefs(name)
		if err != nil {
			return err
		}
		child := sec.open(name, pos)
		child.Refs = append(child.Refs, refs...)
		child.RefsPos = refsPos
		return p.parseSectionBody(child, depth)
	case c == '=':
		p.next()
		value, err := p.readValue()
		if err != nil {
			return err
		}
		sec.set(name, value, pos)
		return nil
	case c == '.' || c == ',':
		return p.fail(p.pos(), "unexpected %q in name %q: %s; put addresses and prefixes in values", c, name+string(c), nameRule)
	case p.eof():
		return p.fail(p.pos(), "unexpected end of file after %q; write %s = VALUE or %s { ... }", name, name, name)
	default:
		return p.fail(p.pos(), "unexpected %s after %q; write %s = VALUE or %s { ... }", printable(c), name, name, name)
	}
}

// parseSectionBody parses `{ ... }` after a section's name (and
// references) into child.
func (p *parser) parseSectionBody(child *Section, depth int) error {
	if depth+1 > maxSectionDepth {
		return p.fail(p.pos(), "sections nested more than %d deep; nest them at most %d deep (mpsa { } needs 5 levels)", maxSectionDepth, maxSectionDepth)
	}
	open := p.pos()
	p.next() // '{'
	return p.parseBody(child, &open, depth+1)
}

// parseRefs parses the references after `name :` up to the opening brace:
// names (which may contain dots) separated by commas.
func (p *parser) parseRefs(name string) ([]string, Pos, error) {
	var refs []string
	pos := p.pos()
	for {
		p.skipBlank()
		start := p.off
		for !p.eof() {
			c := p.peek()
			if c != '.' && strings.IndexByte(nameSpecial, c) >= 0 {
				break
			}
			p.off++
		}
		ref := string(p.src[start:p.off])
		if ref == "" || strings.HasPrefix(ref, ".") || strings.HasSuffix(ref, ".") || strings.Contains(ref, "..") {
			return nil, pos, p.fail(p.pos(), "section %q: expected the name of a referenced section after : or ,; write %s : OTHER { ... }", name, name)
		}
		refs = append(refs, ref)
		p.skipBlank()
		switch p.peek() {
		case ',':
			p.next()
		case '{':
			return refs, pos, nil
		case ':', '=':
			return nil, pos, p.fail(p.pos(), "unexpected %q after %q: %s; put addresses and prefixes in values", p.peek(), name+":"+strings.Join(refs, ","), nameRule)
		default:
			return nil, pos, p.fail(p.pos(), "section %q: expected , or { after reference %q; write %s : %s { ... }", name, ref, name, strings.Join(refs, ", "))
		}
	}
}

// readValue reads the value after `=` up to the end of the line, a `#`
// comment or a `}`. Like strongSwan it joins unquoted words with a single
// space; quoted strings keep their blanks.
func (p *parser) readValue() (string, error) {
	var parts []string
	for {
		for !p.eof() && (p.peek() == ' ' || p.peek() == '\t' || p.peek() == '\r') {
			p.off++
		}
		if p.eof() {
			break
		}
		c := p.peek()
		if c == '\n' || c == '#' || c == '}' {
			break
		}
		if c == '"' {
			s, err := p.readString()
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
			continue
		}
		start := p.off
		for !p.eof() && strings.IndexByte("#}\"\r\n\t ", p.peek()) < 0 {
			p.off++
		}
		parts = append(parts, string(p.src[start:p.off]))
	}
	return strings.Join(parts, " "), nil
}

// readString reads a double-quoted string starting at the opening quote.
// Escapes are \n, \r, \t, backslash-newline (joins lines) and backslash
// before any other byte, which stands for that byte. Raw line ends are kept
// but carriage returns are dropped, as in strongSwan.
func (p *parser) readString() (string, error) {
	start := p.pos()
	p.next() // opening quote
	var b strings.Builder
	for {
		if p.eof() {
			return "", p.fail(start, "unterminated string: no closing \" before the end of the file; add the closing \" (write \\\" for a quote inside the string)")
		}
		c := p.next()
		switch c {
		case '"':
			return b.String(), nil
		case '\r':
		case '\\':
			if p.eof() {
				return "", p.fail(start, "unterminated string: no closing \" before the end of the file; add the closing \" (write \\\" for a quote inside the string)")
			}
			e := p.next()
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '\n':
			case '\r':
				if p.peek() == '\n' {
					p.next()
				} else {
					b.WriteByte('\r')
				}
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
}

// readPattern reads an include pattern: up to a blank, line end, `#` or
// `}`, with \" \# \} and "\ " standing for those bytes, or a quoted string
// which ends the pattern.
func (p *parser) readPattern() (string, error) {
	var b strings.Builder
	for !p.eof() {
		c := p.peek()
		switch c {
		case '\n', ' ', '\t', '#', '}':
			return b.String(), nil
		case '\r':
			p.off++
		case '"':
			s, err := p.readString()
			if err != nil {
				return "", err
			}
			b.WriteString(s)
			return b.String(), nil
		case '\\':
			p.off++
			if n := p.peek(); n == '"' || n == '#' || n == '}' || n == ' ' {
				b.WriteByte(n)
				p.off++
			} else {
				b.WriteByte('\\')
			}
		default:
			b.WriteByte(c)
			p.off++
		}
	}
	return b.String(), nil
}

// parseInclude parses `include PATTERN` and reads the files it names into
// sec.
func (p *parser) parseInclude(sec *Section, depth int) error {
	pos := p.pos()
	p.off += len("include")
	for p.peek() == ' ' || p.peek() == '\t' {
		p.off++
	}
	pattern, err := p.readPattern()
	if err != nil {
		return err
	}
	if pattern == "" {
		p.r.errs.add(pos, "include without a file pattern; write include PATH or include DIR/*.conf")
		return nil
	}
	return p.r.include(sec, p.file, pattern, pos, depth)
}

// parseIncludeNoPattern reports `include` followed by two or more blanks
// and a `=`: an include statement without a pattern to strongSwan, whose
// `=` is then a syntax error (isInclude).
func (p *parser) parseIncludeNoPattern() error {
	return p.fail(p.pos(), "include followed by two or more blanks is an include statement to strongSwan, and the = after it a syntax error; write include PATTERN to include files, or a single blank before = for a setting called include")
}

// printable renders a byte for an error message.
func printable(c byte) string {
	switch {
	case c == '\n':
		return "end of line"
	case c < 0x20 || c >= 0x7f:
		return fmt.Sprintf("byte 0x%02x", c)
	}
	return fmt.Sprintf("%q", string(c))
}
