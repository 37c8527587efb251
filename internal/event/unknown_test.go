package event

import (
	"slices"
	"strings"
	"testing"
)

func TestDecodeUnknownToProperties(t *testing.T) {
	const good = `"event_id":"e-1","event_type":"order.completed","occurred_at":"2026-11-26T11:00:00Z","user":{"id":"u"},"location":{"latitude":1,"longitude":2}`
	tests := []struct {
		name, body string
		moved      []string
		props      string // the properties after the move, when accepted
		field      string // refused: the field named
		want       string // and a part of the message
	}{
		{name: "moved", body: `{` + good + `,"amount":12.5,"items":["a","b"],"shipping":{"days":1}}`,
			moved: []string{"amount", "items", "shipping"}, props: `{"amount":12.5,"items":["a","b"],"shipping":{"days":1}}`},
		{name: "beside properties", body: `{"colour":"red",` + good + `,"properties":{"amount":1}}`,
			moved: []string{"colour"}, props: `{"amount":1,"colour":"red"}`},
		{name: "nothing unknown", body: `{` + good + `,"properties":{"amount":1}}`, props: `{"amount":1}`},
		{name: "null is kept", body: `{` + good + `,"coupon":null}`, moved: []string{"coupon"}, props: `{"coupon":null}`},
		{name: "clash", body: `{` + good + `,"properties":{"amount":1},"amount":2}`, field: "amount", want: `properties already has "amount"`},
		{name: "properties not an object", body: `{` + good + `,"properties":null,"amount":2}`, field: "properties", want: "must be a JSON object"},
		{name: "case variant of a field is refused", body: `{` + good + `,"Location":{"latitude":1,"longitude":2}}`, field: "Location", want: `did you mean "location"`},
		{name: "unknown inside user is refused", body: `{` + good[:strings.Index(good, `"user"`)] + `"user":{"id":"u","age":3},"location":{"latitude":1,"longitude":2}}`, field: "user.age", want: "is not a field"},
		{name: "duplicate unknown", body: `{` + good + `,"a":1,"a":2}`, field: "a", want: "more than once"},
		{name: "bounds hold after the move", body: `{` + good + `,"s":"` + strings.Repeat("x", 16400) + `"}`, field: "properties", want: "at most 16384 bytes"},
		{name: "entries bound", body: `{` + good + `,"properties":{"l":[` + strings.TrimSuffix(strings.Repeat("1,", 255), ",") + `]},"m":1}`, field: "properties.m", want: "at most 256 entries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dec, err := DecodeWith([]byte(tc.body), ContentTypeJSON, DecodeOptions{UnknownFields: UnknownToProperties})
			if err != nil {
				t.Fatal(err)
			}
			d := dec[0]
			errs := d.Errors
			if len(errs) == 0 {
				errs = d.Event.Validate(0, now, DefaultMaxClockSkew)
			}
			if tc.field != "" {
				if len(errs) == 0 || errs[0].Field != tc.field || !strings.Contains(errs[0].Message, tc.want) {
					t.Fatalf("errors %+v, want field %q with %q", errs, tc.field, tc.want)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("refused: %+v", errs)
			}
			if !slices.Equal(d.Moved, tc.moved) {
				t.Errorf("moved %q, want %q", d.Moved, tc.moved)
			}
			if string(d.Event.Properties) != tc.props {
				t.Errorf("properties %s, want %s", d.Event.Properties, tc.props)
			}
			// The rewritten event decodes strictly, as the worker does.
			again, err := Decode(d.Raw, ContentTypeJSON, 0)
			if err != nil || len(again[0].Errors) > 0 {
				t.Fatalf("the rewritten event %s does not decode strictly: %v %+v", d.Raw, err, again)
			}
			if string(again[0].Event.Properties) != tc.props {
				t.Errorf("properties as the worker reads them %s, want %s", again[0].Event.Properties, tc.props)
			}
		})
	}
	// The default refuses by name.
	dec, _ := Decode([]byte(`{`+good+`,"amount":1}`), ContentTypeJSON, 0)
	if len(dec[0].Errors) == 0 || dec[0].Errors[0].Field != "amount" {
		t.Fatalf("default mode: %+v", dec[0].Errors)
	}
}

func TestParseUnknownFields(t *testing.T) {
	for _, s := range UnknownFieldsModes {
		u, err := ParseUnknownFields(s)
		if err != nil || u.String() != s {
			t.Errorf("%q: %v %v", s, u, err)
		}
	}
	if _, err := ParseUnknownFields("drop"); err == nil {
		t.Error("drop accepted")
	}
}
