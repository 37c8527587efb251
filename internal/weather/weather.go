// Package weather joins weather to events: a Provider interface over the
// weather APIs, and a Service that puts a cache keyed by the provider's grid
// cell and time slot, batching, call coalescing, a quota limiter, retries and
// a circuit breaker in front of a Provider for the enrich worker.
package weather

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// Point is a place on Earth.
type Point struct {
	Lat, Lon float64
}

// Provider fetches weather from one weather API.
type Provider interface {
	// Name identifies the provider on records ("open-meteo", ...).
	Name() string
	// Current returns the current conditions at each point, in the order
	// asked. Each answer carries the provider's grid cell and the start of
	// its time slot (ObservedAt). An answer that lacks some points returns
	// the others with a *PartialError naming the missing ones.
	Current(ctx context.Context, points []Point) ([]event.Weather, error)
}

// HistoryProvider is a Provider that also serves past hours.
type HistoryProvider interface {
	Provider
	// Hourly returns, for each point, the hourly values from the hour of
	// start to the hour of end (both included, UTC): out[i][h] is point i at
	// hour h, ObservedAt the start of that hour. Partial answers as Current.
	Hourly(ctx context.Context, points []Point, start, end time.Time) ([][]event.Weather, error)
}

// Batcher is a Provider that says how many points one of its calls may
// carry (Open-Meteo: up to 1,000 locations per request; OpenWeatherMap: 1).
// The Service never gives a Provider more points per call than that, so that
// one Provider call is one HTTP request and the quota can be counted.
type Batcher interface {
	MaxPointsPerCall() int
}

// Request asks for the weather at a place and time.
type Request struct {
	Point
	At time.Time // the event's occurred_at; zero means now
}

// Result answers one Request. Exactly one of Weather and Err is set.
type Result struct {
	Weather *event.Weather
	Status  string // event.StatusEnriched or event.StatusStale when Weather is set
	// Reason says why a stale answer was used (for Enrichment.Error).
	Reason string
	Err    error
}

// Joiner is what the enrich worker needs: the weather for a batch of
// requests, answered in order. Implementations batch, cache and coalesce.
type Joiner interface {
	Lookup(ctx context.Context, reqs []Request) []Result
}

// Errors a Lookup may answer with (wrapped; test with errors.Is).
var (
	// ErrQuotaExhausted: the provider's quota is spent for longer than the
	// Service may wait. It is backpressure, not a failure: the worker holds
	// the batch for redelivery rather than storing it without weather.
	ErrQuotaExhausted = errors.New("weather quota exhausted")
	// ErrCircuitOpen: the provider failed repeatedly and is not being called
	// until the circuit breaker lets a probe through.
	ErrCircuitOpen = errors.New("weather provider circuit open")
	// ErrNoHistory: the provider serves current conditions only and the
	// event is older than the current slot.
	ErrNoHistory = errors.New("weather provider has no past data")
)

// QuotaError is ErrQuotaExhausted with the time until the quota allows the
// call.
type QuotaError struct {
	Locations int
	Wait      time.Duration
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%v: %d locations need a wait of %s", ErrQuotaExhausted, e.Locations, e.Wait.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrQuotaExhausted) hold.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExhausted }

// RetryAfter returns how long a QuotaError in err's chain asks to wait, or 0.
// A provider's own Retry-After (APIError.Wait) is not counted: the
// Service's retries have honoured it already, up to MaxRetryAfter.
func RetryAfter(err error) time.Duration {
	var qe *QuotaError
	if errors.As(err, &qe) {
		return qe.Wait
	}
	return 0
}

// APIError is an error answer of a provider's HTTP API.
type APIError struct {
	Provider   string
	StatusCode int
	Reason     string
	Wait       time.Duration // from a Retry-After header (retry.ParseRetryAfter), if any
}

var _ retry.Hinter = (*APIError)(nil)

// RetryAfter returns Wait: the Service's retries (retry.Call) honour it.
func (e *APIError) RetryAfter() time.Duration { return e.Wait }

func (e *APIError) Error() string {
	s := "HTTP " + strconv.Itoa(e.StatusCode) + ": " + e.Reason
	if e.Provider != "" {
		s = e.Provider + ": " + s
	}
	return s
}

// Retryable reports whether the same request may succeed later: over the
// quota (429) or a server error (5xx). Other 4xx are the request's fault.
func (e *APIError) Retryable() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// PartialError reports an answer that lacks some of the points asked:
// Missing are their indices in the call's points, in ascending order. The
// other answers are valid.
type PartialError struct {
	Missing []int
	Asked   int
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("answer lacks %d of %d locations", len(e.Missing), e.Asked)
}
