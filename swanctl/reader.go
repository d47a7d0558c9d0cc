package swanctl

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Reader reads files in strongSwan's settings syntax. The zero Reader reads
// from the operating system's file system.
//
// Includes: a relative pattern is relative to the directory of the file
// that contains the include statement; an absolute one is used as is.
// Patterns are expanded as strongSwan's glob(3) expands them (see glob.go):
// a wildcard does not match a name's leading dot, `[!x]` negates, and a
// backslash escapes. A glob pattern that matches nothing is fine, as in
// strongSwan, so `include conf.d/*.conf` works with an empty conf.d. A
// literal path (no wildcard) that does not exist is an error, where
// strongSwan only logs it: a daemon that silently runs without part of its
// configuration is worse than one that refuses to start. Matches that are
// directories are skipped. An include cycle is an error. The included
// file's statements belong to the section that contains the include
// statement, and its braces must balance within the file.
//
// Every problem has a file and a line: an include problem is at the
// include statement, and a file that cannot be read at all is at its line
// 1.
type Reader struct {
	// FS, when set, is the file system to read from instead of the
	// operating system's. Paths are then slash-separated and relative to
	// its root; absolute include patterns are taken relative to its root.
	FS fs.FS
}

// ReadFile reads and parses the file at path and everything it includes.
func ReadFile(path string) (*Section, error) {
	return Reader{}.ReadFile(path)
}

// ReadFile reads and parses the file at name and everything it includes.
// The error, if any, is Errors. After problems with includes only (a
// missing file, a cycle), the tree holds everything else; after a syntax
// error it is incomplete.
func (rd Reader) ReadFile(name string) (*Section, error) {
	root, errs, _ := rd.read(name)
	return root, errs.err()
}

// read is ReadFile, and reports whether the reading stopped early: at a
// syntax error, or because the file could not be read at all. Otherwise
// the errors, if any, are about includes, and the tree holds the rest.
func (rd Reader) read(name string) (root *Section, errs Errors, stopped bool) {
	r := rd.newReader()
	root = &Section{Pos: Pos{File: name}}
	data, err := r.fs.readFile(name)
	if err != nil {
		err = unwrapPath(err)
		r.errs.add(Pos{File: name, Line: 1}, "cannot read configuration: %v; %s", err, readHint(err, "name the configuration file, not a directory"))
		return root, r.errs, true
	}
	r.parse(root, name, r.fs.clean(name), data, 0)
	return root, r.errs, r.stop
}

// Parse parses src as if it were the file name. Includes are read through
// the Reader's file system relative to the directory of name.
func (rd Reader) Parse(name string, src []byte) (*Section, error) {
	r := rd.newReader()
	root := &Section{Pos: Pos{File: name}}
	r.parse(root, name, r.fs.clean(name), src, 0)
	return root, r.errs.err()
}

func (rd Reader) newReader() *reader {
	if rd.FS != nil {
		return &reader{fs: ioFS{rd.FS}}
	}
	return &reader{fs: osFS{}}
}

// readHint says what to do about a file that cannot be read; dir is the
// advice for a directory.
func readHint(err error, dir string) string {
	var de dirError
	switch {
	case errors.As(err, &de):
		return dir
	case errors.Is(err, fs.ErrNotExist):
		return "check the path"
	case errors.Is(err, fs.ErrPermission):
		return "make it readable by the user mpsad runs as"
	}
	return "check the file and the file system it is on"
}

// reader is the state of one ReadFile or Parse call.
type reader struct {
	fs    fileSystem
	errs  Errors
	stack []string // files being parsed, outermost first
	stop  bool     // a syntax error ended the parse
}

// parse parses one file's contents into sec; canon is the file's name in
// canonical form (fileSystem.clean).
func (r *reader) parse(sec *Section, name, canon string, src []byte, depth int) {
	r.stack = append(r.stack, canon)
	defer func() { r.stack = r.stack[:len(r.stack)-1] }()
	p := &parser{r: r, file: name, src: src, line: 1}
	if err := p.parseBody(sec, nil, depth); err != nil {
		// The error is a syntaxError, or a syntaxStop after one that is
		// recorded already.
		var se syntaxError
		if errors.As(err, &se) {
			r.errs = append(r.errs, se.err)
		}
		r.stop = true
	}
}

