// Package retry is the one place skyjoin waits before trying again: an
// exponential backoff with full jitter (Backoff), a loop that calls a
// function until it succeeds, may not be retried, runs out of attempts or
// its context ends (Call), honouring a server's hint of how long to wait,
// and the parser of that hint, the HTTP Retry-After header
// (ParseRetryAfter).
//
// It is modelled on go-cloud's internal/retry.Call and gax's Backoff. The
// jitter is "full jitter": each wait is drawn uniformly between zero and an
// exponentially growing ceiling, so that clients that failed together do not
// come back together.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Backoff is an exponential backoff with full jitter. The wait after the
// n-th failed attempt (n from 1) is drawn uniformly from
// [0, min(Max, Initial*Multiplier^(n-1))].
type Backoff struct {
	// Initial is the ceiling of the wait after the first failed attempt;
	// zero or less means no wait at all.
	Initial time.Duration
	// Max caps the ceiling; zero or less means no cap but the longest
	// time.Duration.
	Max time.Duration
	// Multiplier is the growth of the ceiling per attempt; below 1 (the
	// zero value included) it is 2.
	Multiplier float64
}

// Delay returns the wait after the given failed attempt (1 for the first;
// anything below counts as 1): uniform in [0, min(Max,
// Initial*Multiplier^(attempt-1))]. It does not overflow, whatever the
// attempt: past Max (or the longest time.Duration) the ceiling stays there.
func (b Backoff) Delay(attempt int) time.Duration {
	return b.jitter(attempt, rand.Float64())
}

// ceiling is the longest Delay of the given attempt.
func (b Backoff) ceiling(attempt int) time.Duration {
	if b.Initial <= 0 {
		return 0
	}
	limit := time.Duration(math.MaxInt64)
	if b.Max > 0 {
		limit = b.Max
	}
	m := b.Multiplier
	if !(m >= 1) { // also NaN
		m = 2
	}
	f := float64(b.Initial) * math.Pow(m, float64(max(attempt, 1)-1))
	if f >= float64(limit) { // also +Inf; float64(MaxInt64) rounds up to 2^63
		return limit
	}
	return min(time.Duration(f), limit)
}

// jitter is the Delay of the given attempt for u, a uniform draw in [0, 1).
func (b Backoff) jitter(attempt int, u float64) time.Duration {
	c := b.ceiling(attempt)
	switch {
	case !(u > 0): // also NaN
		return 0
	case u >= 1:
		return c
	}
	return min(time.Duration(float64(c)*u), c)
}

// Hinter is an error that carries a server's hint of how long to wait
// before trying again, such as an HTTP Retry-After header.
type Hinter interface {
	RetryAfter() time.Duration
}

// RetryAfter returns the hint of the first error in err's chain that is a
// Hinter; ok is false if there is none.
func RetryAfter(err error) (d time.Duration, ok bool) {
	var h Hinter
	if errors.As(err, &h) {
		return h.RetryAfter(), true
	}
	return 0, false
}

// DefaultMaxHint bounds the wait a hint may ask for when neither
// Policy.MaxHint nor Backoff.Max is set.
const DefaultMaxHint = time.Minute

// Policy says how Call retries. The zero value retries every error without
// waiting until ctx ends.
type Policy struct {
	Backoff Backoff
	// MaxAttempts bounds the calls of f, the first one included; zero or
	// less means no limit (until ctx ends).
	MaxAttempts int
	// Retryable reports whether f may succeed if called again after
	// failing with err; nil means every error is retryable.
	Retryable func(err error) bool
	// MaxHint bounds the wait a hint may ask for (see Call); zero means
	// Backoff.Max, or DefaultMaxHint if that is not set either. A caller
	// that would rather give up than wait longer says so in Retryable.
	MaxHint time.Duration
	// OnRetry, if set, is called before each wait with Call's context, the
	// attempt that failed (1 for the first), its error and the wait: for
	// logs and counters.
	OnRetry func(ctx context.Context, attempt int, err error, wait time.Duration)
	// Sleep waits d or until ctx ends; nil means Sleep. Tests pass one
	// that advances a fake clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a uniform number in [0, 1) for the jitter; nil means
	// math/rand/v2.
	Rand func() float64
}

