package serve_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

var (
	cities     = []string{"Oslo", "Tokyo", "São Paulo"}
	conditions = []string{"Clear sky", "Overcast", "Slight rain", "Fog", "Slight snow fall"}
)

// variedRecords is testRecords with cities, event types, temperatures and
// conditions that differ, and every tenth record without weather.
func variedRecords(n int) []event.Record {
	recs := testRecords(n)
	for i := range recs {
		r := &recs[i]
		r.Location.City = cities[i%len(cities)]
		r.Properties = json.RawMessage(fmt.Sprintf(`{"amount":%d.5,"plan":%q,"cart":{"items":%d}}`, i%30, []string{"free", "pro"}[i%2], i%5))
		if i%7 == 0 {
			r.Properties = nil
		}
		if i%4 == 0 {
			r.EventType = "page.view"
		}
		if i%10 == 9 {
			r.Weather = nil
			r.Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "no weather"}
			continue
		}
		w := *r.Weather
		w.TemperatureC = float64(i%40) - 10.5
		w.Condition = conditions[i%len(conditions)]
		r.Weather = &w
	}
	return recs
}

func newVariedEnv(tb testing.TB, opts serve.Options) *testEnv {
	tb.Helper()
	r, stored := openStore(tb, variedRecords(numRecords))
	if opts.Logger == nil {
		opts.Logger = platform.Discard
	}
	return &testEnv{h: serve.New(r, opts), recs: stored}
}

// expectMatch lists the ids of recs matching q (store.Query.Match) in the
// order List gives them.
func expectMatch(recs []event.Record, q store.Query) []string {
	var out []string
	for i := range recs {
		if q.Match(&recs[i]) {
			out = append(out, recs[i].EventID)
		}
	}
	if !q.Ascending {
		slices.Reverse(out)
	}
	return out
}

func TestListNewFilters(t *testing.T) {
	env := newVariedEnv(t, serve.Options{})
	tests := []struct {
		name      string
		query     string
		want      store.Query
		wantEmpty bool
	}{
		{"city", "city=Tokyo", store.Query{City: "Tokyo"}, false},
		{"city ignores case", "city=S%C3%83O+PAULO", store.Query{City: "São Paulo"}, false},
		{"city unknown", "city=Atlantis", store.Query{City: "Atlantis"}, true},
		{"event type", "event_type=page.view", store.Query{EventType: "page.view"}, false},
		{"event type other", "event_type=user.observed", store.Query{EventType: event.TypeUserObserved}, false},
		{"condition", "condition=Clear+sky", store.Query{Condition: "Clear sky"}, false},
		{"condition ignores case", "condition=slight%20RAIN", store.Query{Condition: "Slight rain"}, false},
		{"condition unknown", "condition=Hail", store.Query{Condition: "Hail"}, true},
		{"min temp", "min_temp=20", store.Query{MinTemp: ptr(20.0)}, false},
		{"min temp inclusive", "min_temp=27.5", store.Query{MinTemp: ptr(27.5)}, false},
		{"max temp negative", "max_temp=-5.5", store.Query{MaxTemp: ptr(-5.5)}, false},
		{"temp range", "min_temp=0&max_temp=10", store.Query{MinTemp: ptr(0.0), MaxTemp: ptr(10.0)}, false},
		{"temp range of one value", "min_temp=-0.5&max_temp=-0.5", store.Query{MinTemp: ptr(-0.5), MaxTemp: ptr(-0.5)}, false},
		{"temp above every record", "min_temp=100", store.Query{MinTemp: ptr(100.0)}, true},
		{"all new filters", "city=oslo&event_type=user.observed&condition=overcast&min_temp=-20&max_temp=30",
			store.Query{City: "oslo", EventType: event.TypeUserObserved, Condition: "overcast", MinTemp: ptr(-20.0), MaxTemp: ptr(30.0)}, false},
		{"property equal", "prop.plan=pro", store.Query{Props: storetest.PropFilters("prop.plan=pro")}, false},
		{"property above", "prop.amount=gt:20", store.Query{Props: storetest.PropFilters("prop.amount=gt:20")}, false},
		{"property range on one name", "prop.amount=gte:5&prop.amount=lt:10.5", store.Query{Props: storetest.PropFilters("prop.amount=gte:5", "prop.amount=lt:10.5")}, false},
		{"nested property", "prop.cart.items=4&city=Oslo", store.Query{City: "Oslo", Props: storetest.PropFilters("prop.cart.items=4")}, false},
		{"property exists", "prop.cart=exists:", store.Query{Props: storetest.PropFilters("prop.cart=exists:")}, false},
		{"property missing", "prop.coupon=exists:", store.Query{Props: storetest.PropFilters("prop.coupon=exists:")}, true},
		{"new and old filters asc", "country=Japan&city=Tokyo&since=2026-11-05T06:00:00Z&min_temp=0&order=asc",
			store.Query{Country: "Japan", City: "Tokyo", Since: base.Add(6 * time.Hour), MinTemp: ptr(0.0), Ascending: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := expectMatch(env.recs, tt.want)
			if tt.wantEmpty != (len(want) == 0) || len(want) == numRecords {
				t.Fatalf("test data: %d of %d records match", len(want), numRecords)
			}
			a := do(t, env.h, http.MethodGet, "/v1/events?limit=1000&"+tt.query)
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			got := decode[serve.ListResponse](t, a)
			if !slices.Equal(ids(got.Events), want) {
				t.Errorf("events %v,\nwant %v", ids(got.Events), want)
			}
		})
	}
}

