package weather_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

// fakeProvider answers each point with its own coordinates as the cell and
// the clock's slot, counting calls. It can fail, and can hold its calls
// until released.
type fakeProvider struct {
	clock   func() time.Time
	calls   atomic.Int64
	fail    atomic.Pointer[error]
	short   bool          // answer one point too few
	entered chan struct{} // if set, receives once per call before answering
	gate    chan struct{} // if set, calls wait for it to close
}

func (p *fakeProvider) Name() string { return "fake" }

func (p *fakeProvider) Current(ctx context.Context, points []weather.Point) ([]event.Weather, error) {
	p.calls.Add(1)
	if p.entered != nil {
		p.entered <- struct{}{}
	}
	if p.gate != nil {
		<-p.gate
	}
	if e := p.fail.Load(); e != nil {
		return nil, *e
	}
	out := make([]event.Weather, len(points))
	for i, pt := range points {
		out[i] = event.Weather{ObservedAt: weather.Slot(p.clock()), TemperatureC: pt.Lat / 10, WeatherCode: 3,
			CellLatitude: pt.Lat, CellLongitude: pt.Lon}
	}
	if p.short {
		out = out[1:]
	}
	return out, nil
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newClock() *testClock { return &testClock{t: time.Date(2026, 11, 26, 6, 50, 0, 0, time.UTC)} }

// requests makes n requests spread over cells grid keys (0.01 degree), with
// points jittered inside each key.
func requests(n, cells int, at time.Time) []weather.Request {
	reqs := make([]weather.Request, n)
	for i := range reqs {
		c := i % cells
		jitter := float64(i/cells%7-3) * 0.001
		reqs[i] = weather.Request{Point: weather.Point{Lat: 40 + float64(c)*0.01 + jitter, Lon: -3 + float64(c)*0.02 - jitter}, At: at}
	}
	return reqs
}

func TestLookupCachesAndBatches(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now})
	ctx := context.Background()
	reqs := requests(500, 50, clk.Now())

	steps := []struct {
		name    string
		advance time.Duration
		want    weather.Stats
	}{
		{"cold: 500 requests in 50 cells, one call", 0,
			weather.Stats{Requests: 500, Misses: 500, Calls: 1, Points: 50, Entries: 50}},
		{"warm: all hits", 5 * time.Minute,
			weather.Stats{Requests: 1000, Hits: 500, Misses: 500, Calls: 1, Points: 50, Entries: 50}},
		{"next slot: misses again", 10 * time.Minute,
			weather.Stats{Requests: 1500, Hits: 500, Misses: 1000, Calls: 2, Points: 100, Entries: 100}},
	}
	for _, st := range steps {
		clk.Advance(st.advance)
		res := s.Lookup(ctx, reqs)
		for i, r := range res {
			if r.Err != nil || r.Weather == nil || r.Status != event.StatusEnriched {
				t.Fatalf("%s: result %d: %+v", st.name, i, r)
			}
			g := s.GridPoint(reqs[i].Point)
			if r.Weather.CellLatitude != g.Lat || r.Weather.CellLongitude != g.Lon || r.Weather.Provider != "fake" ||
				r.Weather.Condition != "Overcast" || !r.Weather.ObservedAt.Equal(weather.Slot(clk.Now())) {
				t.Fatalf("%s: result %d for %v: %+v", st.name, i, reqs[i].Point, r.Weather)
			}
		}
		if got := s.Stats(); got != st.want {
			t.Errorf("%s:\n got %+v\nwant %+v", st.name, got, st.want)
		}
	}
	// Results do not alias each other.
	res := s.Lookup(ctx, reqs[:2])
	res[0].Weather.TemperatureC = 99
	if again := s.Lookup(ctx, reqs[:1]); again[0].Weather.TemperatureC == 99 {
		t.Errorf("a result aliases the cache")
	}
}

