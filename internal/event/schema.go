package event

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind is the logical type of a column.
type Kind string

// Column kinds.
const (
	KindString    Kind = "string"
	KindFloat     Kind = "float"
	KindInt       Kind = "int"
	KindTimestamp Kind = "timestamp"
	KindJSON      Kind = "json" // a JSON object of strings stored as text (attributes)
	// KindObject is any JSON object, stored in the store's JSON type
	// (DuckDB JSON, BigQuery JSON): properties.
	KindObject Kind = "object"
)

// Column is one leaf field of a Record, flattened: nested JSON objects become
// prefixes (location.latitude -> location_latitude).
type Column struct {
	Name        string   // column name, e.g. location_latitude
	Path        []string // JSON path, e.g. [location latitude]
	Kind        Kind
	Required    bool // NOT NULL
	Description string
}

var (
	columnsOnce sync.Once
	columns     []Column
)

// Columns returns the flattened columns of a Record, in the order of Values.
func Columns() []Column {
	columnsOnce.Do(func() {
		columns = flatten(reflect.TypeFor[Record](), nil, true)
	})
	return columns
}

var (
	timeType       = reflect.TypeFor[time.Time]()
	rawMessageType = reflect.TypeFor[json.RawMessage]()
)

// flatten walks a struct type and returns its leaf columns. required is false
// once the walk has passed through an optional (pointer) struct.
func flatten(t reflect.Type, prefix []string, required bool) []Column {
	var out []Column
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("column") == "-" {
			continue
		}
		if f.Anonymous {
			out = append(out, flatten(f.Type, prefix, required)...)
			continue
		}
		name := jsonName(f)
		path := append(append([]string(nil), prefix...), name)
		tag := parseSchemaTag(f.Tag.Get("schema"))
		ft := f.Type
		fieldRequired := required
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
			// A pointer leaf (latitude) is required when its tag says so; a
			// pointer struct (weather) makes everything below it nullable.
			if ft.Kind() == reflect.Struct && ft != timeType {
				fieldRequired = false
			}
		}
		if ft.Kind() == reflect.Struct && ft != timeType {
			out = append(out, flatten(ft, path, fieldRequired)...)
			continue
		}
		col := Column{
			Name:        strings.Join(path, "_"),
			Path:        path,
			Description: f.Tag.Get("desc"),
		}
		switch {
		case ft == timeType:
			col.Kind = KindTimestamp
		case ft.Kind() == reflect.String:
			col.Kind = KindString
		case ft.Kind() == reflect.Float64:
			col.Kind = KindFloat
		case ft.Kind() == reflect.Int || ft.Kind() == reflect.Int64:
			col.Kind = KindInt
		case ft.Kind() == reflect.Map:
			col.Kind = KindJSON
		case ft == rawMessageType:
			col.Kind = KindObject
		default:
			panic(fmt.Sprintf("event: no column kind for %s (%s)", col.Name, ft))
		}
		// In the stored record a field is NOT NULL when the event requires it,
		// or when it is a non-pointer field outside any optional struct
		// (strings default to "", numbers to 0), except maps (JSON null).
		col.Required = fieldRequired && (tag.required || (f.Type.Kind() != reflect.Pointer && ft.Kind() != reflect.Map && ft != rawMessageType))
		out = append(out, col)
	}
	return out
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

type schemaTag struct {
	required      bool
	minLength     int
	maxLength     int
	keyMaxLength  int
	maxProperties int
	maxBytes      int // of a JSON object (properties), as sent
	maxDepth      int // nesting of a JSON object; the object itself is level 1
	maxKeys       int // member names of a JSON object, at every level, in all
	// reserved is a top-level member of a JSON object (properties) that is
	// bounded on its own, by reservedMaxBytes and reservedMaxKeys, and
	// not counted against maxBytes and maxKeys: _segment, where the
	// Segment endpoint keeps the message's own fields.
	reserved         string
	reservedMaxBytes int
	reservedMaxKeys  int
	pattern          string
	minimum          *float64
	maximum          *float64
	hasLengthLimit   bool
}

