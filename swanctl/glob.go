package swanctl

import (
	"slices"
	"strings"
)

// Include patterns are expanded as strongSwan expands them: with glob(3),
// flags GLOB_ERR only. So backslash escapes work, `[!x]` and `[^x]` negate
// a bracket expression, a `]` right after `[` or `[!` is a member, a `[`
// that no `]` closes is an ordinary character, and a wildcard (`*`, `?` or
// a bracket expression) never matches the dot that starts a name (no
// GLOB_PERIOD): `*.conf` does not match `.hidden.conf`, `.*.conf` does.
// Matching is bytewise, as in the C locale, and the matches are sorted.
// (Checked against glibc's fnmatch(3) on a few million random patterns; it
// differs only on glibc's quirks with malformed [=c=] forms, an unclosed
// range, and a dot after `*?`. Unlike glibc's glob, `.*` does not match the
// directories . and .., which would only matter in a pattern like
// `.*/x.conf`.)

// hasMagic reports whether pattern is a glob to glob(3): it has an
// unescaped `*` or `?`, or an unescaped `[` that a later `]` follows.
// Anything else names one file literally.
func hasMagic(pattern string) bool {
	open := false
	for i := 0; i < len(pattern); i++ {
		switch pattern[i] {
		case '\\':
			i++
		case '*', '?':
			return true
		case '[':
			open = true
		case ']':
			if open {
				return true
			}
		}
	}
	return false
}

// unescape drops the backslash of each `\x`, as glob(3) does for a
// pattern without magic. A trailing backslash stays.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// glob expands pattern, slash-separated, through fsys and returns the
// matching names, sorted. A directory that does not exist, or a name in
// the middle of the pattern that is not a directory, matches nothing; a
// directory that cannot be read is an error (GLOB_ERR).
func glob(fsys fileSystem, pattern string) ([]string, error) {
	dir, rest := "", pattern
	if strings.HasPrefix(pattern, "/") {
		dir, rest = "/", strings.TrimLeft(pattern, "/")
	}
	var out []string
	if err := globWalk(fsys, dir, strings.Split(rest, "/"), &out); err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}

// globWalk appends to out the names under dir that match the pattern
// segments segs.
func globWalk(fsys fileSystem, dir string, segs []string, out *[]string) error {
	for len(segs) > 0 && !hasMagic(segs[0]) {
		if segs[0] != "" {
			dir = joinName(dir, unescape(segs[0]))
		}
		segs = segs[1:]
	}
	if len(segs) == 0 {
		if fsys.exists(dir) {
			*out = append(*out, dir)
		}
		return nil
	}
	names, err := fsys.readDir(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if matchName(segs[0], name) {
			if err := globWalk(fsys, joinName(dir, name), segs[1:], out); err != nil {
				return err
			}
		}
	}
	return nil
}

// joinName appends a name to a directory ("" is the current one).
func joinName(dir, name string) string {
	switch {
	case dir == "":
		return name
	case strings.HasSuffix(dir, "/"):
		return dir + name
	}
	return dir + "/" + name
}

// matchName reports whether the file name matches the pattern segment pat
// as fnmatch(3) with FNM_PERIOD decides it, which is what glob(3) without
// GLOB_PERIOD uses: a dot that starts name matches only a literal dot.
func matchName(pat, name string) bool {
	leadingDot := strings.HasPrefix(name, ".")
	p, n := 0, 0
	star, starN := -1, 0 // the last * and how much of name it takes
	for {
		if p < len(pat) {
			switch c := pat[p]; c {
			case '*':
				if n == 0 && leadingDot {
					return false
				}
				star, starN = p, n
				p++
				continue
			case '?':
				if n < len(name) && !(n == 0 && leadingDot) {
					p, n = p+1, n+1
					continue
				}
			case '[':
				if n < len(name) {
					end, bad := bracketEnd(pat, p)
					switch {
					case bad:
					case end == 0 && name[n] == '[':
						// A [ that nothing closes is an ordinary character.
						p, n = p+1, n+1
						continue
					case end > 0 && !(n == 0 && leadingDot) && matchBracket(pat[p+1:end-1], name[n]):
						p, n = end, n+1
						continue
					}
				}
			case '\\':
				if p+1 == len(pat) {
					return false // a trailing backslash matches nothing
				}
				if n < len(name) && name[n] == pat[p+1] {
					p, n = p+2, n+1
					continue
				}
			default:
				if n < len(name) && name[n] == c {
					p, n = p+1, n+1
					continue
				}
			}
		} else if n == len(name) {
			return true
		}
		// A mismatch: let the last * take one more byte and retry.
		if star < 0 || starN >= len(name) {
			return false
		}
		starN++
		p, n = star+1, starN
	}
}

