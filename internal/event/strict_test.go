package event

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDecodeStrict: input that is not exactly valid is refused with the
// field it is about, never repaired: invalid UTF-8, duplicate names, names
// that differ from a field by case, unknown names, and an occurred_at that
// is not RFC 3339 exactly or out of range. Each case is one event alone.
func TestDecodeStrict(t *testing.T) {
	good := `"event_id":"e-1","event_type":"user.observed","user":{"id":"u"},"location":{"latitude":1,"longitude":2}`
	at := func(ts string) string { return `{` + good + `,"occurred_at":"` + ts + `"}` }
	tests := []struct {
		name  string
		body  string
		field string // "" with ok: accepted
		want  string // in the message
		ok    bool
	}{
		{name: "valid", body: at("2026-11-26T11:00:00Z"), ok: true},
		{name: "offset", body: at("2026-11-26T12:30:00.123456789+01:30"), ok: true},
		{name: "escaped Z", body: `{` + good + `,"occurred_at":"2026-11-26T11:00:00\u005a"}`, ok: true},
		{name: "invalid UTF-8 in a value", body: "{\"event_id\":\"e-\xff\"," + good[len(`"event_id":"e-1",`):] + `,"occurred_at":"2026-11-26T11:00:00Z"}`,
			field: "event_id", want: "not valid UTF-8"},
		{name: "invalid UTF-8 in an attribute", body: `{` + good + ",\"occurred_at\":\"2026-11-26T11:00:00Z\",\"attributes\":{\"k\":\"\xc3\x28\"}}",
			field: "attributes.k", want: "not valid UTF-8"},
		{name: "invalid UTF-8 in a user field", body: `{` + good[:len(good)-len(`"user":{"id":"u"},"location":{"latitude":1,"longitude":2}`)] +
			"\"user\":{\"id\":\"u\",\"name\":\"\xed\xa0\x80\"},\"location\":{\"latitude\":1,\"longitude\":2},\"occurred_at\":\"2026-11-26T11:00:00Z\"}",
			field: "user.name", want: "not valid UTF-8"},
		{name: "duplicate name", body: `{` + good + `,"occurred_at":"2026-11-26T11:00:00Z","event_id":"e-2"}`,
			field: "event_id", want: "more than once"},
		{name: "duplicate attribute", body: `{` + good + `,"occurred_at":"2026-11-26T11:00:00Z","attributes":{"a":"1","a":"2"}}`,
			field: "attributes.a", want: "more than once"},
		{name: "name in upper case", body: `{"EVENT_ID":"e-1",` + good[len(`"event_id":"e-1",`):] + `,"occurred_at":"2026-11-26T11:00:00Z"}`,
			field: "EVENT_ID", want: `did you mean "event_id"`},
		{name: "name differing by case only, both given", body: `{` + good + `,"occurred_at":"2026-11-26T11:00:00Z","Event_Id":"e-2"}`,
			field: "Event_Id", want: `case-sensitive`},
		{name: "nested name in another case", body: `{` + good[:len(good)-len(`"location":{"latitude":1,"longitude":2}`)] + `"location":{"Latitude":1,"longitude":2},"occurred_at":"2026-11-26T11:00:00Z"}`,
			field: "location.Latitude", want: `did you mean "latitude"`},
		{name: "unknown name", body: `{` + good + `,"occurred_at":"2026-11-26T11:00:00Z","colour":"red"}`,
			field: "colour", want: "not a field"},
		{name: "year 1", body: at("0001-01-01T00:00:00Z"), field: "occurred_at", want: "on or after 2000-01-01T00:00:00Z, got 0001-01-01T00:00:00Z"},
		{name: "year 1999", body: at("1999-12-31T23:59:59Z"), field: "occurred_at", want: "on or after 2000-01-01"},
		{name: "offset +24:00", body: at("2026-11-26T11:00:00+24:00"), field: "occurred_at", want: "offset's hour is at most 23"},
		{name: "hour of one digit", body: at("2026-11-26T1:00:00Z"), field: "occurred_at", want: "HH:MM:SS"},
		{name: "lower-case t", body: at("2026-11-26t11:00:00Z"), field: "occurred_at", want: "upper-case T"},
		{name: "no zone", body: at("2026-11-26T11:00:00"), field: "occurred_at", want: "ends with Z or an offset"},
		{name: "ten fractional digits", body: at("2026-11-26T11:00:00.1234567890Z"), field: "occurred_at", want: "nine digits"},
		{name: "February 30", body: at("2026-02-30T11:00:00Z"), field: "occurred_at", want: "day is out of range"},
		{name: "hour 24", body: at("2026-11-26T24:00:00Z"), field: "occurred_at", want: "hour is 00 to 23"},
		{name: "leap second", body: at("2026-12-31T23:59:60Z"), field: "occurred_at", want: "second is 00 to 59"},
		{name: "a number", body: `{` + good + `,"occurred_at":1764154800}`, field: "occurred_at", want: "got a number"},
		{name: "null time", body: `{` + good + `,"occurred_at":null}`, field: "occurred_at", want: "got null"},
		{name: "wrong type", body: `{"event_id":"e-1","event_type":"t","user":{"id":7},"location":{"latitude":1,"longitude":2},"occurred_at":"2026-11-26T11:00:00Z"}`,
			field: "user.id", want: "must be a string, got a number"},
		{name: "overflowing number", body: `{` + good[:len(good)-len(`"location":{"latitude":1,"longitude":2}`)] + `"location":{"latitude":1e999,"longitude":2},"occurred_at":"2026-11-26T11:00:00Z"}`,
			field: "location.latitude", want: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.body), ContentTypeJSON, 0)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			d := got[0]
			errs := d.Errors
			if len(errs) == 0 {
				errs = d.Event.Validate(0, now, DefaultMaxClockSkew)
			}
			if tt.ok {
				if len(errs) > 0 {
					t.Fatalf("refused: %v", errs)
				}
				return
			}
			if len(errs) != 1 || errs[0].Field != tt.field || !strings.Contains(errs[0].Message, tt.want) {
				t.Fatalf("errors %v; want one for %s saying %q", errs, tt.field, tt.want)
			}
		})
	}
}

