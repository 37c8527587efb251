package event

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"

	json "github.com/goccy/go-json"
	"github.com/goccy/go-json/jsontext"
	jsonv2 "github.com/goccy/go-json/v2"
)

// Body formats that carry events.
const (
	ContentTypeJSON   = "application/json"     // one event, or an array of events
	ContentTypeNDJSON = "application/x-ndjson" // one event per line
)

// MediaTypes are the media types of bodies of events, as a Content-Type
// names them: JSON, and NDJSON under its several names.
var MediaTypes = []string{ContentTypeJSON, ContentTypeNDJSON, "application/ndjson", "application/jsonl",
	"application/x-jsonlines", "application/jsonlines"}

// MediaType normalises a Content-Type header to one of the body formats, or
// returns "" if it is not one. application/jsonl, application/ndjson and
// application/jsonlines are taken as NDJSON. An empty one is JSON (broker
// messages of old producers); ingest requires a Content-Type.
func MediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	switch strings.ToLower(strings.TrimSpace(mt)) {
	case "application/json", "":
		return ContentTypeJSON
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines":
		return ContentTypeNDJSON
	}
	return ""
}

// ErrTooManyEvents is returned by Decode when a body holds more events than allowed.
var ErrTooManyEvents = errors.New("too many events")

// Decoded is one event of a body, decoded, with its raw JSON (which the
// dead-letter path keeps) and any problems found while decoding it.
type Decoded struct {
	Event  Event
	Raw    []byte       // the event's JSON as sent (aliases the body), or as rewritten when Moved is set
	Errors []FieldError // decode errors; empty if it decoded
	// Moved names the unknown top-level fields moved into properties
	// (DecodeOptions.UnknownFields); Raw is then the rewritten event.
	Moved []string
}

// Decode splits a body of the given media type into events and decodes each,
// so that a bad event is reported by its index and does not hide the others.
// It returns an error only for a body that cannot be split (not JSON, or more
// than maxEvents events when maxEvents > 0). It does not validate the events:
// call Event.Validate for that.
func Decode(body []byte, mediaType string, maxEvents int) ([]Decoded, error) {
	return DecodeWith(body, mediaType, DecodeOptions{MaxEvents: maxEvents})
}

// DecodeWith is Decode with options: with UnknownToProperties, the unknown
// top-level fields of an event are moved into its properties (see
// UnknownToProperties) and Raw is the event rewritten so.
func DecodeWith(body []byte, mediaType string, opts DecodeOptions) ([]Decoded, error) {
	maxEvents := opts.MaxEvents
	var raws [][]byte
	switch mediaType {
	case ContentTypeNDJSON:
		for line := range bytes.Lines(body) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if maxEvents > 0 && len(raws) >= maxEvents {
				return nil, fmt.Errorf("%w: more than %d", ErrTooManyEvents, maxEvents)
			}
			raws = append(raws, line)
		}
	case ContentTypeJSON:
		trimmed := bytes.TrimSpace(body)
		switch {
		case len(trimmed) == 0:
			return nil, errors.New("empty body: send one event as a JSON object, several as a JSON array or as NDJSON")
		case trimmed[0] == '{':
			raws = [][]byte{trimmed}
		case trimmed[0] == '[':
			var arr []json.RawMessage
			if err := json.Unmarshal(trimmed, &arr); err != nil {
				return nil, fmt.Errorf("body is not a JSON array of events: %s", cleanJSONError(err))
			}
			if maxEvents > 0 && len(arr) > maxEvents {
				return nil, fmt.Errorf("%w: %d, the limit is %d", ErrTooManyEvents, len(arr), maxEvents)
			}
			raws = make([][]byte, len(arr))
			for i, r := range arr {
				raws[i] = r
			}
		default:
			return nil, errors.New("body must be a JSON object (one event) or a JSON array (several events)")
		}
	default:
		return nil, fmt.Errorf("unsupported media type %q", mediaType)
	}
	out := make([]Decoded, len(raws))
	for i, raw := range raws {
		out[i].Raw = raw
		if opts.UnknownFields == UnknownToProperties {
			moved, names, err := moveUnknown(raw)
			if err != nil {
				out[i].Errors = []FieldError{{Index: i, Field: err.field, Message: err.msg}}
				continue
			}
			out[i].Raw, out[i].Moved = moved, names
			raw = moved
		}
		if err := decodeOne(raw, &out[i].Event); err != nil {
			out[i].Errors = []FieldError{{Index: i, Field: err.field, Message: err.msg}}
		}
	}
	return out, nil
}

type decodeError struct{ field, msg string }

// The decoder of one event is strict: input that is not exactly valid is
// refused, never repaired. goccy/go-json's v1 API (json.Unmarshal, the
// semantics of encoding/json) matches member names case-insensitively (its
// struct decoder folds keys: internal/decoder/struct_keys.go), keeps the last
// of duplicate names, replaces invalid UTF-8 by U+FFFD, drops unknown members
// and reads times loosely (an offset of +24:00, an hour of one digit). Its v2
// API (the semantics of encoding/json/v2) does none of that: names are exact,
// a duplicate name or invalid UTF-8 is an error with the JSON pointer of the
// member, and RejectUnknownMembers refuses a member the type does not have.
// occurred_at is read by unmarshalTime: RFC 3339 exactly (ParseRFC3339),
// from MinOccurredAt on.
var strictEvent = jsonv2.JoinOptions(
	jsonv2.RejectUnknownMembers(true),
	jsonv2.WithUnmarshalers(jsonv2.UnmarshalFunc(unmarshalTime)),
)

