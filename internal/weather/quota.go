package weather

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/retry"
)

// Window is one limit of a provider's terms: at most Limit locations in any
// period of length Per.
type Window struct {
	Per   time.Duration
	Limit int
}

// OpenMeteoFree is the Open-Meteo free tier: 600 locations a minute, 5,000
// an hour, 10,000 a day (a multi-location request counts each location).
var OpenMeteoFree = []Window{{time.Minute, 600}, {time.Hour, 5000}, {24 * time.Hour, 10000}}

// Quota is a limiter over several windows at once. It counts in sliding
// windows (at most Limit locations in any interval of length Per, however
// the provider aligns its own windows), so it cannot exceed a provider's
// fixed or sliding windows. A grant counts from the moment it is given until
// Per after the call it was for has ended (the provider received the
// request somewhere in between, and counts it at that moment); a call still
// in flight counts in every window. It is safe for concurrent use.
type Quota struct {
	windows []Window
	maxWait time.Duration
	clock   func() time.Time
	sleep   func(context.Context, time.Duration) error

	mu      sync.Mutex
	grants  []*grant
	longest time.Duration

	waits, exhausted int64
	waited           time.Duration
}

type grant struct {
	end time.Time // when the call ended; zero while in flight
	n   int
}

// quotaPoll is how long a caller waits when only calls in flight stand
// between it and the quota, before it looks again.
const quotaPoll = 100 * time.Millisecond

// NewQuota returns a limiter over windows. A caller that would have to wait
// longer than maxWait (0: no bound but the context) gets a *QuotaError
// at once. clock and sleep default to the real ones.
func NewQuota(windows []Window, maxWait time.Duration, clock func() time.Time, sleep func(context.Context, time.Duration) error) *Quota {
	if clock == nil {
		clock = time.Now
	}
	if sleep == nil {
		sleep = retry.Sleep
	}
	q := &Quota{windows: slices.Clone(windows), maxWait: maxWait, clock: clock, sleep: sleep}
	for _, w := range windows {
		q.longest = max(q.longest, w.Per)
	}
	return q
}

// Wait blocks until n locations may be asked, and records them; call done
// when the call has ended. It returns a *QuotaError (errors.Is
// ErrQuotaExhausted) without waiting if the wait would pass maxWait or ctx's
// deadline, and ctx's error if ctx ends first.
func (q *Quota) Wait(ctx context.Context, n int) (done func(), err error) {
	if q == nil || len(q.windows) == 0 || n <= 0 {
		return func() {}, nil
	}
	for _, w := range q.windows {
		if n > w.Limit {
			return nil, fmt.Errorf("weather quota: %d locations in one call exceed the limit of %d per %s", n, w.Limit, w.Per)
		}
	}
	var waited time.Duration
	for {
		q.mu.Lock()
		now := q.clock()
		d := q.delay(now, n)
		if d <= 0 {
			g := &grant{n: n}
			q.grants = append(q.grants, g)
			q.waited += waited
			q.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					q.mu.Lock()
					g.end = q.clock()
					q.mu.Unlock()
				})
			}, nil
		}
		tooLong := q.maxWait > 0 && waited+d > q.maxWait
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d { // deadlines are real time
			tooLong = true
		}
		if tooLong {
			q.exhausted++
			q.waited += waited
			q.mu.Unlock()
			return nil, &QuotaError{Locations: n, Wait: d}
		}
		if waited == 0 {
			q.waits++
		}
		q.mu.Unlock()
		if err := q.sleep(ctx, d); err != nil {
			return nil, fmt.Errorf("weather quota: wait %s: %w", d, err)
		}
		waited += d
	}
}

// delay returns how long until n more locations fit every window. q.mu held.
func (q *Quota) delay(now time.Time, n int) time.Duration {
	// Forget the calls that ended before the longest window.
	kept := q.grants[:0]
	for _, g := range q.grants {
		if g.end.IsZero() || g.end.After(now.Add(-q.longest)) {
			kept = append(kept, g)
		}
	}
	clear(q.grants[len(kept):])
	q.grants = kept
	var d time.Duration
	type free struct {
		at time.Time
		n  int
	}
	var frees []free
	for _, w := range q.windows {
		used := 0
		frees = frees[:0]
		for _, g := range q.grants {
			switch {
			case g.end.IsZero():
				used += g.n
			case g.end.After(now.Add(-w.Per)):
				used += g.n
				frees = append(frees, free{g.end.Add(w.Per), g.n})
			}
		}
		excess := used + n - w.Limit
		if excess <= 0 {
			continue
		}
		// The window frees the oldest calls first: wait until enough of them
		// have left it; if the calls in flight stand in the way, look again soon.
		sort.Slice(frees, func(i, j int) bool { return frees[i].at.Before(frees[j].at) })
		wait := quotaPoll
		for _, f := range frees {
			excess -= f.n
			if excess <= 0 {
				wait = f.at.Sub(now)
				break
			}
		}
		d = max(d, wait)
	}
	return d
}

// QuotaStats are a Quota's counters.
type QuotaStats struct {
	Waits     int64         // calls that had to wait
	Waited    time.Duration // total time waited
	Exhausted int64         // calls refused with a QuotaError
}

// Stats returns the counters.
func (q *Quota) Stats() QuotaStats {
	if q == nil {
		return QuotaStats{}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return QuotaStats{Waits: q.waits, Waited: q.waited, Exhausted: q.exhausted}
}

// ParseQuota reads a quota as LIMIT/PERIOD,... such as
// 600/1m,5000/1h,10000/24h ("none" or "": no quota).
func ParseQuota(s string) ([]Window, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	var out []Window
	for part := range strings.SplitSeq(s, ",") {
		n, per, ok := strings.Cut(strings.TrimSpace(part), "/")
		limit, err1 := strconv.Atoi(n)
		d, err2 := time.ParseDuration(per)
		if !ok || err1 != nil || err2 != nil || limit < 1 || d <= 0 {
			return nil, fmt.Errorf("%q: want LIMIT/PERIOD such as 600/1m", part)
		}
		out = append(out, Window{Per: d, Limit: limit})
	}
	return out, nil
}
