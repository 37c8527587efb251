package storetest

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// testWriteSetsSeq checks the Writer contract on Seq: Write sets the seq of
// each record it inserted on the caller's slice, the stored seq on each
// redelivery, and 0 on each repeat within the call.
func testWriteSetsSeq(t *testing.T, s store.Store) {
	recs := Records(20, 6)
	for i := range recs {
		recs[i].Seq = 12345 // ignored
	}
	batch := append(slices.Clone(recs[:4]), recs[1]) // an in-batch repeat
	write(t, s, batch)
	for i, r := range batch[:4] {
		if stored := get(t, s, r.EventID); r.Seq != stored.Seq || r.Seq <= 0 {
			t.Errorf("batch 1 record %d: Seq %d, stored with %d", i, r.Seq, stored.Seq)
		}
	}
	if batch[4].Seq != 0 {
		t.Errorf("in-batch repeat: Seq %d, want 0", batch[4].Seq)
	}
	// A batch mixing redeliveries and new records.
	batch2 := []event.Record{recs[4], recs[0], recs[5], recs[2]}
	write(t, s, batch2)
	for i, r := range batch2 {
		stored := get(t, s, r.EventID)
		redelivered := i%2 == 1
		switch {
		case redelivered && r.Seq != batch[i-1].Seq:
			t.Errorf("batch 2 record %d (a redelivery): Seq %d, want its stored seq %d", i, r.Seq, batch[i-1].Seq)
		case !redelivered && (r.Seq != stored.Seq || r.Seq <= batch[3].Seq):
			t.Errorf("batch 2 record %d: Seq %d, stored with %d (batch 1 ended at %d)", i, r.Seq, stored.Seq, batch[3].Seq)
		}
	}
	if batch2[2].Seq <= batch2[0].Seq {
		t.Errorf("batch 2: Seq %d after %d, want increasing in batch order", batch2[2].Seq, batch2[0].Seq)
	}
}

// testWriteReturnsStored checks that Write hands back what the store holds:
// a redelivered event_id comes back as the stored record (the first write,
// with its seq), whatever the redelivery carried, so that a caller can pass
// it on again; new records get fresh seqs; a repeat within the call, 0.
func testWriteReturnsStored(t *testing.T, s store.Store) {
	a := Records(22, 8)
	write(t, s, a)
	stored := make(map[string]event.Record, len(a))
	var lastSeq int64
	for _, r := range a {
		stored[r.EventID] = get(t, s, r.EventID)
		lastSeq = max(lastSeq, r.Seq)
	}

	// The redeliveries differ from what is stored: enriched again later,
	// with other weather or none.
	changed := func(r event.Record) event.Record {
		r.User.Name = "Second Writer"
		r.ProcessedAt = r.ProcessedAt.Add(time.Hour)
		if r.Weather == nil {
			r.Weather = &event.Weather{ObservedAt: r.OccurredAt.Truncate(time.Hour), TemperatureC: 99, Condition: "Fog", Provider: "second"}
			r.Enrichment = event.Enrichment{Status: event.StatusEnriched}
		} else {
			r.Weather = nil
			r.Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "second write"}
		}
		r.Seq = 777
		return r
	}
	fresh := Records(23, 3)
	b := []event.Record{
		changed(a[5]), // 0: redelivery
		fresh[0],      // 1: new
		changed(a[1]), // 2: redelivery
		fresh[1],      // 3: new
		a[5],          // 4: repeat of 0 within the call
		changed(a[6]), // 5: redelivery
		fresh[0],      // 6: repeat of 1 within the call
		fresh[2],      // 7: new
	}
	write(t, s, b)

	for _, i := range []int{0, 2, 5} {
		want := stored[b[i].EventID]
		if b[i].Seq != want.Seq || b[i].Seq <= 0 {
			t.Errorf("record %d (redelivery of %s): Seq %d, want the stored %d", i, b[i].EventID, b[i].Seq, want.Seq)
		}
		if d := Diff(want, b[i]); d != "" {
			t.Errorf("record %d (redelivery of %s) is not the stored record: %s", i, b[i].EventID, d)
		}
		if got := get(t, s, b[i].EventID); got.Seq != want.Seq || Diff(want, got) != "" {
			t.Errorf("record %d: the redelivery changed the stored record: %s", i, Diff(want, got))
		}
	}
	prev := lastSeq
	for n, i := range []int{1, 3, 7} {
		got := get(t, s, b[i].EventID)
		if b[i].Seq != got.Seq || b[i].Seq <= prev {
			t.Errorf("new record %d: Seq %d, stored with %d; want above %d", i, b[i].Seq, got.Seq, prev)
		}
		if d := Diff(fresh[n], b[i]); d != "" {
			t.Errorf("new record %d changed: %s", i, d)
		}
		prev = b[i].Seq
	}
	for _, i := range []int{4, 6} {
		if b[i].Seq != 0 {
			t.Errorf("record %d, a repeat within the call: Seq %d, want 0", i, b[i].Seq)
		}
	}

	// A batch of redeliveries only, as after a crash between the store's
	// commit and the records' publish.
	again := slices.Clone(a)
	for i := range again {
		again[i] = changed(again[i])
	}
	write(t, s, again)
	for _, r := range again {
		if want := stored[r.EventID]; r.Seq != want.Seq || Diff(want, r) != "" {
			t.Errorf("whole-batch redelivery of %s: Seq %d (stored %d); %s", r.EventID, r.Seq, want.Seq, Diff(want, r))
		}
	}
}

