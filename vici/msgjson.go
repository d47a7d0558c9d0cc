package vici

import (
	"encoding/json"
	"errors"
	"fmt"

	govici "github.com/strongswan/govici/vici"
)

// jsonElem is one message element in the JSON form: exactly one of V
// (value), L (list) or S (section) is set. Elements keep their order.
type jsonElem struct {
	K string      `json:"k"`
	V *string     `json:"v,omitempty"`
	L []string    `json:"l,omitempty"`
	S []jsonElem  `json:"s,omitempty"`
	E *emptyFlags `json:"e,omitempty"`
}

// emptyFlags marks an empty list or section, which omitempty would lose.
type emptyFlags struct {
	List    bool `json:"list,omitempty"`
	Section bool `json:"section,omitempty"`
}

// MessageJSON encodes a VICI message as JSON that keeps the order of its
// elements and the distinction between values, lists and sections. It is
// the format of captured messages in testdata and of debug dumps.
func MessageJSON(m *govici.Message) ([]byte, error) {
	elems, err := toJSONElems(m)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(elems, "", " ")
}

func toJSONElems(m *govici.Message) ([]jsonElem, error) {
	out := []jsonElem{}
	for _, k := range m.Keys() {
		e := jsonElem{K: k}
		switch v := m.Get(k).(type) {
		case string:
			e.V = &v
		case []string:
			e.L = v
			if len(v) == 0 {
				e.E = &emptyFlags{List: true}
			}
		case *govici.Message:
			s, err := toJSONElems(v)
			if err != nil {
				return nil, err
			}
			e.S = s
			if len(s) == 0 {
				e.E = &emptyFlags{Section: true}
			}
		default:
			return nil, fmt.Errorf("vici: element %q has unexpected type %T", k, v)
		}
		out = append(out, e)
	}
	return out, nil
}

// MessageFromJSON decodes the output of MessageJSON.
func MessageFromJSON(data []byte) (*govici.Message, error) {
	var elems []jsonElem
	if err := json.Unmarshal(data, &elems); err != nil {
		return nil, fmt.Errorf("vici: message JSON: %w", err)
	}
	return fromJSONElems(elems)
}

func fromJSONElems(elems []jsonElem) (*govici.Message, error) {
	m := govici.NewMessage()
	for _, e := range elems {
		var v any
		switch {
		case e.V != nil:
			v = *e.V
		case e.L != nil || (e.E != nil && e.E.List):
			v = append([]string{}, e.L...)
		case e.S != nil || (e.E != nil && e.E.Section):
			s, err := fromJSONElems(e.S)
			if err != nil {
				return nil, err
			}
			v = s
		default:
			return nil, errors.New("vici: message JSON: element " + e.K + " has no value")
		}
		if err := m.Set(e.K, v); err != nil {
			return nil, fmt.Errorf("vici: message JSON: %s: %w", e.K, err)
		}
	}
	return m, nil
}