// TestOccurredAtRange: the edges of the range get their own messages; a
// date past the range of a time.Duration is reported without one.
func TestOccurredAtRange(t *testing.T) {
	e := validEvent()
	for _, tt := range []struct {
		at   time.Time
		want string // "" accepted
	}{
		{MinOccurredAt, ""},
		{MinOccurredAt.Add(-time.Nanosecond), "must be on or after 2000-01-01T00:00:00Z"},
		{now.Add(DefaultMaxClockSkew), ""},
		{now.Add(DefaultMaxClockSkew + time.Nanosecond), "the latest accepted is 2026-11-26T12:05:00Z"},
		{time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), "is in the future: got 9999-12-31T23:59:59Z"},
		{time.Time{}, "is required"},
	} {
		e.OccurredAt = tt.at
		errs := e.Validate(0, now, DefaultMaxClockSkew)
		switch {
		case tt.want == "" && len(errs) > 0:
			t.Errorf("%v: refused: %v", tt.at, errs)
		case tt.want != "" && (len(errs) != 1 || errs[0].Field != "occurred_at" || !strings.Contains(errs[0].Message, tt.want)):
			t.Errorf("%v: errors %v, want occurred_at: %q", tt.at, errs, tt.want)
		case tt.want != "" && strings.Contains(errs[0].Message, "2562047h"):
			t.Errorf("%v: an overflowed duration: %v", tt.at, errs)
		}
	}
}

// TestParseRFC3339MatchesTimeParse: where the strict parser accepts, it
// gives the instant time.Parse gives.
func TestParseRFC3339MatchesTimeParse(t *testing.T) {
	for _, s := range []string{"2026-11-26T11:00:00Z", "2024-02-29T23:59:59.999999999-07:00", "2000-01-01T00:00:00.5+00:00",
		"2026-06-30T00:00:00.000001+05:45", "2100-12-31T12:00:00-23:59"} {
		got, err := ParseRFC3339(s)
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(want) {
			t.Errorf("%s: %v, time.Parse %v", s, got, want)
		}
		if _, off := got.Zone(); off != func() int { _, o := want.Zone(); return o }() {
			t.Errorf("%s: offset differs", s)
		}
	}
}

// TestPatternMatchers: the table matchers of the schema's patterns answer
// as the patterns do.
func TestPatternMatchers(t *testing.T) {
	for _, re := range []*regexp.Regexp{eventIDPattern} {
		if _, fast := classMatcher(re); !fast {
			t.Errorf("%s: no table matcher", re)
		}
	}
	for _, s := range []string{"", "a", "A", "0", "evt-1", "a b", "-a", ".a", "a.b_c:d@e/f+g=h-i", "user.observed", "User.observed",
		"a\x00", "é", "aé", "a\n", strings.Repeat("z", 200), "_a", "a_", "9a", "a9", "a\xff",
		"Order Completed", " a", "a ", "a\x7f", "\x7fa", "a\tb", "Commande passée", "a\u00a0"} {
		if got, want := eventIDMatch(s), eventIDPattern.MatchString(s); got != want {
			t.Errorf("event_id %q: %v, the pattern %v", s, got, want)
		}
		if got, want := eventTypeMatch(s), eventTypePattern.MatchString(s); got != want {
			t.Errorf("event_type %q: %v, the pattern %v", s, got, want)
		}
	}
}

func FuzzPatternMatchers(f *testing.F) {
	f.Add("evt-1")
	f.Add("user.observed")
	f.Fuzz(func(t *testing.T, s string) {
		if eventIDMatch(s) != eventIDPattern.MatchString(s) || eventTypeMatch(s) != eventTypePattern.MatchString(s) {
			t.Fatalf("%q: the matchers and the patterns differ", s)
		}
	})
}
