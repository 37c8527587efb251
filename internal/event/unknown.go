package event

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/goccy/go-json/jsontext"
)

// UnknownFields is what Decode does with a top-level member that the event
// schema does not have.
type UnknownFields int

const (
	// UnknownRefuse refuses the event with a 400 that names the member
	// (the default, and the worker's only mode).
	UnknownRefuse UnknownFields = iota
	// UnknownToProperties moves the member into properties, under its own
	// name: it is kept, never discarded. A name that properties already
	// has is refused by name (nothing is overwritten), a name that differs
	// from a field of the event only by case is still refused (it is a
	// misspelt field, not data), and a member unknown within user or
	// location is still refused. The event's JSON is rewritten, so the
	// moved members travel inside properties and the property bounds
	// apply to them.
	UnknownToProperties
)

// UnknownFieldsModes lists the names ParseUnknownFields takes.
var UnknownFieldsModes = []string{"refuse", "properties"}

func (u UnknownFields) String() string {
	if u == UnknownToProperties {
		return "properties"
	}
	return "refuse"
}

// ParseUnknownFields reads a mode by name: refuse or properties.
func ParseUnknownFields(s string) (UnknownFields, error) {
	switch s {
	case "refuse":
		return UnknownRefuse, nil
	case "properties":
		return UnknownToProperties, nil
	}
	return 0, fmt.Errorf("must be one of %s, got %q", strings.Join(UnknownFieldsModes, ", "), s)
}

// DecodeOptions are the options of DecodeWith.
type DecodeOptions struct {
	MaxEvents     int           // events in the body; 0: no limit
	UnknownFields UnknownFields // what becomes of unknown top-level members
}

// member is one member of a JSON object: its name and its value, compact.
type member struct {
	name  string
	value []byte
}

// moveUnknown rewrites one event's JSON so that its top-level members that
// the event schema does not have are members of its properties. It returns
// raw itself and no names when there is nothing to move, or when raw is not
// something it can rewrite (not one object, a duplicate name, invalid
// UTF-8, a case variant of a field): the strict decoder then says what is
// wrong. A name that properties already has, or properties that is not an
// object, is an error.
func moveUnknown(raw []byte) ([]byte, []string, *decodeError) {
	top, err := readMembers(raw)
	if errors.Is(err, jsontext.ErrDuplicateName) {
		return nil, nil, describe(err) // the strict decoder would say "not a field" first
	}
	if err != nil {
		return raw, nil, nil
	}
	known := fieldNames[""]
	var (
		keep, moved []member
		props       []byte
	)
	for _, m := range top {
		switch {
		case m.name == "properties":
			props = m.value
		case slices.Contains(known, m.name):
			keep = append(keep, m)
		case slices.ContainsFunc(known, func(k string) bool { return strings.EqualFold(k, m.name) }):
			return raw, nil, nil
		default:
			moved = append(moved, m)
		}
	}
	if len(moved) == 0 {
		return raw, nil, nil
	}
	var existing []member
	if props != nil {
		if props[0] != '{' {
			return nil, nil, &decodeError{field: "properties", msg: fmt.Sprintf(
				"must be a JSON object to take the unknown field %q (unknown fields are moved into properties)", moved[0].name)}
		}
		if existing, err = readMembers(props); err != nil {
			return raw, nil, nil // the strict decoder or the validator names it
		}
	}
	names := make([]string, len(moved))
	for i, m := range moved {
		if slices.ContainsFunc(existing, func(e member) bool { return e.name == m.name }) {
			return nil, nil, &decodeError{field: m.name, msg: fmt.Sprintf(
				"is not a field of the event schema and cannot be moved into properties: properties already has %q, which is not overwritten; nothing was accepted", m.name)}
		}
		names[i] = m.name
	}
	out := make([]byte, 0, len(raw)+16)
	out = append(out, '{')
	for _, m := range keep {
		out = appendMember(out, m)
		out = append(out, ',')
	}
	out, _ = jsontext.AppendQuote(out, "properties")
	out = append(out, ':', '{')
	for i, m := range slices.Concat(existing, moved) {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendMember(out, m)
	}
	out = append(out, '}', '}')
	return out, names, nil
}

func appendMember(out []byte, m member) []byte {
	out, _ = jsontext.AppendQuote(out, m.name) // the name was read as valid UTF-8
	out = append(out, ':')
	return append(out, m.value...)
}

// readMembers reads the members of one JSON object, in order, with compact
// values. It fails on anything but exactly one object, a duplicate name or
// invalid UTF-8.
func readMembers(raw []byte) ([]member, error) {
	d := jsontext.NewDecoder(bytes.NewReader(raw))
	tok, err := d.ReadToken()
	if err != nil {
		return nil, err
	}
	if tok.Kind() != '{' {
		return nil, errors.New("not an object")
	}
	var out []member
	for d.PeekKind() != '}' {
		tok, err := d.ReadToken()
		if err != nil {
			return nil, err
		}
		name := tok.String() // before the next read voids the token
		v, err := d.ReadValue()
		if err != nil {
			return nil, err
		}
		v = v.Clone()
		if err := v.Compact(); err != nil {
			return nil, err
		}
		out = append(out, member{name: name, value: v})
	}
	if _, err := d.ReadToken(); err != nil {
		return nil, err
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return nil, errors.New("more than one value")
	}
	return out, nil
}
