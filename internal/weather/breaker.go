package weather

import (
	"sync"
	"time"
)

// BreakerConfig configures the circuit breaker in front of a provider.
type BreakerConfig struct {
	// Failures is the number of consecutive failed calls that opens the
	// circuit; default 5; -1 disables the breaker.
	Failures int
	// OpenFor is how long the circuit stays open before a probe call is let
	// through (half-open); default 30s. Each failed probe doubles it, up to
	// MaxOpenFor (default 5m); a successful probe closes the circuit.
	OpenFor    time.Duration
	MaxOpenFor time.Duration
}

type breakerState int

const (
	closed breakerState = iota
	open
	halfOpen
)

// breaker is a consecutive-failures circuit breaker with half-open probes.
type breaker struct {
	cfg   BreakerConfig
	clock func() time.Time

	mu        sync.Mutex
	state     breakerState
	failures  int
	openUntil time.Time
	openFor   time.Duration
	probing   bool
	opens     int64
	rejects   int64
}

func newBreaker(cfg BreakerConfig, clock func() time.Time) *breaker {
	if cfg.Failures == 0 {
		cfg.Failures = 5
	}
	if cfg.OpenFor == 0 {
		cfg.OpenFor = 30 * time.Second
	}
	if cfg.MaxOpenFor == 0 {
		cfg.MaxOpenFor = 5 * time.Minute
	}
	cfg.MaxOpenFor = max(cfg.MaxOpenFor, cfg.OpenFor)
	return &breaker{cfg: cfg, clock: clock, openFor: cfg.OpenFor}
}

// allow reports whether a call may go ahead; probe is true for the one call
// let through a half-open circuit, which must report with done.
func (b *breaker) allow() (ok, probe bool) {
	if b.cfg.Failures < 0 {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case closed:
		return true, false
	case open:
		if b.clock().Before(b.openUntil) {
			b.rejects++
			return false, false
		}
		b.state = halfOpen
		fallthrough
	default: // half-open
		if b.probing {
			b.rejects++
			return false, false
		}
		b.probing = true
		return true, true
	}
}

// outcome of a call for the breaker.
type outcome int

const (
	succeeded outcome = iota // the provider answered (even with a 4xx of ours)
	failed                   // 5xx, 429, timeout, network error, unreadable answer
	neutral                  // the caller gave up: says nothing about the provider
)

// done records the outcome of a call allowed by allow.
func (b *breaker) done(probe bool, o outcome) {
	if b.cfg.Failures < 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	switch o {
	case succeeded:
		if probe || b.state == closed {
			b.state = closed
			b.failures = 0
			b.openFor = b.cfg.OpenFor
		}
	case failed:
		switch {
		case probe:
			b.openFor = min(b.openFor*2, b.cfg.MaxOpenFor)
			b.trip()
		case b.state == closed:
			b.failures++
			if b.failures >= b.cfg.Failures {
				b.trip()
			}
		}
	}
}

func (b *breaker) trip() {
	b.state = open
	b.openUntil = b.clock().Add(b.openFor)
	b.failures = 0
	b.opens++
}

func (b *breaker) stats() (opens, rejects int64, state string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opens, b.rejects, [...]string{"closed", "open", "half-open"}[b.state]
}
