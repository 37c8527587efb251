// Package storetest is the conformance suite every store backend passes.
//
// A backend's test calls Run with a function that returns a new, empty
// store. The suite checks the contract of store.Store as the pipeline relies
// on it:
//
//   - Write then Get returns an equal record: every field, attributes,
//     weather present or absent, timestamps in UTC at microsecond precision
//     (finer input is truncated), Seq set.
//   - The first write of an event_id wins, within a batch and across batches.
//   - Seq grows in the order records were written (batch order, then batch
//     after batch); List orders by it.
//   - List filters (user, country case-insensitively, since/until on
//     occurred_at, alone and combined), limits, cursors in both directions,
//     including writes arriving between pages, and ErrBadCursor.
//   - LatestForUser by occurred_at, ties broken by the later write.
//   - ErrNotFound (via errors.Is) from Get and LatestForUser.
//   - Concurrent writers, and a 10,000-record batch.
//   - Write hands back what is stored: the new Seq of each record it
//     inserted, the stored record (first write, stored Seq) in place of a
//     redelivered one, Seq 0 for a repeat within the call.
//   - List filters city, event type, weather condition, temperature range
//     and AfterSeq, as store.Query.Match does.
//   - Stats (store.Aggregator, skipped if the store does not implement
//     it) by country, city and time bucket, with filters, against
//     ExpectedStats; by property value (strings, numbers by value,
//     booleans, nested paths, the group without a value) and the largest
//     MaxGroups groups; records without coordinates (no_location) counted
//     in count and not in with_weather.
//   - DeleteUsers erases every record of the named users and no other
//     (erasure); a later write of one is stored again with a new seq.
//   - DeleteOccurredBefore (store.Expirer, skipped if not implemented)
//     deletes by occurred_at (retention).
package storetest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// Run runs the conformance suite. newStore must return a new, empty store
// for each call; Run closes it when the subtest ends (Close must tolerate
// being called again by the backend's own cleanup).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	open := func(t *testing.T) store.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"EmptyWrite", testEmptyWrite},
		{"Duplicates", testDuplicates},
		{"SeqOrder", testSeqOrder},
		{"ListFilters", testListFilters},
		{"Pagination", testPagination},
		{"PaginationWhileWriting", testPaginationWhileWriting},
		{"Limits", testLimits},
		{"BadCursor", testBadCursor},
		{"LatestForUser", testLatestForUser},
		{"NotFound", testNotFound},
		{"ConcurrentWriters", testConcurrentWriters},
		{"LargeBatch", testLargeBatch},
		{"WriteSetsSeq", testWriteSetsSeq},
		{"WriteReturnsStored", testWriteReturnsStored},
		{"ListFiltersMore", testListFiltersMore},
		{"Stats", testStats},
		{"StatsEdges", testStatsEdges},
		{"DeleteUsers", testDeleteUsers},
		{"DeleteOccurredBefore", testDeleteOccurredBefore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

// Normalize returns r as a store returns it: timestamps in UTC truncated to
// the microsecond, empty attributes as nil, and Seq zero.
func Normalize(r event.Record) event.Record {
	ts := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.UTC().Truncate(time.Microsecond)
	}
	r.OccurredAt, r.IngestedAt, r.ProcessedAt = ts(r.OccurredAt), ts(r.IngestedAt), ts(r.ProcessedAt)
	if len(r.Attributes) == 0 {
		r.Attributes = nil
	}
	r.Properties = CanonicalJSON(r.Properties)
	if r.Weather != nil {
		w := *r.Weather
		w.ObservedAt = ts(w.ObservedAt)
		r.Weather = &w
	}
	r.Seq = 0
	return r
}

// CanonicalJSON returns JSON text in one form for all semantically equal
// texts (names sorted, no space, numbers as float64 text), or the input
// itself if it is not JSON: stores may keep properties in another form
// (DuckDB and BigQuery rewrite the text of a JSON value).
func CanonicalJSON(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return b
	}
	out, err := json.Marshal(v) // encoding/json sorts map keys
	if err != nil {
		return b
	}
	return out
}