func TestLookupMaxPointsPerCall(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now, MaxPointsPerCall: 100})
	s.Lookup(context.Background(), requests(1000, 250, clk.Now()))
	if st := s.Stats(); st.Calls != 3 || st.Points != 250 || p.calls.Load() != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestLookupErrors(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now})
	ctx := context.Background()
	apiErr := error(&openmeteo.APIError{StatusCode: 429, Reason: "Minutely API request limit exceeded."})
	p.fail.Store(&apiErr)
	res := s.Lookup(ctx, requests(20, 5, clk.Now()))
	for i, r := range res {
		var ae *openmeteo.APIError
		if r.Weather != nil || !errors.As(r.Err, &ae) || ae.StatusCode != 429 || !strings.Contains(r.Err.Error(), "weather fake") {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if st := s.Stats(); st.Errors != 20 || st.Calls != 1 || st.Entries != 0 {
		t.Errorf("stats %+v", st)
	}
	// Errors are not cached: the next lookup asks again.
	p.fail.Store(nil)
	for i, r := range s.Lookup(ctx, requests(20, 5, clk.Now())) {
		if r.Err != nil {
			t.Fatalf("result %d: %v", i, r.Err)
		}
	}
	if st := s.Stats(); st.Calls != 2 {
		t.Errorf("calls %d, want 2", st.Calls)
	}

	// Bad coordinates never reach the provider.
	bad := s.Lookup(ctx, []weather.Request{{Point: weather.Point{Lat: 91, Lon: 0}}})
	if bad[0].Err == nil || s.Stats().Calls != 2 || s.Stats().Invalid != 1 {
		t.Errorf("bad coordinates: %+v %+v", bad[0], s.Stats())
	}

	// A provider that answers the wrong number of points fails the lookup.
	short := weather.NewService(&fakeProvider{clock: clk.Now, short: true}, weather.ServiceConfig{Clock: clk.Now})
	if r := short.Lookup(ctx, requests(3, 3, clk.Now())); r[0].Err == nil || !strings.Contains(r[0].Err.Error(), "answered 2 points for 3") {
		t.Errorf("short answer: %+v", r[0])
	}
}

func TestLookupStale(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now, StaleFor: 30 * time.Minute})
	ctx := context.Background()
	reqs := requests(4, 2, clk.Now())
	first := s.Lookup(ctx, reqs)
	boom := errors.New("boom")
	p.fail.Store(&boom)
	clk.Advance(15 * time.Minute)
	for i, r := range s.Lookup(ctx, reqs) {
		if r.Err != nil || r.Status != event.StatusStale || *r.Weather != *first[i].Weather {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	clk.Advance(30 * time.Minute) // too old now
	for i, r := range s.Lookup(ctx, reqs) {
		if !errors.Is(r.Err, boom) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if st := s.Stats(); st.Stale != 4 || st.Errors != 4 {
		t.Errorf("stats %+v", st)
	}
}

// TestLookupCoalesces starts a lookup whose provider call is held, then a
// second lookup for the same keys: it must wait for the first call.
func TestLookupCoalesces(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, entered: make(chan struct{}, 10), gate: make(chan struct{})}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now})
	ctx := context.Background()
	reqs := requests(30, 10, clk.Now())

	results := make([][]weather.Result, 4)
	var wg sync.WaitGroup
	wg.Go(func() { results[0] = s.Lookup(ctx, reqs) })
	<-p.entered // the first call is in flight
	for k := 1; k < len(results); k++ {
		wg.Go(func() { results[k] = s.Lookup(ctx, reqs) })
	}
	// Wait until the other lookups have joined the call in flight.
	for s.Stats().Coalesced < 3*30 {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	close(p.gate)
	wg.Wait()
	if st := s.Stats(); st.Calls != 1 || st.Points != 10 || st.Coalesced != 90 || st.Misses != 120 {
		t.Errorf("stats %+v", st)
	}
	for k, res := range results {
		for i, r := range res {
			if r.Err != nil || r.Weather == nil {
				t.Fatalf("lookup %d result %d: %+v", k, i, r)
			}
		}
	}
}

func TestLookupContextCancelled(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, entered: make(chan struct{}, 10), gate: make(chan struct{})}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now})
	reqs := requests(2, 2, clk.Now())
	done := make(chan struct{})
	go func() { s.Lookup(context.Background(), reqs); close(done) }()
	<-p.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i, r := range s.Lookup(ctx, reqs) {
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	close(p.gate)
	<-done
}

func TestCacheBounded(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now, MaxEntries: 10})
	s.Lookup(context.Background(), requests(50, 50, clk.Now()))
	if st := s.Stats(); st.Entries != 10 {
		t.Errorf("entries %d, want 10", st.Entries)
	}
	// The 10 most recent are the ones kept.
	s.Lookup(context.Background(), requests(50, 50, clk.Now())[40:])
	if st := s.Stats(); st.Hits != 10 {
		t.Errorf("hits %d, want 10", st.Hits)
	}
}

