package platform

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimiter limits the requests of each caller (a key) with a token
// bucket of its own: rate requests a second, and up to burst at once. It
// is per instance: N instances let a caller through N times as often.
type RateLimiter struct {
	limit rate.Limit
	burst int
	what  string // for the 429's message: "ingest", "read"
	now   func() time.Time

	mu        sync.Mutex
	keys      map[string]*rate.Limiter
	nextSweep int
}

// minSweep is the number of callers below which idle ones are kept.
const minSweep = 1024

// NewRateLimiter returns a limiter of perSecond requests per caller with
// the given burst, or nil (no limit) when perSecond is 0.
func NewRateLimiter(what string, perSecond float64, burst int) *RateLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &RateLimiter{limit: rate.Limit(perSecond), burst: max(burst, 1), what: what, now: time.Now,
		keys: map[string]*rate.Limiter{}, nextSweep: minSweep}
}

// Allow takes one request of key; when the caller is over its limit, it
// returns false and how long until a request would be allowed.
func (l *RateLimiter) Allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	lim, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= l.nextSweep {
			l.sweep(now)
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.keys[key] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused request takes no token
		return false, d
	}
	return true, 0
}

// sweep forgets the callers whose bucket is full again: a new bucket is the
// same. It keeps memory to the callers active within burst/rate.
func (l *RateLimiter) sweep(now time.Time) {
	for k, lim := range l.keys {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.keys, k)
		}
	}
	l.nextSweep = max(2*len(l.keys), minSweep)
}

// Wrap limits next by the caller key(r) names; a caller over its limit is
// answered 429 with Retry-After. A nil limiter lets everything through.
func (l *RateLimiter) Wrap(key func(*http.Request) string, next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, wait := l.Allow(key(r))
		if !ok {
			secs := max(int64((wait+time.Second-1)/time.Second), 1)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			WriteError(w, http.StatusTooManyRequests, fmt.Sprintf(
				"rate limit exceeded: %g %s requests a second per caller, bursts of %d, on this instance; retry after %d s",
				float64(l.limit), l.what, l.burst, secs), nil)
			return
		}
		next.ServeHTTP(w, r)
	})
}
