package weather

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// ServiceConfig configures a Service. The zero value is usable: no quota,
// the defaults below.
type ServiceConfig struct {
	// GridDegrees is the grid request coordinates are rounded to: the
	// rounded point is what the provider is asked for, and what the Service
	// learns the provider's cell of. Default 0.01 (about 1 km).
	GridDegrees float64
	// MaxEntries bounds the cache (least recently used entries go first).
	// Default 100,000. The learnt grid point -> cell map (about 50 bytes a
	// point) is bounded separately, to the larger of MaxEntries and 100,000.
	MaxEntries int
	// MaxBytes bounds the cache's memory (approximately). Default 64 MiB.
	MaxBytes int64
	// MaxPointsPerCall caps the points of one provider call; default the
	// provider's own limit (Batcher), else 100.
	MaxPointsPerCall int
	// Concurrency bounds the provider calls in flight; default 4.
	Concurrency int
	// PastTTL is how long an answer for a past hour is kept; default 24h.
	// Current conditions are kept for their 15-minute slot (and up to
	// StaleMaxAge more as stale candidates).
	PastTTL time.Duration
	// StaleMaxAge, when > 0, lets a request whose fetch failed (or, with
	// StaleWhileRevalidate, any current-conditions miss) be answered with
	// the cell's answer of an earlier slot no older than StaleMaxAge, with
	// status event.StatusStale. Default 0: no stale answers.
	StaleMaxAge time.Duration
	// StaleWhileRevalidate answers a current-conditions miss at once with a
	// stale answer, if there is one, while a fresh one is fetched in the
	// background for the requests that follow.
	StaleWhileRevalidate bool
	// CallTimeout bounds one provider call (one HTTP request); default 10s.
	CallTimeout time.Duration
	// FetchTimeout bounds a whole fetch: quota waits, attempts and backoff;
	// default 2m. Fetches run detached from the Lookup that started them,
	// so that a caller that gives up does not fail the others waiting for
	// the same answers.
	FetchTimeout time.Duration
	// Retries is the number of retries of a failed call (5xx, 429, timeout,
	// network error, unreadable or incomplete answer; never other 4xx);
	// default 3, -1 for none.
	Retries int
	// BackoffBase is the ceiling of the first retry delay, doubled each
	// retry up to BackoffMax, with full jitter (each delay is uniform in
	// [0, ceiling]; retry.Backoff). A 429's Retry-After is honoured if
	// longer; one longer than MaxRetryAfter ends the retries. Defaults
	// 500ms, 30s, 2m.
	BackoffBase   time.Duration
	BackoffMax    time.Duration
	MaxRetryAfter time.Duration
	// Quota limits the locations asked of the provider (each location of a
	// multi-location call counts). Empty: no limit.
	Quota []Window
	// QuotaMaxWait is the longest a fetch waits for the quota before its
	// requests fail with ErrQuotaExhausted (which the worker turns into
	// backpressure: the batch is redelivered later). Default 30s.
	QuotaMaxWait time.Duration
	// Breaker configures the circuit breaker.
	Breaker BreakerConfig

	// Clock returns the current time; default time.Now.
	Clock func() time.Time
	// Sleep waits d or until ctx is done (backoff and quota waits); default
	// a timer. Tests pass a fake that advances their clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a number in [0, 1) for the jitter; default math/rand/v2.
	Rand func() float64
}

