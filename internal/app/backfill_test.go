//go:build !noduckdb

package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// memQueue is an in-memory broker.Subscription and broker.Publisher.
type memQueue struct {
	mu    sync.Mutex
	acked int
	dead  int
}

func (q *memQueue) Fetch(context.Context, int, time.Duration) ([]*broker.Message, error) {
	return nil, nil
}
func (q *memQueue) Ack(_ context.Context, msgs ...*broker.Message) error {
	q.mu.Lock()
	q.acked += len(msgs)
	q.mu.Unlock()
	return nil
}
func (q *memQueue) Nack(context.Context, time.Duration, ...*broker.Message) error { return nil }
func (q *memQueue) Close() error                                                  { return nil }
func (q *memQueue) Publish(_ context.Context, _ string, msgs ...*broker.Message) error {
	q.mu.Lock()
	q.dead += len(msgs)
	q.mu.Unlock()
	return nil
}

var discard = slog.New(slog.DiscardHandler)

// newBackfillRig starts a weather simulator of users users that answers
// 502 while failing is set, the real weather service over it (one retry,
// no breaker), a DuckDB store and a worker writing to it through q; all
// are closed at the end of the test.
func newBackfillRig(t *testing.T, users int, failing *atomic.Bool) (*sim.Sim, *weather.Service, *duckdb.Store, *enrich.Worker, *memQueue) {
	t.Helper()
	sm := sim.New(sim.Options{Users: users, Inject: func(api string, r *http.Request) sim.Fault {
		if failing.Load() {
			return sim.Fault{Status: http.StatusBadGateway}
		}
		return sim.Fault{}
	}})
	srv := httptest.NewServer(sm.OpenMeteo())
	t.Cleanup(srv.Close)
	var wcfg weatherConfig
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	wcfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"--weather-retries=1", "--weather-backoff=1ms", "--weather-max-backoff=1ms", "--weather-breaker-failures=0"}); err != nil {
		t.Fatal(err)
	}
	wsvc, err := newWeather(wcfg, srv.URL, "", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wsvc.Close() })
	st, err := duckdb.Open(t.Context(), duckdb.Config{Path: filepath.Join(t.TempDir(), "skyjoin.duckdb")}, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q := &memQueue{}
	w := enrich.New(enrich.Config{Subscription: "enrich", MaxMessages: 10, FetchWait: time.Millisecond, AckWait: time.Minute,
		MaxClockSkew: time.Minute}, q, q, wsvc, st, discard)
	return sm, wsvc, st, w, q
}

