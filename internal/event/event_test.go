package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func f64(v float64) *float64 { return &v }

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func validEvent() Event {
	return Event{
		EventID:    "evt-0001",
		EventType:  TypeUserObserved,
		OccurredAt: now.Add(-time.Minute),
		User: User{ID: "7a0eed16-9430-4d68-901f-c0d4c1c3bf00", Username: "yellowpeacock117", Name: "Jennie Nichols",
			Title: "Miss", FirstName: "Jennie", LastName: "Nichols", Email: "jennie.nichols@example.com",
			Phone: "(272) 790-0888", Cell: "(489) 330-2385", Gender: "female", Nationality: "US",
			BirthDate: "1992-03-08", PictureURL: "https://example.com/p.jpg"},
		Location: Location{Latitude: f64(45.78), Longitude: f64(-108.5), Street: "8929 Valwood Pkwy", City: "Billings",
			State: "Montana", Country: "United States", Postcode: "63104", Timezone: "-7:00"},
		Attributes: map[string]string{"source": "test"},
	}
}

// mutation changes a valid event (as JSON) so that it becomes invalid in
// exactly one field.
type mutation struct {
	name  string
	field string // the field both validators must name
	apply func(m map[string]any)
}

func sub(m map[string]any, k string) map[string]any { return m[k].(map[string]any) }

var mutations = []mutation{
	{"missing event_id", "event_id", func(m map[string]any) { delete(m, "event_id") }},
	{"empty event_id", "event_id", func(m map[string]any) { m["event_id"] = "" }},
	{"event_id with space", "event_id", func(m map[string]any) { m["event_id"] = "a b" }},
	{"event_id too long", "event_id", func(m map[string]any) { m["event_id"] = strings.Repeat("a", 129) }},
	{"missing event_type", "event_type", func(m map[string]any) { delete(m, "event_type") }},
	{"event_type with a tab", "event_type", func(m map[string]any) { m["event_type"] = "Order\tCompleted" }},
	{"event_type with a leading space", "event_type", func(m map[string]any) { m["event_type"] = " Order Completed" }},
	{"event_type with a trailing space", "event_type", func(m map[string]any) { m["event_type"] = "Order Completed " }},
	{"event_type too long", "event_type", func(m map[string]any) { m["event_type"] = strings.Repeat("e", 129) }},
	{"missing occurred_at", "occurred_at", func(m map[string]any) { delete(m, "occurred_at") }},
	{"missing user", "user", func(m map[string]any) { delete(m, "user") }},
	{"missing user.id", "user.id", func(m map[string]any) { delete(sub(m, "user"), "id") }},
	{"long user.email", "user.email", func(m map[string]any) { sub(m, "user")["email"] = strings.Repeat("e", 257) }},
	{"long user.nationality", "user.nationality", func(m map[string]any) { sub(m, "user")["nationality"] = "ABCDEFGHI" }},
	{"missing latitude", "location.latitude", func(m map[string]any) { delete(sub(m, "location"), "latitude") }},
	{"missing longitude", "location.longitude", func(m map[string]any) { delete(sub(m, "location"), "longitude") }},
	{"latitude > 90", "location.latitude", func(m map[string]any) { sub(m, "location")["latitude"] = 90.5 }},
	{"latitude < -90", "location.latitude", func(m map[string]any) { sub(m, "location")["latitude"] = -91 }},
	{"longitude > 180", "location.longitude", func(m map[string]any) { sub(m, "location")["longitude"] = 180.01 }},
	{"long city", "location.city", func(m map[string]any) { sub(m, "location")["city"] = strings.Repeat("c", 129) }},
	{"long attribute value", "attributes.k", func(m map[string]any) { m["attributes"] = map[string]any{"k": strings.Repeat("v", 1025)} }},
	{"long attribute name", "attributes." + strings.Repeat("k", 65), func(m map[string]any) {
		m["attributes"] = map[string]any{strings.Repeat("k", 65): "v"}
	}},
	{"unknown field", "colour", func(m map[string]any) { m["colour"] = "red" }},
	{"field name in upper case", "EVENT_ID", func(m map[string]any) { m["EVENT_ID"] = m["event_id"]; delete(m, "event_id") }},
	{"unknown user field", "user.Email", func(m map[string]any) { sub(m, "user")["Email"] = "x@example.com" }},
	{"occurred_at not RFC 3339", "occurred_at", func(m map[string]any) { m["occurred_at"] = "2026-11-26 11:00:00Z" }},
	// properties: the JSON Schema's type and propertyNames, and its x-
	// bounds (checked by boundsVocab), against Validate's.
	{"properties as an array", "properties", func(m map[string]any) { m["properties"] = []any{1, 2} }},
	{"properties as a string", "properties", func(m map[string]any) { m["properties"] = "amount=12.5" }},
	{"properties too deep", "properties", func(m map[string]any) { m["properties"] = nested(9) }},
	{"properties too deep within _segment", "properties._segment", func(m map[string]any) {
		m["properties"] = map[string]any{"_segment": nested(8)}
	}},
	{"a long property name", "properties." + strings.Repeat("n", 129), func(m map[string]any) {
		m["properties"] = map[string]any{strings.Repeat("n", 129): 1}
	}},
	{"a long nested property name", "properties.a." + strings.Repeat("n", 129), func(m map[string]any) {
		m["properties"] = map[string]any{"a": map[string]any{strings.Repeat("n", 129): 1}}
	}},
	{"an empty property name", "properties", func(m map[string]any) { m["properties"] = map[string]any{"": 1} }},
	{"too many property entries", "properties", func(m map[string]any) { m["properties"] = entries(257) }},
	{"too many property entries, nested", "properties", func(m map[string]any) {
		m["properties"] = map[string]any{"a": entries(200), "b": entries(55)}
	}},
	{"too many property entries beside _segment", "properties", func(m map[string]any) {
		p := entries(257)
		p["_segment"] = map[string]any{}
		m["properties"] = p
	}},
	{"too many entries within _segment", "properties._segment", func(m map[string]any) {
		m["properties"] = map[string]any{"_segment": entries(257)}
	}},
	{"too many property bytes", "properties", func(m map[string]any) {
		m["properties"] = map[string]any{"s": strings.Repeat("x", 16384)}
	}},
	{"too many bytes within _segment", "properties._segment", func(m map[string]any) {
		m["properties"] = map[string]any{"a": 1, "_segment": map[string]any{"s": strings.Repeat("x", 16380)}}
	}},
	{"too many attributes", "attributes", func(m map[string]any) {
		a := map[string]any{}
		for i := range 65 {
			a[fmt.Sprintf("k%d", i)] = "v"
		}
		m["attributes"] = a
	}},
}