// parseSchemaTag reads `schema:"required,maxLength=64,pattern=^...$"`. The
// pattern must come last: it may contain commas.
func parseSchemaTag(s string) schemaTag {
	var t schemaTag
	for s != "" {
		var part string
		if strings.HasPrefix(s, "pattern=") {
			part, s = s, ""
		} else {
			part, s, _ = strings.Cut(s, ",")
		}
		key, val, _ := strings.Cut(part, "=")
		atoi := func() int {
			n, err := strconv.Atoi(val)
			if err != nil {
				panic(fmt.Sprintf("event: bad schema tag %q: %v", part, err))
			}
			return n
		}
		atof := func() *float64 {
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				panic(fmt.Sprintf("event: bad schema tag %q: %v", part, err))
			}
			return &f
		}
		switch key {
		case "required":
			t.required = true
		case "minLength":
			t.minLength = atoi()
		case "maxLength":
			t.maxLength = atoi()
			t.hasLengthLimit = true
		case "keyMaxLength":
			t.keyMaxLength = atoi()
		case "maxProperties":
			t.maxProperties = atoi()
		case "maxBytes":
			t.maxBytes = atoi()
		case "maxDepth":
			t.maxDepth = atoi()
		case "maxKeys":
			t.maxKeys = atoi()
		case "reserved":
			t.reserved = val
		case "reservedMaxBytes":
			t.reservedMaxBytes = atoi()
		case "reservedMaxKeys":
			t.reservedMaxKeys = atoi()
		case "pattern":
			t.pattern = val
		case "minimum":
			t.minimum = atof()
		case "maximum":
			t.maximum = atof()
		default:
			panic(fmt.Sprintf("event: unknown schema tag key %q", key))
		}
	}
	return t
}

// SchemaID is the $id of the event JSON Schema.
const SchemaID = "https://skyjoin.dev/schemas/event.json"

var (
	schemaOnce sync.Once
	schemaDoc  []byte
)

// JSONSchema returns the JSON Schema (draft 2020-12) of an Event, generated
// from the Go type. Ingest accepts exactly the documents it accepts, except
// for what no schema expresses: the range of occurred_at (MinOccurredAt to
// the receiver's clock plus its clock skew), duplicate member names and
// invalid UTF-8, all of which ingest refuses too.
func JSONSchema() []byte {
	schemaOnce.Do(func() {
		s := objectSchema(reflect.TypeFor[Event]())
		s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
		s["$id"] = SchemaID
		s["title"] = "skyjoin user event"
		s["$defs"] = map[string]any{propertyValueDef: propertyValueSchema(lim.properties.keyMaxLength)}
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			panic(err)
		}
		schemaDoc = b
	})
	return schemaDoc
}

// propertyValueDef is the name, under $defs, of the schema of any value
// within properties: at every level, a member's name is 1 to keyMaxLength
// characters.
const propertyValueDef = "propertyValue"

func propertyValueSchema(keyMaxLength int) map[string]any {
	self := map[string]any{"$ref": "#/$defs/" + propertyValueDef}
	return map[string]any{
		"description":          fmt.Sprintf("Any JSON value within properties; at every level, a member's name is 1 to %d characters.", keyMaxLength),
		"propertyNames":        map[string]any{"minLength": 1, "maxLength": keyMaxLength},
		"additionalProperties": self,
		"items":                self,
	}
}

func objectSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous {
				walk(f.Type)
				continue
			}
			name := jsonName(f)
			tag := parseSchemaTag(f.Tag.Get("schema"))
			if tag.required {
				required = append(required, name)
			}
			p := fieldSchema(f.Type, tag)
			if d := f.Tag.Get("desc"); d != "" {
				p["description"] = d
			}
			props[name] = p
		}
	}
	walk(t)
	// Field names are exact: a member the type does not have is refused.
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if t == reflect.TypeFor[Location]() {
		// Coordinates come both or neither.
		s["dependentRequired"] = map[string][]string{"latitude": {"longitude"}, "longitude": {"latitude"}}
	}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

