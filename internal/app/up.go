package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// noStore is the reader of a process that serves no reads: it is never
// called, since the read routes are not mounted there.
type noStore struct{ store.Reader }

// storeProbe is a cheap query for the readiness check.
var storeProbe = store.Query{Limit: 1}

// sampler prints one stored record now and then, so that a demo shows the
// records flowing.
func sampler(w io.Writer, every time.Duration) func([]event.Record) {
	var mu sync.Mutex
	var last time.Time
	var total int64
	return func(recs []event.Record) {
		mu.Lock()
		defer mu.Unlock()
		total += int64(len(recs))
		if time.Since(last) < every {
			return
		}
		last = time.Now()
		r := recs[len(recs)-1]
		place := r.Location.City
		if r.Location.Country != "" {
			place += ", " + r.Location.Country
		}
		wx := "weather " + r.Enrichment.Status
		if r.Weather != nil {
			wx = fmt.Sprintf("%.1f°C, %s, wind %.0f km/h", r.Weather.TemperatureC, r.Weather.Condition, r.Weather.WindSpeedKMH)
		}
		who := r.User.Name // dropped by the default PII policy: then the id
		if who == "" {
			who = r.User.ID
		}
		fmt.Fprintf(w, "%s  %-24s %-34s %s  (%d stored)\n", r.ProcessedAt.Format("15:04:05"), trunc(who, 24), trunc(place, 34), wx, total)
	}
}

func trunc(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func logStats(ctx context.Context, log *slog.Logger, every time.Duration, w *enrich.Worker, ws *weather.Service) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s, wst := w.Stats(), ws.Stats()
			log.Info("pipeline", "messages", s.Messages, "stored", s.Stored, "dead_lettered", s.DeadLettered,
				"unavailable", s.Unavailable, "failed_batches", s.Failed,
				"weather_hits", wst.Hits, "weather_misses", wst.Misses, "weather_calls", wst.Calls)
		}
	}
}

// eventPublisher publishes events built in-process (collect, replay) the way
// ingest does: one NDJSON message per batch.
type eventPublisher struct {
	pub    broker.Publisher
	source string
}

func (p *eventPublisher) PublishEvents(ctx context.Context, events []event.Event) error {
	if len(events) == 0 {
		return nil
	}
	body, err := event.AppendNDJSON(nil, events...)
	if err != nil {
		return err
	}
	return p.pub.Publish(ctx, broker.TopicEvents,
		envelope.NewEvents(body, event.ContentTypeNDJSON, len(events), time.Now(), p.source))
}