// TestUnavailableThenBackfilled: the worker, over the real weather service
// and a simulator that fails, stores every event as unavailable with the
// reason; once the provider is back, backfill gives each its weather, for
// the event's own time, in place.
func TestUnavailableThenBackfilled(t *testing.T) {
	now := time.Now().UTC()
	var failing atomic.Bool
	failing.Store(true)
	sm, wsvc, st, w, q := newBackfillRig(t, 40, &failing)

	// 40 users, each with an event now and one three days ago.
	var lines []string
	for i, u := range sm.Users() {
		for k, at := range []time.Time{now, now.Add(-72 * time.Hour)} {
			lines = append(lines, fmt.Sprintf(`{"event_id":"e-%d-%d","event_type":"user.observed","occurred_at":%q,`+
				`"user":{"id":%q},"location":{"latitude":%g,"longitude":%g}}`, i, k, at.Format(time.RFC3339Nano), u.UUID, u.Latitude, u.Longitude))
		}
	}
	m := &broker.Message{ID: "1", Data: []byte(strings.Join(lines, "\n")), Deliveries: 1, Attributes: map[string]string{
		envelope.AttrContentType: event.ContentTypeNDJSON, envelope.AttrIngestedAt: now.Format(time.RFC3339Nano)}}
	if err := w.Process(t.Context(), []*broker.Message{m}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Count(t.Context()); err != nil || n != 80 || q.acked != 1 {
		t.Fatalf("stored %d (%v), acked %d", n, err, q.acked)
	}
	recs, _, err := st.Unavailable(t.Context(), 1000, 0)
	if err != nil || len(recs) != 80 {
		t.Fatalf("%d unavailable (%v), want 80", len(recs), err)
	}
	for _, r := range recs {
		if !strings.Contains(r.Enrichment.Error, "HTTP 502") {
			t.Fatalf("%s: reason %q", r.EventID, r.Enrichment.Error)
		}
	}

	// Still failing: backfill leaves them as they are.
	stats, err := backfill(t.Context(), st, wsvc, 25, 0, time.Now, discard)
	if err != nil || stats != (backfillStats{Scanned: 80, Left: 80}) {
		t.Fatalf("backfill while failing: %+v, %v", stats, err)
	}
	failing.Store(false)
	stats, err = backfill(t.Context(), st, wsvc, 25, 0, time.Now, discard)
	if err != nil || stats != (backfillStats{Scanned: 80, Enriched: 80}) {
		t.Fatalf("backfill: %+v, %v", stats, err)
	}
	if left, _, err := st.Unavailable(t.Context(), 1000, 0); err != nil || len(left) != 0 {
		t.Fatalf("%d left unavailable (%v)", len(left), err)
	}
	for _, r := range recs {
		got, err := st.Get(t.Context(), r.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Enrichment.Status != event.StatusEnriched || got.Enrichment.Error != "" || got.Weather == nil {
			t.Fatalf("%s: %+v", r.EventID, got.Enrichment)
		}
		// The weather of the event's own time: its slot now, its hour 3 days ago.
		want := weather.Slot(r.OccurredAt)
		if r.OccurredAt.Before(weather.Slot(time.Now())) {
			want = r.OccurredAt.UTC().Truncate(time.Hour)
		}
		cl, cn := sim.Cell(got.Weather.CellLatitude, got.Weather.CellLongitude)
		if !got.Weather.ObservedAt.Equal(want) || !sim.SameValues(*got.Weather, sim.Conditions(cl, cn, want)) {
			t.Fatalf("%s at %s: weather %+v, want observed at %s", r.EventID, r.OccurredAt, got.Weather, want)
		}
		if got.User.ID != r.User.ID || !got.OccurredAt.Equal(r.OccurredAt) {
			t.Fatalf("%s: the event changed", r.EventID)
		}
	}
	// Nothing to do the second time.
	if stats, err := backfill(t.Context(), st, wsvc, 25, 0, time.Now, discard); err != nil || stats != (backfillStats{}) {
		t.Errorf("second backfill: %+v, %v", stats, err)
	}
}

func TestWeatherConfig(t *testing.T) {
	parse := func(args ...string) weatherConfig {
		var c weatherConfig
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := parse().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	err := parse("--weather-provider=openweathermap", "--weather-quota=600/1m,x", "--weather-retries=-1",
		"--weather-timeout=0", "--weather-cache-entries=0", "--weather-grid=2", "--weather-stale-max-age=0",
		"--weather-stale-while-revalidate").Validate()
	for _, want := range []string{"openweathermap-api-key", "weather-quota", "weather-retries", "weather-timeout",
		"weather-cache-entries", "weather-grid", "stale-while-revalidate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in %v", want, err)
		}
	}
	if err := parse("--weather-provider=darksky").Validate(); err == nil {
		t.Error("unknown provider accepted")
	}
	q, err := parseQuota(defaultQuota)
	if err != nil || len(q) != 3 || q[0] != (weather.Window{Per: time.Minute, Limit: 600}) || q[2] != (weather.Window{Per: 24 * time.Hour, Limit: 10000}) {
		t.Errorf("parseQuota = %v, %v", q, err)
	}
	if q, err := parseQuota("none"); q != nil || err != nil {
		t.Errorf("none: %v %v", q, err)
	}
	for _, p := range []string{"open-meteo", "openweathermap"} {
		s, err := newWeather(parse("--weather-provider="+p, "--openweathermap-api-key=k"), "http://127.0.0.1:1", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name() != p {
			t.Errorf("provider %s, want %s", s.Name(), p)
		}
		s.Close()
	}
}

// listingStore lists, besides the unavailable records, the records of
// extra (a store that listed every record without weather would).
type listingStore struct {
	*duckdb.Store
	extra   []event.Record
	updated []string // event ids given to UpdateWeather
}

func (s *listingStore) Unavailable(ctx context.Context, limit int, after int64) ([]event.Record, int64, error) {
	recs, next, err := s.Store.Unavailable(ctx, limit, after)
	if after == 0 {
		recs = append(recs, s.extra...)
	}
	return recs, next, err
}

func (s *listingStore) UpdateWeather(ctx context.Context, recs []event.Record) (int64, error) {
	for _, r := range recs {
		s.updated = append(s.updated, r.EventID)
	}
	return s.Store.UpdateWeather(ctx, recs)
}

// countingJoiner counts the weather requests it is asked.
type countingJoiner struct {
	weather.Joiner
	reqs int
}

func (j *countingJoiner) Lookup(ctx context.Context, reqs []weather.Request) []weather.Result {
	j.reqs += len(reqs)
	return j.Joiner.Lookup(ctx, reqs)
}

// TestBackfillSkipsNoLocation: an event without coordinates is stored with
// status no_location; backfill leaves it alone (no weather lookup, no
// update, its record unchanged) and counts it as skipped, whether or not
// the store lists it, while it gives the unavailable records their weather.
func TestBackfillSkipsNoLocation(t *testing.T) {
	now := time.Now().UTC()
	var failing atomic.Bool
	failing.Store(true)
	sm, wsvc, st, w, _ := newBackfillRig(t, 2, &failing)

	at := now.Format(time.RFC3339Nano)
	lines := []string{fmt.Sprintf(`{"event_id":"nl-0","event_type":"order.completed","occurred_at":%q,"user":{"id":"u"},"location":{"city":"Paris"}}`, at)}
	for i, u := range sm.Users() {
		lines = append(lines, fmt.Sprintf(`{"event_id":"nl-%d","event_type":"user.observed","occurred_at":%q,"user":{"id":%q},"location":{"latitude":%g,"longitude":%g}}`,
			i+1, at, u.UUID, u.Latitude, u.Longitude))
	}
	m := &broker.Message{ID: "1", Data: []byte(strings.Join(lines, "\n")), Deliveries: 1, Attributes: map[string]string{
		envelope.AttrContentType: event.ContentTypeNDJSON, envelope.AttrIngestedAt: at}}
	if err := w.Process(t.Context(), []*broker.Message{m}); err != nil {
		t.Fatal(err)
	}
	noLoc, err := st.Get(t.Context(), "nl-0")
	if err != nil || noLoc.Enrichment.Status != event.StatusNoLocation || noLoc.Weather != nil {
		t.Fatalf("the event without coordinates is stored as %+v (%v), want status no_location", noLoc.Enrichment, err)
	}
	if recs, _, err := st.Unavailable(t.Context(), 100, 0); err != nil || len(recs) != 2 {
		t.Fatalf("%d unavailable (%v), want 2", len(recs), err)
	}
	failing.Store(false)

	// The store lists it too: backfill skips it, looks up only the others.
	ls := &listingStore{Store: st, extra: []event.Record{noLoc}}
	j := &countingJoiner{Joiner: wsvc}
	stats, err := backfill(t.Context(), ls, j, 25, 0, time.Now, discard)
	if err != nil || stats != (backfillStats{Scanned: 3, Enriched: 2, Skipped: 1}) {
		t.Fatalf("backfill: %+v, %v; want 3 scanned, 2 enriched, 1 skipped", stats, err)
	}
	if j.reqs != 2 || len(ls.updated) != 2 || slices.Contains(ls.updated, "nl-0") {
		t.Fatalf("%d weather requests, updated %q: the record without coordinates was not left alone", j.reqs, ls.updated)
	}
	after, err := st.Get(t.Context(), "nl-0")
	if err != nil || after.Enrichment != noLoc.Enrichment || after.Weather != nil || !after.ProcessedAt.Equal(noLoc.ProcessedAt) {
		t.Fatalf("the record without coordinates changed: %+v (%v), was %+v", after, err, noLoc)
	}
	for _, id := range []string{"nl-1", "nl-2"} {
		if r, err := st.Get(t.Context(), id); err != nil || r.Enrichment.Status != event.StatusEnriched {
			t.Fatalf("%s: %+v (%v)", id, r.Enrichment, err)
		}
	}

	// The store alone never lists it: nothing left to do.
	if stats, err := backfill(t.Context(), st, wsvc, 25, 0, time.Now, discard); err != nil || stats != (backfillStats{}) {
		t.Fatalf("second backfill: %+v, %v", stats, err)
	}
}
