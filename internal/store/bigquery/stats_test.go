package bigquery

import (
	"errors"
	"strings"
	"testing"
	"time"

	bq "google.golang.org/api/bigquery/v2"

	"github.com/skyjoin/skyjoin/internal/store"
)

func statsSchema(k1Type string) *bq.TableSchema {
	s := &bq.TableSchema{}
	for _, f := range []struct{ name, typ string }{
		{"k1", k1Type}, {"k2", "STRING"}, {"n", "INTEGER"}, {"nw", "INTEGER"}, {"avg_t", "FLOAT"},
		{"min_t", "FLOAT"}, {"max_t", "FLOAT"}, {"cond", "STRING"}, {"cn", "INTEGER"},
	} {
		s.Fields = append(s.Fields, &bq.TableFieldSchema{Name: f.name, Type: f.typ, Mode: "NULLABLE"})
	}
	return s
}

func TestStats(t *testing.T) {
	minTemp := -5.5
	fq := &fakeQuery{schema: statsSchema("STRING"), answer: func(*bq.QueryRequest) [][]any {
		return [][]any{
			{"Norway", "Tromsø", int64(4), int64(3), -2.5, -6.0, 1.0, "Fog", int64(2)},
			{"Norway", "Tromsø", int64(4), int64(3), -2.5, -6.0, 1.0, "Slight snow fall", int64(1)},
			{"India", "Pune", int64(1), int64(0), nil, nil, nil, nil, nil},
		}
	}}
	r := openReader(t, fq)
	got, err := r.Stats(t.Context(), store.StatsQuery{GroupBy: store.GroupByCity,
		Query: store.Query{Country: "norway", Condition: "fog", MinTemp: &minTemp, EventType: "user.observed", City: "Tromsø"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "Tromsø" || got[0].Country != "Norway" || got[0].Count != 4 || got[0].WithWeather != 3 ||
		*got[0].MinTemp != -6 || got[0].Conditions["Fog"] != 2.0/3 || len(got[0].Conditions) != 2 {
		t.Fatalf("Stats = %+v", got)
	}
	if got[1].Key != "Pune" || got[1].AvgTemp != nil || got[1].Conditions != nil {
		t.Errorf("group without weather: %+v", got[1])
	}
	q := fq.queries[0]
	for _, name := range []string{"country", "condition", "min_temp", "event_type", "city"} {
		if _, ok := param(q, name); !ok {
			t.Errorf("no parameter %s in %s", name, q.Query)
		}
	}
	// The event's own fields filter the table before the dedup (they
	// prune); the weather filters apply after it.
	inner, outer := splitDedup(t, q.Query)
	for _, c := range []string{"location_country BETWEEN @country_lo AND @country_hi", "LOWER(location_city) = LOWER(@city)", "event_type = @event_type"} {
		if !strings.Contains(inner, c) {
			t.Errorf("%q is not on the table: %s", c, inner)
		}
	}
	for _, c := range []string{"LOWER(weather_condition) = LOWER(@condition)", "weather_temperature_c >= @min_temp"} {
		if !strings.Contains(outer, c) || strings.Contains(inner, c) {
			t.Errorf("%q is not after the dedup: %s", c, q.Query)
		}
	}
	if q.MaximumBytesBilled != DefaultMaxBytesBilled {
		t.Errorf("maximumBytesBilled = %d, want %d", q.MaximumBytesBilled, DefaultMaxBytesBilled)
	}

	// By time: the bucket is a parameter, the key the bucket's start.
	start := time.Date(2026, 1, 14, 21, 0, 0, 0, time.UTC)
	fq.schema = statsSchema("INTEGER")
	fq.answer = func(*bq.QueryRequest) [][]any {
		return [][]any{{start.UnixMicro(), "", int64(2), int64(2), 3.0, 2.0, 4.0, "Fog", int64(2)}}
	}
	got, err = r.Stats(t.Context(), store.StatsQuery{GroupBy: store.GroupByTime, Bucket: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Bucket.Equal(start) || got[0].Key != "2026-01-14T21:00:00Z" || got[0].Conditions["Fog"] != 1 {
		t.Errorf("Stats by time = %+v", got)
	}
	if v, _ := param(fq.queries[1], "bucket_us"); v != "3600000000" {
		t.Errorf("bucket_us = %q", v)
	}

	if _, err := r.Stats(t.Context(), store.StatsQuery{GroupBy: "planet"}); !errors.Is(err, store.ErrBadStatsQuery) {
		t.Errorf("Stats(bad group): %v", err)
	}
	if len(fq.queries) != 2 {
		t.Errorf("%d queries, want a bad stats query refused before sending", len(fq.queries))
	}
}

// TestStatsByProperty: grouping by a property reads its value with
// JSON_VALUE (a number by its value), the path and the bound on groups are
// parameters, and the group without a value comes back marked.
func TestStatsByProperty(t *testing.T) {
	fq := &fakeQuery{schema: statsSchema("STRING"), answer: func(*bq.QueryRequest) [][]any {
		return [][]any{
			{"pro", "", int64(5), int64(4), 1.0, -2.0, 3.0, "Fog", int64(4)},
			{"", "-", int64(3), int64(0), nil, nil, nil, nil, nil},
			{"", "", int64(1), int64(0), nil, nil, nil, nil, nil},
		}
	}}
	r := openReader(t, fq)
	got, err := r.Stats(t.Context(), store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"shipping", "days"}, MaxGroups: 3,
		Query: store.Query{Props: []store.PropFilter{{Path: []string{"plan"}, Op: store.PropExists}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Key != "pro" || got[0].NoValue || got[0].Conditions["Fog"] != 1 ||
		got[1].Key != "" || !got[1].NoValue || got[1].Count != 3 || got[2].NoValue {
		t.Fatalf("Stats = %+v", got)
	}
	q := fq.queries[0]
	if v, _ := param(q, "group_path"); v != "$.shipping.days" {
		t.Errorf("group_path = %q", v)
	}
	if v, _ := param(q, "max_groups"); v != "3" {
		t.Errorf("max_groups = %q", v)
	}
	for _, s := range []string{"JSON_VALUE(properties, @group_path)", "LAX_FLOAT64(JSON_QUERY(properties, @group_path))",
		"GROUP BY k1, k2\n  ORDER BY n DESC, k1, k2 LIMIT @max_groups", "FROM `skyjoin-test.skyjoin_ds.events` WHERE JSON_TYPE(JSON_QUERY(properties, @prop_0_path))"} {
		if !strings.Contains(q.Query, s) {
			t.Errorf("query lacks %q:\n%s", s, q.Query)
		}
	}
	if strings.Contains(q.Query, "shipping") {
		t.Errorf("the path is in the SQL text, not only a parameter:\n%s", q.Query)
	}

	// Without MaxGroups, no LIMIT; a path that is not a property name is
	// refused before any query.
	if _, err := r.Stats(t.Context(), store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"plan"}}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fq.queries[1].Query, "LIMIT") {
		t.Errorf("LIMIT without MaxGroups:\n%s", fq.queries[1].Query)
	}
	if _, err := r.Stats(t.Context(), store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"plan'); DROP"}}); !errors.Is(err, store.ErrBadStatsQuery) {
		t.Errorf("Stats(bad path): %v", err)
	}
	if len(fq.queries) != 2 {
		t.Errorf("%d queries, want 2", len(fq.queries))
	}
}
