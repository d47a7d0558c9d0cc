package vici

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	govici "github.com/strongswan/govici/vici"
)

// The fuzz target builds VICI messages from fuzz bytes in VICI's own
// element encoding (strongSwan's libvici: a type octet, then for a
// section or list a name with a one-octet length, for a value or list
// item a value with a two-octet length), so that the fuzzer mutates
// messages shaped like charon's: the seeds are the captured messages of
// testdata, encoded. govici does not export its decoder, hence these
// test helpers.

// VICI element types.
const (
	wireSectionStart = 1
	wireSectionEnd   = 2
	wireKeyValue     = 3
	wireListStart    = 4
	wireListItem     = 5
	wireListEnd      = 6
)

// wireDecode builds a message from VICI elements; it reports false for
// bytes that are not a well-formed element sequence.
func wireDecode(data []byte) (*govici.Message, bool) {
	type frame struct {
		name string
		m    *govici.Message
	}
	stack := []frame{{m: govici.NewMessage()}}
	var list []string
	listName, inList := "", false
	name := func() (string, bool) {
		if len(data) < 1 || len(data) < 1+int(data[0]) {
			return "", false
		}
		n := string(data[1 : 1+int(data[0])])
		data = data[1+int(data[0]):]
		return n, true
	}
	value := func() (string, bool) {
		if len(data) < 2 {
			return "", false
		}
		l := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+l {
			return "", false
		}
		v := string(data[2 : 2+l])
		data = data[2+l:]
		return v, true
	}
	for len(data) > 0 {
		typ := data[0]
		data = data[1:]
		top := stack[len(stack)-1].m
		switch {
		case inList && typ == wireListItem:
			v, ok := value()
			if !ok {
				return nil, false
			}
			list = append(list, v)
		case inList && typ == wireListEnd:
			if top.Set(listName, list) != nil {
				return nil, false
			}
			list, inList = nil, false
		case inList:
			return nil, false
		case typ == wireSectionStart:
			n, ok := name()
			if !ok {
				return nil, false
			}
			stack = append(stack, frame{n, govici.NewMessage()})
		case typ == wireSectionEnd:
			if len(stack) == 1 {
				return nil, false
			}
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if stack[len(stack)-1].m.Set(f.name, f.m) != nil {
				return nil, false
			}
		case typ == wireKeyValue:
			n, ok := name()
			if !ok {
				return nil, false
			}
			v, ok := value()
			if !ok || top.Set(n, v) != nil {
				return nil, false
			}
		case typ == wireListStart:
			n, ok := name()
			if !ok {
				return nil, false
			}
			listName, list, inList = n, []string{}, true
		default:
			return nil, false
		}
	}
	if inList || len(stack) != 1 {
		return nil, false
	}
	return stack[0].m, true
}

// wireEncode encodes m as VICI elements.
func wireEncode(tb testing.TB, m *govici.Message) []byte {
	var b bytes.Buffer
	name := func(n string) {
		if len(n) > 255 {
			tb.Fatalf("name %q too long", n)
		}
		b.WriteByte(byte(len(n)))
		b.WriteString(n)
	}
	value := func(v string) {
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(v))))
		b.WriteString(v)
	}
	for _, k := range m.Keys() {
		switch v := m.Get(k).(type) {
		case string:
			b.WriteByte(wireKeyValue)
			name(k)
			value(v)
		case []string:
			b.WriteByte(wireListStart)
			name(k)
			for _, item := range v {
				b.WriteByte(wireListItem)
				value(item)
			}
			b.WriteByte(wireListEnd)
		case *govici.Message:
			b.WriteByte(wireSectionStart)
			name(k)
			b.Write(wireEncode(tb, v))
			b.WriteByte(wireSectionEnd)
		default:
			tb.Fatalf("element %q has type %T", k, v)
		}
	}
	return b.Bytes()
}

