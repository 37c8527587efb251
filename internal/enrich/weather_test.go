package enrich

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

// errJoiner fails every request with err.
type errJoiner struct{ err error }

func (j errJoiner) Lookup(ctx context.Context, reqs []weather.Request) []weather.Result {
	out := make([]weather.Result, len(reqs))
	for i := range out {
		out[i].Err = j.err
	}
	return out
}

func TestWeatherFailureModes(t *testing.T) {
	quota := fmt.Errorf("weather fake: %w", &weather.QuotaError{Locations: 5, Wait: time.Minute})
	down := errors.New("weather fake: HTTP 503: down")
	tests := []struct {
		name      string
		mode      string
		err       error
		wantHeld  bool
		wantStore int
	}{
		{"store (default)", "", down, false, 2},
		{"store", WeatherFailureStore, down, false, 2},
		{"retry", WeatherFailureRetry, down, true, 0},
		{"quota spent: held even in store mode", WeatherFailureStore, quota, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &queue{}
			s := &memStore{}
			w := newWorker(q, errJoiner{tt.err}, s)
			w.cfg.OnWeatherFailure = tt.mode
			err := w.Process(context.Background(), []*broker.Message{msg("1", event.ContentTypeNDJSON, ev("a", 10)+"\n"+ev("b", 20))})
			if tt.wantHeld {
				if !errors.Is(err, ErrWeatherHeld) || !errors.Is(err, tt.err) && !errors.Is(err, weather.ErrQuotaExhausted) {
					t.Fatalf("err = %v, want a held batch", err)
				}
				if weather.RetryAfter(err) != weather.RetryAfter(tt.err) {
					t.Errorf("retry after %s", weather.RetryAfter(err))
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(s.recs) != tt.wantStore || len(q.acked) != map[bool]int{true: 0, false: 1}[tt.wantHeld] {
				t.Fatalf("stored %d, acked %d", len(s.recs), len(q.acked))
			}
			for _, r := range s.recs {
				if r.Enrichment.Status != event.StatusUnavailable || r.Enrichment.Error != tt.err.Error() || r.Weather != nil {
					t.Errorf("%s: %+v", r.EventID, r.Enrichment)
				}
			}
		})
	}
	bad := Config{Subscription: "x", MaxMessages: 1, FetchWait: 1, AckWait: time.Minute, OnWeatherFailure: "drop"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "enrich-on-weather-failure") {
		t.Errorf("Validate: %v", err)
	}
}

// TestProcessWithFailingProvider: the worker over the real weather Service,
// Open-Meteo client and a simulator that fails, then recovers: every event
// is stored, first as unavailable with the reason, then enriched.
func TestProcessWithFailingProvider(t *testing.T) {
	clock := func() time.Time { return now }
	var failing atomic.Bool
	failing.Store(true)
	sm := sim.New(sim.Options{Clock: clock, Users: 1, Inject: func(api string, r *http.Request) sim.Fault {
		if failing.Load() {
			return sim.Fault{Status: http.StatusServiceUnavailable}
		}
		return sim.Fault{}
	}})
	srv := httptest.NewServer(sm.OpenMeteo())
	defer srv.Close()
	c, err := openmeteo.New(openmeteo.Config{BaseURL: srv.URL, Retries: -1, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	svc := weather.NewService(c, weather.ServiceConfig{Clock: clock, Retries: 2,
		Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }})
	defer svc.Close()
	q := &queue{}
	s := &memStore{}
	w := newWorker(q, svc, s)
	body := ev("a", 10) + "\n" + ev("b", 20) + "\n" + ev("c", 30)
	if err := w.Process(context.Background(), []*broker.Message{msg("1", event.ContentTypeNDJSON, body)}); err != nil {
		t.Fatal(err)
	}
	if len(s.recs) != 3 || len(q.acked) != 1 || w.Stats().Unavailable != 3 {
		t.Fatalf("stored %d, acked %d, stats %+v", len(s.recs), len(q.acked), w.Stats())
	}
	for _, r := range s.recs {
		if r.Enrichment.Status != event.StatusUnavailable || !strings.Contains(r.Enrichment.Error, "HTTP 503") {
			t.Errorf("%s: %+v", r.EventID, r.Enrichment)
		}
	}
	// 1 call + 2 retries, for the 3 locations in one request each time.
	if st := sm.Stats(); st.Faults != 3 || svc.Stats().Calls != 3 || svc.Stats().Points != 9 {
		t.Errorf("sim %+v, service %+v", st, svc.Stats())
	}
	failing.Store(false)
	s.recs = nil
	if err := w.Process(context.Background(), []*broker.Message{msg("2", event.ContentTypeNDJSON, body)}); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.recs {
		if r.Enrichment.Status != event.StatusEnriched || r.Weather == nil || r.Weather.Provider != "open-meteo" {
			t.Errorf("%s: %+v", r.EventID, r.Enrichment)
		}
		// The event is from 11:50, the clock at 12:00: the past hour 11:00.
		cl, cn := sim.Cell(r.Location.Lat(), r.Location.Lon())
		if want := sim.Conditions(cl, cn, time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC)); !sim.SameValues(*r.Weather, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", r.EventID, *r.Weather, want)
		}
	}
}