// nested is n levels of objects: {"a": {"a": ... {"x": 1}}}.
func nested(n int) map[string]any {
	m := map[string]any{"x": 1}
	for range n - 1 {
		m = map[string]any{"a": m}
	}
	return m
}

// entries is an object of n members.
func entries(n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("k%03d", i)] = i
	}
	return m
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSONSchema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertVocabs()
	c.RegisterVocabulary(boundsVocab())
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatalf("compile generated schema: %v", err)
	}
	return s
}

// TestValidVariants: what both the schema and Validate accept beside the
// valid event: event names as trackers send them, no coordinates at all.
func TestValidVariants(t *testing.T) {
	s := compileSchema(t)
	base, _ := json.Marshal(validEvent())
	for _, v := range []struct {
		name  string
		apply func(map[string]any)
	}{
		{"tracker event name", func(m map[string]any) { m["event_type"] = "Order Completed" }},
		{"non-ASCII event name", func(m map[string]any) { m["event_type"] = "Commande passée" }},
		{"no location", func(m map[string]any) { delete(m, "location") }},
		{"valid nested properties", func(m map[string]any) {
			m["properties"] = map[string]any{"amount": 12.5, "currency": "EUR", "paid": true, "coupon": nil,
				"items":    []any{map[string]any{"sku": "a", "qty": 2}, map[string]any{"sku": "b", "qty": 1, "tags": []any{"x", "y"}}},
				"shipping": map[string]any{"days": 2, "express": false, "address": map[string]any{"city": "Paris"}}}
		}},
		{"properties of 8 levels", func(m map[string]any) { m["properties"] = nested(8) }},
		{"256 property entries", func(m map[string]any) { m["properties"] = entries(256) }},
		{"a property name of 128 characters", func(m map[string]any) {
			m["properties"] = map[string]any{strings.Repeat("n", 128): []any{1, "two", nil, false}}
		}},
		{"empty properties", func(m map[string]any) { m["properties"] = map[string]any{} }},
		{"256 entries beside a _segment of 256", func(m map[string]any) {
			p := entries(256)
			p["_segment"] = entries(256)
			m["properties"] = p
		}},
		{"16 KiB beside a _segment of 16 KiB", func(m map[string]any) {
			m["properties"] = map[string]any{"s": strings.Repeat("x", 16364), "_segment": map[string]any{"s": strings.Repeat("x", 16376)}}
		}},
		{"a place without coordinates", func(m map[string]any) {
			delete(sub(m, "location"), "latitude")
			delete(sub(m, "location"), "longitude")
		}},
	} {
		t.Run(v.name, func(t *testing.T) {
			var doc map[string]any
			json.Unmarshal(base, &doc)
			v.apply(doc)
			b, _ := json.Marshal(doc)
			inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err := s.Validate(inst); err != nil {
				t.Errorf("schema refuses %s: %v", b, err)
			}
			var e Event
			if derr := decodeOne(b, &e); derr != nil {
				t.Fatalf("decode %s: %+v", b, derr)
			}
			if errs := e.Validate(0, now, DefaultMaxClockSkew); len(errs) != 0 {
				t.Errorf("Validate refuses %s: %v", b, errs)
			}
			if got := e.RequireLocation(0) != nil; got != !e.Location.HasCoordinates() {
				t.Errorf("RequireLocation: %v with coordinates %v", got, e.Location.HasCoordinates())
			}
		})
	}
}