// filterRecords returns records written in one batch, with Seq set, for
// the filter and stats tests: the 300 of Records(21, 300) with a few edits
// so that every filter has matches and misses, including case variants.
func filterRecords(t *testing.T, s store.Store) []event.Record {
	recs := Records(21, 300)
	recs[10].Location.City = "SÃO PAULO" // case variant of a stored city
	recs[11].Location.City = ""
	recs[11].Location.Country = ""
	if recs[12].Weather == nil {
		recs[12].Weather = &event.Weather{}
		recs[12].Enrichment = event.Enrichment{Status: event.StatusEnriched}
	}
	recs[12].Weather.Condition = "CLEAR SKY"
	recs[12].Weather.TemperatureC = 30
	// Properties at the edges of the filters' types.
	recs[13].Properties = json.RawMessage(`{"amount":"12","plan":"PRO"}`)             // a number as a string; case
	recs[14].Properties = json.RawMessage(`{"amount":null,"items":null,"plan":true}`) // nulls; a boolean
	recs[15].Properties = json.RawMessage(`{"amount":10,"shipping":{"days":"2"},"big":9007199254740993}`)
	recs[16].Properties = json.RawMessage(`{"amount":1e2,"items":[],"plan":"pro","shipping":[1]}`)
	write(t, s, recs[:100])
	write(t, s, recs[100:])
	for i := range recs {
		if recs[i].Seq <= 0 {
			t.Fatalf("Write did not set Seq of record %d (%q): see store.Writer", i, recs[i].EventID)
		}
	}
	return recs
}

func ptr(f float64) *float64 { return &f }

