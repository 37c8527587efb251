package event

import (
	"reflect"
	"regexp"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecode feeds arbitrary bodies to the ingest decoder: it must never
// panic, every event must come back either decoded or with a named error,
// and a valid event must survive an encode/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	good := `{"event_id":"e-1","event_type":"user.observed","occurred_at":"2026-11-26T11:00:00Z","user":{"id":"u"},"location":{"latitude":1.5,"longitude":-2,"city":"X"},"attributes":{"a":"b"}}`
	for _, seed := range []struct {
		body   string
		ndjson bool
	}{
		{good, false},
		{"[" + good + "," + good + "]", false},
		{good + "\n" + good + "\n", true},
		{`[{"event_id":7},{"location":{"latitude":"x"}},1,"s",null]`, false},
		{`{"event_id":"a","occurred_at":"2026-13-45T99:00:00Z"}`, false},
		{"{\"event_id\":\"\xff\xfe\"}", false},
		{`[`, false},
		{"\n\n{}\n[]\n", true},
		{`{"attributes":{"k":null},"user":{"id":null},"location":null}`, false},
		{`{"event_id":"a","event_id":"b","EVENT_TYPE":"t","occurred_at":"2026-11-26T11:00:00+24:00"}`, false},
		{"{\"user\":{\"id\":\"u\xed\xa0\x80\"},\"attributes\":{\"a\":\"1\",\"a\":\"2\"}}", true},
		{`{"occurred_at":"0001-01-01T00:00:00Z"}` + "\n" + `{"occurred_at":"9999-12-31T23:59:59.999999999-23:59"}`, true},
	} {
		f.Add([]byte(seed.body), seed.ndjson)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		mt := ContentTypeJSON
		if ndjson {
			mt = ContentTypeNDJSON
		}
		got, err := Decode(body, mt, 1000)
		if err != nil {
			if len(got) != 0 {
				t.Fatalf("Decode returned events with an error")
			}
			return
		}
		for i := range got {
			d := &got[i]
			if len(d.Errors) == 0 && !utf8.Valid(d.Raw) {
				t.Fatalf("event %d decoded from invalid UTF-8: %q", i, d.Raw)
			}
			if len(d.Errors) > 0 {
				for _, e := range d.Errors {
					if e.Index != i || e.Message == "" {
						t.Fatalf("error %+v for event %d", e, i)
					}
				}
				continue
			}
			if errs := d.Event.Validate(i, now, DefaultMaxClockSkew); len(errs) > 0 {
				continue
			}
			// A valid event round-trips.
			b, err := Marshal(&d.Event)
			if err != nil {
				t.Fatalf("encode a valid event: %v", err)
			}
			var back Event
			if err := decodeOne(b, &back); err != nil {
				t.Fatalf("the strict decoder refuses its own encoding %s: %+v", b, err)
			}
			back = Event{}
			if err := Unmarshal(b, &back); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			if !back.OccurredAt.Equal(d.Event.OccurredAt) {
				t.Fatalf("occurred_at %v became %v", d.Event.OccurredAt, back.OccurredAt)
			}
			back.OccurredAt = d.Event.OccurredAt
			if len(back.Attributes) == 0 && len(d.Event.Attributes) == 0 {
				back.Attributes = d.Event.Attributes
			}
			if !reflect.DeepEqual(back, d.Event) {
				t.Fatalf("round trip changed the event:\n got %+v\nwant %+v", back, d.Event)
			}
			// And its record values can be built.
			r := Record{Event: d.Event}
			if _, err := FromValues(r.Values()); err != nil {
				t.Fatalf("values: %v", err)
			}
		}
	})
}

// rfc3339 is RFC 3339's date-time grammar as ParseRFC3339 reads it
// (upper-case T and Z, at most nine fractional digits).
var rfc3339 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$`)

// FuzzParseRFC3339: the strict parser accepts exactly what the grammar and
// time.Parse both accept, with a zone offset of at most 23:59, and reads the
// instant time.Parse reads.
func FuzzParseRFC3339(f *testing.F) {
	for _, s := range []string{"2026-11-26T11:00:00Z", "2026-11-26T11:00:00.5+01:00", "2026-11-26T11:00:00+24:00",
		"2026-11-26T1:00:00Z", "2026-02-29T00:00:00Z", "2024-02-29T00:00:00-00:00", "2026-11-26t11:00:00z",
		"2026-11-26T11:00:00.1234567891Z", "0000-01-01T00:00:00Z", "2026-12-31T23:59:60Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseRFC3339(s)
		want, werr := time.Parse(time.RFC3339Nano, s)
		grammar := rfc3339.MatchString(s)
		offsetOK := grammar && (s[len(s)-1] == 'Z' || s[len(s)-6+1] <= '2' && (s[len(s)-6+1] < '2' || s[len(s)-6+2] <= '3') && s[len(s)-2] <= '5')
		switch {
		case err == nil && (werr != nil || !grammar):
			t.Fatalf("%q accepted; time.Parse: %v, grammar %v", s, werr, grammar)
		case err == nil && !got.Equal(want):
			t.Fatalf("%q read as %v, time.Parse reads %v", s, got, want)
		case err != nil && werr == nil && grammar && offsetOK:
			t.Fatalf("%q refused (%v), though RFC 3339 and time.Parse accept it", s, err)
		}
	})
}