// TestSchemaAndValidateAgree checks that the generated JSON Schema and the Go
// validator accept the same valid event and reject each mutation.
func TestSchemaAndValidateAgree(t *testing.T) {
	s := compileSchema(t)
	base, err := json.Marshal(validEvent())
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(base))
	if err := s.Validate(inst); err != nil {
		t.Fatalf("schema rejects the valid event: %v", err)
	}
	var e Event
	if err := decodeOne(base, &e); err != nil {
		t.Fatalf("decode the valid event: %+v", err)
	}
	if errs := e.Validate(0, now, DefaultMaxClockSkew); len(errs) != 0 {
		t.Fatalf("Validate rejects the valid event: %v", errs)
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			var doc map[string]any
			json.Unmarshal(base, &doc)
			m.apply(doc)
			b, _ := json.Marshal(doc)

			inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err := s.Validate(inst); err == nil {
				t.Errorf("schema accepts %s", b)
			}
			var e Event
			var errs []FieldError
			if derr := decodeOne(b, &e); derr != nil {
				errs = []FieldError{{Field: derr.field, Message: derr.msg}}
			} else {
				errs = e.Validate(0, now, DefaultMaxClockSkew)
			}
			if len(errs) == 0 {
				t.Fatalf("Validate accepts %s", b)
			}
			named := false
			for _, fe := range errs {
				// A missing object is reported by Validate at its required
				// children (user.id, location.latitude).
				if fe.Field == m.field || strings.HasPrefix(fe.Field, m.field+".") {
					named = true
				}
			}
			if !named {
				t.Errorf("Validate errors %v do not name %s", errs, m.field)
			}
		})
	}
}

func TestValidateFuture(t *testing.T) {
	e := validEvent()
	e.OccurredAt = now.Add(DefaultMaxClockSkew - time.Second)
	if errs := e.Validate(3, now, DefaultMaxClockSkew); len(errs) != 0 {
		t.Fatalf("within skew: %v", errs)
	}
	e.OccurredAt = now.Add(DefaultMaxClockSkew + time.Second)
	errs := e.Validate(3, now, DefaultMaxClockSkew)
	if len(errs) != 1 || errs[0].Field != "occurred_at" || errs[0].Index != 3 {
		t.Fatalf("future event: %v", errs)
	}
}