// parsers are what the target feeds a message to, chosen by the fuzz
// input: ParseSA for list-sa messages, ParseEvent for each event name.
var parsers = []string{"list-sa", EventIKEUpdown, EventChildUpdown, EventIKERekey, EventChildRekey}

// captures returns the testdata captures with the parser each is for.
func captures(tb testing.TB) map[string]uint8 {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no testdata captures: %v", err)
	}
	out := map[string]uint8{}
	for _, f := range files {
		for i, p := range parsers {
			if strings.HasPrefix(filepath.Base(f), p) {
				out[f] = uint8(i)
			}
		}
	}
	return out
}

// TestWireRoundTrip: the captures survive encoding and decoding unchanged,
// so that the fuzz seeds are charon's messages.
func TestWireRoundTrip(t *testing.T) {
	for f := range captures(t) {
		m := load(t, filepath.Base(f))
		got, ok := wireDecode(wireEncode(t, m))
		if !ok {
			t.Fatalf("%s: encoded message does not decode", f)
		}
		a, _ := MessageJSON(m)
		b, _ := MessageJSON(got)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: round trip changed the message:\n%s\nvs\n%s", f, a, b)
		}
	}
	for _, bad := range [][]byte{{wireSectionEnd}, {wireSectionStart, 1, 'a'}, {wireKeyValue, 1, 'k', 0, 5, 'v'}, {wireListStart, 1, 'l', wireKeyValue}, {9}} {
		if _, ok := wireDecode(bad); ok {
			t.Errorf("%x decoded", bad)
		}
	}
}

// FuzzParse feeds messages built from fuzz bytes to ParseSA and
// ParseEvent. They must not panic, and what they accept must be
// consistent: CHILD SAs in unique-id order, the event kind the one the
// event's name and up flag say, one CHILD SA in a child event, no
// traffic selector that is not a valid prefix.
func FuzzParse(f *testing.F) {
	caps := captures(f)
	files := make([]string, 0, len(caps))
	for file := range caps {
		files = append(files, file)
	}
	slices.Sort(files)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		m, err := MessageFromJSON(data)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wireEncode(f, m), caps[file])
	}
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		m, ok := wireDecode(data)
		if !ok {
			return
		}
		kind := parsers[int(which)%len(parsers)]
		checkIKE := func(sa IKESA) {
			if !slices.IsSortedFunc(sa.Children, func(a, b ChildSA) int { return int(int64(a.UniqueID) - int64(b.UniqueID)) }) {
				t.Fatalf("CHILD SAs not in unique-id order: %+v", sa.Children)
			}
			for _, c := range sa.Children {
				for _, p := range append(slices.Clone(c.LocalTS), c.RemoteTS...) {
					if !p.IsValid() || p != p.Masked() {
						t.Fatalf("traffic selector %v is not a valid masked prefix", p)
					}
				}
			}
		}
		if kind == "list-sa" {
			if sa, err := ParseSA(m); err == nil {
				checkIKE(sa)
			}
			return
		}
		ev, err := ParseEvent(kind, m)
		if err != nil {
			if !strings.HasPrefix(err.Error(), kind+": ") {
				t.Fatalf("error %q does not name the event", err)
			}
			return
		}
		checkIKE(ev.IKE)
		up := m.Get("up") == "yes"
		want := map[string]EventKind{EventIKERekey: IKERekey, EventChildRekey: ChildRekey}[kind]
		switch kind {
		case EventIKEUpdown:
			want = map[bool]EventKind{true: IKEUp, false: IKEDown}[up]
		case EventChildUpdown:
			want = map[bool]EventKind{true: ChildUp, false: ChildDown}[up]
		}
		if ev.Kind != want {
			t.Fatalf("%s (up %v) parsed as %v", kind, up, ev.Kind)
		}
		if (kind == EventChildUpdown || kind == EventChildRekey) && len(ev.IKE.Children) != 1 {
			t.Fatalf("%s with %d CHILD SAs", kind, len(ev.IKE.Children))
		}
	})
}