// Validate reports every problem with the configuration.
func (c ServiceConfig) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.GridDegrees < 0 || c.GridDegrees > 1 || math.IsNaN(c.GridDegrees) {
		add("weather grid: %g degrees, want 0 (default) or a value in (0, 1]", c.GridDegrees)
	}
	if c.MaxEntries < 0 {
		add("weather cache size: %d, want >= 0", c.MaxEntries)
	}
	if c.MaxBytes < 0 {
		add("weather cache bytes: %d, want >= 0", c.MaxBytes)
	}
	if c.MaxPointsPerCall < 0 {
		add("weather max points per call: %d, want >= 0", c.MaxPointsPerCall)
	}
	if c.Concurrency < 0 {
		add("weather concurrency: %d, want >= 0", c.Concurrency)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"past TTL", c.PastTTL}, {"stale max age", c.StaleMaxAge}, {"call timeout", c.CallTimeout},
		{"fetch timeout", c.FetchTimeout}, {"backoff base", c.BackoffBase}, {"backoff max", c.BackoffMax},
		{"max Retry-After", c.MaxRetryAfter}, {"quota max wait", c.QuotaMaxWait},
		{"breaker open-for", c.Breaker.OpenFor}, {"breaker max open-for", c.Breaker.MaxOpenFor}} {
		if d.v < 0 {
			add("weather %s: %s, want >= 0", d.name, d.v)
		}
	}
	if c.StaleWhileRevalidate && c.StaleMaxAge == 0 {
		add("weather stale-while-revalidate needs a stale max age > 0")
	}
	if c.Retries < -1 {
		add("weather retries: %d, want >= -1", c.Retries)
	}
	if c.Breaker.Failures < -1 {
		add("weather breaker failures: %d, want >= 1, 0 (default) or -1 (off)", c.Breaker.Failures)
	}
	minLimit := 0
	for i, w := range c.Quota {
		if w.Per <= 0 || w.Limit <= 0 {
			add("weather quota window %d: %d per %s, want a positive limit and period", i, w.Limit, w.Per)
			continue
		}
		if minLimit == 0 || w.Limit < minLimit {
			minLimit = w.Limit
		}
	}
	if minLimit > 0 && c.MaxPointsPerCall > minLimit {
		add("weather max points per call (%d) exceeds the smallest quota limit (%d)", c.MaxPointsPerCall, minLimit)
	}
	return errors.Join(errs...)
}

// LatencyBounds are the upper bounds of Stats.LatencyBuckets; the last
// bucket counts the calls slower than every bound.
var LatencyBounds = [...]time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second}

// Stats are a Service's counters since it was created.
type Stats struct {
	Requests  int64 // requests looked up
	Hits      int64 // answered fresh from the cache
	Misses    int64 // not fresh in the cache: waited for a fetch, or were answered stale while one ran
	Coalesced int64 // misses that joined a fetch another Lookup had started
	Past      int64 // requests for a past hour (the rest are current conditions)
	Stale     int64 // answered with an earlier slot's answer (status stale)
	Errors    int64 // answered with Err (including Invalid)
	Invalid   int64 // requests with coordinates out of range

	Calls      int64 // provider calls (one HTTP request each), including retries
	Points     int64 // locations asked over all calls (Points/Calls: locations per call)
	CallErrors int64 // calls that failed
	Retries    int64 // calls retried after a failure
	Refreshes  int64 // fetches started by stale-while-revalidate

	QuotaWaits     int64         // calls that waited for the quota
	QuotaWaited    time.Duration // total time waited for the quota
	QuotaExhausted int64         // calls refused: the quota would not allow them soon enough

	BreakerOpens   int64  // times the circuit opened
	BreakerRejects int64  // calls not made because it was open
	BreakerState   string // closed, open or half-open

	LatencySum     time.Duration                 // provider call latency, summed
	LatencyMax     time.Duration                 // the slowest call
	LatencyBuckets [len(LatencyBounds) + 1]int64 // calls by latency (see LatencyBounds)

	Entries int   // cache entries now
	Bytes   int64 // approximate cache memory now
	Cells   int   // grid points whose provider cell is known
	Evicted int64 // entries evicted for space
}

// HitRatio is Hits/Requests.
func (s Stats) HitRatio() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Requests)
}