func TestColumnsFollowTheType(t *testing.T) {
	cols := Columns()
	names := map[string]bool{}
	for _, c := range cols {
		if names[c.Name] {
			t.Errorf("duplicate column %s", c.Name)
		}
		names[c.Name] = true
	}
	for name, want := range map[string]struct {
		kind     Kind
		required bool
	}{
		"event_id":            {KindString, true},
		"occurred_at":         {KindTimestamp, true},
		"user_id":             {KindString, true},
		"location_latitude":   {KindFloat, false},
		"attributes":          {KindJSON, false},
		"properties":          {KindObject, false},
		"weather_observed_at": {KindTimestamp, false},
		"weather_code":        {KindInt, false},
		"enrichment_status":   {KindString, true},
		"processed_at":        {KindTimestamp, true},
	} {
		var found *Column
		for i := range cols {
			if cols[i].Name == name {
				found = &cols[i]
			}
		}
		if found == nil {
			t.Errorf("no column %s", name)
			continue
		}
		if found.Kind != want.kind || found.Required != want.required {
			t.Errorf("column %s: kind %s required %v, want %s %v", name, found.Kind, found.Required, want.kind, want.required)
		}
	}
	if names["seq"] {
		t.Error("seq is the store's, not a record column")
	}
	ddl := DuckDBColumns()
	if got, want := strings.Count(ddl, "\n")+1, len(cols); got != want {
		t.Errorf("DDL has %d columns, want %d", got, want)
	}
}

func sampleRecord(withWeather bool) Record {
	r := Record{Event: validEvent(), Enrichment: Enrichment{Status: StatusUnavailable, Error: "provider down"},
		IngestedAt: now, ProcessedAt: now.Add(time.Second)}
	r.Properties = json.RawMessage(`{"amount":12.5,"items":["a","b"],"paid":true,"shipping":{"method":"express","days":2}}`)
	if withWeather {
		r.Weather = &Weather{ObservedAt: now.Truncate(15 * time.Minute), TemperatureC: 12.5, ApparentTemperature: 10.1,
			RelativeHumidity: 80, PrecipitationMM: 0.2, WindSpeedKMH: 14.4, WindDirectionDeg: 230, WeatherCode: 61,
			Condition: "Slight rain", Provider: "sim", CellLatitude: 45.75, CellLongitude: -108.55}
		r.Enrichment = Enrichment{Status: StatusEnriched}
	}
	return r
}

// TestValuesMatchColumns checks the hand-written Values against the columns
// derived from the type by reflection: same count, and each value is the
// field at the column's JSON path.
func TestValuesMatchColumns(t *testing.T) {
	for _, withWeather := range []bool{true, false} {
		r := sampleRecord(withWeather)
		vals := r.Values()
		cols := Columns()
		if len(vals) != len(cols) {
			t.Fatalf("Values has %d values, Columns %d", len(vals), len(cols))
		}
		b, _ := json.Marshal(r)
		var doc map[string]any
		json.Unmarshal(b, &doc)
		for i, c := range cols {
			var cur any = doc
			for _, p := range c.Path {
				m, _ := cur.(map[string]any)
				cur = m[p]
			}
			got := vals[i]
			switch c.Kind {
			case KindTimestamp:
				if cur == nil {
					if got != nil {
						t.Errorf("%s: got %v, want nil", c.Name, got)
					}
					continue
				}
				want, _ := time.Parse(time.RFC3339Nano, cur.(string))
				if g, ok := got.(time.Time); !ok || !g.Equal(want) {
					t.Errorf("%s: got %v, want %v", c.Name, got, want)
				}
			case KindJSON, KindObject:
				if cur == nil {
					if got != nil {
						t.Errorf("%s: got %v, want nil", c.Name, got)
					}
					continue
				}
				var m any
				json.Unmarshal([]byte(got.(string)), &m)
				if !reflect.DeepEqual(m, cur) {
					t.Errorf("%s: got %v, want %v", c.Name, m, cur)
				}
			case KindInt:
				if fmt.Sprint(got) != fmt.Sprint(cur) {
					t.Errorf("%s: got %v, want %v", c.Name, got, cur)
				}
			default:
				if cur == nil && (got == "" || got == nil) {
					continue
				}
				if fmt.Sprint(got) != fmt.Sprint(cur) {
					t.Errorf("%s: got %v (%T), want %v", c.Name, got, got, cur)
				}
			}
		}
		back, err := FromValues(vals)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Errorf("FromValues(Values(r)) differs:\n got %+v\nwant %+v", back, r)
		}
	}
}