// testListFiltersMore checks the filters beyond user, country and time
// against store.Query.Match, the reference semantics.
func testListFiltersMore(t *testing.T, s store.Store) {
	recs := filterRecords(t, s)
	var temps []float64
	for _, r := range recs {
		if r.Weather != nil {
			temps = append(temps, r.Weather.TemperatureC)
		}
	}
	slices.Sort(temps)
	lo, hi := temps[len(temps)/4], temps[len(temps)*3/4] // stored values: bounds are inclusive
	tests := []struct {
		name      string
		q         store.Query
		wantEmpty bool
	}{
		{name: "city", q: store.Query{City: "São Paulo"}},
		{name: "city upper case", q: store.Query{City: "SÃO PAULO"}},
		{name: "city unknown", q: store.Query{City: "Atlantis"}, wantEmpty: true},
		{name: "city prefix is no match", q: store.Query{City: "São"}, wantEmpty: true},
		{name: "event type", q: store.Query{EventType: "user.signup"}},
		{name: "event type is case-sensitive", q: store.Query{EventType: "USER.SIGNUP"}, wantEmpty: true},
		{name: "condition", q: store.Query{Condition: "Clear sky"}},
		{name: "condition lower case", q: store.Query{Condition: "slight rain"}},
		{name: "condition unknown", q: store.Query{Condition: "Raining frogs"}, wantEmpty: true},
		{name: "condition with LIKE wildcard is no match", q: store.Query{Condition: "%"}, wantEmpty: true},
		{name: "min temp", q: store.Query{MinTemp: ptr(lo)}},
		{name: "max temp", q: store.Query{MaxTemp: ptr(hi)}},
		{name: "temp range", q: store.Query{MinTemp: ptr(lo), MaxTemp: ptr(hi)}},
		{name: "temp range of one value", q: store.Query{MinTemp: ptr(30), MaxTemp: ptr(30)}},
		{name: "empty temp range", q: store.Query{MinTemp: ptr(hi + 1), MaxTemp: ptr(lo)}, wantEmpty: true},
		{name: "negative min temp", q: store.Query{MinTemp: ptr(-10.5)}},
		{name: "after seq", q: store.Query{AfterSeq: recs[150].Seq}},
		{name: "after last seq", q: store.Query{AfterSeq: recs[299].Seq}, wantEmpty: true},
		{name: "city and event type", q: store.Query{City: "berlin", EventType: event.TypeUserObserved}},
		{name: "country, condition and temp", q: store.Query{Country: "germany", Condition: "overcast", MinTemp: ptr(lo)}},
		{name: "prop eq string", q: store.Query{Props: PropFilters("prop.plan=pro")}},
		{name: "prop eq is case-sensitive", q: store.Query{Props: PropFilters("prop.plan=PRO")}},
		{name: "prop eq boolean", q: store.Query{Props: PropFilters("prop.plan=true")}},
		{name: "prop eq number", q: store.Query{Props: PropFilters("prop.amount=10.0")}},
		{name: "prop gt number", q: store.Query{Props: PropFilters("prop.amount=gt:50")}},
		{name: "prop gt skips strings", q: store.Query{Props: PropFilters("prop.amount=gte:12", "prop.amount=lte:12")}, wantEmpty: true},
		{name: "prop range", q: store.Query{Props: PropFilters("prop.amount=gte:20", "prop.amount=lt:100.5")}},
		{name: "prop exponent", q: store.Query{Props: PropFilters("prop.amount=100")}},
		{name: "prop nested", q: store.Query{Props: PropFilters("prop.shipping.days=lte:2")}},
		{name: "prop nested boolean", q: store.Query{Props: PropFilters("prop.shipping.express=true", "prop.currency=EUR")}},
		{name: "prop exists", q: store.Query{Props: PropFilters("prop.items=exists:")}},
		{name: "prop exists not null", q: store.Query{Props: PropFilters("prop.amount=exists:", "prop.plan=exists:")}},
		{name: "prop under a list is no match", q: store.Query{Props: PropFilters("prop.shipping.days=exists:", "prop.seats=exists:")}, wantEmpty: true},
		{name: "prop big integer", q: store.Query{Props: PropFilters("prop.big=gt:9007199254740000")}},
		{name: "prop missing", q: store.Query{Props: PropFilters("prop.nothing=exists:")}, wantEmpty: true},
		{name: "prop with other filters", q: store.Query{Country: recs[40].Location.Country, Props: PropFilters("prop.seats=gt:10")}},
		{name: "everything", q: store.Query{Country: recs[40].Location.Country, City: recs[40].Location.City,
			EventType: event.TypeUserObserved, Since: recs[20].OccurredAt, Until: recs[280].OccurredAt,
			MinTemp: ptr(-25), MaxTemp: ptr(35), AfterSeq: recs[5].Seq}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []string
			for i := range recs {
				if tt.q.Match(&recs[i]) {
					want = append(want, recs[i].EventID)
				}
			}
			if tt.wantEmpty != (len(want) == 0) {
				t.Fatalf("test data: %d records match %+v", len(want), tt.q)
			}
			for _, asc := range []bool{false, true} {
				q := tt.q
				q.Ascending = asc
				q.Limit = 23
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

// PropFilters parses property filters written as query parameters
// (prop.PATH=[OP:]VALUE), for tests; it panics on a bad one.
func PropFilters(params ...string) []store.PropFilter {
	var out []store.PropFilter
	for _, p := range params {
		name, value, _ := strings.Cut(p, "=")
		f, err := store.ParsePropFilter(name, value)
		if err != nil {
			panic(err)
		}
		out = append(out, f)
	}
	return out
}

// ExpectedStats computes what Aggregator.Stats must return for q over
// recs, in Go: the reference the conformance suite compares with.
func ExpectedStats(recs []event.Record, q store.StatsQuery) []store.StatsRow {
	type key struct {
		country, city string
		bucket        int64
		noValue       bool
	}
	type acc struct {
		row   store.StatsRow
		sum   float64
		conds map[string]int64
	}
	groups := map[key]*acc{}
	for i := range recs {
		r := &recs[i]
		if !q.Match(r) {
			continue
		}
		var k key
		switch q.GroupBy {
		case store.GroupByCountry:
			k.country = r.Location.Country
		case store.GroupByCity:
			k.country, k.city = r.Location.Country, r.Location.City
		case store.GroupByTime:
			us, b := r.OccurredAt.UnixMicro(), q.Bucket.Microseconds()
			k.bucket = us - ((us%b)+b)%b
		case store.GroupByProp:
			var ok bool
			k.city, ok = store.PropText(r.Properties, q.Prop)
			k.noValue = !ok
		}
		a := groups[k]
		if a == nil {
			a = &acc{conds: map[string]int64{}}
			switch q.GroupBy {
			case store.GroupByCountry:
				a.row.Key = k.country
			case store.GroupByCity:
				a.row.Country, a.row.Key = k.country, k.city
			case store.GroupByTime:
				a.row.Bucket = time.UnixMicro(k.bucket).UTC()
				a.row.Key = a.row.Bucket.Format(time.RFC3339)
			case store.GroupByProp:
				a.row.Key, a.row.NoValue = k.city, k.noValue
			}
			groups[k] = a
		}
		a.row.Count++
		if w := r.Weather; w != nil {
			a.row.WithWeather++
			a.sum += w.TemperatureC
			a.conds[w.Condition]++
			if a.row.MinTemp == nil || w.TemperatureC < *a.row.MinTemp {
				a.row.MinTemp = ptr(w.TemperatureC)
			}
			if a.row.MaxTemp == nil || w.TemperatureC > *a.row.MaxTemp {
				a.row.MaxTemp = ptr(w.TemperatureC)
			}
		}
	}
	out := make([]store.StatsRow, 0, len(groups))
	for _, a := range groups {
		if a.row.WithWeather > 0 {
			a.row.AvgTemp = ptr(a.sum / float64(a.row.WithWeather))
			a.row.Conditions = map[string]float64{}
			for c, n := range a.conds {
				a.row.Conditions[c] = float64(n) / float64(a.row.WithWeather)
			}
		}
		out = append(out, a.row)
	}
	slices.SortFunc(out, func(a, b store.StatsRow) int {
		if q.GroupBy == store.GroupByTime {
			return a.Bucket.Compare(b.Bucket)
		}
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Country, b.Country), strings.Compare(a.Key, b.Key),
			cmp.Compare(b2i(a.NoValue), b2i(b.NoValue)))
	})
	if q.MaxGroups > 0 && len(out) > q.MaxGroups {
		out = out[:q.MaxGroups]
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// DiffStats describes how got differs from want (floats within 1e-9), or
// returns "".
func DiffStats(want, got []store.StatsRow) string {
	var problems []string
	if len(got) != len(want) {
		problems = append(problems, fmt.Sprintf("%d rows, want %d", len(got), len(want)))
	}
	near := func(a, b *float64) bool {
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return math.Abs(*a-*b) <= 1e-9*math.Max(1, math.Abs(*b))
	}
	show := func(f *float64) string {
		if f == nil {
			return "nil"
		}
		return fmt.Sprint(*f)
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.Key != w.Key || g.NoValue != w.NoValue || g.Country != w.Country || !g.Bucket.Equal(w.Bucket) || g.Count != w.Count || g.WithWeather != w.WithWeather {
			problems = append(problems, fmt.Sprintf("row %d: key %q no value %v country %q bucket %v count %d with weather %d, want %q %v %q %v %d %d",
				i, g.Key, g.NoValue, g.Country, g.Bucket, g.Count, g.WithWeather, w.Key, w.NoValue, w.Country, w.Bucket, w.Count, w.WithWeather))
			continue
		}
		if !near(g.AvgTemp, w.AvgTemp) || !near(g.MinTemp, w.MinTemp) || !near(g.MaxTemp, w.MaxTemp) {
			problems = append(problems, fmt.Sprintf("row %d (%q): avg/min/max %s/%s/%s, want %s/%s/%s", i, w.Key,
				show(g.AvgTemp), show(g.MinTemp), show(g.MaxTemp), show(w.AvgTemp), show(w.MinTemp), show(w.MaxTemp)))
		}
		if len(g.Conditions) != len(w.Conditions) {
			problems = append(problems, fmt.Sprintf("row %d (%q): conditions %v, want %v", i, w.Key, g.Conditions, w.Conditions))
			continue
		}
		for c, share := range w.Conditions {
			if gs, ok := g.Conditions[c]; !ok || !near(&gs, &share) {
				problems = append(problems, fmt.Sprintf("row %d (%q): conditions %v, want %v", i, w.Key, g.Conditions, w.Conditions))
				break
			}
		}
	}
	return strings.Join(problems, "\n")
}

// testStats checks Aggregator.Stats against ExpectedStats. A backend that
// does not implement store.Aggregator skips it.
func testStats(t *testing.T, s store.Store) {
	agg, ok := s.(store.Aggregator)
	if !ok {
		t.Skipf("%T does not implement store.Aggregator", s)
	}
	recs := filterRecords(t, s)
	tests := []struct {
		name string
		q    store.StatsQuery
	}{
		{"country", store.StatsQuery{GroupBy: store.GroupByCountry}},
		{"city", store.StatsQuery{GroupBy: store.GroupByCity}},
		{"time 1m", store.StatsQuery{GroupBy: store.GroupByTime, Bucket: time.Minute}},
		{"time 7s", store.StatsQuery{GroupBy: store.GroupByTime, Bucket: 7 * time.Second}},
		{"time 1d", store.StatsQuery{GroupBy: store.GroupByTime, Bucket: 24 * time.Hour}},
		{"country in a window", store.StatsQuery{GroupBy: store.GroupByCountry,
			Query: store.Query{Since: recs[30].OccurredAt, Until: recs[200].OccurredAt}}},
		{"time with filters", store.StatsQuery{GroupBy: store.GroupByTime, Bucket: 5 * time.Minute,
			Query: store.Query{EventType: event.TypeUserObserved, MinTemp: ptr(0)}}},
		{"city by condition", store.StatsQuery{GroupBy: store.GroupByCity, Query: store.Query{Condition: "clear sky"}}},
		{"nothing matches", store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{Country: "Atlantis"}}},
		// By property: strings, integers, fractions, booleans, a nested
		// path; records without the path (or with an array there) in the
		// group without a value.
		{"prop string", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"plan"}}},
		{"prop integer", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"seats"}}},
		{"prop fraction", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"amount"}}},
		{"prop boolean", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"trial"}}},
		{"prop nested", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"shipping", "days"}}},
		{"prop array", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"items"}}},
		{"prop object", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"shipping"}}},
		{"prop missing everywhere", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"nowhere"}}},
		{"prop with filters", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"plan"},
			Query: store.Query{Country: Countries[1], Props: PropFilters("prop.seats=gte:10")}}},
		{"prop top 2", store.StatsQuery{GroupBy: store.GroupByProp, Prop: []string{"seats"}, MaxGroups: 2}},
		{"city top 3", store.StatsQuery{GroupBy: store.GroupByCity, MaxGroups: 3}},
		{"country top 1000", store.StatsQuery{GroupBy: store.GroupByCountry, MaxGroups: store.MaxStatsGroups}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := agg.Stats(t.Context(), tt.q)
			if err != nil {
				t.Fatalf("Stats(%+v): %v", tt.q, err)
			}
			want := ExpectedStats(recs, tt.q)
			if tt.name != "nothing matches" && len(want) == 0 {
				t.Fatalf("test data: %d groups", len(want))
			}
			if all := tt.q; all.MaxGroups > 0 && all.MaxGroups < store.MaxStatsGroups {
				all.MaxGroups = 0
				if n := len(ExpectedStats(recs, all)); n <= tt.q.MaxGroups {
					t.Fatalf("test data: %d groups, not more than the %d kept", n, tt.q.MaxGroups)
				}
			}
			if d := DiffStats(want, got); d != "" {
				t.Errorf("Stats(%+v):\n%s", tt.q, d)
			}
		})
	}
	for _, q := range []store.StatsQuery{
		{GroupBy: "weekday"},
		{GroupBy: store.GroupByTime},
		{GroupBy: store.GroupByTime, Bucket: 1500 * time.Millisecond},
		{GroupBy: store.GroupByCountry, Bucket: time.Minute},
		{GroupBy: store.GroupByProp},
		{GroupBy: store.GroupByProp, Prop: []string{"a b"}},
		{GroupBy: store.GroupByCountry, Prop: []string{"plan"}},
		{GroupBy: store.GroupByCountry, MaxGroups: -1},
		{GroupBy: store.GroupByCountry, MaxGroups: store.MaxStatsGroups + 2},
		{GroupBy: store.GroupByTime, Bucket: time.Minute, MaxGroups: 5},
	} {
		if _, err := agg.Stats(t.Context(), q); !errors.Is(err, store.ErrBadStatsQuery) {
			t.Errorf("Stats(%+v) = %v, want ErrBadStatsQuery", q, err)
		}
	}
}

