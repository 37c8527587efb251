package event

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestProperties: typed, nested properties are accepted; each bound (bytes,
// depth, names in all, name length) and each strictness rule (one object,
// names once, UTF-8) is a 400 that names the limit and the path, both when
// the event is decoded and when an event built in Go is validated.
func TestProperties(t *testing.T) {
	good := `"event_id":"e-1","event_type":"order.completed","occurred_at":"2026-11-26T11:00:00Z","user":{"id":"u"},"location":{"latitude":1,"longitude":2}`
	deep := func(n int) string { // n nested objects
		return strings.Repeat(`{"a":`, n-1) + `{"x":1}` + strings.Repeat(`}`, n-1)
	}
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"k%d":%d`, i, i)
		}
		b.WriteString("}")
		return b.String()
	}
	tests := []struct {
		name, props string
		field, want string // "" field: accepted
	}{
		{name: "order", props: `{"amount":12.5,"currency":"EUR","items":[{"sku":"a","qty":2},{"sku":"b","qty":1}],"paid":true,"coupon":null}`},
		{name: "empty object", props: `{}`},
		{name: "depth 8", props: deep(8)},
		{name: "depth 9", props: deep(9), field: "properties.a.a.a.a.a.a.a", want: "at most 8 levels"},
		{name: "deep in an array", props: `{"l":[[[[[[[[1]]]]]]]]}`, field: "properties.l.0.0.0.0.0.0", want: "at most 8 levels"},
		{name: "256 names", props: many(256)},
		{name: "257 names", props: many(257), field: "properties.k256", want: "at most 256 entries"},
		{name: "names at every level count", props: `{"a":` + many(255) + `,"b":1}`, field: "properties.b", want: "at most 256 entries"},
		{name: "array elements count", props: `{"l":[` + strings.TrimSuffix(strings.Repeat("1,", 256), ",") + `]}`, field: "properties.l.255", want: "at most 256 entries"},
		{name: "255 array elements", props: `{"l":[` + strings.TrimSuffix(strings.Repeat("1,", 255), ",") + `]}`},
		{name: "nested arrays count", props: `{"l":[[` + strings.TrimSuffix(strings.Repeat("1,", 254), ",") + `],[1]]}`, field: "properties.l.1", want: "at most 256 entries"},
		{name: "too many bytes", props: `{"s":"` + strings.Repeat("x", 16400) + `"}`, field: "properties", want: "at most 16384 bytes"},
		// _segment (the Segment endpoint's message fields) is bounded on its
		// own: its value (bytes, and the entries within it) counts against
		// its own bounds, not against those of the other properties; its
		// name is an entry of neither, its name's bytes are the others'.
		{name: "_segment beside 256 entries", props: strings.TrimSuffix(many(256), "}") + `,"_segment":` + many(256) + `}`},
		{name: "257 entries beside _segment", props: strings.TrimSuffix(many(257), "}") + `,"_segment":{}}`, field: "properties.k256", want: "at most 256 entries"},
		{name: "257 entries in _segment", props: `{"a":1,"_segment":{"c":` + many(256) + `}}`, field: "properties._segment.c.k255", want: "_segment may hold at most 256 entries"},
		{name: "_segment beside 16 KiB", props: `{"s":"` + strings.Repeat("x", 16364) + `","_segment":{"s":"` + strings.Repeat("x", 16376) + `"}}`},
		{name: "too many bytes beside _segment", props: `{"s":"` + strings.Repeat("x", 16400) + `","_segment":{}}`, field: "properties", want: "at most 16384 bytes of JSON, got 16420 without _segment"},
		{name: "too many bytes in _segment", props: `{"_segment":{"s":"` + strings.Repeat("x", 16380) + `"}}`, field: "properties._segment", want: "at most 16384 bytes of JSON, got 16388"},
		{name: "a scalar _segment", props: `{"_segment": "` + strings.Repeat("x", 16383) + `","a":1}`, field: "properties._segment", want: "got 16385"},
		{name: "_segment below the top is not bounded apart", props: `{"a":{"_segment":` + many(256) + `}}`, field: "properties.a._segment.k254", want: "properties may hold at most 256 entries"},
		{name: "too deep in _segment", props: `{"_segment":` + deep(8) + `}`, field: "properties._segment.a.a.a.a.a.a", want: "at most 8 levels"},
		{name: "empty name", props: `{"":1}`, field: "properties", want: "1 to 128 characters"},
		{name: "long name", props: `{"` + strings.Repeat("n", 129) + `":1}`, field: "properties." + strings.Repeat("n", 129), want: "1 to 128 characters"},
		{name: "duplicate name", props: `{"a":1,"a":2}`, field: "properties.a", want: "more than once"},
		{name: "duplicate nested name", props: `{"a":{"b":1,"b":2}}`, field: "properties.a.b", want: "more than once"},
		{name: "invalid UTF-8", props: "{\"a\":\"\xff\"}", field: "properties.a", want: "not valid UTF-8"},
		{name: "numbers at float64's edges", props: `{"big":1.7976931348623157e308,"tiny":1e-999999,"neg":-1e308}`},
		{name: "a number beyond float64", props: `{"a":{"n":1e999999}}`, field: "properties.a.n", want: "number out of range"},
		{name: "a negative number beyond float64", props: `{"l":[1,-2e308]}`, field: "properties.l.1", want: "number out of range"},
		{name: "an array", props: `[1]`, field: "properties", want: "must be a JSON object, got an array"},
		{name: "a string", props: `"x"`, field: "properties", want: "must be a JSON object, got a string"},
		{name: "null", props: `null`, field: "properties", want: "must be a JSON object, got null"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := `{` + good + `,"properties":` + tc.props + `}`
			dec, err := Decode([]byte(body), ContentTypeJSON, 0)
			if err != nil {
				t.Fatal(err)
			}
			errs := dec[0].Errors
			if len(errs) == 0 {
				errs = dec[0].Event.Validate(0, now, DefaultMaxClockSkew)
			}
			check := func(how string, errs []FieldError) {
				t.Helper()
				if tc.field == "" {
					if len(errs) > 0 {
						t.Errorf("%s: refused: %v", how, errs)
					}
					return
				}
				if len(errs) != 1 || errs[0].Field != tc.field || !strings.Contains(errs[0].Message, tc.want) {
					t.Errorf("%s: got %v, want one error on %s containing %q", how, errs, tc.field, tc.want)
				}
			}
			check("decoded", errs)
			// The same properties on an event built in Go.
			e := validEvent()
			e.Properties = json.RawMessage(tc.props)
			check("built", e.Validate(0, now, DefaultMaxClockSkew))
			if tc.field == "" {
				// Round trip through the pipeline's codec: an object, semantically equal.
				b, err := Marshal(&e)
				if err != nil {
					t.Fatal(err)
				}
				var back Event
				if err := Unmarshal(b, &back); err != nil {
					t.Fatal(err)
				}
				if !jsonEqual(t, back.Properties, []byte(tc.props)) {
					t.Errorf("round trip: %s, want %s", back.Properties, tc.props)
				}
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}