// Diff compares a record read back (got) with the one written (want) and
// describes the differences, or returns "" when got is what a store must
// return for want: Normalize(want), with Seq set and every time in UTC.
func Diff(want, got event.Record) string {
	var problems []string
	if got.Seq <= 0 {
		problems = append(problems, fmt.Sprintf("seq is %d, want > 0", got.Seq))
	}
	times := map[string]time.Time{"occurred_at": got.OccurredAt, "ingested_at": got.IngestedAt, "processed_at": got.ProcessedAt}
	if got.Weather != nil {
		times["weather.observed_at"] = got.Weather.ObservedAt
	}
	for name, tm := range times {
		if !tm.IsZero() && tm.Location() != time.UTC {
			problems = append(problems, fmt.Sprintf("%s is in %s, want UTC", name, tm.Location()))
		}
	}
	w, err1 := event.Marshal(Normalize(want))
	g, err2 := event.Marshal(Normalize(got))
	if err := errors.Join(err1, err2); err != nil {
		return err.Error()
	}
	if string(w) != string(g) {
		problems = append(problems, fmt.Sprintf("record differs:\n got %s\nwant %s", g, w))
	}
	return strings.Join(problems, "; ")
}

func write(t *testing.T, s store.Store, recs []event.Record) {
	t.Helper()
	if err := s.Write(t.Context(), recs); err != nil {
		t.Fatalf("Write(%d records): %v", len(recs), err)
	}
}

func get(t *testing.T, s store.Store, id string) event.Record {
	t.Helper()
	r, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%q): %v", id, err)
	}
	return r
}

// walk lists every record matching q, page by page, and fails on a page
// that breaks the contract.
func walk(t *testing.T, s store.Store, q store.Query) []event.Record {
	t.Helper()
	var all []event.Record
	for pages := 0; ; pages++ {
		if pages > 100_000 {
			t.Fatal("List: cursor never ends")
		}
		p, err := s.List(t.Context(), q)
		if err != nil {
			t.Fatalf("List(%+v): %v", q, err)
		}
		checkPage(t, q, p)
		all = append(all, p.Records...)
		if p.NextCursor == "" {
			return all
		}
		q.Cursor = p.NextCursor
	}
}

func checkPage(t *testing.T, q store.Query, p store.Page) {
	t.Helper()
	limit := store.EffectiveLimit(q.Limit)
	if len(p.Records) > limit {
		t.Fatalf("List(limit %d) returned %d records", q.Limit, len(p.Records))
	}
	if p.NextCursor != "" && len(p.Records) < limit {
		t.Fatalf("List returned a cursor with a page of %d < %d records", len(p.Records), limit)
	}
	for i, r := range p.Records {
		if r.Seq <= 0 {
			t.Fatalf("List: record %q has seq %d", r.EventID, r.Seq)
		}
		if i > 0 {
			prev := p.Records[i-1].Seq
			if q.Ascending && r.Seq <= prev || !q.Ascending && r.Seq >= prev {
				t.Fatalf("List(ascending=%v): seq %d after %d", q.Ascending, r.Seq, prev)
			}
		}
	}
}