// testStatsEdges checks Stats on records without coordinates (enrichment
// status no_location: counted in Count, not in WithWeather, in the group
// of their country or city, which they may still have) and on property
// numbers at the edges of their text form.
func testStatsEdges(t *testing.T, s store.Store) {
	agg, ok := s.(store.Aggregator)
	if !ok {
		t.Skipf("%T does not implement store.Aggregator", s)
	}
	recs := Records(22, 40)
	// Whole numbers of 10^15 and more are left out: their text is each
	// store's own float formatting (DuckDB writes 1e15 as
	// 1000000000000000.0, Go and BigQuery as 1e+15); see store.NumberText.
	numbers := []string{`0.1`, `-0.5`, `1e21`, `1e-7`, `123456789012345678`, `-0`, `2.50`, `1E2`, `999999999999999`, `"x"`, `false`}
	for i := range recs {
		r := &recs[i]
		if i%3 == 0 {
			// As ingest stores an event without coordinates.
			r.Location.Latitude, r.Location.Longitude = nil, nil
			r.Weather = nil
			r.Enrichment = event.Enrichment{Status: event.StatusNoLocation}
			if i%2 == 0 {
				r.Location = event.Location{}
			}
		}
		r.Properties = json.RawMessage(`{"n":` + numbers[i%len(numbers)] + `}`)
	}
	write(t, s, recs)
	var noLocation int
	for i := range recs {
		if recs[i].Enrichment.Status == event.StatusNoLocation {
			noLocation++
		}
	}
	for _, q := range []store.StatsQuery{
		{GroupBy: store.GroupByCountry},
		{GroupBy: store.GroupByCity},
		{GroupBy: store.GroupByTime, Bucket: time.Minute},
		{GroupBy: store.GroupByProp, Prop: []string{"n"}},
	} {
		got, err := agg.Stats(t.Context(), q)
		if err != nil {
			t.Fatalf("Stats(%+v): %v", q, err)
		}
		if d := DiffStats(ExpectedStats(recs, q), got); d != "" {
			t.Errorf("Stats(%+v):\n%s", q, d)
		}
		var n, nw int64
		for _, row := range got {
			n, nw = n+row.Count, nw+row.WithWeather
		}
		if n != int64(len(recs)) || nw > int64(len(recs)-noLocation) {
			t.Errorf("Stats(%+v): count %d, with weather %d; want %d records, of which %d without location nor weather",
				q, n, nw, len(recs), noLocation)
		}
	}
}
