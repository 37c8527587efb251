package weather_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

// testClock is a clock whose Sleep advances it: retries and quota waits
// take no real time.
type testClock struct {
	mu     sync.Mutex
	t      time.Time
	slept  []time.Duration
	sleeps int
}

func newClock() *testClock { return &testClock{t: time.Date(2026, 11, 26, 6, 50, 0, 0, time.UTC)} }

func (c *testClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func (c *testClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.slept = append(c.slept, d)
	c.mu.Unlock()
	return ctx.Err()
}

func (c *testClock) Slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.slept...)
}

// call is one call a fakeProvider received.
type call struct {
	at     time.Time
	points int
	past   bool
}

// fakeProvider answers each point for its cell (Cell degrees wide; 0: the
// point itself) and the clock's slot, or for each hour asked. Its calls
// follow Script: each call takes the next error (nil: answer), then
// answers; Fail, when set, fails every call after the script.
type fakeProvider struct {
	clock   func() time.Time
	Cell    float64
	Script  []error
	Fail    error
	Missing []int         // the first answered call lacks these points
	Short   bool          // answer one point too few
	Block   bool          // wait for the call's context to end
	entered chan struct{} // if set, receives once per call
	gate    chan struct{} // if set, calls wait for it to close

	mu    sync.Mutex
	calls []call
}

func (p *fakeProvider) Name() string { return "fake" }

func (p *fakeProvider) begin(ctx context.Context, n int, past bool) error {
	p.mu.Lock()
	i := len(p.calls)
	p.calls = append(p.calls, call{at: p.clock(), points: n, past: past})
	p.mu.Unlock()
	if p.entered != nil {
		p.entered <- struct{}{}
	}
	if p.gate != nil {
		<-p.gate
	}
	if p.Block {
		<-ctx.Done()
		return ctx.Err()
	}
	if i < len(p.Script) {
		return p.Script[i]
	}
	return p.Fail
}

func (p *fakeProvider) Calls() []call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]call(nil), p.calls...)
}

func (p *fakeProvider) cell(pt weather.Point) (float64, float64) {
	if p.Cell == 0 {
		return pt.Lat, pt.Lon
	}
	return (math.Floor(pt.Lat/p.Cell) + 0.5) * p.Cell, (math.Floor(pt.Lon/p.Cell) + 0.5) * p.Cell
}

func (p *fakeProvider) answer(pt weather.Point, at time.Time) event.Weather {
	cl, cn := p.cell(pt)
	return event.Weather{ObservedAt: at, TemperatureC: float64(at.Unix()%86400) / 3600, WeatherCode: 3,
		CellLatitude: cl, CellLongitude: cn}
}

func (p *fakeProvider) partial(n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Missing == nil {
		return nil
	}
	m := p.Missing
	p.Missing = nil
	return &weather.PartialError{Missing: m, Asked: n}
}

func (p *fakeProvider) Current(ctx context.Context, points []weather.Point) ([]event.Weather, error) {
	if err := p.begin(ctx, len(points), false); err != nil {
		return nil, err
	}
	out := make([]event.Weather, len(points))
	for i, pt := range points {
		out[i] = p.answer(pt, weather.Slot(p.clock()))
	}
	if p.Short {
		out = out[1:]
	}
	if err := p.partial(len(points)); err != nil {
		for _, i := range err.(*weather.PartialError).Missing {
			out[i] = event.Weather{}
		}
		return out, err
	}
	return out, nil
}

func (p *fakeProvider) Hourly(ctx context.Context, points []weather.Point, start, end time.Time) ([][]event.Weather, error) {
	if err := p.begin(ctx, len(points), true); err != nil {
		return nil, err
	}
	out := make([][]event.Weather, len(points))
	for i, pt := range points {
		for h := start.Truncate(time.Hour); !h.After(end); h = h.Add(time.Hour) {
			out[i] = append(out[i], p.answer(pt, h))
		}
	}
	return out, p.partial(len(points))
}

// currentOnly hides a provider's Hourly.
type currentOnly struct{ weather.Provider }

func newService(t testing.TB, p weather.Provider, clk *testClock, cfg weather.ServiceConfig) *weather.Service {
	cfg.Clock, cfg.Sleep = clk.Now, clk.Sleep
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 1 } // no jitter: delays are the nominal ones
	}
	s := weather.NewService(p, cfg)
	t.Cleanup(func() { s.Close() })
	return s
}

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