func TestListNewFiltersPagination(t *testing.T) {
	env := newVariedEnv(t, serve.Options{})
	q := store.Query{City: "Tokyo", MinTemp: ptr(0.0)}
	want := expectMatch(env.recs, q)
	for _, limit := range []int{1, 2, len(want) - 1, len(want), len(want) + 1} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			var got []string
			target := fmt.Sprintf("/v1/events?city=Tokyo&min_temp=0&limit=%d", limit)
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatal("too many pages")
				}
				a := do(t, env.h, http.MethodGet, target)
				if a.status != http.StatusOK {
					t.Fatalf("status %d: %s", a.status, a.body)
				}
				page := decode[serve.ListResponse](t, a)
				got = append(got, ids(page.Events)...)
				if page.NextCursor == "" {
					break
				}
				if len(page.Events) != limit {
					t.Fatalf("a page of %d events with a next cursor, limit %d", len(page.Events), limit)
				}
				target = parseNextLink(t, a.header.Get("Link"))
			}
			if !slices.Equal(got, want) {
				t.Errorf("walked %v,\nwant %v", got, want)
			}
		})
	}
}

func TestNewFiltersBadParameters(t *testing.T) {
	env := newVariedEnv(t, serve.Options{})
	tests := []struct {
		name   string
		query  string
		fields []string
		msg    string
	}{
		{"min temp not a number", "min_temp=warm", []string{"min_temp"}, `min_temp: must be a number of degrees Celsius (e.g. -3.5), got "warm"`},
		{"max temp infinite", "max_temp=Inf", []string{"max_temp"}, "max_temp: must be a number"},
		{"max temp NaN", "max_temp=NaN", []string{"max_temp"}, "max_temp: must be a number"},
		{"min above max", "min_temp=10&max_temp=5", []string{"min_temp"}, "min_temp: must not be above max_temp"},
		{"empty city", "city=", []string{"city"}, "city: must not be empty"},
		{"empty condition", "condition=", []string{"condition"}, "condition: must not be empty"},
		{"empty event type", "event_type=", []string{"event_type"}, "event_type: must not be empty"},
		{"long city", "city=" + strings.Repeat("x", 257), []string{"city"}, "city: must be at most 256 bytes"},
		{"repeated condition", "condition=Fog&condition=Overcast", []string{"condition"}, "condition: must be given at most once"},
		{"property not a number", "prop.amount=gt:ten", []string{"prop.amount"}, `prop.amount: gt compares numbers`},
		{"property bad name", "prop.a%20b=1", []string{"prop.a b"}, "letters, digits and _"},
		{"property empty", "prop.plan=", []string{"prop.plan"}, "must not be empty"},
		{"property exists with a value", "prop.plan=exists:pro", []string{"prop.plan"}, "exists takes no value"},
		{"stats parameter on list", "group_by=city", []string{"group_by"}, "group_by: unknown parameter"},
		{"stream parameter on list", "after=3", []string{"after"}, "after: unknown parameter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, env.h, http.MethodGet, "/v1/events?"+tt.query)
			e := wantError(t, a, http.StatusBadRequest, tt.msg)
			var details []serve.ParamError
			if err := json.Unmarshal(e.Error.Details, &details); err != nil {
				t.Fatalf("details %s: %v", e.Error.Details, err)
			}
			var fields []string
			for _, d := range details {
				fields = append(fields, d.Field)
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("details name %v, want %v", fields, tt.fields)
			}
		})
	}
}