// Service is a weather.Joiner over a Provider.
//
// The join: a request whose time (At) falls in the current 15-minute slot
// of the Service's clock (or later, or is zero) gets current conditions; an
// older one gets the provider's value for the hour that holds At (from a
// HistoryProvider; other providers answer ErrNoHistory).
//
// The cache: answers are kept per provider grid cell, kind (current or past)
// and slot (the 15-minute slot, or the hour). The cell of a request is not
// known before the provider answered for it: the Service rounds the request
// point to its grid, asks the provider for that point, and learns from the
// answer which cell the grid point belongs to; from then on, every grid point
// of that cell shares the cell's entries, and a fetch is made per distinct
// cell and slot.
//
// Calls: all distinct misses of a Lookup are fetched with multi-location
// calls (of up to MaxPointsPerCall), concurrent Lookups that miss the same
// key share one fetch, and every call goes through the quota, the circuit
// breaker, a per-call timeout and retries with backoff.
type Service struct {
	p       Provider
	hp      HistoryProvider // nil if the provider has no past data
	name    string
	cfg     ServiceConfig
	inv     float64 // 1/grid
	perCall int
	sem     chan struct{}
	clock   func() time.Time
	retry   retry.Policy
	quota   *Quota
	br      *breaker

	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	cache   *cache
	cells   map[gridKey]cellKey
	flights map[flightKey]*flight

	lookups                                                   atomic.Uint64
	requests, hits, misses, coalesced, past, stale, errs, bad atomic.Int64
	calls, points, callErrs, retries, refreshes               atomic.Int64

	latMu      sync.Mutex
	latSum     time.Duration
	latMax     time.Duration
	latBuckets [len(LatencyBounds) + 1]int64
}

var _ Joiner = (*Service)(nil)

// flightKey identifies a fetch: by the provider cell when it is known, else
// by the grid point; with the kind and slot start.
type flightKey struct {
	lat, lon int32
	byCell   bool
	kind     kind
	t        int64
}

// flight is one key being fetched; waiters wait for done.
type flight struct {
	key    flightKey
	lookup uint64 // the Lookup that started it
	grid   gridKey
	point  Point
	t      time.Time
	done   chan struct{}
	closed bool // under Service.mu
	w      event.Weather
	err    error
}

// NewService returns a Service over p. It panics if cfg does not validate:
// check cfg.Validate first where cfg comes from the user. Close it to stop
// background fetches.
func NewService(p Provider, cfg ServiceConfig) *Service {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("weather.NewService: %v", err))
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if cfg.GridDegrees == 0 {
		cfg.GridDegrees = 0.01
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 4
	}
	switch cfg.Retries {
	case 0:
		cfg.Retries = 3
	case -1:
		cfg.Retries = 0
	}
	def(&cfg.PastTTL, 24*time.Hour)
	def(&cfg.CallTimeout, 10*time.Second)
	def(&cfg.FetchTimeout, 2*time.Minute)
	def(&cfg.BackoffBase, 500*time.Millisecond)
	def(&cfg.BackoffMax, 30*time.Second)
	def(&cfg.MaxRetryAfter, 2*time.Minute)
	def(&cfg.QuotaMaxWait, 30*time.Second)
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = retry.Sleep
	}
	perCall := cfg.MaxPointsPerCall
	if perCall == 0 {
		perCall = 100
		if b, ok := p.(Batcher); ok && b.MaxPointsPerCall() > 0 {
			perCall = b.MaxPointsPerCall()
		}
		for _, w := range cfg.Quota {
			perCall = min(perCall, w.Limit)
		}
	}
	inv := 1 / cfg.GridDegrees
	if r := math.Round(inv); math.Abs(inv-r) < 1e-9 {
		inv = r
	}
	s := &Service{
		p: p, name: p.Name(), cfg: cfg, inv: inv, perCall: perCall,
		sem: make(chan struct{}, cfg.Concurrency), clock: cfg.Clock,
		br:      newBreaker(cfg.Breaker, cfg.Clock),
		cache:   newCache(cfg.MaxEntries, cfg.MaxBytes),
		cells:   map[gridKey]cellKey{},
		flights: map[flightKey]*flight{},
	}
	if hp, ok := p.(HistoryProvider); ok {
		s.hp = hp
	}
	s.retry = retry.Policy{
		Backoff:     retry.Backoff{Initial: cfg.BackoffBase, Max: cfg.BackoffMax},
		MaxAttempts: cfg.Retries + 1,
		Retryable: func(err error) bool {
			// A Retry-After longer than MaxRetryAfter ends the retries.
			hint, _ := retry.RetryAfter(err)
			return Retryable(err) && hint <= cfg.MaxRetryAfter
		},
		MaxHint: cfg.MaxRetryAfter,
		OnRetry: func(context.Context, int, error, time.Duration) { s.retries.Add(1) },
		Sleep:   cfg.Sleep,
		Rand:    cfg.Rand,
	}
	if len(cfg.Quota) > 0 {
		s.quota = NewQuota(cfg.Quota, cfg.QuotaMaxWait, cfg.Clock, cfg.Sleep)
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	return s
}

