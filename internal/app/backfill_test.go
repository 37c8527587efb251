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

// TestUnavailableThenBackfilled: the worker, over the real weather service
// and a simulator that fails, stores every event as unavailable with the
// reason; once the provider is back, backfill gives each its weather, for
// the event's own time, in place.
func TestUnavailableThenBackfilled(t *testing.T) {
	now := time.Now().UTC()
	var failing atomic.Bool
	failing.Store(true)
	sm := sim.New(sim.Options{Users: 40, Inject: func(api string, r *http.Request) sim.Fault {
		if failing.Load() {
			return sim.Fault{Status: http.StatusBadGateway}
		}
		return sim.Fault{}
	}})
	srv := httptest.NewServer(sm.OpenMeteo())
	defer srv.Close()

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
	defer wsvc.Close()

	st, err := duckdb.Open(t.Context(), duckdb.Config{Path: filepath.Join(t.TempDir(), "skyjoin.duckdb")}, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q := &memQueue{}
	w := enrich.New(enrich.Config{Subscription: "enrich", MaxMessages: 10, FetchWait: time.Millisecond, AckWait: time.Minute,
		MaxClockSkew: time.Minute}, q, q, wsvc, st, discard)

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