// bracketEnd returns the index just after the `]` that closes the bracket
// expression opening at pat[open], or 0 if none does. bad reports a
// collating symbol fnmatch(3) fails on, which fails the match whether or
// not the bracket is closed.
func bracketEnd(pat string, open int) (end int, bad bool) {
	i := open + 1
	if i < len(pat) && (pat[i] == '!' || pat[i] == '^') {
		i++
	}
	for first := true; i < len(pat); first = false {
		if pat[i] == ']' && !first {
			return i + 1, false
		}
		var class string
		if _, i, class = bracketItem(pat, i); class == badSymbol {
			return 0, true
		}
	}
	return 0, false
}

// matchBracket reports whether c is in the bracket expression whose
// contents (between [ and ]) are set. Like fnmatch(3) it reads the members
// in order and stops at the first that holds c: an unknown class fails
// the match only when it comes before that.
func matchBracket(set string, c byte) bool {
	negate := false
	if set != "" && (set[0] == '!' || set[0] == '^') {
		negate, set = true, set[1:]
	}
	for i := 0; i < len(set); {
		lo, next, class := bracketItem(set, i)
		i = next
		if class != "" {
			member, known := inClass(class, c)
			if !known {
				return false
			}
			if member {
				return !negate
			}
			continue
		}
		hi := lo
		if i+1 < len(set) && set[i] == '-' {
			if h, n, cl := bracketItem(set, i+1); cl == "" {
				hi, i = h, n
			}
		}
		if lo <= c && c <= hi {
			return !negate
		}
	}
	return negate
}

// badSymbol is the class bracketItem returns for a collating symbol
// fnmatch(3) fails on.
const badSymbol = "."

// bracketItem reads one member of a bracket expression at set[i]: a byte,
// an escaped byte, [=c=] or [.c.] (the byte c), or [:class:] with a name
// of lower-case letters. It returns the byte or the class name and the
// index after the member. Anything else starting with [ is the byte [.
func bracketItem(set string, i int) (byte, int, string) {
	c := set[i]
	switch {
	case c == '\\' && i+1 < len(set):
		return set[i+1], i + 2, ""
	case c != '[' || i+1 >= len(set):
		return c, i + 1, ""
	}
	switch kind := set[i+1]; kind {
	case '=':
		if i+4 < len(set) && set[i+3] == '=' && set[i+4] == ']' {
			return set[i+2], i + 5, ""
		}
	case '.':
		if i+4 < len(set) && set[i+3] == '.' && set[i+4] == ']' {
			return set[i+2], i + 5, ""
		}
		// fnmatch(3) fails on a collating symbol other than a single
		// byte in the C locale, or one that is not closed.
		return 0, len(set), badSymbol
	case ':':
		j := i + 2
		for j < len(set) && 'a' <= set[j] && set[j] < 'z' {
			j++
		}
		if j > i+2 && j+1 < len(set) && set[j] == ':' && set[j+1] == ']' {
			return 0, j + 2, set[i+2 : j]
		}
	}
	return c, i + 1, ""
}

// inClass reports whether c is in the POSIX character class name, as in
// the C locale, and whether the class is known.
func inClass(name string, c byte) (member, known bool) {
	upper := 'A' <= c && c <= 'Z'
	lower := 'a' <= c && c <= 'z'
	digit := '0' <= c && c <= '9'
	switch name {
	case "alpha":
		return upper || lower, true
	case "upper":
		return upper, true
	case "lower":
		return lower, true
	case "digit":
		return digit, true
	case "alnum":
		return upper || lower || digit, true
	case "xdigit":
		return digit || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F'), true
	case "space":
		return c == ' ' || ('\t' <= c && c <= '\r'), true
	case "blank":
		return c == ' ' || c == '\t', true
	case "punct":
		return c > ' ' && c < 0x7f && !upper && !lower && !digit, true
	case "print":
		return c >= ' ' && c < 0x7f, true
	case "graph":
		return c > ' ' && c < 0x7f, true
	case "cntrl":
		return c < ' ' || c == 0x7f, true
	}
	return false, false
}