// Name returns the provider's name.
func (s *Service) Name() string { return s.name }

// Close cancels the fetches in flight and waits for them to end. Lookups
// after Close fail.
func (s *Service) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// Wait waits until no fetch is in flight (for tests and benchmarks; the
// stale-while-revalidate refreshes run in the background).
func (s *Service) Wait() { s.wg.Wait() }

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	entries, bytes, cells, evicted := len(s.cache.entries), s.cache.bytes, len(s.cells), s.cache.evicted
	s.mu.Unlock()
	qs := s.quota.Stats()
	opens, rejects, state := s.br.stats()
	st := Stats{
		Requests: s.requests.Load(), Hits: s.hits.Load(), Misses: s.misses.Load(), Coalesced: s.coalesced.Load(),
		Past: s.past.Load(), Stale: s.stale.Load(), Errors: s.errs.Load(), Invalid: s.bad.Load(),
		Calls: s.calls.Load(), Points: s.points.Load(), CallErrors: s.callErrs.Load(), Retries: s.retries.Load(),
		Refreshes:  s.refreshes.Load(),
		QuotaWaits: qs.Waits, QuotaWaited: qs.Waited, QuotaExhausted: qs.Exhausted,
		BreakerOpens: opens, BreakerRejects: rejects, BreakerState: state,
		Entries: entries, Bytes: bytes, Cells: cells, Evicted: evicted,
	}
	s.latMu.Lock()
	st.LatencySum, st.LatencyMax, st.LatencyBuckets = s.latSum, s.latMax, s.latBuckets
	s.latMu.Unlock()
	return st
}

// GridPoint returns the point the Service asks the provider for on behalf of
// p: p rounded to the grid.
func (s *Service) GridPoint(p Point) Point { return s.point(s.gridKey(p)) }

func (s *Service) gridKey(p Point) gridKey {
	return gridKey{int32(math.Round(p.Lat * s.inv)), int32(math.Round(p.Lon * s.inv))}
}

func (s *Service) point(g gridKey) Point {
	return Point{Lat: float64(g.lat) / s.inv, Lon: float64(g.lon) / s.inv}
}

func validPoint(p Point) bool {
	return p.Lat >= -90 && p.Lat <= 90 && p.Lon >= -180 && p.Lon <= 180 // false for NaN
}

