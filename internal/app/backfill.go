package app

import (
	"context"
	"errors"
	"fmt"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

// backfillStore is what backfill needs of a store: the records stored
// without weather, and a way to add it in place. *duckdb.Store has it.
type backfillStore interface {
	Unavailable(ctx context.Context, limit int, after int64) ([]event.Record, int64, error)
	UpdateWeather(ctx context.Context, recs []event.Record) (int64, error)
}

// backfillStats counts what a backfill did.
type backfillStats struct {
	Scanned  int64 // unavailable records looked at
	Enriched int64 // records given weather
	Left     int64 // records still unavailable (the provider still failing)
	Skipped  int64 // records without coordinates (status no_location): no weather to look up, left as they are
}

// runBackfill: `skyjoin backfill` joins the weather to the records stored
// with enrichment status "unavailable" (the provider failed past its
// retries), in place, with the weather of each event's own time. Events
// without coordinates (status no_location) have no weather to join: they
// are skipped and left as they are.
//
// DuckDB allows one process per file: run it while `skyjoin up` is stopped
// (it fails with the file's lock otherwise).
func runBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backfill", stderr)
	dataDir := fs.String("data-dir", "data", "directory of the store's file")
	storeURL := fs.String("store", "", "store URL: duckdb://PATH (default duckdb://DATA_DIR/skyjoin.duckdb)")
	weatherURL := fs.String("weather-url", openmeteo.DefaultBaseURL, "base URL of the Open-Meteo API")
	apiKey := fs.String("weather-api-key", "", "Open-Meteo API key for the commercial endpoint (never logged)")
	demo := fs.Bool("demo", false, "ask the built-in weather simulator, as `up --demo` does")
	batch := fs.Int("batch", 500, "records per round (one weather lookup and one store update)")
	limit := fs.Int64("max", 0, "stop after this many records (0: all)")
	var wcfg weatherConfig
	wcfg.RegisterFlags(fs)
	var logCfg platform.LogConfig
	logCfg.RegisterFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: backfill takes no arguments, got %q", errUsage, fs.Args())
	}
	var p platform.Problems
	if *batch < 1 || *batch > 10_000 {
		p.Addf("batch must be 1-10000, got %d", *batch)
	}
	if *limit < 0 {
		p.Addf("max must not be negative, got %d", *limit)
	}
	if err := wcfg.Validate(); err != nil {
		p.Addf("%v", err)
	}
	if err := p.Err(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := platform.NewLogger(stderr, logCfg)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if *storeURL == "" {
		if _, err := os.Stat(filepath.Join(dir, "skyjoin.duckdb")); err != nil {
			return fmt.Errorf("backfill: no store in %s: %w", dir, err)
		}
	}
	st, _, err := openStore(ctx, *storeURL, dir, duckdb.Config{}, log)
	if err != nil {
		return fmt.Errorf("backfill: %w (DuckDB allows one process per file: stop skyjoin up first)", err)
	}
	defer st.Close()
	bs, ok := st.(backfillStore)
	if !ok {
		return fmt.Errorf("backfill: the store %T cannot list and update unavailable records", st)
	}
	url := *weatherURL
	if *demo {
		s, err := sim.Start(ctx, "127.0.0.1:0", sim.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("backfill: start the weather simulator: %w", err)
		}
		defer s.Close()
		url = s.OpenMeteoURL
	}
	wsvc, err := newWeather(wcfg, url, *apiKey, log)
	if err != nil {
		return err
	}
	defer wsvc.Close()
	stats, err := backfill(ctx, bs, wsvc, *batch, *limit, time.Now, log)
	fmt.Fprintf(stdout, "backfill: %d unavailable records, %d enriched, %d still unavailable, %d skipped (no coordinates)\n",
		stats.Scanned, stats.Enriched, stats.Left, stats.Skipped)
	ws := wsvc.Stats()
	fmt.Fprintf(stdout, "weather: %d provider calls for %d locations, %d cache hits, %d retries, %d quota waits\n",
		ws.Calls, ws.Points, ws.Hits, ws.Retries, ws.QuotaWaits)
	return err
}

// backfill walks the unavailable records in pages of batch, looks their
// weather up (for each event's own time) and writes what it got. Records
// whose weather still cannot be had stay unavailable and are passed over; a
// spent quota pauses the walk until the quota allows more.
func backfill(ctx context.Context, st backfillStore, j weather.Joiner, batch int, maxRecs int64, now func() time.Time, log *slog.Logger) (backfillStats, error) {
	var stats backfillStats
	var after int64
	for {
		n := batch
		if maxRecs > 0 {
			n = int(min(int64(batch), maxRecs-stats.Scanned))
			if n <= 0 {
				return stats, nil
			}
		}
		recs, next, err := st.Unavailable(ctx, n, after)
		if err != nil {
			return stats, fmt.Errorf("backfill: %w", err)
		}
		if len(recs) == 0 {
			return stats, nil
		}
		page := len(recs)
		// An event without coordinates has no weather to look up: skipped,
		// never looked up at 0,0. The store lists only unavailable records,
		// and the worker stores those without coordinates as no_location;
		// this holds whatever a store lists.
		skipped := int64(0)
		recs = slices.DeleteFunc(recs, func(r event.Record) bool {
			if r.Location.HasCoordinates() {
				return false
			}
			skipped++
			return true
		})
		reqs := make([]weather.Request, len(recs))
		for i, r := range recs {
			reqs[i] = weather.Request{Point: weather.Point{Lat: r.Location.Lat(), Lon: r.Location.Lon()}, At: r.OccurredAt}
		}
		var results []weather.Result
		if len(reqs) > 0 {
			results = j.Lookup(ctx, reqs)
		}
		var upd []event.Record
		var wait time.Duration
		for i, res := range results {
			if res.Err != nil {
				if errors.Is(res.Err, weather.ErrQuotaExhausted) {
					wait = max(wait, weather.RetryAfter(res.Err))
				}
				continue
			}
			r := recs[i]
			r.Weather = res.Weather
			r.Enrichment = event.Enrichment{Status: res.Status, Error: res.Reason}
			r.ProcessedAt = now().UTC()
			upd = append(upd, r)
		}
		if len(upd) > 0 {
			if _, err := st.UpdateWeather(ctx, upd); err != nil {
				return stats, fmt.Errorf("backfill: %w", err)
			}
		}
		if wait > 0 && len(upd) < len(recs) {
			// Write what we got, then wait for the quota and go over the page again.
			stats.Scanned += int64(len(upd))
			stats.Enriched += int64(len(upd))
			log.Info("backfill: weather quota spent; waiting", "wait", wait.String())
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return stats, fmt.Errorf("backfill: %w", ctx.Err())
			case <-t.C:
			}
			continue
		}
		// Counted once the page is done (a quota wait goes over it again).
		stats.Scanned += int64(len(recs)) + skipped
		stats.Skipped += skipped
		stats.Enriched += int64(len(upd))
		stats.Left += int64(len(recs) - len(upd))
		log.Info("backfill: round", "records", page, "enriched", len(upd), "skipped", skipped, "total_enriched", stats.Enriched)
		if next == 0 {
			return stats, nil
		}
		after = next
	}
}
