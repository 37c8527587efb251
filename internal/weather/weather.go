// Package weather joins weather to events: a Provider interface over the
// weather APIs, and a Service that puts a cache, batching and call
// coalescing in front of a Provider for the enrich worker.
package weather

import (
	"context"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
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
	// asked, using as few calls as the provider allows. Each answer carries
	// the provider's grid cell and the start of its time slot (ObservedAt).
	Current(ctx context.Context, points []Point) ([]event.Weather, error)
}

// Request asks for the weather at a place and time.
type Request struct {
	Point
	At time.Time // the event's occurred_at
}

// Result answers one Request. Exactly one of Weather and Err is set.
type Result struct {
	Weather *event.Weather
	Status  string // event.StatusEnriched or event.StatusStale when Weather is set
	Err     error
}

// Joiner is what the enrich worker needs: the weather for a batch of
// requests, answered in order. Implementations batch, cache and coalesce.
type Joiner interface {
	Lookup(ctx context.Context, reqs []Request) []Result
}