func TestServiceConfigValidate(t *testing.T) {
	err := weather.ServiceConfig{GridDegrees: 2, MaxEntries: -1, MaxPointsPerCall: -1, StaleFor: -time.Second}.Validate()
	if err == nil || strings.Count(err.Error(), "\n") != 3 {
		t.Errorf("err = %v, want 4 problems", err)
	}
}

func TestCondition(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range weather.Codes {
		s := weather.Condition(c)
		if strings.HasPrefix(s, "Unknown") || seen[s] || !weather.KnownCode(c) {
			t.Errorf("code %d: %q", c, s)
		}
		seen[s] = true
	}
	if len(weather.Codes) != 28 {
		t.Errorf("%d codes", len(weather.Codes))
	}
	for code, want := range map[int]string{0: "Clear sky", 61: "Slight rain", 99: "Thunderstorm with heavy hail", 4: "Unknown (WMO code 4)"} {
		if got := weather.Condition(code); got != want {
			t.Errorf("Condition(%d) = %q, want %q", code, got, want)
		}
	}
}

// TestServiceOverSim joins the simulator's users with its weather through the
// real client: every answer is Conditions of the cell of the grid point.
func TestServiceOverSim(t *testing.T) {
	now := time.Date(2026, 11, 26, 6, 52, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	sm := sim.New(sim.Options{Clock: clock, Users: 500})
	srv := httptest.NewServer(sm.OpenMeteo())
	defer srv.Close()
	c, err := openmeteo.New(openmeteo.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	s := weather.NewService(c, weather.ServiceConfig{Clock: clock})
	var reqs []weather.Request
	for _, u := range sm.Users() {
		reqs = append(reqs, weather.Request{Point: weather.Point{Lat: u.Latitude, Lon: u.Longitude}, At: now})
	}
	res := s.Lookup(context.Background(), reqs)
	for i, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		g := s.GridPoint(reqs[i].Point)
		cl, cn := sim.Cell(g.Lat, g.Lon)
		if want := sim.Conditions(cl, cn, now); !sim.SameValues(*r.Weather, want) || r.Weather.Provider != "open-meteo" {
			t.Fatalf("request %d:\n got %+v\nwant %+v", i, *r.Weather, want)
		}
	}
	st := s.Stats()
	t.Logf("500 sim users: %+v, sim %+v", st, sm.Stats())
	if st.Calls != 1 || sm.Stats().OpenMeteoRequests != int64((st.Points+99)/100) {
		t.Errorf("stats %+v, sim %+v", st, sm.Stats())
	}
}

func benchLookup(b *testing.B, cold bool) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := weather.NewService(p, weather.ServiceConfig{Clock: clk.Now})
	cells := 50
	if cold {
		cells = 500
	}
	reqs := requests(500, cells, clk.Now())
	ctx := context.Background()
	if !cold {
		s.Lookup(ctx, reqs)
	}
	start := s.Stats()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if cold {
			clk.Advance(weather.SlotDuration) // a new slot: every key misses
		}
		s.Lookup(ctx, reqs)
	}
	st := s.Stats()
	b.ReportMetric(float64(st.Calls-start.Calls)/float64(b.N), "calls/op")
	b.ReportMetric(float64(st.Points-start.Points)/float64(b.N), "points/op")
	b.ReportMetric(float64(st.Hits-start.Hits)/float64(b.N), "hits/op")
}

// BenchmarkLookupWarm: 500 requests in 50 cached cells.
func BenchmarkLookupWarm(b *testing.B) { benchLookup(b, false) }

// BenchmarkLookupCold: 500 requests in 500 cells, none cached (a free fake provider).
func BenchmarkLookupCold(b *testing.B) { benchLookup(b, true) }

// BenchmarkLookupColdSim: as Cold, through the Open-Meteo client and the
// simulator over loopback HTTP.
func BenchmarkLookupColdSim(b *testing.B) {
	clk := newClock()
	sm := sim.New(sim.Options{Clock: clk.Now, Users: 1})
	srv := httptest.NewServer(sm.OpenMeteo())
	defer srv.Close()
	c, err := openmeteo.New(openmeteo.Config{BaseURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	s := weather.NewService(c, weather.ServiceConfig{Clock: clk.Now})
	reqs := requests(500, 500, clk.Now())
	b.ReportAllocs()
	for b.Loop() {
		clk.Advance(weather.SlotDuration)
		for _, r := range s.Lookup(context.Background(), reqs) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.ReportMetric(float64(s.Stats().Calls)/float64(b.N), "calls/op")
	b.ReportMetric(float64(sm.Stats().OpenMeteoRequests)/float64(b.N), "http-requests/op")
}
