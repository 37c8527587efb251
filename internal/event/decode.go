package event

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	json "github.com/goccy/go-json"
)

// Body formats that carry events.
const (
	ContentTypeJSON   = "application/json"     // one event, or an array of events
	ContentTypeNDJSON = "application/x-ndjson" // one event per line
)

// MediaType normalises a Content-Type header to one of the body formats, or
// returns "" if it is not one. application/jsonl, application/ndjson and
// application/jsonlines are taken as NDJSON.
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
	Raw    []byte       // the event's JSON as sent; aliases the body
	Errors []FieldError // decode errors; empty if it decoded
}

// Decode splits a body of the given media type into events and decodes each,
// so that a bad event is reported by its index and does not hide the others.
// It returns an error only for a body that cannot be split (not JSON, or more
// than maxEvents events when maxEvents > 0). It does not validate the events:
// call Event.Validate for that.
func Decode(body []byte, mediaType string, maxEvents int) ([]Decoded, error) {
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
		if err := decodeOne(raw, &out[i].Event); err != nil {
			out[i].Errors = []FieldError{{Index: i, Field: err.field, Message: err.msg}}
		}
	}
	return out, nil
}

type decodeError struct{ field, msg string }

// decodeOne decodes one event. A JSON object followed by anything but space
// is an error (the single-object form of application/json).
func decodeOne(raw []byte, e *Event) *decodeError {
	if len(raw) == 0 || raw[0] != '{' {
		return &decodeError{msg: "event must be a JSON object"}
	}
	err := json.Unmarshal(raw, e)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	var pe *time.ParseError
	switch {
	case errors.As(err, &te):
		field := te.Field
		// goccy names the field "Event.location.latitude"; keep the JSON path.
		if _, rest, ok := strings.Cut(field, "."); ok && strings.HasPrefix(field, "Event.") {
			field = rest
		}
		return &decodeError{field: field, msg: fmt.Sprintf("must be %s, got %s", jsonKind(te.Type.Kind().String()), te.Value)}
	case errors.As(err, &pe):
		return &decodeError{field: "occurred_at", msg: "must be an RFC 3339 timestamp such as 2026-01-14T21:00:00Z"}
	}
	return &decodeError{msg: "invalid JSON: " + cleanJSONError(err)}
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
	return strings.TrimPrefix(err.Error(), "json: ")
}

// Marshal encodes a value with the codec the pipeline uses everywhere.
func Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes a value with the codec the pipeline uses everywhere.
func Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// AppendNDJSON appends events to buf as NDJSON.
func AppendNDJSON(buf []byte, events ...Event) ([]byte, error) {
	for i := range events {
		b, err := json.Marshal(&events[i])
		if err != nil {
			return buf, fmt.Errorf("encode event %q: %w", events[i].EventID, err)
		}
		buf = append(buf, b...)
		buf = append(buf, '\n')
	}
	return buf, nil
}