func mustOK(t testing.TB, res []weather.Result) {
	t.Helper()
	for i, r := range res {
		if r.Err != nil || r.Weather == nil {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
}

func TestLookupCachesAndBatches(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := newService(t, p, clk, weather.ServiceConfig{})
	ctx := context.Background()
	reqs := requests(500, 50, time.Time{})

	type counts struct{ Requests, Hits, Misses, Calls, Points, Entries int64 }
	steps := []struct {
		name    string
		advance time.Duration
		want    counts
	}{
		{"cold: 500 requests in 50 cells, one call", 0, counts{500, 0, 500, 1, 50, 50}},
		{"warm: all hits", 5 * time.Minute, counts{1000, 500, 500, 1, 50, 50}},
		{"next slot: misses again", 10 * time.Minute, counts{1500, 500, 1000, 2, 100, 100}},
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
		g := s.Stats()
		if got := (counts{g.Requests, g.Hits, g.Misses, g.Calls, g.Points, int64(g.Entries)}); got != st.want {
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

// TestLookupSharesCells: grid points of one provider cell share its answer
// once the cell is learnt, so calls follow distinct (cell, slot) pairs.
func TestLookupSharesCells(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, Cell: 0.1}
	s := newService(t, p, clk, weather.ServiceConfig{})
	ctx := context.Background()
	// 100 grid points (0.01 degree) in 4 cells of 0.1 degree.
	var reqs []weather.Request
	for i := range 10 {
		for j := range 10 {
			reqs = append(reqs, weather.Request{Point: weather.Point{Lat: 10.005 + float64(i)*0.02, Lon: 20.005 + float64(j)*0.02}})
		}
	}
	mustOK(t, s.Lookup(ctx, reqs[:4])) // learns the cells of 4 points
	for slot := 1; slot <= 3; slot++ {
		clk.Advance(weather.SlotDuration)
		before := s.Stats()
		res := s.Lookup(ctx, reqs)
		mustOK(t, res)
		st := s.Stats()
		// Slot 1: the 4 learnt points give 1 cell; the 96 others are new
		// grid points and are asked once each. Later slots: one location per cell.
		want := int64(4)
		if slot == 1 {
			want = 1 + 96
		}
		if got := st.Points - before.Points; got != want {
			t.Errorf("slot %d: %d locations asked, want %d (stats %+v)", slot, got, want, st)
		}
		for i, r := range res {
			cl, cn := p.cell(reqs[i].Point)
			if r.Weather.CellLatitude != cl || r.Weather.CellLongitude != cn {
				t.Fatalf("slot %d: request %d at %v got cell %g,%g", slot, i, reqs[i].Point, r.Weather.CellLatitude, r.Weather.CellLongitude)
			}
		}
	}
	if st := s.Stats(); st.Cells != 100 || st.Entries != 1+3*4 { // the first 4 points share one cell
		t.Errorf("stats %+v", st)
	}
}

// TestLookupCurrentOrPast: the event's time picks current conditions (its
// 15-minute slot is the current one) or the past hour that holds it.
func TestLookupCurrentOrPast(t *testing.T) {
	clk := newClock() // 06:50
	now := clk.Now()
	p := &fakeProvider{clock: clk.Now}
	s := newService(t, p, clk, weather.ServiceConfig{})
	pt := weather.Point{Lat: 52.52, Lon: 13.41}
	tests := []struct {
		name      string
		at        time.Time
		wantAt    time.Time
		wantCalls int
		wantPast  bool
	}{
		{"now", now, time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC), 1, false},
		{"zero time: now", time.Time{}, time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC), 0, false},
		{"start of the slot", time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC), time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC), 0, false},
		{"a little in the future", now.Add(2 * time.Minute), time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC), 0, false},
		{"previous slot: past hour", time.Date(2026, 11, 26, 6, 44, 59, 0, time.UTC), time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC), 1, true},
		{"same past hour: cached", time.Date(2026, 11, 26, 6, 1, 0, 0, time.UTC), time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC), 0, true},
		{"three days ago", now.Add(-72*time.Hour + 3*time.Minute), time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC), 1, true},
		{"last year", time.Date(2025, 3, 1, 13, 30, 0, 0, time.UTC), time.Date(2025, 3, 1, 13, 0, 0, 0, time.UTC), 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(p.Calls())
			res := s.Lookup(context.Background(), []weather.Request{{Point: pt, At: tt.at}})
			mustOK(t, res)
			if !res[0].Weather.ObservedAt.Equal(tt.wantAt) {
				t.Errorf("observed at %s, want %s", res[0].Weather.ObservedAt, tt.wantAt)
			}
			calls := p.Calls()[before:]
			if len(calls) != tt.wantCalls || len(calls) == 1 && calls[0].past != tt.wantPast {
				t.Errorf("calls %+v, want %d (past %v)", calls, tt.wantCalls, tt.wantPast)
			}
		})
	}
	// A past hour stays cached after its slot; current conditions do not.
	clk.Advance(weather.SlotDuration)
	before := len(p.Calls())
	mustOK(t, s.Lookup(context.Background(), []weather.Request{{Point: pt, At: time.Date(2026, 11, 26, 6, 30, 0, 0, time.UTC)}}))
	if n := len(p.Calls()) - before; n != 0 {
		t.Errorf("past hour fetched again (%d calls)", n)
	}
	mustOK(t, s.Lookup(context.Background(), []weather.Request{{Point: pt}}))
	if n := len(p.Calls()) - before; n != 1 {
		t.Errorf("current conditions of a new slot: %d calls, want 1", n)
	}
	// Several past hours of a day at several places: one call.
	before = len(p.Calls())
	var reqs []weather.Request
	for h := range 5 {
		for i := range 3 {
			reqs = append(reqs, weather.Request{Point: weather.Point{Lat: 10 + float64(i), Lon: 10}, At: time.Date(2026, 11, 20, 3+h*2, 10, 0, 0, time.UTC)})
		}
	}
	res := s.Lookup(context.Background(), reqs)
	mustOK(t, res)
	for i, r := range res {
		if want := reqs[i].At.Truncate(time.Hour); !r.Weather.ObservedAt.Equal(want) {
			t.Errorf("request %d: observed at %s, want %s", i, r.Weather.ObservedAt, want)
		}
	}
	if calls := p.Calls()[before:]; len(calls) != 1 || calls[0].points != 3 {
		t.Errorf("calls %+v, want one of 3 points", calls)
	}
}