// include reads the files that pattern names, from the include statement
// at pos in file from, into sec.
func (r *reader) include(sec *Section, from, pattern string, pos Pos, depth int) error {
	if len(r.stack) > maxIncludeDepth {
		r.errs.add(pos, "includes nested more than %d deep; check for include loops through links", maxIncludeDepth)
		return nil
	}
	full := r.fs.join(from, pattern)
	magic := hasMagic(pattern)
	var names []string
	if magic {
		m, err := glob(r.fs, full)
		if err != nil {
			err = unwrapPath(err)
			r.errs.add(pos, "include %s: cannot expand the pattern: %v; %s", pattern, err, readHint(err, "fix the pattern"))
			return nil
		}
		names = m
	} else {
		names = []string{unescape(full)}
	}
	for _, name := range names {
		data, err := r.fs.readFile(name)
		if err != nil {
			var dir dirError
			switch {
			case magic && errors.As(err, &dir):
				continue
			case errors.Is(err, fs.ErrNotExist):
				r.errs.add(pos, "include %s: file %s does not exist; fix the path, or use a glob pattern (conf.d/*.conf) if the file is optional", pattern, name)
			default:
				err = unwrapPath(err)
				r.errs.add(pos, "include %s: cannot read %s: %v; %s", pattern, name, err, readHint(err, "include "+strings.TrimSuffix(pattern, "/")+"/*.conf to read the files in it"))
			}
			continue
		}
		canon := r.fs.clean(name)
		if cycle := r.cycle(canon); cycle != "" {
			r.errs.add(pos, "include cycle: %s; remove one of these includes", cycle)
			continue
		}
		r.parse(sec, name, canon, data, depth)
		if r.stop {
			return syntaxStop{}
		}
	}
	return nil
}

// syntaxStop unwinds the parsers of including files after a syntax error
// in an included one, which is already recorded.
type syntaxStop struct{}

func (syntaxStop) Error() string { return "stopped at a syntax error" }

// cycle describes the include chain if the file canon (in canonical form)
// is being parsed already.
func (r *reader) cycle(canon string) string {
	for i, s := range r.stack {
		if s == canon {
			chain := append(append([]string{}, r.stack[i:]...), canon)
			return strings.Join(chain, " includes ")
		}
	}
	return ""
}

// unwrapPath drops the *PathError wrapper whose path the message already
// names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// dirError is the error of fileSystem.readFile for a directory.
type dirError struct{ name string }

func (e dirError) Error() string { return e.name + " is a directory" }

// fileSystem is what the reader needs from a file system.
type fileSystem interface {
	// readFile returns the contents of a file, or dirError for a
	// directory.
	readFile(name string) ([]byte, error)
	// readDir returns the names in a directory, or none when it does not
	// exist or is not a directory.
	readDir(dir string) ([]string, error)
	// exists reports whether there is a file or directory called name.
	exists(name string) bool
	// join resolves pattern relative to the directory of file from.
	join(from, pattern string) string
	// clean is the canonical form of a name, for cycle detection.
	clean(name string) string
}

type osFS struct{}

func (osFS) readFile(name string) ([]byte, error) {
	data, err := os.ReadFile(name)
	if errors.Is(err, syscall.EISDIR) {
		return nil, dirError{name}
	}
	return data, err
}

func (osFS) readDir(dir string) ([]string, error) {
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	return entryNames(entries), err
}

func (osFS) exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

func entryNames(entries []fs.DirEntry) []string {
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}

func (osFS) join(from, pattern string) string {
	if filepath.IsAbs(pattern) {
		return pattern
	}
	return filepath.Join(filepath.Dir(from), pattern)
}

func (osFS) clean(name string) string {
	if abs, err := filepath.Abs(name); err == nil {
		name = abs
	}
	if real, err := filepath.EvalSymlinks(name); err == nil {
		return real
	}
	return filepath.Clean(name)
}

// ioFS reads through an fs.FS with slash-separated paths.
type ioFS struct{ fsys fs.FS }

// readFile reads name; clean makes it a valid fs.FS path. A file system
// may fail to read a directory in any way, so it stats a name it could not
// read.
func (f ioFS) readFile(name string) ([]byte, error) {
	n := f.clean(name)
	data, err := fs.ReadFile(f.fsys, n)
	if err != nil {
		if st, serr := fs.Stat(f.fsys, n); serr == nil && st.IsDir() {
			return nil, dirError{name}
		}
	}
	return data, err
}

func (f ioFS) readDir(dir string) ([]string, error) {
	d := f.clean(dir)
	if st, err := fs.Stat(f.fsys, d); err != nil || !st.IsDir() {
		return nil, nil
	}
	entries, err := fs.ReadDir(f.fsys, d)
	return entryNames(entries), err
}

func (f ioFS) exists(name string) bool {
	_, err := fs.Stat(f.fsys, f.clean(name))
	return err == nil
}

func (ioFS) join(from, pattern string) string {
	if strings.HasPrefix(pattern, "/") {
		return pattern
	}
	return path.Join(path.Dir(from), pattern)
}

func (ioFS) clean(name string) string {
	n := strings.TrimLeft(path.Clean("/"+name), "/")
	if n == "" {
		return "."
	}
	return n
}