func TestStats(t *testing.T) {
	env := newVariedEnv(t, serve.Options{})
	tests := []struct {
		name  string
		query string
		q     store.StatsQuery
	}{
		{"country", "group_by=country", store.StatsQuery{GroupBy: store.GroupByCountry}},
		{"city", "group_by=city", store.StatsQuery{GroupBy: store.GroupByCity}},
		{"time 1h", "group_by=time&bucket=1h&since=2026-11-05", store.StatsQuery{GroupBy: store.GroupByTime, Bucket: time.Hour,
			Query: store.Query{Since: base}}},
		{"time 5m in a window", "group_by=time&bucket=5m&since=2026-11-05T10:00:00Z&until=2026-11-05T16:00:00Z",
			store.StatsQuery{GroupBy: store.GroupByTime, Bucket: 5 * time.Minute, Query: store.Query{Since: base.Add(10 * time.Hour), Until: base.Add(16 * time.Hour)}}},
		{"time 1d", "group_by=time&bucket=1d&since=2026-11-01", store.StatsQuery{GroupBy: store.GroupByTime, Bucket: 24 * time.Hour,
			Query: store.Query{Since: base.Add(-96 * time.Hour)}}},
		{"country with filters", "group_by=country&city=Tokyo&min_temp=0&event_type=user.observed",
			store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{City: "Tokyo", MinTemp: ptr(0.0), EventType: event.TypeUserObserved}}},
		{"city by condition", "group_by=city&condition=fog", store.StatsQuery{GroupBy: store.GroupByCity, Query: store.Query{Condition: "fog"}}},
		{"user", "group_by=country&user_id=u3", store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{UserID: "u3"}}},
		{"nothing matches", "group_by=city&country=Atlantis", store.StatsQuery{GroupBy: store.GroupByCity, Query: store.Query{Country: "Atlantis"}}},
		{"property", "group_by=prop.plan", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"plan"}}},
		{"property number", "group_by=prop.amount&prop.plan=pro", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"amount"},
			Query: store.Query{Props: storetest.PropFilters("prop.plan=pro")}}},
		{"property nested", "group_by=prop.cart.items&country=Japan", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"cart", "items"},
			Query: store.Query{Country: "Japan"}}},
		{"property top 3", "group_by=prop.amount&limit=3", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"amount"}, MaxGroups: 3}},
		{"city top 2", "group_by=city&limit=2", store.StatsQuery{GroupBy: store.GroupByCity, MaxGroups: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, env.h, http.MethodGet, "/v1/stats?"+tt.query)
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			got := decode[serve.StatsResponse](t, a)
			want := storetest.ExpectedStats(env.recs, tt.q)
			if tt.name != "nothing matches" && len(want) < 2 {
				t.Fatalf("test data: %d groups", len(want))
			}
			all := tt.q
			all.MaxGroups = 0
			truncated := tt.q.MaxGroups > 0 && len(storetest.ExpectedStats(env.recs, all)) > tt.q.MaxGroups
			if got.Truncated != truncated || (tt.q.MaxGroups > 0 && !truncated) {
				t.Errorf("truncated %v, want %v (test data must have more groups than the limit)", got.Truncated, truncated)
			}
			wantGroupBy := tt.q.GroupBy
			if tt.q.GroupBy == store.GroupByProp {
				wantGroupBy = "prop." + strings.Join(tt.q.Prop, ".")
			}
			if got.GroupBy != wantGroupBy || got.BucketSeconds != int64(tt.q.Bucket/time.Second) || got.Count != len(got.Groups) {
				t.Errorf("group_by %q bucket_seconds %d count %d of %d groups", got.GroupBy, got.BucketSeconds, got.Count, len(got.Groups))
			}
			rows := make([]store.StatsRow, len(got.Groups))
			var total int64
			for i, g := range got.Groups {
				rows[i] = store.StatsRow{Key: g.Key, NoValue: g.NoValue, Country: g.Country, Count: g.Count, WithWeather: g.WithWeather,
					AvgTemp: g.AvgTempC, MinTemp: g.MinTempC, MaxTemp: g.MaxTempC, Conditions: g.Conditions}
				if g.Bucket != nil {
					rows[i].Bucket = *g.Bucket
				}
				if len(g.Conditions) == 0 {
					rows[i].Conditions = nil
				}
				total += g.Count
			}
			if got.Total != total {
				t.Errorf("total %d, groups add up to %d", got.Total, total)
			}
			if d := storetest.DiffStats(want, rows); d != "" {
				t.Errorf("%s", d)
			}
		})
	}
	t.Run("json shape", func(t *testing.T) {
		a := do(t, env.h, http.MethodGet, "/v1/stats?group_by=time&bucket=1h&since=2026-11-05&until=2026-11-05T02:00:00Z")
		for _, s := range []string{`"group_by":"time"`, `"bucket_seconds":3600`, `"key":"2026-11-05T01:00:00Z"`, `"bucket":"2026-11-05T01:00:00Z"`,
			`"avg_temp_c":`, `"conditions":{"`, `"with_weather":`, `"truncated":false`} {
			if !strings.Contains(string(a.body), s) {
				t.Errorf("answer %s lacks %s", a.body, s)
			}
		}
		// By property: numbers as their text, the records without the
		// property in the group marked no_value, with the empty key.
		a = do(t, env.h, http.MethodGet, "/v1/stats?group_by=prop.amount&limit=1000")
		for _, s := range []string{`"group_by":"prop.amount"`, `"key":"0.5"`, `"key":"","no_value":true`, `"truncated":false`} {
			if !strings.Contains(string(a.body), s) {
				t.Errorf("answer %s lacks %s", a.body, s)
			}
		}
		a = do(t, env.h, http.MethodGet, "/v1/stats?group_by=prop.plan&limit=1")
		if !strings.Contains(string(a.body), `"count":1,"total":`) || !strings.Contains(string(a.body), `"truncated":true`) {
			t.Errorf("answer %s: want one group, truncated", a.body)
		}
	})
}

