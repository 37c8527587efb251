package event

import (
	"reflect"
	"testing"
	"time"
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