func fieldSchema(t reflect.Type, tag schemaTag) map[string]any {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawMessageType:
		// Any JSON object. Its bounds in bytes, depth and names in all are
		// not JSON Schema keywords: the description states them, and the
		// x- keywords carry them for tools.
		s := map[string]any{"type": "object", "x-maxBytes": tag.maxBytes, "x-maxDepth": tag.maxDepth, "x-maxKeys": tag.maxKeys}
		if tag.keyMaxLength > 0 {
			// Names are bounded at every level, as Validate bounds them:
			// a schema of its own that applies itself to every member and
			// element (JSONSchema defines it).
			s["$ref"] = "#/$defs/" + propertyValueDef
		}
		if tag.reserved != "" {
			// Its own bounds (of its value); the object's x-maxBytes and
			// x-maxKeys do not count it.
			s["properties"] = map[string]any{tag.reserved: map[string]any{
				"x-maxBytes": tag.reservedMaxBytes, "x-maxKeys": tag.reservedMaxKeys,
				"description": fmt.Sprintf("Where the Segment-compatible endpoint keeps the message's own fields (context, integrations, ids, timestamps...). Bounded on its own: its value holds at most %d bytes of JSON and %d entries (names and array elements), which do not count against the x-maxBytes and x-maxKeys of the object it is in (its name is not an entry).", tag.reservedMaxBytes, tag.reservedMaxKeys),
			}}
		}
		return s
	case t.Kind() == reflect.Struct:
		return objectSchema(t)
	case t.Kind() == reflect.String:
		s := map[string]any{"type": "string"}
		if tag.minLength > 0 {
			s["minLength"] = tag.minLength
		}
		if tag.hasLengthLimit {
			s["maxLength"] = tag.maxLength
		}
		if tag.pattern != "" {
			s["pattern"] = tag.pattern
		}
		return s
	case t.Kind() == reflect.Float64:
		s := map[string]any{"type": "number"}
		if tag.minimum != nil {
			s["minimum"] = *tag.minimum
		}
		if tag.maximum != nil {
			s["maximum"] = *tag.maximum
		}
		return s
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return map[string]any{"type": "integer"}
	case t.Kind() == reflect.Map:
		s := map[string]any{
			"type":                 "object",
			"additionalProperties": map[string]any{"type": "string", "maxLength": tag.maxLength},
		}
		if tag.maxProperties > 0 {
			s["maxProperties"] = tag.maxProperties
		}
		if tag.keyMaxLength > 0 {
			s["propertyNames"] = map[string]any{"minLength": 1, "maxLength": tag.keyMaxLength}
		}
		return s
	}
	panic(fmt.Sprintf("event: no JSON Schema for %s", t))
}

// DuckDBType is the DuckDB type of a column kind.
func DuckDBType(k Kind) string {
	switch k {
	case KindString, KindJSON:
		return "VARCHAR"
	case KindObject:
		return "JSON"
	case KindFloat:
		return "DOUBLE"
	case KindInt:
		return "INTEGER"
	case KindTimestamp:
		return "TIMESTAMP"
	}
	panic("event: unknown kind " + string(k))
}

// DuckDBColumns returns the column definitions of a Record for DuckDB's
// CREATE TABLE, one per line, in the order of Values.
func DuckDBColumns() string {
	var b strings.Builder
	for i, c := range Columns() {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, "  %s %s", c.Name, DuckDBType(c.Kind))
		if c.Required {
			b.WriteString(" NOT NULL")
		}
	}
	return b.String()
}

var typeOfEvent = reflect.TypeFor[Event]()

func typeOf(v any) reflect.Type { return reflect.TypeOf(v) }