func TestLookupNoHistory(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := newService(t, currentOnly{p}, clk, weather.ServiceConfig{})
	res := s.Lookup(context.Background(), []weather.Request{
		{Point: weather.Point{Lat: 1, Lon: 1}, At: clk.Now()},
		{Point: weather.Point{Lat: 1, Lon: 1}, At: clk.Now().Add(-time.Hour)},
	})
	if res[0].Err != nil || !errors.Is(res[1].Err, weather.ErrNoHistory) {
		t.Errorf("results %+v", res)
	}
	if n := len(p.Calls()); n != 1 {
		t.Errorf("%d calls", n)
	}
}

func TestLookupMaxPointsPerCall(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := newService(t, p, clk, weather.ServiceConfig{MaxPointsPerCall: 100})
	mustOK(t, s.Lookup(context.Background(), requests(1000, 250, time.Time{})))
	if st := s.Stats(); st.Calls != 3 || st.Points != 250 || len(p.Calls()) != 3 {
		t.Errorf("stats %+v", st)
	}
}

var (
	err500 = &weather.APIError{Provider: "fake", StatusCode: 500, Reason: "boom"}
	err503 = &weather.APIError{Provider: "fake", StatusCode: 503, Reason: "down"}
	err429 = &weather.APIError{Provider: "fake", StatusCode: 429, Reason: "slow down", Wait: 7 * time.Second}
	err400 = &weather.APIError{Provider: "fake", StatusCode: 400, Reason: "bad latitude"}
	// Retry-After longer than the default MaxRetryAfter (2m), and shorter
	// than the backoff.
	err429Long = &weather.APIError{Provider: "fake", StatusCode: 429, Reason: "come back later", Wait: 3 * time.Minute}
	err503Soon = &weather.APIError{Provider: "fake", StatusCode: 503, Reason: "down", Wait: 100 * time.Millisecond}
	errNet     = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	errBad     = errors.New("decode answer: unexpected end of JSON input")
)

