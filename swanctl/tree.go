package swanctl

// KeyValue is one setting, `key = value`. When a key is set more than once
// in a section, the last value wins and Pos is where it was set.
type KeyValue struct {
	Name  string
	Value string
	Pos   Pos
}

// Section is a section of settings, or the unnamed root of a file. Sections
// of the same name in one parent merge, as in strongSwan: Pos is where the
// section was first opened.
type Section struct {
	Name string
	Pos  Pos
	// Refs are the sections this one references (`name : a, b { }`),
	// in order. The reader records them without resolving them.
	Refs []string
	// RefsPos is where the references were written.
	RefsPos Pos
	// Keys are the settings of this section in the order first set.
	Keys []*KeyValue
	// Sections are the subsections in the order first opened.
	Sections []*Section

	// Indexes into Keys and Sections, kept by the reader so that large
	// sections stay fast. Lookups trust them only while their size matches
	// the entries': a Section built by hand, or one the reader made and
	// code then appended to, still works. One whose entries were removed
	// and others added by hand can miss a name; build a new Section then.
	keyIdx map[string]int
	secIdx map[string]int
}

// Key returns the setting name of s, or nil.
func (s *Section) Key(name string) *KeyValue {
	return find(s.Keys, s.keyIdx, name, func(kv *KeyValue) string { return kv.Name })
}

// Section returns the subsection name of s, or nil.
func (s *Section) Section(name string) *Section {
	return find(s.Sections, s.secIdx, name, func(c *Section) string { return c.Name })
}

// find returns the entry of list called name, or nil. It trusts idx, the
// reader's index into list, only while idx covers every entry and agrees
// with the entry it points at; otherwise it searches list.
func find[T any](list []*T, idx map[string]int, name string, nameOf func(*T) string) *T {
	if idx != nil && len(idx) == len(list) {
		i, ok := idx[name]
		if !ok {
			return nil
		}
		if nameOf(list[i]) == name {
			return list[i]
		}
	}
	for _, e := range list {
		if nameOf(e) == name {
			return e
		}
	}
	return nil
}

// Lookup follows a path of subsection names from s ("mpsa", "groups",
// "branch") and returns the section it ends at, or nil.
func (s *Section) Lookup(path ...string) *Section {
	cur := s
	for _, name := range path {
		if cur = cur.Section(name); cur == nil {
			return nil
		}
	}
	return cur
}

// set stores a setting, replacing an earlier value of the same key.
func (s *Section) set(name, value string, pos Pos) {
	if kv := s.Key(name); kv != nil {
		kv.Value, kv.Pos = value, pos
		return
	}
	if s.keyIdx == nil {
		s.keyIdx = make(map[string]int)
	}
	s.keyIdx[name] = len(s.Keys)
	s.Keys = append(s.Keys, &KeyValue{Name: name, Value: value, Pos: pos})
}

// open returns the subsection name, creating it at pos if it does not
// exist yet.
func (s *Section) open(name string, pos Pos) *Section {
	if c := s.Section(name); c != nil {
		return c
	}
	c := &Section{Name: name, Pos: pos}
	if s.secIdx == nil {
		s.secIdx = make(map[string]int)
	}
	s.secIdx[name] = len(s.Sections)
	s.Sections = append(s.Sections, c)
	return c
}

// Format renders the section's contents in strongSwan's syntax: keys
// first, then subsections, indented by four blanks per level. Reading the
// result gives the same keys, values and sections.
func (s *Section) Format() string {
	w := &writer{}
	s.formatBody(w)
	return w.b.String()
}

func (s *Section) formatBody(w *writer) {
	for _, kv := range s.Keys {
		w.kv(kv.Name, kv.Value)
	}
	for _, c := range s.Sections {
		w.open(c.Name, c.Refs...)
		c.formatBody(w)
		w.close()
	}
}
