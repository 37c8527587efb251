package weather

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// ServiceConfig configures a Service. The zero value is usable.
type ServiceConfig struct {
	// GridDegrees is the size of the cache's grid: request coordinates are
	// rounded to a multiple of it, and the rounded point is what the
	// provider is asked for. Default 0.01 (about 1 km).
	GridDegrees float64
	// MaxEntries bounds the cache (least recently used entries go first).
	// Default 100,000.
	MaxEntries int
	// MaxPointsPerCall caps the points of one Provider.Current call; 0 puts
	// all distinct misses of a Lookup into one call (the provider chunks its
	// HTTP requests itself).
	MaxPointsPerCall int
	// StaleFor, when > 0, answers a request whose fetch failed with a cached
	// answer of an earlier slot no older than StaleFor, with status
	// event.StatusStale, instead of an error. Default 0: errors are errors.
	StaleFor time.Duration
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
}

// Validate reports every problem with the configuration.
func (c ServiceConfig) Validate() error {
	var errs []error
	if c.GridDegrees < 0 || c.GridDegrees > 1 || math.IsNaN(c.GridDegrees) {
		errs = append(errs, fmt.Errorf("weather grid: %g degrees, want 0 (default) or a value in (0, 1]", c.GridDegrees))
	}
	if c.MaxEntries < 0 {
		errs = append(errs, fmt.Errorf("weather cache size: %d, want >= 0", c.MaxEntries))
	}
	if c.MaxPointsPerCall < 0 {
		errs = append(errs, fmt.Errorf("weather max points per call: %d, want >= 0", c.MaxPointsPerCall))
	}
	if c.StaleFor < 0 {
		errs = append(errs, fmt.Errorf("weather stale-for: %s, want >= 0", c.StaleFor))
	}
	return errors.Join(errs...)
}

// Stats are a Service's counters since it was created.
type Stats struct {
	Requests  int64 // requests looked up
	Hits      int64 // requests answered from the cache
	Misses    int64 // requests not in the cache (Requests - Hits - Invalid)
	Coalesced int64 // misses that waited for a fetch another Lookup had started
	Calls     int64 // Provider.Current calls
	Points    int64 // points asked of the provider (distinct grid keys fetched)
	Errors    int64 // requests answered with Err
	Stale     int64 // requests answered with a stale entry after a failed fetch
	Invalid   int64 // requests with coordinates out of range
	Entries   int   // entries in the cache now
}

// Service is a weather.Joiner over a Provider. It caches answers per grid key
// (coordinates rounded to GridDegrees) and 15-minute slot, batches all
// distinct misses of a Lookup into as few Provider.Current calls as
// possible, and makes concurrent Lookups that miss the same key share one
// fetch.
//
// Slots: the cache slot of an answer is the slot of the Service's clock when
// it was fetched (normally equal to the answer's ObservedAt slot, since the
// provider answers current conditions). An entry is reused while the clock
// stays in that slot. The event time of a Request (At) does not select the
// slot yet: every request is joined with the current conditions.
type Service struct {
	p        Provider
	grid     float64
	inv      float64 // 1/grid
	max      int
	perCall  int
	staleFor int64 // in slots
	clock    func() time.Time

	mu       sync.Mutex
	entries  map[cacheKey]*list.Element // of *cacheEntry
	lru      *list.List
	inflight map[cacheKey]*fetchCall

	lookups                                                            atomic.Uint64
	requests, hits, misses, coalesced, calls, points, errs, stale, bad atomic.Int64
}

var _ Joiner = (*Service)(nil)

type cacheKey struct {
	lat, lon int32
	slot     int64 // unix seconds / 900
}

type cacheEntry struct {
	key cacheKey
	w   event.Weather
}

type fetchCall struct {
	lookup uint64 // the Lookup that fetches it
	done   chan struct{}
	w      event.Weather
	err    error
}

// NewService returns a Service over p. It panics if cfg does not validate:
// check cfg.Validate first where cfg comes from the user.
func NewService(p Provider, cfg ServiceConfig) *Service {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("weather.NewService: %v", err))
	}
	if cfg.GridDegrees == 0 {
		cfg.GridDegrees = 0.01
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	inv := 1 / cfg.GridDegrees
	if r := math.Round(inv); math.Abs(inv-r) < 1e-9 {
		inv = r
	}
	return &Service{
		p:        p,
		grid:     cfg.GridDegrees,
		inv:      inv,
		max:      cfg.MaxEntries,
		perCall:  cfg.MaxPointsPerCall,
		staleFor: int64(cfg.StaleFor / SlotDuration),
		clock:    cfg.Clock,
		entries:  map[cacheKey]*list.Element{},
		lru:      list.New(),
		inflight: map[cacheKey]*fetchCall{},
	}
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	n := len(s.entries)
	s.mu.Unlock()
	return Stats{
		Requests: s.requests.Load(), Hits: s.hits.Load(), Misses: s.misses.Load(),
		Coalesced: s.coalesced.Load(), Calls: s.calls.Load(), Points: s.points.Load(),
		Errors: s.errs.Load(), Stale: s.stale.Load(), Invalid: s.bad.Load(), Entries: n,
	}
}

// GridPoint returns the point the Service asks the provider for on behalf of
// p: p rounded to the grid.
func (s *Service) GridPoint(p Point) Point {
	k := s.key(p, 0)
	return s.point(k)
}

func (s *Service) key(p Point, slot int64) cacheKey {
	return cacheKey{lat: int32(math.Round(p.Lat * s.inv)), lon: int32(math.Round(p.Lon * s.inv)), slot: slot}
}