// Lookup answers reqs in order. A request whose weather could not be had
// gets Result.Err (wrapping the cause: an *APIError, ErrCircuitOpen,
// ErrQuotaExhausted, ErrNoHistory, a timeout...), unless a stale answer may
// be served. If ctx ends first, the requests still waiting get ctx's error;
// the fetches go on for the other Lookups waiting for them and the cache.
func (s *Service) Lookup(ctx context.Context, reqs []Request) []Result {
	out := make([]Result, len(reqs))
	if len(reqs) == 0 {
		return out
	}
	s.requests.Add(int64(len(reqs)))
	id := s.lookups.Add(1)
	now := s.clock()
	cur := Slot(now)
	ws := make([]event.Weather, len(reqs)) // backing store of out[i].Weather

	type wait struct {
		i int
		f *flight
	}
	var (
		waits                                           []wait
		started                                         []*flight
		hits, misses, coalesced, past, stale, errs, bad int64
	)
	s.mu.Lock()
	for i, r := range reqs {
		if !validPoint(r.Point) {
			out[i].Err = fmt.Errorf("weather lookup: invalid coordinates %g,%g", r.Lat, r.Lon)
			bad++
			continue
		}
		g := s.gridKey(r.Point)
		k, t := kindCurrent, cur
		if !r.At.IsZero() && r.At.Before(cur) {
			k, t = kindPast, r.At.UTC().Truncate(time.Hour)
			past++
		}
		cell, known := s.cells[g]
		if known {
			if e, ok := s.cache.get(entryKey{cell, k, t.Unix()}, now); ok {
				ws[i] = e.w
				out[i] = Result{Weather: &ws[i], Status: event.StatusEnriched}
				hits++
				continue
			}
		}
		misses++
		if k == kindPast && s.hp == nil {
			out[i].Err = fmt.Errorf("weather %s: %s: %w (only current conditions; the event is from %s)",
				s.name, r.At.UTC().Format(time.RFC3339), ErrNoHistory, r.At.UTC().Format(time.RFC3339))
			errs++
			continue
		}
		fk := flightKey{lat: g.lat, lon: g.lon, kind: k, t: t.Unix()}
		if known {
			fk = flightKey{lat: cell.lat, lon: cell.lon, byCell: true, kind: k, t: t.Unix()}
		}
		f, ok := s.flights[fk]
		if !ok {
			f = &flight{key: fk, lookup: id, grid: g, point: s.point(g), t: t, done: make(chan struct{})}
			s.flights[fk] = f
			started = append(started, f)
		} else if f.lookup != id {
			coalesced++
		}
		if s.cfg.StaleWhileRevalidate && k == kindCurrent && known {
			if w, ok := s.staleEntry(cell, t, now); ok {
				ws[i] = w
				out[i] = Result{Weather: &ws[i], Status: event.StatusStale,
					Reason: fmt.Sprintf("weather of %s served while the current slot's is fetched", w.ObservedAt.UTC().Format(time.RFC3339))}
				stale++
				continue
			}
		}
		waits = append(waits, wait{i, f})
	}
	s.mu.Unlock()
	s.hits.Add(hits)
	s.misses.Add(misses)
	s.coalesced.Add(coalesced)
	s.past.Add(past)
	s.bad.Add(bad)
	if len(started) > 0 {
		if s.cfg.StaleWhileRevalidate {
			waited := make(map[*flight]bool, len(waits))
			for _, w := range waits {
				waited[w.f] = true
			}
			for _, f := range started {
				if !waited[f] {
					s.refreshes.Add(1) // started only to revalidate
				}
			}
		}
		s.startFetch(started)
	}

	for _, w := range waits {
		select {
		case <-w.f.done:
		case <-ctx.Done():
			out[w.i].Err = fmt.Errorf("weather lookup: %w", ctx.Err())
			errs++
			continue
		}
		if w.f.err == nil {
			ws[w.i] = w.f.w
			out[w.i] = Result{Weather: &ws[w.i], Status: event.StatusEnriched}
			continue
		}
		if s.cfg.StaleMaxAge > 0 && w.f.key.kind == kindCurrent {
			s.mu.Lock()
			cell, known := s.cells[w.f.grid]
			var sw event.Weather
			ok := false
			if known {
				sw, ok = s.staleEntry(cell, w.f.t, now)
			}
			s.mu.Unlock()
			if ok {
				ws[w.i] = sw
				out[w.i] = Result{Weather: &ws[w.i], Status: event.StatusStale, Reason: w.f.err.Error()}
				stale++
				continue
			}
		}
		out[w.i].Err = w.f.err
		errs++
	}
	s.errs.Add(errs + bad)
	s.stale.Add(stale)
	return out
}