func ids(recs []event.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.EventID
	}
	return out
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func testRoundTrip(t *testing.T, s store.Store) {
	base := Records(1, 1)[0]
	zone := time.FixedZone("NZDT", 13*3600)
	with := func(id string, f func(r *event.Record)) event.Record {
		r := base
		r.EventID = id
		r.Attributes = map[string]string{"source": "collect"}
		r.Weather = &event.Weather{
			ObservedAt: r.OccurredAt.Truncate(15 * time.Minute), TemperatureC: -3.5, ApparentTemperature: -8.25,
			RelativeHumidity: 87, PrecipitationMM: 0.4, WindSpeedKMH: 22.3, WindDirectionDeg: 275,
			WeatherCode: 71, Condition: "Slight snow fall", Provider: "open-meteo", CellLatitude: 52.5, CellLongitude: 13.375,
		}
		r.Enrichment = event.Enrichment{Status: event.StatusEnriched}
		f(&r)
		return r
	}
	lat, lon := -90.0, 180.0
	cases := []struct {
		name string
		rec  event.Record
	}{
		{"enriched with attributes", with("rt-enriched", func(r *event.Record) {
			r.Attributes = map[string]string{"source": "collect", "app": "naïve café ☕", "empty": "", "quote": `a "b" \c`}
		})},
		{"weather unavailable", with("rt-unavailable", func(r *event.Record) {
			r.Weather = nil
			r.Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "open-meteo: 503 Service Unavailable"}
		})},
		{"stale weather with error", with("rt-stale", func(r *event.Record) {
			r.Enrichment = event.Enrichment{Status: event.StatusStale, Error: "timeout; using the previous slot"}
		})},
		{"no attributes", with("rt-no-attrs", func(r *event.Record) { r.Attributes = nil })},
		{"typed nested properties", with("rt-properties", func(r *event.Record) {
			r.Properties = json.RawMessage(`{"order_id":"o-1","amount":12.5,"quantity":3,"big":9007199254740993,"paid":true,"coupon":null,` +
				`"items":[{"sku":"a","price":4.25,"tags":["x","y"]},{"sku":"b","price":8.25}],"ship":{"to":{"city":"Zürich","geo":[47.37,8.54]}},` +
				`"note":"naïve café ☕ \"quoted\" \\ \u0000","empty":{},"none":[]}`)
		})},
		{"no properties", with("rt-no-props", func(r *event.Record) { r.Properties = nil })},
		{"empty properties", with("rt-empty-props", func(r *event.Record) { r.Properties = json.RawMessage(`{}`) })},
		{"empty attributes", with("rt-empty-attrs", func(r *event.Record) { r.Attributes = map[string]string{} })},
		{"zero weather values", with("rt-zero-weather", func(r *event.Record) {
			r.Weather = &event.Weather{ObservedAt: base.OccurredAt.Truncate(time.Hour), Provider: "sim"}
		})},
		{"minimal user", with("rt-minimal", func(r *event.Record) {
			r.User = event.User{ID: "u-minimal"}
			r.Location = event.Location{Latitude: &lat, Longitude: &lon}
		})},
		{"non-UTC times with nanoseconds", with("rt-zones", func(r *event.Record) {
			r.OccurredAt = time.Date(2026, 1, 15, 10, 0, 0, 123456789, zone)
			r.IngestedAt = time.Date(2026, 1, 15, 10, 0, 1, 999999999, zone)
			r.ProcessedAt = time.Date(2026, 1, 14, 21, 0, 2, 1, time.UTC)
			r.Weather.ObservedAt = time.Date(2026, 1, 15, 9, 45, 0, 0, zone)
		})},
		{"unicode and long strings", with("rt-unicode", func(r *event.Record) {
			r.User.Name = "Zoë Ngāti 山田 🙂"
			r.Location.Street = strings.Repeat("ß", 256)
			r.Location.Timezone = "+9:30"
		})},
	}
	var recs []event.Record
	for _, c := range cases {
		recs = append(recs, c.rec)
	}
	write(t, s, recs)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := get(t, s, c.rec.EventID)
			if d := Diff(c.rec, got); d != "" {
				t.Error(d)
			}
		})
	}
	// The times really are kept to the microsecond, in UTC.
	got := get(t, s, "rt-zones")
	if want := time.Date(2026, 1, 14, 21, 0, 0, 123456000, time.UTC); !got.OccurredAt.Equal(want) || got.OccurredAt.Location() != time.UTC {
		t.Errorf("occurred_at = %v, want %v", got.OccurredAt, want)
	}
	// And every realistic record too.
	more := Records(2, 50)
	write(t, s, more)
	for _, want := range more {
		if d := Diff(want, get(t, s, want.EventID)); d != "" {
			t.Errorf("%s: %s", want.EventID, d)
		}
	}
}

func testEmptyWrite(t *testing.T, s store.Store) {
	write(t, s, nil)
	write(t, s, []event.Record{})
	if got := walk(t, s, store.Query{}); len(got) != 0 {
		t.Errorf("store has %d records after empty writes", len(got))
	}
}

func testDuplicates(t *testing.T, s store.Store) {
	recs := Records(3, 10)
	first := recs[2]
	dup := recs[2]
	dup.User.Name = "Second Writer"
	dup.Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "second"}
	dup.Weather = nil
	// Within one batch: the first occurrence wins, wherever the others are.
	batch := append(slices.Clone(recs), dup, recs[0])
	batch = slices.Insert(batch, 3, dup)
	write(t, s, batch)
	// Across batches: a redelivery leaves the stored record as it is, and
	// does not get a new seq.
	before := get(t, s, first.EventID)
	write(t, s, []event.Record{dup})
	write(t, s, append(Records(3, 10), Records(4, 2)...))

	all := walk(t, s, store.Query{Ascending: true})
	want := append(ids(recs), ids(Records(4, 2))...)
	if got := ids(all); !slices.Equal(got, want) {
		t.Fatalf("stored ids in seq order:\n got %v\nwant %v", got, want)
	}
	got := get(t, s, first.EventID)
	if d := Diff(first, got); d != "" {
		t.Errorf("first write did not win: %s", d)
	}
	if got.Seq != before.Seq {
		t.Errorf("seq changed from %d to %d by a redelivery", before.Seq, got.Seq)
	}
}

func testSeqOrder(t *testing.T, s store.Store) {
	a, b := Records(5, 30), Records(6, 30)
	write(t, s, a)
	write(t, s, b)
	want := append(ids(a), ids(b)...)
	asc := walk(t, s, store.Query{Ascending: true, Limit: store.MaxLimit})
	if got := ids(asc); !slices.Equal(got, want) {
		t.Errorf("ascending order:\n got %v\nwant %v", got, want)
	}
	desc := walk(t, s, store.Query{})
	if got := ids(desc); !slices.Equal(got, reversed(want)) {
		t.Errorf("descending order:\n got %v\nwant %v", got, reversed(want))
	}
	seen := map[int64]bool{}
	for _, r := range asc {
		if seen[r.Seq] {
			t.Errorf("seq %d used twice", r.Seq)
		}
		seen[r.Seq] = true
	}
}

func testListFilters(t *testing.T, s store.Store) {
	recs := Records(7, 300)
	write(t, s, recs[:150])
	write(t, s, recs[150:])
	user := recs[42].User.ID
	country := recs[42].Location.Country
	// A record exactly at since is in, one exactly at until is out.
	since := recs[60].OccurredAt
	until := recs[200].OccurredAt

	match := func(q store.Query) []string {
		var out []string
		for _, r := range recs {
			if (q.UserID == "" || r.User.ID == q.UserID) &&
				(q.Country == "" || strings.EqualFold(r.Location.Country, q.Country)) &&
				(q.Since.IsZero() || !r.OccurredAt.Before(q.Since)) &&
				(q.Until.IsZero() || r.OccurredAt.Before(q.Until)) {
				out = append(out, r.EventID)
			}
		}
		return out
	}
	tests := []struct {
		name      string
		q         store.Query
		wantEmpty bool
	}{
		{name: "none", q: store.Query{}},
		{name: "user", q: store.Query{UserID: user}},
		{name: "unknown user", q: store.Query{UserID: "nobody"}, wantEmpty: true},
		{name: "country", q: store.Query{Country: country}},
		{name: "country lower case", q: store.Query{Country: strings.ToLower(country)}},
		{name: "country upper case", q: store.Query{Country: strings.ToUpper(country)}},
		{name: "country non-ASCII upper case", q: store.Query{Country: "TÜRKIYE"}},
		{name: "country prefix is no match", q: store.Query{Country: country[:3]}, wantEmpty: true},
		{name: "country with LIKE wildcard is no match", q: store.Query{Country: "%"}, wantEmpty: true},
		{name: "since", q: store.Query{Since: since}},
		{name: "until", q: store.Query{Until: until}},
		{name: "since and until", q: store.Query{Since: since, Until: until}},
		{name: "since in another zone", q: store.Query{Since: since.In(time.FixedZone("X", -7*3600))}},
		{name: "empty range", q: store.Query{Since: until, Until: since}, wantEmpty: true},
		{name: "user and country", q: store.Query{UserID: user, Country: strings.ToLower(country)}},
		{name: "user and other country", q: store.Query{UserID: user, Country: "Atlantis"}, wantEmpty: true},
		{name: "all filters", q: store.Query{UserID: user, Country: country, Since: since, Until: until}},
		{name: "country and range", q: store.Query{Country: country, Since: since, Until: until}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := match(tt.q)
			if tt.wantEmpty != (len(want) == 0) {
				t.Fatalf("test data: %d records match %+v", len(want), tt.q)
			}
			for _, asc := range []bool{false, true} {
				q := tt.q
				q.Ascending = asc
				q.Limit = 17
				got := ids(walk(t, s, q))
				w := want
				if !asc {
					w = reversed(want)
				}
				if !slices.Equal(got, w) {
					t.Errorf("ascending=%v:\n got %d %v\nwant %d %v", asc, len(got), got, len(w), w)
				}
			}
		})
	}
}

func testPagination(t *testing.T, s store.Store) {
	recs := Records(8, 103)
	write(t, s, recs)
	for _, limit := range []int{1, 7, 50, 103, 104} {
		for _, asc := range []bool{true, false} {
			t.Run(fmt.Sprintf("limit %d ascending %v", limit, asc), func(t *testing.T) {
				got := ids(walk(t, s, store.Query{Limit: limit, Ascending: asc}))
				want := ids(recs)
				if !asc {
					want = reversed(want)
				}
				if !slices.Equal(got, want) {
					t.Errorf("walk:\n got %v\nwant %v", got, want)
				}
			})
		}
	}
	// A page exactly at the end has no cursor: nothing more at the time.
	p, err := s.List(t.Context(), store.Query{Limit: 103})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != 103 || p.NextCursor != "" {
		t.Errorf("List(limit 103) of 103: %d records, cursor %q; want 103 and no cursor", len(p.Records), p.NextCursor)
	}
}

func testPaginationWhileWriting(t *testing.T, s store.Store) {
	recs := Records(9, 60)
	write(t, s, recs)
	written := ids(recs)
	q := store.Query{Ascending: true, Limit: 10}
	var got []string
	for page := 0; ; page++ {
		p, err := s.List(t.Context(), q)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		checkPage(t, q, p)
		got = append(got, ids(p.Records)...)
		if p.NextCursor == "" {
			break
		}
		q.Cursor = p.NextCursor
		if page < 8 {
			// New records, and a redelivery of one already listed.
			more := Records(uint64(100+page), 5)
			write(t, s, append(more, recs[page]))
			written = append(written, ids(more)...)
		}
	}
	if !slices.Equal(got, written) {
		t.Errorf("ascending walk while writing:\n got %d %v\nwant %d %v", len(got), got, len(written), written)
	}
	// Descending, the walk sees what was there when it started.
	q = store.Query{Limit: 10}
	p, err := s.List(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	got = ids(p.Records)
	write(t, s, Records(200, 5))
	q.Cursor = p.NextCursor
	got = append(got, ids(walk(t, s, q))...)
	if !slices.Equal(got, reversed(written)) {
		t.Errorf("descending walk while writing:\n got %d %v\nwant %d %v", len(got), got, len(written), reversed(written))
	}
}

func testLimits(t *testing.T, s store.Store) {
	recs := Records(10, store.MaxLimit+50)
	write(t, s, recs)
	tests := []struct {
		limit, want int
		cursor      bool
	}{
		{0, store.DefaultLimit, true},
		{-5, store.DefaultLimit, true},
		{1, 1, true},
		{store.MaxLimit, store.MaxLimit, true},
		{store.MaxLimit + 1, store.MaxLimit, true},
		{1 << 30, store.MaxLimit, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			p, err := s.List(t.Context(), store.Query{Limit: tt.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Records) != tt.want || (p.NextCursor != "") != tt.cursor {
				t.Errorf("List(limit %d): %d records, cursor %q; want %d, cursor %v", tt.limit, len(p.Records), p.NextCursor, tt.want, tt.cursor)
			}
			if len(p.Records) > 0 && p.Records[0].EventID != recs[len(recs)-1].EventID {
				t.Errorf("List(limit %d) starts with %s, want the newest %s", tt.limit, p.Records[0].EventID, recs[len(recs)-1].EventID)
			}
		})
	}
}

func testBadCursor(t *testing.T, s store.Store) {
	write(t, s, Records(11, 20))
	p, err := s.List(t.Context(), store.Query{Limit: 5})
	if err != nil || p.NextCursor == "" {
		t.Fatalf("List: %v, cursor %q", err, p.NextCursor)
	}
	desc := p.NextCursor
	tests := []struct {
		name string
		q    store.Query
	}{
		{"garbage", store.Query{Cursor: "not a cursor!"}},
		{"base64 of garbage", store.Query{Cursor: base64.RawURLEncoding.EncodeToString([]byte("hello"))}},
		{"truncated", store.Query{Cursor: desc[:len(desc)/2]}},
		{"extended", store.Query{Cursor: desc + "AA"}},
		{"other direction", store.Query{Cursor: desc, Ascending: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.List(t.Context(), tt.q)
			if !errors.Is(err, store.ErrBadCursor) {
				t.Errorf("List(cursor %q): %v, want ErrBadCursor", tt.q.Cursor, err)
			}
		})
	}
	// The good one still works.
	if _, err := s.List(t.Context(), store.Query{Cursor: desc, Limit: 5}); err != nil {
		t.Errorf("List(good cursor): %v", err)
	}
}

func testLatestForUser(t *testing.T, s store.Store) {
	recs := Records(12, 40)
	const user = "user-latest"
	mk := func(id string, at time.Time) event.Record {
		r := recs[0]
		r.EventID, r.User.ID, r.OccurredAt = id, user, at
		return r
	}
	// Written out of time order; the latest by occurred_at is not the last
	// written, and a tie goes to the later write.
	write(t, s, []event.Record{
		mk("l-1", Base.Add(time.Hour)),
		mk("l-2", Base.Add(3*time.Hour)),
		mk("l-3", Base.Add(2*time.Hour)),
	})
	write(t, s, recs)
	got, err := s.LatestForUser(t.Context(), user)
	if err != nil || got.EventID != "l-2" {
		t.Fatalf("LatestForUser = %q, %v; want l-2", got.EventID, err)
	}
	if d := Diff(mk("l-2", Base.Add(3*time.Hour)), got); d != "" {
		t.Error(d)
	}
	write(t, s, []event.Record{mk("l-4", Base.Add(3*time.Hour)), mk("l-5", Base.Add(-time.Hour))})
	if got, err := s.LatestForUser(t.Context(), user); err != nil || got.EventID != "l-4" {
		t.Errorf("LatestForUser after a tie = %q, %v; want l-4", got.EventID, err)
	}
	// Users of the generated records.
	latest := map[string]event.Record{}
	for _, r := range recs {
		if l, ok := latest[r.User.ID]; !ok || !r.OccurredAt.Before(l.OccurredAt) {
			latest[r.User.ID] = r
		}
	}
	for id, want := range latest {
		got, err := s.LatestForUser(t.Context(), id)
		if err != nil || got.EventID != want.EventID {
			t.Errorf("LatestForUser(%s) = %q, %v; want %q", id, got.EventID, err, want.EventID)
		}
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(missing) on an empty store: %v, want ErrNotFound", err)
	}
	if _, err := s.LatestForUser(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LatestForUser(missing) on an empty store: %v, want ErrNotFound", err)
	}
	write(t, s, Records(13, 5))
	for _, id := range []string{"missing", "", "ev-13", "' OR 1=1 --"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q): %v, want ErrNotFound", id, err)
		}
		if _, err := s.LatestForUser(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LatestForUser(%q): %v, want ErrNotFound", id, err)
		}
	}
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	const writers, batches, size = 4, 5, 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	shared := Records(14, size) // every writer also writes these
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				batch := append(Records(uint64(1000+w*batches+b), size), shared[b*size/batches:(b+1)*size/batches]...)
				if err := s.Write(context.Background(), batch); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	// Reads go on meanwhile.
	wg.Go(func() {
		for range 20 {
			if _, err := s.List(context.Background(), store.Query{Limit: 50}); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	all := walk(t, s, store.Query{Ascending: true, Limit: store.MaxLimit})
	want := writers*batches*size + size
	if len(all) != want {
		t.Errorf("stored %d records, want %d", len(all), want)
	}
	seen := map[string]bool{}
	for _, r := range all {
		if seen[r.EventID] {
			t.Errorf("%s stored twice", r.EventID)
		}
		seen[r.EventID] = true
	}
	for _, r := range shared {
		if !seen[r.EventID] {
			t.Errorf("%s missing", r.EventID)
		}
	}
}

func testLargeBatch(t *testing.T, s store.Store) {
	recs := Records(15, 10_000)
	write(t, s, recs)
	all := walk(t, s, store.Query{Ascending: true, Limit: store.MaxLimit})
	if got, want := ids(all), ids(recs); !slices.Equal(got, want) {
		t.Fatalf("stored %d records, want %d in batch order", len(got), len(want))
	}
	for _, i := range []int{0, 4999, 9999} {
		if d := Diff(recs[i], all[i]); d != "" {
			t.Errorf("record %d: %s", i, d)
		}
	}
}