// TestRetries: which errors are retried, how often, after how long.
func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		p         *fakeProvider
		retries   int
		wantCalls int
		wantSleep []time.Duration
		wantErr   error // nil: every request answered
		errHas    string
	}{
		{"500 then success", &fakeProvider{Script: []error{err500}}, 3, 2, []time.Duration{time.Second}, nil, ""},
		{"500 three times then success", &fakeProvider{Script: []error{err500, err503, err500}}, 3, 4,
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, nil, ""},
		{"500 past the retries", &fakeProvider{Fail: err500}, 2, 3, []time.Duration{time.Second, 2 * time.Second}, err500, "HTTP 500"},
		{"429 honours Retry-After", &fakeProvider{Script: []error{err429}}, 3, 2, []time.Duration{7 * time.Second}, nil, ""},
		{"Retry-After past MaxRetryAfter ends the retries", &fakeProvider{Fail: err429Long}, 3, 1, nil, err429Long, "HTTP 429"},
		{"Retry-After shorter than the backoff", &fakeProvider{Script: []error{err503Soon, err503Soon}}, 3, 3,
			[]time.Duration{time.Second, 2 * time.Second}, nil, ""},
		{"400 is not retried", &fakeProvider{Fail: err400}, 3, 1, nil, err400, "HTTP 400"},
		{"network error", &fakeProvider{Script: []error{errNet}}, 3, 2, []time.Duration{time.Second}, nil, ""},
		{"malformed answer", &fakeProvider{Script: []error{errBad}}, 3, 2, []time.Duration{time.Second}, nil, ""},
		{"wrong number of answers", &fakeProvider{Short: true}, 1, 2, []time.Duration{time.Second}, nil, "answered 2 points for 3"},
		{"no retries", &fakeProvider{Fail: err503}, -1, 1, nil, err503, "HTTP 503"},
		{"slow answers time out", &fakeProvider{Block: true}, 1, 2, []time.Duration{time.Second}, context.DeadlineExceeded, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			p := tt.p
			p.clock = clk.Now
			s := newService(t, p, clk, weather.ServiceConfig{Retries: tt.retries, BackoffBase: time.Second,
				CallTimeout: 20 * time.Millisecond, Breaker: weather.BreakerConfig{Failures: -1}})
			res := s.Lookup(context.Background(), requests(6, 3, time.Time{}))
			for i, r := range res {
				switch {
				case tt.wantErr == nil && tt.errHas == "":
					if r.Err != nil {
						t.Fatalf("result %d: %v", i, r.Err)
					}
				case tt.wantErr != nil && !errors.Is(r.Err, tt.wantErr), !strings.Contains(fmt.Sprint(r.Err), tt.errHas):
					t.Fatalf("result %d: err %v, want %v / %q", i, r.Err, tt.wantErr, tt.errHas)
				}
			}
			if n := len(p.Calls()); n != tt.wantCalls {
				t.Errorf("%d calls, want %d", n, tt.wantCalls)
			}
			if got := clk.Slept(); fmt.Sprint(got) != fmt.Sprint(tt.wantSleep) {
				t.Errorf("slept %v, want %v", got, tt.wantSleep)
			}
		})
	}
}

// TestRetryPartial: an answer lacking members completes the others and asks
// again for the missing ones only.
func TestRetryPartial(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, Missing: []int{0, 2}}
	s := newService(t, p, clk, weather.ServiceConfig{})
	mustOK(t, s.Lookup(context.Background(), requests(8, 4, time.Time{})))
	calls := p.Calls()
	if len(calls) != 2 || calls[0].points != 4 || calls[1].points != 2 {
		t.Errorf("calls %+v, want 4 points then the 2 missing", calls)
	}
}

// TestJitter: full jitter, each delay uniform in [0, ceiling], the
// ceilings 1s, 2s, 4s.
func TestJitter(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, Script: []error{err500, err500, err500}}
	r := []float64{0, 0.5, 0.999}
	i := 0
	s := newService(t, p, clk, weather.ServiceConfig{BackoffBase: time.Second, Rand: func() float64 { i++; return r[i-1] }})
	mustOK(t, s.Lookup(context.Background(), requests(1, 1, time.Time{})))
	got := clk.Slept()
	want := []time.Duration{0, time.Second, 3996 * time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("slept %v, want %v", got, want)
	}
	for k := range want {
		if got[k].Round(time.Millisecond) != want[k] {
			t.Errorf("sleep %d: %s, want %s", k, got[k], want[k])
		}
	}
}

// TestBreaker: a failing provider opens the circuit; calls stop until a
// probe is let through after OpenFor; a good probe closes it.
func TestBreaker(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, Fail: err503}
	s := newService(t, p, clk, weather.ServiceConfig{Retries: -1,
		Breaker: weather.BreakerConfig{Failures: 3, OpenFor: time.Minute, MaxOpenFor: 4 * time.Minute}})
	ctx := context.Background()
	n := 0.0
	look := func() error {
		clk.Advance(time.Second)
		n++ // a new place each time: nothing comes from the cache
		return s.Lookup(ctx, []weather.Request{{Point: weather.Point{Lat: n, Lon: n}}})[0].Err
	}
	steps := []struct {
		name      string
		advance   time.Duration
		fix       bool
		wantErr   error
		wantCalls int
		wantState string
	}{
		{"failure 1", 0, false, err503, 1, "closed"},
		{"failure 2", 0, false, err503, 2, "closed"},
		{"failure 3 opens", 0, false, err503, 3, "open"},
		{"open: no call", 0, false, weather.ErrCircuitOpen, 3, "open"},
		{"still open", 30 * time.Second, false, weather.ErrCircuitOpen, 3, "open"},
		{"probe fails: open for twice as long", 30 * time.Second, false, err503, 4, "open"},
		{"still open after a minute", time.Minute, false, weather.ErrCircuitOpen, 4, "open"},
		{"probe succeeds: closed", time.Minute, true, nil, 5, "closed"},
		{"closed", 0, true, nil, 6, "closed"},
	}
	for _, st := range steps {
		clk.Advance(st.advance)
		if st.fix {
			p.mu.Lock()
			p.Fail = nil
			p.mu.Unlock()
		}
		err := look()
		if st.wantErr == nil && err != nil || st.wantErr != nil && !errors.Is(err, st.wantErr) {
			t.Fatalf("%s: err %v, want %v", st.name, err, st.wantErr)
		}
		if n := len(p.Calls()); n != st.wantCalls {
			t.Errorf("%s: %d calls, want %d", st.name, n, st.wantCalls)
		}
		if got := s.Stats().BreakerState; got != st.wantState {
			t.Errorf("%s: state %s, want %s", st.name, got, st.wantState)
		}
	}
	if st := s.Stats(); st.BreakerOpens != 2 || st.BreakerRejects != 3 {
		t.Errorf("stats %+v", st)
	}
}

// TestQuotaNeverExceeded drives many lookups of new cells through a small
// quota: every request is answered, the provider never sees more locations
// than a window allows, and the waits are counted.
func TestQuotaNeverExceeded(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	windows := []weather.Window{{time.Minute, 40}, {time.Hour, 300}}
	s := newService(t, p, clk, weather.ServiceConfig{Quota: windows, MaxPointsPerCall: 15,
		QuotaMaxWait: 2 * time.Hour, FetchTimeout: 24 * time.Hour})
	ctx := context.Background()
	var wg sync.WaitGroup
	total := 0
	for g := range 4 { // concurrent lookups, as several workers would
		wg.Go(func() {
			for b := range 5 {
				reqs := requests(60, 30, time.Time{})
				for i := range reqs {
					reqs[i].Lat += float64(g*5+b) + 1 // new cells each batch
				}
				mustOK(t, s.Lookup(ctx, reqs))
			}
		})
		total += 5 * 30
	}
	wg.Wait()
	calls := p.Calls()
	sum := 0
	for _, c := range calls {
		sum += c.points
	}
	// Each 15-minute slot may refetch; at least every distinct cell was asked.
	if sum < total {
		t.Errorf("%d locations asked, want at least %d", sum, total)
	}
	for _, w := range windows {
		for i := range calls {
			in := 0
			for _, c := range calls {
				if !c.at.Before(calls[i].at) && c.at.Before(calls[i].at.Add(w.Per)) {
					in += c.points
				}
			}
			if in > w.Limit {
				t.Fatalf("%d locations in the %s from %s, limit %d", in, w.Per, calls[i].at, w.Limit)
			}
		}
	}
	if st := s.Stats(); st.QuotaWaits == 0 || st.QuotaWaited == 0 || st.QuotaExhausted != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestQuotaExhausted: a wait beyond QuotaMaxWait fails fast with
// ErrQuotaExhausted (the worker's backpressure) instead of waiting.
func TestQuotaExhausted(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := newService(t, p, clk, weather.ServiceConfig{Quota: []weather.Window{{time.Hour, 10}}, QuotaMaxWait: time.Minute})
	mustOK(t, s.Lookup(context.Background(), requests(10, 10, time.Time{})))
	res := s.Lookup(context.Background(), requests(20, 20, time.Time{})[10:])
	for i, r := range res {
		if !errors.Is(r.Err, weather.ErrQuotaExhausted) || weather.RetryAfter(r.Err) != time.Hour {
			t.Fatalf("result %d: %v (retry after %s)", i, r.Err, weather.RetryAfter(r.Err))
		}
	}
	if st := s.Stats(); st.QuotaExhausted != 1 || st.Calls != 1 || len(clk.Slept()) != 0 {
		t.Errorf("stats %+v, slept %v", st, clk.Slept())
	}
}

func TestQuotaWindows(t *testing.T) {
	clk := newClock()
	q := weather.NewQuota([]weather.Window{{time.Minute, 10}, {time.Hour, 22}}, 0, clk.Now, clk.Sleep)
	ctx := context.Background()
	steps := []struct {
		n        int
		advance  time.Duration
		wantWait time.Duration
	}{
		{6, 0, 0},
		{4, 10 * time.Second, 0},           // 10 in the minute
		{3, 0, 50 * time.Second},           // waits for the first 6 to leave the minute
		{7, 0, 10 * time.Second},           // then for the 4
		{5, 0, time.Hour - 70*time.Second}, // 25 in the hour: waits for the first 6 to leave it
		{30, 0, -1},                        // more than a window holds: error
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		before := clk.Now()
		done, err := q.Wait(ctx, st.n)
		if st.wantWait < 0 {
			if err == nil {
				t.Errorf("step %d: no error", i)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		done()
		if got := clk.Now().Sub(before); got != st.wantWait {
			t.Errorf("step %d: waited %s, want %s", i, got, st.wantWait)
		}
	}
	// A deadline shorter than the wait fails at once.
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := q.Wait(dctx, 10); !errors.Is(err, weather.ErrQuotaExhausted) {
		t.Errorf("err = %v", err)
	}
}

func TestLookupErrorsAreNotCached(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, Script: []error{err400}}
	s := newService(t, p, clk, weather.ServiceConfig{})
	ctx := context.Background()
	for i, r := range s.Lookup(ctx, requests(20, 5, time.Time{})) {
		var ae *weather.APIError
		if r.Weather != nil || !errors.As(r.Err, &ae) || ae.StatusCode != 400 || !strings.Contains(r.Err.Error(), "weather fake") {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if st := s.Stats(); st.Errors != 20 || st.Calls != 1 || st.Entries != 0 {
		t.Errorf("stats %+v", st)
	}
	mustOK(t, s.Lookup(ctx, requests(20, 5, time.Time{})))
	if st := s.Stats(); st.Calls != 2 {
		t.Errorf("calls %d, want 2", st.Calls)
	}
	// Bad coordinates never reach the provider.
	bad := s.Lookup(ctx, []weather.Request{{Point: weather.Point{Lat: 91, Lon: 0}}})
	if bad[0].Err == nil || s.Stats().Calls != 2 || s.Stats().Invalid != 1 {
		t.Errorf("bad coordinates: %+v %+v", bad[0], s.Stats())
	}
}

func TestLookupStaleIfError(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := newService(t, p, clk, weather.ServiceConfig{StaleMaxAge: 30 * time.Minute, Retries: -1})
	ctx := context.Background()
	reqs := requests(4, 2, time.Time{})
	first := s.Lookup(ctx, reqs)
	mustOK(t, first)
	p.mu.Lock()
	p.Fail = err503
	p.mu.Unlock()
	clk.Advance(15 * time.Minute) // 07:05; the answer is of 06:45
	for i, r := range s.Lookup(ctx, reqs) {
		if r.Err != nil || r.Status != event.StatusStale || *r.Weather != *first[i].Weather || !strings.Contains(r.Reason, "HTTP 503") {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	clk.Advance(30 * time.Minute) // too old now
	for i, r := range s.Lookup(ctx, reqs) {
		if !errors.Is(r.Err, err503) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if st := s.Stats(); st.Stale != 4 || st.Errors != 4 {
		t.Errorf("stats %+v", st)
	}
}

// TestStaleWhileRevalidate: a miss with an earlier answer is answered stale
// at once, and the fresh answer fetched meanwhile serves the next lookups.
func TestStaleWhileRevalidate(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now}
	s := newService(t, p, clk, weather.ServiceConfig{StaleMaxAge: 30 * time.Minute, StaleWhileRevalidate: true})
	ctx := context.Background()
	reqs := requests(4, 2, time.Time{})
	first := s.Lookup(ctx, reqs)
	mustOK(t, first)
	p.gate = make(chan struct{}) // hold the refresh
	clk.Advance(15 * time.Minute)
	for i, r := range s.Lookup(ctx, reqs) {
		if r.Status != event.StatusStale || *r.Weather != *first[i].Weather {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	close(p.gate)
	s.Wait()
	for i, r := range s.Lookup(ctx, reqs) {
		if r.Status != event.StatusEnriched || !r.Weather.ObservedAt.Equal(weather.Slot(clk.Now())) {
			t.Errorf("result %d after the refresh: %+v", i, r)
		}
	}
	if st := s.Stats(); st.Calls != 2 || st.Refreshes != 2 || st.Stale != 4 { // 2 cells refreshed in one call
		t.Errorf("stats %+v", st)
	}
}

// TestLookupCoalesces starts a lookup whose provider call is held, then
// others for the same keys: they wait for the first call.
func TestLookupCoalesces(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, entered: make(chan struct{}, 10), gate: make(chan struct{})}
	s := newService(t, p, clk, weather.ServiceConfig{})
	ctx := context.Background()
	reqs := requests(30, 10, time.Time{})

	results := make([][]weather.Result, 4)
	var wg sync.WaitGroup
	wg.Go(func() { results[0] = s.Lookup(ctx, reqs) })
	<-p.entered // the first call is in flight
	for k := 1; k < len(results); k++ {
		wg.Go(func() { results[k] = s.Lookup(ctx, reqs) })
	}
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
		mustOK(t, res)
		_ = k
	}
}

// TestCancelledLeaderDoesNotFailFollowers: the Lookup that started a fetch
// gives up; those that joined it still get the answer.
func TestCancelledLeaderDoesNotFailFollowers(t *testing.T) {
	clk := newClock()
	p := &fakeProvider{clock: clk.Now, entered: make(chan struct{}, 10), gate: make(chan struct{})}
	s := newService(t, p, clk, weather.ServiceConfig{})
	reqs := requests(2, 2, time.Time{})
	lctx, cancel := context.WithCancel(context.Background())
	leader := make(chan []weather.Result)
	go func() { leader <- s.Lookup(lctx, reqs) }()
	<-p.entered
	follower := make(chan []weather.Result)
	go func() { follower <- s.Lookup(context.Background(), reqs) }()
	for s.Stats().Coalesced < 2 {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	cancel()
	for i, r := range <-leader {
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("leader result %d: %+v", i, r)
		}
	}
	close(p.gate)
	mustOK(t, <-follower)
	if n := len(p.Calls()); n != 1 {
		t.Errorf("%d calls", n)
	}
}

func TestCacheBounded(t *testing.T) {
	tests := []struct {
		name        string
		cfg         weather.ServiceConfig
		wantEntries int
	}{
		{"entries", weather.ServiceConfig{MaxEntries: 10}, 10},
		{"bytes", weather.ServiceConfig{MaxBytes: 6000}, 23}, // 252 bytes an entry
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			p := &fakeProvider{clock: clk.Now}
			s := newService(t, p, clk, tt.cfg)
			s.Lookup(context.Background(), requests(50, 50, time.Time{}))
			st := s.Stats()
			if st.Entries > tt.wantEntries || st.Entries < tt.wantEntries/2 || st.Evicted != int64(50-st.Entries) {
				t.Errorf("stats %+v", st)
			}
			if tt.cfg.MaxBytes > 0 && st.Bytes > tt.cfg.MaxBytes {
				t.Errorf("%d bytes, limit %d", st.Bytes, tt.cfg.MaxBytes)
			}
			// The most recent are the ones kept.
			before := s.Stats().Hits
			s.Lookup(context.Background(), requests(50, 50, time.Time{})[50-st.Entries:])
			if hits := s.Stats().Hits - before; hits != int64(st.Entries) {
				t.Errorf("hits %d, want %d", hits, st.Entries)
			}
		})
	}
}

func TestServiceConfigValidate(t *testing.T) {
	err := weather.ServiceConfig{GridDegrees: 2, MaxEntries: -1, MaxPointsPerCall: 700, StaleMaxAge: -time.Second,
		Retries: -2, Quota: []weather.Window{{time.Minute, 600}, {0, 5}}, StaleWhileRevalidate: false}.Validate()
	for _, want := range []string{"grid", "cache size", "stale max age", "retries", "quota window 1", "exceeds the smallest quota"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in %v", want, err)
		}
	}
	if err := (weather.ServiceConfig{StaleWhileRevalidate: true}).Validate(); err == nil {
		t.Error("stale-while-revalidate without a max age accepted")
	}
	if err := (weather.ServiceConfig{}).Validate(); err != nil {
		t.Error(err)
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
	// The WMO 4677 subset Open-Meteo documents: 0, 1-3, 45, 48, 51-57 (odd),
	// 61-67 (odd), 71-77 (odd), 80-86 (80-82, 85, 86), 95-99 (95, 96, 99).
	if len(weather.Codes) != 28 {
		t.Errorf("%d codes", len(weather.Codes))
	}
	for code, want := range map[int]string{0: "Clear sky", 61: "Slight rain", 99: "Thunderstorm with heavy hail", 4: "Unknown (WMO code 4)"} {
		if got := weather.Condition(code); got != want {
			t.Errorf("Condition(%d) = %q, want %q", code, got, want)
		}
	}
}

// simService is a Service over the real Open-Meteo client and a simulator
// (with fault injection) on httptest.
func simService(t testing.TB, clk *testClock, inject func(r *http.Request) sim.Fault, cfg weather.ServiceConfig) (*weather.Service, *sim.Sim) {
	t.Helper()
	sm := sim.New(sim.Options{Clock: clk.Now, Users: 500, Inject: func(api string, r *http.Request) sim.Fault {
		if inject == nil {
			return sim.Fault{}
		}
		return inject(r)
	}})
	srv := httptest.NewServer(sm.OpenMeteo())
	t.Cleanup(srv.Close)
	c, err := openmeteo.New(openmeteo.Config{BaseURL: srv.URL, Retries: -1, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return newService(t, c, clk, cfg), sm
}

// TestServiceOverSim joins the simulator's users with its weather through the
// real client: every answer is Conditions of the user's cell.
func TestServiceOverSim(t *testing.T) {
	clk := newClock()
	s, sm := simService(t, clk, nil, weather.ServiceConfig{})
	var reqs []weather.Request
	for _, u := range sm.Users() {
		reqs = append(reqs, weather.Request{Point: weather.Point{Lat: u.Latitude, Lon: u.Longitude}, At: clk.Now()})
	}
	check := func(res []weather.Result, at func(i int) time.Time) {
		t.Helper()
		for i, r := range res {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			g := s.GridPoint(reqs[i].Point)
			cl, cn := sim.Cell(g.Lat, g.Lon)
			if want := sim.Conditions(cl, cn, at(i)); !sim.SameValues(*r.Weather, want) || r.Weather.Provider != "open-meteo" {
				t.Fatalf("request %d:\n got %+v\nwant %+v", i, *r.Weather, want)
			}
		}
	}
	check(s.Lookup(context.Background(), reqs), func(int) time.Time { return clk.Now() })
	st := s.Stats()
	if st.Calls != sm.Stats().OpenMeteoRequests || st.Points != sm.Stats().OpenMeteoLocations || st.Calls != (st.Points+99)/100 {
		t.Errorf("stats %+v, sim %+v", st, sm.Stats())
	}
	// The same users' events of two days ago: past hours, from the forecast API.
	for i := range reqs {
		reqs[i].At = clk.Now().Add(-48*time.Hour - time.Duration(i%5)*time.Hour)
	}
	check(s.Lookup(context.Background(), reqs), func(i int) time.Time { return reqs[i].At.Truncate(time.Hour) })
	// And of last year: the archive API.
	for i := range reqs {
		reqs[i].At = clk.Now().AddDate(-1, 0, 0).Add(-time.Duration(i%3) * time.Hour)
	}
	check(s.Lookup(context.Background(), reqs), func(i int) time.Time { return reqs[i].At.Truncate(time.Hour) })
	t.Logf("500 sim users now, 2 days ago, a year ago: %+v", s.Stats())
}

// TestServiceSimFaults: the Service over the real client and a misbehaving
// simulator. Faults hit the first requests; every event still gets its
// weather (or, past the retries, a clear error), with the calls counted.
func TestServiceSimFaults(t *testing.T) {
	tests := []struct {
		name      string
		fault     sim.Fault
		times     int // requests that misbehave
		retries   int
		wantCalls int64
		wantErr   string
		wantSleep time.Duration // total backoff
	}{
		{"500 once", sim.Fault{Status: 500}, 1, 3, 2, "", time.Second},
		{"503 past the retries", sim.Fault{Status: 503}, 100, 2, 3, "HTTP 503", 3 * time.Second},
		{"429 with Retry-After", sim.Fault{Status: 429, RetryAfter: 20 * time.Second}, 1, 3, 2, "", 20 * time.Second},
		{"400 not retried", sim.Fault{Status: 400}, 1, 3, 1, "HTTP 400", 0},
		{"slow answer times out, then answers", sim.Fault{Delay: time.Hour}, 1, 3, 2, "", time.Second},
		{"malformed JSON", sim.Fault{Malformed: true}, 1, 3, 2, "", time.Second},
		{"missing members", sim.Fault{Missing: []int{0, 3}}, 1, 3, 2, "", time.Second},
		{"reordered members", sim.Fault{Reverse: true}, 1, 3, 1, "", 0},
		{"missing and reordered", sim.Fault{Missing: []int{2}, Reverse: true}, 1, 3, 2, "", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			var mu sync.Mutex
			n := 0
			s, sm := simService(t, clk, func(r *http.Request) sim.Fault {
				mu.Lock()
				defer mu.Unlock()
				n++
				if n <= tt.times {
					return tt.fault
				}
				return sim.Fault{}
			}, weather.ServiceConfig{Retries: tt.retries, BackoffBase: time.Second, CallTimeout: 50 * time.Millisecond,
				Breaker: weather.BreakerConfig{Failures: -1}})
			reqs := requests(12, 6, time.Time{})
			res := s.Lookup(context.Background(), reqs)
			for i, r := range res {
				if tt.wantErr == "" {
					if r.Err != nil {
						t.Fatalf("result %d: %v", i, r.Err)
					}
					g := s.GridPoint(reqs[i].Point)
					cl, cn := sim.Cell(g.Lat, g.Lon)
					if want := sim.Conditions(cl, cn, clk.Now()); !sim.SameValues(*r.Weather, want) {
						t.Fatalf("result %d:\n got %+v\nwant %+v", i, *r.Weather, want)
					}
				} else if r.Err == nil || !strings.Contains(r.Err.Error(), tt.wantErr) {
					t.Fatalf("result %d: err %v, want %q", i, r.Err, tt.wantErr)
				}
			}
			if st := s.Stats(); st.Calls != tt.wantCalls {
				t.Errorf("%d calls, want %d (stats %+v, sim %+v)", st.Calls, tt.wantCalls, st, sm.Stats())
			}
			var slept time.Duration
			for _, d := range clk.Slept() {
				slept += d
			}
			if slept != tt.wantSleep {
				t.Errorf("backoff %s, want %s", slept, tt.wantSleep)
			}
		})
	}
}