func (s *Service) point(k cacheKey) Point {
	return Point{Lat: float64(k.lat) / s.inv, Lon: float64(k.lon) / s.inv}
}

func validPoint(p Point) bool {
	return p.Lat >= -90 && p.Lat <= 90 && p.Lon >= -180 && p.Lon <= 180 // false for NaN
}

// Lookup answers reqs in order. Requests whose fetch failed get Result.Err
// (wrapping the provider's error), unless a stale answer may be served.
func (s *Service) Lookup(ctx context.Context, reqs []Request) []Result {
	out := make([]Result, len(reqs))
	if len(reqs) == 0 {
		return out
	}
	s.requests.Add(int64(len(reqs)))
	id := s.lookups.Add(1)
	slot := Slot(s.clock()).Unix() / int64(SlotDuration/time.Second)
	ws := make([]event.Weather, len(reqs)) // backing store of out[i].Weather

	type wait struct {
		i int
		k cacheKey
		c *fetchCall
	}
	var waits []wait
	var fetchKeys []cacheKey
	var fetchCalls []*fetchCall
	var hits, coalesced, bad int64

	s.mu.Lock()
	for i, r := range reqs {
		if !validPoint(r.Point) {
			out[i].Err = fmt.Errorf("weather lookup: invalid coordinates %g,%g", r.Lat, r.Lon)
			bad++
			continue
		}
		k := s.key(r.Point, slot)
		if el, ok := s.entries[k]; ok {
			s.lru.MoveToFront(el)
			ws[i] = el.Value.(*cacheEntry).w
			out[i] = Result{Weather: &ws[i], Status: event.StatusEnriched}
			hits++
			continue
		}
		c, ok := s.inflight[k]
		if !ok {
			c = &fetchCall{lookup: id, done: make(chan struct{})}
			s.inflight[k] = c
			fetchKeys = append(fetchKeys, k)
			fetchCalls = append(fetchCalls, c)
		} else if c.lookup != id {
			coalesced++
		}
		waits = append(waits, wait{i, k, c})
	}
	s.mu.Unlock()
	s.hits.Add(hits)
	s.bad.Add(bad)
	s.misses.Add(int64(len(waits)))
	s.coalesced.Add(coalesced)

	if len(fetchKeys) > 0 {
		s.fetch(ctx, fetchKeys, fetchCalls)
	}

	var errs, stale int64
	for _, w := range waits {
		select {
		case <-w.c.done:
		case <-ctx.Done():
			out[w.i].Err = fmt.Errorf("weather lookup: %w", ctx.Err())
			errs++
			continue
		}
		if w.c.err == nil {
			ws[w.i] = w.c.w
			out[w.i] = Result{Weather: &ws[w.i], Status: event.StatusEnriched}
			continue
		}
		if s.staleFor > 0 {
			if sw, ok := s.staleEntry(w.k); ok {
				ws[w.i] = sw
				out[w.i] = Result{Weather: &ws[w.i], Status: event.StatusStale}
				stale++
				continue
			}
		}
		out[w.i].Err = w.c.err
		errs++
	}
	s.errs.Add(errs + bad)
	s.stale.Add(stale)
	return out
}

// staleEntry finds the newest entry of an earlier slot for k's grid key.
func (s *Service) staleEntry(k cacheKey) (event.Weather, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d := int64(1); d <= s.staleFor; d++ {
		kk := k
		kk.slot -= d
		if el, ok := s.entries[kk]; ok {
			return el.Value.(*cacheEntry).w, true
		}
	}
	return event.Weather{}, false
}

// fetch asks the provider for keys, in chunks of perCall, and completes
// their calls.
func (s *Service) fetch(ctx context.Context, keys []cacheKey, calls []*fetchCall) {
	completed := 0
	defer func() {
		// A provider that panicked must not leave waiters hanging.
		if completed < len(keys) {
			s.complete(keys[completed:], calls[completed:], nil,
				fmt.Errorf("weather %s: provider call did not complete", s.p.Name()))
		}
	}()
	n := s.perCall
	if n <= 0 {
		n = len(keys)
	}
	for start := 0; start < len(keys); start += n {
		end := min(start+n, len(keys))
		points := make([]Point, end-start)
		for i, k := range keys[start:end] {
			points[i] = s.point(k)
		}
		s.calls.Add(1)
		s.points.Add(int64(len(points)))
		ws, err := s.p.Current(ctx, points)
		if err == nil && len(ws) != len(points) {
			err = fmt.Errorf("provider answered %d points for %d", len(ws), len(points))
		}
		if err != nil {
			err = fmt.Errorf("weather %s: current conditions for %d points: %w", s.p.Name(), len(points), err)
		}
		s.complete(keys[start:end], calls[start:end], ws, err)
		completed = end
	}
}

func (s *Service) complete(keys []cacheKey, calls []*fetchCall, ws []event.Weather, err error) {
	name := s.p.Name()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range keys {
		c := calls[i]
		if err != nil {
			c.err = err
		} else {
			w := ws[i]
			if w.Provider == "" {
				w.Provider = name
			}
			if w.Condition == "" {
				w.Condition = Condition(w.WeatherCode)
			}
			c.w = w
			s.put(k, w)
		}
		delete(s.inflight, k)
		close(c.done)
	}
}

func (s *Service) put(k cacheKey, w event.Weather) {
	if el, ok := s.entries[k]; ok {
		el.Value.(*cacheEntry).w = w
		s.lru.MoveToFront(el)
		return
	}
	s.entries[k] = s.lru.PushFront(&cacheEntry{key: k, w: w})
	for len(s.entries) > s.max {
		last := s.lru.Back()
		delete(s.entries, last.Value.(*cacheEntry).key)
		s.lru.Remove(last)
	}
}