// staleEntry finds the newest current-conditions entry of an earlier slot
// than t for cell, no older than StaleMaxAge at now. s.mu held.
func (s *Service) staleEntry(cell cellKey, t, now time.Time) (event.Weather, bool) {
	if s.cfg.StaleMaxAge <= 0 {
		return event.Weather{}, false
	}
	for slot := t.Add(-SlotDuration); now.Sub(slot) <= s.cfg.StaleMaxAge; slot = slot.Add(-SlotDuration) {
		if el, ok := s.cache.entries[entryKey{cell, kindCurrent, slot.Unix()}]; ok {
			return el.Value.(*centry).w, true
		}
	}
	return event.Weather{}, false
}

// startFetch fetches flights in the background, detached from any caller.
func (s *Service) startFetch(fl []*flight) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.base, s.cfg.FetchTimeout)
		defer cancel()
		s.fetch(ctx, fl)
	}()
}

// pastGroup is one point's past flights of one day: one location of an
// hourly call.
type pastGroup struct {
	point   Point
	flights []*flight
}

// fetch asks the provider for fl, in calls of at most perCall points, and
// completes every flight, whatever happens.
func (s *Service) fetch(ctx context.Context, fl []*flight) {
	defer func() {
		// A provider that panicked must not leave waiters hanging.
		r := recover()
		err := fmt.Errorf("weather %s: fetch ended: %w", s.name, ctx.Err())
		if r != nil {
			err = fmt.Errorf("weather %s: provider call did not complete: panic: %v", s.name, r)
		}
		s.mu.Lock()
		for _, f := range fl {
			if !f.closed {
				s.completeLocked(f, event.Weather{}, err, false)
			}
		}
		s.mu.Unlock()
	}()
	var current []*flight
	days := map[int64]map[gridKey]*pastGroup{}
	for _, f := range fl {
		if f.key.kind == kindCurrent {
			current = append(current, f)
			continue
		}
		day := f.t.Truncate(24 * time.Hour).Unix()
		if days[day] == nil {
			days[day] = map[gridKey]*pastGroup{}
		}
		g := days[day][f.grid]
		if g == nil {
			g = &pastGroup{point: f.point}
			days[day][f.grid] = g
		}
		g.flights = append(g.flights, f)
	}
	var wg sync.WaitGroup
	run := func(fn func()) {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return // the deferred completion fails what is left
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			fn()
		})
	}
	for start := 0; start < len(current); start += s.perCall {
		chunk := current[start:min(start+s.perCall, len(current))]
		run(func() { retrying(s, ctx, chunk, s.attemptCurrent, s.failCurrent) })
	}
	dayKeys := make([]int64, 0, len(days))
	for d := range days {
		dayKeys = append(dayKeys, d)
	}
	sort.Slice(dayKeys, func(i, j int) bool { return dayKeys[i] < dayKeys[j] })
	for _, d := range dayKeys {
		groups := make([]*pastGroup, 0, len(days[d]))
		for _, g := range days[d] {
			groups = append(groups, g)
		}
		sort.Slice(groups, func(i, j int) bool {
			a, b := groups[i].point, groups[j].point
			return a.Lat < b.Lat || a.Lat == b.Lat && a.Lon < b.Lon
		})
		for start := 0; start < len(groups); start += s.perCall {
			chunk := groups[start:min(start+s.perCall, len(groups))]
			run(func() { retrying(s, ctx, chunk, s.attemptPast, s.failPast) })
		}
	}
	wg.Wait()
}

// retrying runs attempt over items until none is left, retrying what is
// left after a retryable error with backoff (s.retry), and fails the rest
// otherwise.
func retrying[T any](s *Service, ctx context.Context, items []T, attempt func(context.Context, []T) ([]T, error), fail func([]T, error)) {
	pending := items
	err := retry.Call(ctx, s.retry, func(ctx context.Context) error {
		var err error
		pending, err = attempt(ctx, pending)
		if len(pending) == 0 {
			return nil
		}
		return err
	})
	if err != nil {
		fail(pending, err)
	}
}