// decodeOne decodes one event. A JSON object followed by anything but space
// is an error (the single-object form of application/json).
func decodeOne(raw []byte, e *Event) *decodeError {
	if len(raw) == 0 || raw[0] != '{' {
		return &decodeError{msg: "event must be a JSON object"}
	}
	err := jsonv2.Unmarshal(raw, e, strictEvent)
	if err == nil {
		return nil
	}
	return describe(err)
}

// describe turns a decode error into the field it is about (a JSON path such
// as location.latitude; "" for the event as a whole) and a message.
func describe(err error) *decodeError {
	var (
		serr *jsonv2.SemanticError
		terr *timeError
		xerr *jsontext.SyntacticError
	)
	switch {
	case errors.As(err, &terr):
		return &decodeError{field: "occurred_at", msg: terr.msg}
	case errors.As(err, &serr):
		field := fieldPath(serr.JSONPointer)
		switch {
		case errors.Is(serr.Err, jsonv2.ErrUnknownName):
			return &decodeError{field: field, msg: unknownName(serr.JSONPointer)}
		case serr.Err != nil && serr.Err.Error() == "value out of range":
			return &decodeError{field: field, msg: "is out of range: " + string(serr.JSONValue)}
		case field != "" && serr.GoType != nil:
			return &decodeError{field: field, msg: fmt.Sprintf("must be %s, got %s", jsonKind(serr.GoType.Kind().String()), kindName(serr.JSONKind))}
		}
	case errors.As(err, &xerr):
		field := fieldPath(xerr.JSONPointer)
		switch {
		case errors.Is(xerr.Err, jsontext.ErrDuplicateName):
			return &decodeError{field: field, msg: "is given more than once: each field may appear once"}
		case xerr.Err != nil && xerr.Err.Error() == invalidUTF8:
			if field == "" {
				return &decodeError{msg: "a field name is not valid UTF-8"}
			}
			return &decodeError{field: field, msg: "is not valid UTF-8 (a name or a value within it)"}
		}
	}
	return &decodeError{msg: "invalid JSON: " + cleanJSONError(err)}
}

// invalidUTF8 is the text of the error jsontext reports for invalid UTF-8
// (it does not export the error); TestDecodeStrict holds it.
const invalidUTF8 = "invalid UTF-8"

// fieldPath turns a JSON pointer (/location/latitude) into the dotted path
// the API names fields by (location.latitude).
func fieldPath(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

// unknownName is the message for a member the event does not have; one that
// differs from a field only by case says which.
func unknownName(p jsontext.Pointer) string {
	name := p.LastToken()
	for _, known := range fieldNames[fieldPath(p.Parent())] {
		if strings.EqualFold(known, name) {
			return fmt.Sprintf("is not a field: names are exact and case-sensitive; did you mean %q?", known)
		}
	}
	return "is not a field of the event schema (GET /v1/schema); nothing was accepted"
}

// fieldNames lists the JSON names of the fields of each object of an event,
// by the object's path ("" for the event).
var fieldNames = map[string][]string{
	"":         jsonNames(reflect.TypeFor[Event]()),
	"user":     jsonNames(reflect.TypeFor[User]()),
	"location": jsonNames(reflect.TypeFor[Location]()),
}

func jsonNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		out = append(out, jsonName(t.Field(i)))
	}
	return out
}

func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "another kind of value"
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "float64", "float32", "int", "int64", "int32":
		return "a number"
	case "struct", "map":
		return "an object"
	case "slice":
		return "an array"
	case "bool":
		return "a boolean"
	}
	return goKind
}

func cleanJSONError(err error) string {
	return strings.TrimPrefix(strings.TrimPrefix(err.Error(), "json: "), "jsontext: ")
}

// Marshal encodes a value with the codec the pipeline uses everywhere.
func Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes a value with the codec the pipeline uses everywhere.
func Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// AppendNDJSON appends events to buf as NDJSON.
func AppendNDJSON(buf []byte, events ...Event) ([]byte, error) {
	le := NewLineEncoder()
	for i := range events {
		b, err := le.Encode(&events[i])
		if err != nil {
			return buf, fmt.Errorf("encode event %q: %w", events[i].EventID, err)
		}
		buf = append(buf, b...)
	}
	return buf, nil
}

// LineEncoder encodes values one after another as Marshal does, each
// followed by a newline (a line of NDJSON), into a buffer of its own that it
// reuses: no allocation per value once the buffer has grown.
type LineEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// NewLineEncoder returns a LineEncoder.
func NewLineEncoder() *LineEncoder {
	le := &LineEncoder{}
	le.enc = json.NewEncoder(&le.buf)
	return le
}

// Encode returns v's JSON and a newline, valid until the next call.
func (le *LineEncoder) Encode(v any) ([]byte, error) {
	le.buf.Reset()
	if err := le.enc.Encode(v); err != nil {
		return nil, err
	}
	return le.buf.Bytes(), nil
}