// wait is how long Call waits after the given attempt failed with err: the
// backoff's Delay, or, if err carries a longer hint (RetryAfter), the hint,
// but never longer than the hint's bound (MaxHint). A hint never shortens
// the backoff.
func (p Policy) wait(attempt int, err error) time.Duration {
	u := p.Rand
	if u == nil {
		u = rand.Float64
	}
	d := p.Backoff.jitter(attempt, u())
	if hint, ok := RetryAfter(err); ok && hint > d {
		bound := p.MaxHint
		if bound <= 0 {
			bound = p.Backoff.Max
		}
		if bound <= 0 {
			bound = DefaultMaxHint
		}
		d = max(d, min(hint, bound))
	}
	return d
}

// Call calls f until it returns nil, then returns nil. It stops and returns
// f's error unchanged when the error is not retryable (Policy.Retryable) or
// after Policy.MaxAttempts calls. Between calls it waits the backoff's Delay;
// when the error's chain holds a Hinter (a server's Retry-After), it waits
// max(hint, backoff), but the hint makes the wait no longer than
// Policy.MaxHint.
//
// Call stops when ctx ends, before the first call, after a failed call or
// during a wait, and also at once when a wait would outlast ctx's deadline.
// It then returns a *ContextError, which wraps both f's last error and
// ctx.Err() (context.DeadlineExceeded for a wait that would outlast the
// deadline).
func Call(ctx context.Context, p Policy, f func(context.Context) error) error {
	sleep := p.Sleep
	if sleep == nil {
		sleep = Sleep
	}
	var last error
	for attempt := 1; ; attempt++ {
		if cerr := ctx.Err(); cerr != nil {
			return &ContextError{Err: last, CtxErr: cerr}
		}
		err := f(ctx)
		if err == nil {
			return nil
		}
		if p.Retryable != nil && !p.Retryable(err) || p.MaxAttempts > 0 && attempt >= p.MaxAttempts {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return &ContextError{Err: err, CtxErr: cerr}
		}
		wait := p.wait(attempt, err)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return &ContextError{Err: err, CtxErr: context.DeadlineExceeded}
		}
		if p.OnRetry != nil {
			p.OnRetry(ctx, attempt, err, wait)
		}
		if serr := sleep(ctx, wait); serr != nil {
			return &ContextError{Err: err, CtxErr: serr}
		}
		last = err
	}
}

// ContextError is what Call returns when its context ended before f
// succeeded. errors.Is and errors.As see both errors it holds.
type ContextError struct {
	Err    error // f's last error; nil if f was never called
	CtxErr error // ctx.Err(), or context.DeadlineExceeded when a wait would outlast the deadline
}

func (e *ContextError) Error() string {
	if e.Err == nil {
		return e.CtxErr.Error()
	}
	return fmt.Sprintf("%v (gave up retrying: %v)", e.Err, e.CtxErr)
}

// Unwrap returns f's last error, if any, and the context's.
func (e *ContextError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.CtxErr}
	}
	return []error{e.Err, e.CtxErr}
}

// Sleep waits d, or until ctx ends; it returns ctx.Err() if ctx ended first
// (also when d is zero or less and ctx has already ended).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ParseRetryAfter reads the value of an HTTP Retry-After header (RFC 9110,
// section 10.2.3) received at now: delay-seconds ("120") or an HTTP-date
// ("Wed, 21 Oct 2015 07:28:00 GMT", or the obsolete forms that
// net/http.ParseTime reads). A date that is not after now, or a negative
// number, gives 0; more seconds than a time.Duration holds give the longest
// one. ok is false for an empty or unreadable value.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	digits := strings.TrimPrefix(v, "-")
	if digits != "" && strings.Trim(digits, "0123456789") == "" {
		if len(digits) < len(v) {
			return 0, true // negative
		}
		n, err := strconv.ParseInt(digits, 10, 64)
		if err != nil || n > math.MaxInt64/int64(time.Second) { // only digits: too large
			return math.MaxInt64, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if !t.After(now) {
		return 0, true
	}
	return t.Sub(now), true
}
