// Package swanctl reads strongSwan's settings syntax, the format of
// swanctl.conf and strongswan.conf, and decodes the `mpsa { }` section that
// extends swanctl.conf with mpsa's settings.
//
// The reader (ReadFile, Reader) follows strongSwan's own lexer and grammar
// (libstrongswan/settings): sections `name { ... }`, settings `key = value`
// where the value runs to the end of the line, `#` comments, double-quoted
// strings with escapes that may span lines, section references
// `name : other, more { ... }` (recorded, not resolved) and `include`
// statements with glob patterns relative to the including file, expanded
// as strongSwan's glob(3) expands them. Sections of the same name merge and
// a repeated key keeps its last value, as in strongSwan. Every key and
// section keeps the file and line it came from.
//
// LoadMPSA reads a file and decodes its `mpsa { }` section into a Config,
// reporting every problem at once as Errors, each "file:line: what is
// wrong; what to write instead", sorted by file and line. Problems with
// includes do not hide the others; a syntax error stops the reading.
// Other top-level sections (connections, secrets, authorities, pools) belong
// to swanctl and are ignored.
package swanctl
