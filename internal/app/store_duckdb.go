//go:build !noduckdb

package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/skyjoin/skyjoin/internal/bench"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
)

// The DuckDB store, in every build but -tags noduckdb (store_noduckdb.go).
// These functions are the only uses of the cgo store in app.

// openDuckDB opens the DuckDB store of cfg.
func openDuckDB(ctx context.Context, cfg duckdb.Config, log *slog.Logger) (storeBackend, error) {
	s, err := duckdb.Open(ctx, cfg, log)
	if err != nil {
		return nil, err // not a typed nil *duckdb.Store in the interface
	}
	return s, nil
}

// migrateDuckDB opens the DuckDB file at path, which migrates it, lets it
// settle (duckdb.Store.Settle), closes it and returns the schema version
// it is now at.
func migrateDuckDB(ctx context.Context, path string, log *slog.Logger) (int, error) {
	s, err := duckdb.Open(ctx, duckdb.Config{Path: path}, log)
	if err != nil {
		return 0, err
	}
	// The work the new version leaves to the mover (the user runs of an
	// upgraded file) is done here, offline, rather than by the next up.
	if err := s.Settle(ctx); err != nil {
		s.Close()
		return 0, err
	}
	// And the keys of the records of a file older than version 7.
	if err := s.KeyUsers(ctx); err != nil {
		s.Close()
		return 0, err
	}
	if err := s.Close(); err != nil {
		return 0, err
	}
	return duckdb.SchemaVersion, nil
}

// compactDuckDB rewrites the DuckDB file at path with its live data only.
func compactDuckDB(ctx context.Context, path string) (before, after int64, err error) {
	before, after, err = duckdb.Compact(ctx, path)
	if err != nil {
		return 0, 0, fmt.Errorf("%w (is skyjoin running on it? stop it first)", err)
	}
	return before, after, nil
}

// fillDuckDB brings the DuckDB store at path to n records of f, through the
// store's write path (Store.Write: the staging table, then one INSERT into
// events, checked by its primary key and indexed by user_id) in batches of
// 20,000, waits for the store to settle (Store.Settle) and closes it (a
// checkpoint). It resumes from the records the store holds.
func fillDuckDB(ctx context.Context, path string, f *bench.Filler, n int64, progress io.Writer) error {
	s, err := duckdb.Open(ctx, duckdb.Config{Path: path}, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	have, err := s.Count(ctx)
	if err != nil {
		return err
	}
	const batch = 20_000
	start, from := time.Now(), have
	recs := make([]event.Record, 0, batch)
	for i := have; i < n; i += batch {
		recs = f.Records(recs[:0], i, i+batch)
		if err := s.Write(ctx, recs); err != nil {
			return fmt.Errorf("bench: fill at record %d: %w", i, err)
		}
		done := i + int64(len(recs))
		fmt.Fprintf(progress, "\r\033[Kfill: %d of %d records (%.0f/s)", done, n, float64(done-from)/time.Since(start).Seconds())
	}
	// The segments moved and the user runs cut, as a store that has kept
	// up with its writes has them (a store made by an older version gets
	// its runs and its records' user keys here).
	settle := time.Now()
	fmt.Fprintf(progress, "\r\033[Kfill: settling the store (user runs, user keys)")
	if err := s.Settle(ctx); err != nil {
		return err
	}
	if err := s.KeyUsers(ctx); err != nil {
		return err
	}
	fmt.Fprintf(progress, "\r\033[Kfill: store settled in %s\n", time.Since(settle).Round(time.Second))
	if err := s.Close(); err != nil {
		return err
	}
	if n > have {
		fmt.Fprintf(progress, "\r\033[Kfill: %d records written in %s (%.0f/s), the store holds %d\n",
			n-have, time.Since(start).Round(time.Second), float64(n-have)/time.Since(start).Seconds(), n)
	}
	return nil
}