// Retryable reports whether a provider call that failed with err may
// succeed if made again: 5xx, 429, timeouts, network errors, unreadable or
// incomplete answers; not other 4xx, an open circuit, a spent quota or a
// provider without past data.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, ErrCircuitOpen) || errors.Is(err, ErrQuotaExhausted) ||
		errors.Is(err, ErrNoHistory) || errors.Is(err, context.Canceled) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Retryable()
	}
	return true
}

// call makes one provider call of n points: through the breaker and the
// quota, with the per-call timeout, counting it.
func (s *Service) call(ctx context.Context, n int, fn func(context.Context) error) error {
	ok, probe := s.br.allow()
	if !ok {
		return fmt.Errorf("weather %s: %w", s.name, ErrCircuitOpen)
	}
	release, err := s.quota.Wait(ctx, n)
	if err != nil {
		s.br.done(probe, neutral)
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	start := time.Now()
	err = fn(cctx)
	lat := time.Since(start)
	release()
	timedOut := cctx.Err() != nil && ctx.Err() == nil
	cancel()
	s.calls.Add(1)
	s.points.Add(int64(n))
	s.observe(lat)
	o := succeeded
	var ae *APIError
	var pe *PartialError
	switch {
	case err == nil, errors.As(err, &pe):
	case ctx.Err() != nil:
		o = neutral
	case errors.As(err, &ae) && !ae.Retryable():
	default:
		o = failed
	}
	if err != nil {
		s.callErrs.Add(1)
		if timedOut && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%w after %s)", err, context.DeadlineExceeded, s.cfg.CallTimeout)
		}
	}
	s.br.done(probe, o)
	return err
}

func (s *Service) observe(d time.Duration) {
	i := sort.Search(len(LatencyBounds), func(i int) bool { return d <= LatencyBounds[i] })
	s.latMu.Lock()
	s.latSum += d
	s.latMax = max(s.latMax, d)
	s.latBuckets[i]++
	s.latMu.Unlock()
}

// attemptCurrent makes one Current call for fl and completes what it
// answered; it returns the flights left and the error.
func (s *Service) attemptCurrent(ctx context.Context, fl []*flight) ([]*flight, error) {
	pts := make([]Point, len(fl))
	for i, f := range fl {
		pts[i] = f.point
	}
	var ws []event.Weather
	err := s.call(ctx, len(pts), func(ctx context.Context) error {
		var err error
		ws, err = s.p.Current(ctx, pts)
		var pe *PartialError
		if (err == nil || errors.As(err, &pe)) && len(ws) != len(pts) {
			return fmt.Errorf("provider answered %d points for %d", len(ws), len(pts))
		}
		return err
	})
	var pe *PartialError
	if err != nil && !errors.As(err, &pe) {
		return fl, err
	}
	missing := map[int]bool{}
	if pe != nil {
		for _, i := range pe.Missing {
			missing[i] = true
		}
	}
	var rest []*flight
	s.mu.Lock()
	for i, f := range fl {
		if missing[i] {
			rest = append(rest, f)
			continue
		}
		w := s.normalise(ws[i])
		cell := s.learn(f.grid, &w)
		s.cache.put(entryKey{cell, kindCurrent, f.t.Unix()}, w, f.t.Add(SlotDuration+s.cfg.StaleMaxAge))
		s.completeLocked(f, w, nil, true)
	}
	s.mu.Unlock()
	if len(rest) > 0 {
		return rest, err
	}
	return nil, nil
}

func (s *Service) failCurrent(fl []*flight, err error) {
	err = fmt.Errorf("weather %s: current conditions for %d locations: %w", s.name, len(fl), err)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range fl {
		s.completeLocked(f, event.Weather{}, err, false)
	}
}