func TestStatsBadParameters(t *testing.T) {
	env := newVariedEnv(t, serve.Options{})
	tests := []struct {
		name   string
		query  string
		fields []string
		msg    string
	}{
		{"no group_by", "", []string{"group_by"}, "group_by: is required: country, city, time or prop.PATH"},
		{"bad group_by", "group_by=weekday", []string{"group_by"}, `group_by: must be country, city, time or prop.PATH (a property, e.g. prop.plan), got "weekday"`},
		{"group_by prop without a path", "group_by=prop", []string{"group_by"}, `group_by: must be country, city, time or prop.PATH`},
		{"group_by prop empty path", "group_by=prop.", []string{"group_by"}, `group_by: property names are letters, digits and _`},
		{"group_by prop bad name", "group_by=prop.a%20b", []string{"group_by"}, `group_by: property names are letters, digits and _ (not first), at most 128; got "a b"`},
		{"group_by prop too deep", "group_by=prop.a.b.c.d.e.f.g.h.i", []string{"group_by"}, "group_by: a property path has at most 8 names"},
		{"limit zero", "group_by=prop.plan&limit=0", []string{"limit"}, "limit: must be an integer from 1 to 1000"},
		{"limit too big", "group_by=country&limit=1001", []string{"limit"}, "limit: must be an integer from 1 to 1000"},
		{"limit not a number", "group_by=city&limit=all", []string{"limit"}, "limit: must be an integer"},
		{"limit with time", "group_by=time&bucket=1h&since=2026-11-05&limit=5", []string{"limit"}, "limit: is not for group_by=time"},
		{"cursor on stats", "group_by=city&cursor=abc", []string{"cursor"}, "cursor: unknown parameter; known: bucket, city, condition"},
		{"time without bucket", "group_by=time&since=2026-11-05", []string{"bucket"}, "bucket: is required with group_by=time"},
		{"time without since", "group_by=time&bucket=1h", []string{"since"}, "since: is required with group_by=time"},
		{"bucket with country", "group_by=country&bucket=1h", []string{"bucket"}, "bucket: is only for group_by=time"},
		{"bucket not a duration", "group_by=time&bucket=often&since=2026-11-05", []string{"bucket"}, `bucket: must be a whole number of seconds`},
		{"bucket fraction of a second", "group_by=time&bucket=1500ms&since=2026-11-05", []string{"bucket"}, "bucket: must be"},
		{"bucket zero", "group_by=time&bucket=0s&since=2026-11-05", []string{"bucket"}, "bucket: must be"},
		{"bucket negative", "group_by=time&bucket=-5m&since=2026-11-05", []string{"bucket"}, "bucket: must be"},
		{"bucket too long", "group_by=time&bucket=400d&since=2026-11-05", []string{"bucket"}, "bucket: must be"},
		{"too many buckets", "group_by=time&bucket=1s&since=2026-11-05&until=2026-11-06", []string{"bucket"},
			"bucket: makes 86401 buckets from since to until, more than 10000"},
		{"bad filter", "group_by=city&min_temp=hot", []string{"min_temp"}, "min_temp: must be a number"},
		{"since after until", "group_by=city&since=2026-11-06&until=2026-11-05", []string{"since"}, "since: must be before until"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, env.h, http.MethodGet, "/v1/stats?"+tt.query)
			e := wantError(t, a, http.StatusBadRequest, tt.msg)
			var details []serve.ParamError
			if err := json.Unmarshal(e.Error.Details, &details); err != nil {
				t.Fatalf("details %s: %v", e.Error.Details, err)
			}
			var fields []string
			for _, d := range details {
				fields = append(fields, d.Field)
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("details name %v, want %v", fields, tt.fields)
			}
		})
	}
	t.Run("reader without stats", func(t *testing.T) {
		h := serve.New(failingReader{fmt.Errorf("unused")}, serve.Options{Logger: platform.Discard})
		wantError(t, do(t, h, http.MethodGet, "/v1/stats?group_by=city"), http.StatusNotImplemented, "statistics")
	})
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }
