package bigquery

import (
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bq "google.golang.org/api/bigquery/v2"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// cannedRows returns recs as the REST API returns the view's rows.
func cannedRows(recs []event.Record) [][]any {
	out := make([][]any, len(recs))
	for i := range recs {
		vals := recs[i].Values()
		for j, v := range vals {
			switch x := v.(type) {
			case time.Time:
				vals[j] = x.UnixMicro()
			case int32:
				vals[j] = int64(x)
			}
		}
		out[i] = vals
	}
	return out
}

func openReader(t *testing.T, fq *fakeQuery) *Reader {
	t.Helper()
	cfg := Config{Project: testProject, Dataset: testDataset, Location: "EU", QueryOptions: startFakeQuery(t, fq)}
	r, err := NewReader(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestListQueries(t *testing.T) {
	since := time.Date(2026, 1, 14, 0, 0, 0, 0, time.UTC)
	minT, maxT := -3.5, 30.0
	tests := []struct {
		name       string
		q          store.Query
		wantSQL    []string          // fragments of the SQL text
		wantParams map[string]string // name -> value
	}{
		{"all", store.Query{}, []string{"FROM `skyjoin-test.skyjoin_ds.events` WHERE TRUE QUALIFY", "ORDER BY processed_at DESC, event_id DESC LIMIT @limit"},
			map[string]string{"limit": "101"}},
		{"ascending", store.Query{Ascending: true, Limit: 5}, []string{"ORDER BY processed_at, event_id LIMIT @limit"},
			map[string]string{"limit": "6"}},
		{"user", store.Query{UserID: "user-'1'--"}, []string{"WHERE user_id = @user_id"},
			map[string]string{"user_id": "user-'1'--", "limit": "101"}},
		{"country", store.Query{Country: "new zealand"}, []string{"LOWER(location_country) = LOWER(@country)"},
			map[string]string{"country": "new zealand"}},
		{"time range", store.Query{Since: since.In(time.FixedZone("X", 3600)), Until: since.Add(24 * time.Hour), Limit: 5000},
			[]string{"occurred_at >= @since AND occurred_at < @until"},
			map[string]string{"since": "2026-01-14 00:00:00", "until": "2026-01-15 00:00:00", "limit": "1001"}},
		{"more filters", store.Query{City: "tromsø", EventType: "page.view", Condition: "Fog", MinTemp: &minT, MaxTemp: &maxT, AfterSeq: since.UnixMicro()},
			[]string{"processed_at > @after_time", "LOWER(location_city) = LOWER(@city)", "event_type = @event_type",
				"LOWER(weather_condition) = LOWER(@condition)", "weather_temperature_c >= @min_temp", "weather_temperature_c <= @max_temp"},
			map[string]string{"after_time": "2026-01-14 00:00:00", "city": "tromsø", "event_type": "page.view", "condition": "Fog", "min_temp": "-3.5", "max_temp": "30"}},
		{"properties", store.Query{Props: storetest.PropFilters("prop.plan=pro", "prop.amount=gt:10", "prop.items=exists:", "prop.shipping.days=lte:2")},
			[]string{"JSON_VALUE(properties, @prop_0_path) = @prop_0", "SAFE_CAST(@prop_0 AS FLOAT64)",
				"JSON_TYPE(JSON_QUERY(properties, @prop_1_path)) = @prop_1_tn AND LAX_FLOAT64(JSON_QUERY(properties, @prop_1_path)) > @prop_1",
				"JSON_TYPE(JSON_QUERY(properties, @prop_2_path)) <> @prop_2", "LAX_FLOAT64(JSON_QUERY(properties, @prop_3_path)) <= @prop_3"},
			map[string]string{"prop_0": "pro", "prop_0_path": "$.plan", "prop_1": "10", "prop_1_path": "$.amount", "prop_1_tn": "number",
				"prop_2": "null", "prop_3": "2", "prop_3_path": "$.shipping.days"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fq := &fakeQuery{answer: func(*bq.QueryRequest) [][]any { return nil }}
			r := openReader(t, fq)
			if _, err := r.List(t.Context(), tt.q); err != nil {
				t.Fatal(err)
			}
			q := fq.queries[0]
			for _, frag := range tt.wantSQL {
				if !strings.Contains(q.Query, frag) {
					t.Errorf("SQL %q lacks %q", q.Query, frag)
				}
			}
			for name, want := range tt.wantParams {
				got, ok := param(q, name)
				if !ok || !strings.HasPrefix(got, want) {
					t.Errorf("parameter %s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestListPagesAndCursors(t *testing.T) {
	recs := storetest.Records(7, 12)
	// The view's order, newest processed first.
	slices.SortFunc(recs, func(a, b event.Record) int { return b.ProcessedAt.Compare(a.ProcessedAt) })
	fq := &fakeQuery{pageSize: 4} // the REST results come in pages of 4: getQueryResults
	fq.answer = func(q *bq.QueryRequest) [][]any {
		start := 0
		if id, ok := param(q, "cursor_id"); ok {
			start = slices.IndexFunc(recs, func(r event.Record) bool { return r.EventID == id }) + 1
		}
		lim, _ := param(q, "limit")
		n, _ := strconv.Atoi(lim)
		return cannedRows(recs[start:min(len(recs), start+n)])
	}
	r := openReader(t, fq)
	var got []string
	q := store.Query{Limit: 5}
	for page := 0; ; page++ {
		p, err := r.List(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range p.Records {
			got = append(got, rec.EventID)
		}
		if p.NextCursor == "" {
			break
		}
		if page == 0 {
			// The cursor carries the last record's processed_at and id.
			last := p.Records[len(p.Records)-1]
			if _, err := r.List(t.Context(), store.Query{Cursor: p.NextCursor, Ascending: true}); !errors.Is(err, store.ErrBadCursor) {
				t.Errorf("List(descending cursor, ascending): %v, want ErrBadCursor", err)
			}
			if c, err := decodeCursor(p.NextCursor); err != nil || c.eventID != last.EventID || !c.processedAt.Equal(last.ProcessedAt.Truncate(time.Microsecond)) {
				t.Errorf("cursor %+v, %v; want the last record's", c, err)
			}
		}
		q.Cursor = p.NextCursor
	}
	want := make([]string, len(recs))
	for i, r := range recs {
		want[i] = r.EventID
	}
	if !slices.Equal(got, want) {
		t.Errorf("walk:\n got %v\nwant %v", got, want)
	}
	if fq.fetches == 0 {
		t.Error("getQueryResults never called: the fake's pages were not exercised")
	}
	last := fq.queries[len(fq.queries)-1]
	if !strings.Contains(last.Query, "(processed_at < @cursor_time OR (processed_at = @cursor_time AND event_id < @cursor_id))") {
		t.Errorf("cursor condition missing: %s", last.Query)
	}
	for _, p := range last.QueryParameters {
		if p.Name == "cursor_time" && p.ParameterType.Type != "TIMESTAMP" {
			t.Errorf("cursor_time is a %s parameter", p.ParameterType.Type)
		}
	}
}

func TestBadCursor(t *testing.T) {
	fq := &fakeQuery{answer: func(*bq.QueryRequest) [][]any { return nil }}
	r := openReader(t, fq)
	good := encodeCursor(cursor{processedAt: storetest.Base, eventID: "ev-1-000001-0a0b0c0d"})
	for _, c := range []string{
		"not a cursor!",
		base64.RawURLEncoding.EncodeToString([]byte("hello")),
		good[:len(good)/2],
		good + "AA",
		good[:len(good)-1],
		base64.RawURLEncoding.EncodeToString([]byte("v1:d:12:bad id")),
		base64.RawURLEncoding.EncodeToString([]byte("v1:x:12:id")),
		base64.RawURLEncoding.EncodeToString([]byte("v1:d:012:id")),
	} {
		if _, err := r.List(t.Context(), store.Query{Cursor: c}); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("List(cursor %q): %v, want ErrBadCursor", c, err)
		}
	}
	if _, err := r.List(t.Context(), store.Query{Cursor: good}); err != nil {
		t.Errorf("List(good cursor): %v", err)
	}
	if len(fq.queries) != 1 {
		t.Errorf("%d queries sent, want only the good cursor's", len(fq.queries))
	}
}

func TestLatestForUser(t *testing.T) {
	recs := storetest.Records(8, 3)
	fq := &fakeQuery{answer: func(q *bq.QueryRequest) [][]any {
		if u, _ := param(q, "user_id"); u == recs[1].User.ID {
			return cannedRows(recs[1:2])
		}
		return nil
	}}
	r := openReader(t, fq)
	got, err := r.LatestForUser(t.Context(), recs[1].User.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := storetest.Diff(recs[1], got); d != "" {
		t.Error(d)
	}
	if !strings.Contains(fq.queries[0].Query, "`skyjoin-test.skyjoin_ds.events` WHERE user_id = @user_id QUALIFY ") ||
		!strings.Contains(fq.queries[0].Query, ") ORDER BY occurred_at DESC, processed_at DESC") {
		t.Errorf("SQL: %s", fq.queries[0].Query)
	}
	if _, err := r.LatestForUser(t.Context(), "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LatestForUser(nobody): %v, want ErrNotFound", err)
	}
}

// splitDedup splits a reader query at its dedup: the conditions applied
// to the table itself, before QUALIFY (where BigQuery prunes partitions
// and clusters), and the rest of the query after the deduplicated rows.
func splitDedup(t *testing.T, sql string) (inner, outer string) {
	t.Helper()
	const table = " FROM `skyjoin-test.skyjoin_ds.events` WHERE "
	_, rest, ok := strings.Cut(sql, table)
	if !ok {
		t.Fatalf("the query does not read the table %s:\n%s", table, sql)
	}
	inner, outer, ok = strings.Cut(rest, " QUALIFY "+dedup+")")
	if !ok {
		t.Fatalf("the query does not dedup the table's rows with %s:\n%s", dedup, sql)
	}
	if strings.Contains(sql, ViewSuffix+"`") {
		t.Errorf("the query reads the view, which does not prune:\n%s", sql)
	}
	return inner, outer
}

// TestReadsPrune: every reader query filters the table on the event's own
// fields (occurred_at, user_id, country, ...) before the dedup, so that
// BigQuery prunes partitions and clusters, keeps the filters on what
// differs between copies after it, and caps the bytes it may bill.
func TestReadsPrune(t *testing.T) {
	since := time.Date(2026, 1, 14, 0, 0, 0, 0, time.UTC)
	minT := 2.0
	cursorQ := store.Query{Cursor: encodeCursor(cursor{processedAt: since, eventID: "ev-1"}), Since: since}
	tests := []struct {
		name      string
		max       int64 // Config.MaxBytesBilled
		wantMax   int64 // maximumBytesBilled sent
		read      func(*Reader) error
		inner     []string // conditions on the table, before the dedup
		outer     []string // after it
		notInner  []string
		wantParam map[string]string
	}{
		{"list by time, user and country", 0, DefaultMaxBytesBilled,
			func(r *Reader) error {
				_, err := r.List(t.Context(), store.Query{Since: since, Until: since.Add(time.Hour), UserID: "u-1", Country: "New Zealand",
					Condition: "Fog", MinTemp: &minT, AfterSeq: since.UnixMicro()})
				return err
			},
			[]string{"occurred_at >= @since", "occurred_at < @until", "user_id = @user_id",
				"location_country BETWEEN @country_lo AND @country_hi", "LOWER(location_country) = LOWER(@country)"},
			[]string{"processed_at > @after_time", "LOWER(weather_condition) = LOWER(@condition)", "weather_temperature_c >= @min_temp"},
			[]string{"processed_at", "weather_"},
			map[string]string{"country_lo": "NEW ZEALAND", "country_hi": "new zealand"}},
		{"list with a cursor", 20 << 30, 20 << 30,
			func(r *Reader) error { _, err := r.List(t.Context(), cursorQ); return err },
			[]string{"occurred_at >= @since"}, []string{"@cursor_time", "@cursor_id"}, []string{"cursor"}, nil},
		{"a country that is not ASCII is not bounded", NoMaxBytesBilled, 0,
			func(r *Reader) error { _, err := r.List(t.Context(), store.Query{Country: "Türkiye"}); return err },
			[]string{"LOWER(location_country) = LOWER(@country)"}, nil, []string{"BETWEEN"}, nil},
		{"get", 0, DefaultMaxBytesBilled,
			func(r *Reader) error { _, err := r.Get(t.Context(), "ev-1"); return err },
			[]string{"event_id = @event_id"}, nil, nil, nil},
		{"latest for user", 0, DefaultMaxBytesBilled,
			func(r *Reader) error { _, err := r.LatestForUser(t.Context(), "u-1"); return err },
			[]string{"user_id = @user_id"}, nil, nil, nil},
		{"stats", 0, DefaultMaxBytesBilled,
			func(r *Reader) error {
				_, err := r.Stats(t.Context(), store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{Since: since, UserID: "u-1", MaxTemp: &minT}})
				return err
			},
			[]string{"occurred_at >= @since", "user_id = @user_id"}, []string{"weather_temperature_c <= @max_temp"}, []string{"weather_"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fq := &fakeQuery{answer: func(*bq.QueryRequest) [][]any { return nil }}
			cfg := Config{Project: testProject, Dataset: testDataset, Location: "EU", MaxBytesBilled: tt.max, QueryOptions: startFakeQuery(t, fq)}
			r, err := NewReader(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := tt.read(r); err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
			q := fq.queries[0]
			inner, outer := splitDedup(t, q.Query)
			for _, c := range tt.inner {
				if !strings.Contains(inner, c) {
					t.Errorf("%q is not on the table before the dedup: WHERE %s", c, inner)
				}
			}
			for _, c := range tt.outer {
				if !strings.Contains(outer, c) {
					t.Errorf("%q is not after the dedup: %s", c, outer)
				}
			}
			for _, c := range tt.notInner {
				if strings.Contains(inner, c) {
					t.Errorf("%q filters the copies before the dedup: WHERE %s", c, inner)
				}
			}
			for name, want := range tt.wantParam {
				if got, _ := param(q, name); got != want {
					t.Errorf("parameter %s = %q, want %q", name, got, want)
				}
			}
			if q.MaximumBytesBilled != tt.wantMax {
				t.Errorf("maximumBytesBilled = %d, want %d", q.MaximumBytesBilled, tt.wantMax)
			}
		})
	}
}

// TestCaseRange: every casing of an ASCII name lies within its bounds, so
// the range on the clustering column never drops a row the LOWER equality
// keeps.
func TestCaseRange(t *testing.T) {
	for _, name := range []string{"New Zealand", "united states", "CÔTE"} {
		lo, hi, ok := caseRange(name)
		if name == "CÔTE" {
			if ok {
				t.Errorf("caseRange(%q) bounded a name that is not ASCII", name)
			}
			continue
		}
		for _, v := range []string{name, strings.ToUpper(name), strings.ToLower(name), "nEW zEALAND", "New zealand", "United States"} {
			if !strings.EqualFold(v, name) {
				continue
			}
			if v < lo || v > hi {
				t.Errorf("%q is outside [%q, %q]", v, lo, hi)
			}
		}
	}
}

// TestReadOverTheCap: a query BigQuery refuses for its bytes billed is
// store.ErrTooCostly (the API answers 400), with the cap in its text.
func TestReadOverTheCap(t *testing.T) {
	fq := &fakeQuery{answer: func(*bq.QueryRequest) [][]any { return nil }, failReason: "bytesBilledLimitExceeded"}
	cfg := Config{Project: testProject, Dataset: testDataset, Location: "EU", MaxBytesBilled: 20 << 20, QueryOptions: startFakeQuery(t, fq)}
	r, err := NewReader(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.List(t.Context(), store.Query{})
	if !errors.Is(err, store.ErrTooCostly) || !strings.Contains(err.Error(), "max_bytes_billed=20971520") {
		t.Fatalf("List over the cap: %v, want store.ErrTooCostly naming the cap", err)
	}
	fq.failReason = "invalidQuery"
	if _, err = r.List(t.Context(), store.Query{}); err == nil || errors.Is(err, store.ErrTooCostly) {
		t.Fatalf("another failure: %v, want an error that is not ErrTooCostly", err)
	}
}

// TestPing: the readiness check reads the table's metadata and runs no
// query (a query is billed, at least 10 MiB); a missing table fails it.
func TestPing(t *testing.T) {
	fq := &fakeQuery{answer: func(*bq.QueryRequest) [][]any {
		t.Error("Ping ran a query")
		return nil
	}}
	opts := startFakeQuery(t, fq)
	r, err := NewReader(t.Context(), Config{Project: testProject, Dataset: testDataset, Location: "EU", QueryOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), testDataset+".events") {
		t.Errorf("Ping without the table = %v, want an error naming it", err)
	}
	fq.mu.Lock()
	fq.tables[testDataset+".events"] = &bq.Table{TableReference: &bq.TableReference{ProjectId: testProject, DatasetId: testDataset, TableId: "events"}, Schema: restSchema()}
	fq.mu.Unlock()
	if err := r.Ping(t.Context()); err != nil {
		t.Errorf("Ping = %v", err)
	}
	if len(fq.queries) != 0 {
		t.Errorf("%d queries", len(fq.queries))
	}
}