// attemptPast makes one Hourly call for the groups (points of one day) and
// completes what it answered.
func (s *Service) attemptPast(ctx context.Context, gs []*pastGroup) ([]*pastGroup, error) {
	pts := make([]Point, len(gs))
	var first, last time.Time
	for i, g := range gs {
		pts[i] = g.point
		for _, f := range g.flights {
			if first.IsZero() || f.t.Before(first) {
				first = f.t
			}
			if f.t.After(last) {
				last = f.t
			}
		}
	}
	var series [][]event.Weather
	err := s.call(ctx, len(pts), func(ctx context.Context) error {
		var err error
		series, err = s.hp.Hourly(ctx, pts, first, last)
		var pe *PartialError
		if (err == nil || errors.As(err, &pe)) && len(series) != len(pts) {
			return fmt.Errorf("provider answered %d points for %d", len(series), len(pts))
		}
		return err
	})
	var pe *PartialError
	if err != nil && !errors.As(err, &pe) {
		return gs, err
	}
	missing := map[int]bool{}
	if pe != nil {
		for _, i := range pe.Missing {
			missing[i] = true
		}
	}
	var rest []*pastGroup
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, g := range gs {
		if missing[i] {
			rest = append(rest, g)
			continue
		}
		byHour := map[int64]event.Weather{}
		for _, w := range series[i] {
			w = s.normalise(w)
			cell := s.learn(g.flights[0].grid, &w)
			h := w.ObservedAt.UTC().Truncate(time.Hour)
			byHour[h.Unix()] = w
			s.cache.put(entryKey{cell, kindPast, h.Unix()}, w, now.Add(s.cfg.PastTTL))
		}
		for _, f := range g.flights {
			if w, ok := byHour[f.t.Unix()]; ok {
				s.completeLocked(f, w, nil, true)
			} else {
				s.completeLocked(f, event.Weather{}, fmt.Errorf("weather %s: the answer has no value for %s",
					s.name, f.t.Format(time.RFC3339)), false)
			}
		}
	}
	if len(rest) > 0 {
		return rest, err
	}
	return nil, nil
}

func (s *Service) failPast(gs []*pastGroup, err error) {
	first, last := gs[0].flights[0].t, gs[0].flights[0].t
	for _, g := range gs {
		for _, f := range g.flights {
			first, last = minTime(first, f.t), maxTime(last, f.t)
		}
	}
	err = fmt.Errorf("weather %s: hours %s..%s for %d locations: %w", s.name,
		first.Format("2006-01-02T15:04"), last.Format("2006-01-02T15:04"), len(gs), err)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range gs {
		for _, f := range g.flights {
			s.completeLocked(f, event.Weather{}, err, false)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (s *Service) normalise(w event.Weather) event.Weather {
	if w.Provider == "" {
		w.Provider = s.name
	}
	if w.Condition == "" {
		w.Condition = Condition(w.WeatherCode)
	}
	return w
}

// learn records the provider's cell for grid point g from an answer and
// returns it. s.mu held.
func (s *Service) learn(g gridKey, w *event.Weather) cellKey {
	cell := cellKeyOf(w)
	if old, ok := s.cells[g]; !ok || old != cell {
		if !ok && len(s.cells) >= max(s.cfg.MaxEntries, 100_000) {
			// Forget about a quarter, at random (map order).
			n := len(s.cells) / 4
			for k := range s.cells {
				if n == 0 {
					break
				}
				delete(s.cells, k)
				n--
			}
		}
		s.cells[g] = cell
	}
	return cell
}

// completeLocked ends a flight once. s.mu held.
func (s *Service) completeLocked(f *flight, w event.Weather, err error, ok bool) {
	if f.closed {
		return
	}
	f.closed = true
	if ok {
		f.w = w
	} else {
		f.err = err
	}
	if s.flights[f.key] == f {
		delete(s.flights, f.key)
	}
	close(f.done)
}