func TestDecode(t *testing.T) {
	one, _ := json.Marshal(validEvent())
	tests := []struct {
		name      string
		body      string
		mediaType string
		max       int
		wantN     int
		wantErr   bool
		badIndex  map[int]string // index -> field named
	}{
		{name: "object", body: string(one), mediaType: ContentTypeJSON, wantN: 1},
		{name: "array", body: "[" + string(one) + "," + string(one) + "]", mediaType: ContentTypeJSON, wantN: 2},
		{name: "ndjson", body: string(one) + "\n\n" + string(one) + "\n", mediaType: ContentTypeNDJSON, wantN: 2},
		{name: "ndjson no final newline", body: string(one) + "\n" + string(one), mediaType: ContentTypeNDJSON, wantN: 2},
		{name: "empty", body: "  ", mediaType: ContentTypeJSON, wantErr: true},
		{name: "scalar", body: "42", mediaType: ContentTypeJSON, wantErr: true},
		{name: "broken array", body: "[" + string(one), mediaType: ContentTypeJSON, wantErr: true},
		{name: "too many", body: "[" + string(one) + "," + string(one) + "]", mediaType: ContentTypeJSON, max: 1, wantErr: true},
		{name: "too many ndjson", body: string(one) + "\n" + string(one), mediaType: ContentTypeNDJSON, max: 1, wantErr: true},
		{name: "wrong types by index", mediaType: ContentTypeJSON, wantN: 4,
			body:     "[" + string(one) + `,{"event_id":"x","location":{"latitude":"12.5"}},{"event_id":"y","occurred_at":"yesterday"},{"event_id":7}]`,
			badIndex: map[int]string{1: "location.latitude", 2: "occurred_at", 3: "event_id"}},
		{name: "ndjson line not an object", body: string(one) + "\n[1]\n", mediaType: ContentTypeNDJSON, wantN: 2, badIndex: map[int]string{1: ""}},
		{name: "ndjson broken line", body: "{\"event_id\":\n" + string(one), mediaType: ContentTypeNDJSON, wantN: 2, badIndex: map[int]string{0: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.body), tt.mediaType, tt.max)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if len(got) != tt.wantN {
				t.Fatalf("got %d events, want %d", len(got), tt.wantN)
			}
			for i, d := range got {
				field, bad := tt.badIndex[i]
				if bad != (len(d.Errors) > 0) {
					t.Errorf("event %d: errors %v, want bad=%v", i, d.Errors, bad)
					continue
				}
				if bad && d.Errors[0].Field != field {
					t.Errorf("event %d: field %q, want %q (%v)", i, d.Errors[0].Field, field, d.Errors)
				}
				if bad && d.Errors[0].Index != i {
					t.Errorf("event %d: index %d", i, d.Errors[0].Index)
				}
			}
		})
	}
}

func TestMediaType(t *testing.T) {
	for in, want := range map[string]string{
		"application/json":                ContentTypeJSON,
		"application/json; charset=utf-8": ContentTypeJSON,
		"":                                ContentTypeJSON,
		"application/x-ndjson":            ContentTypeNDJSON,
		"Application/JSONL":               ContentTypeNDJSON,
		"text/plain":                      "",
		"multipart/form-data":             "",
	} {
		if got := MediaType(in); got != want {
			t.Errorf("MediaType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSchemaIsCommitted(t *testing.T) {
	// docs/schema/event.schema.json is generated; keep it in step.
	// Regenerate with: go test ./internal/event -run TestSchemaIsCommitted -update
	path := "../../docs/schema/event.schema.json"
	if *update {
		writeFile(t, path, JSONSchema())
	}
	got := readFile(t, path)
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(JSONSchema())) {
		t.Errorf("%s is out of date: run go test ./internal/event -run TestSchemaIsCommitted -update", path)
	}
}
