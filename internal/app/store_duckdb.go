//go:build !noduckdb

package app

import (
	"context"
	"fmt"
	"log/slog"

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

// migrateDuckDB opens the DuckDB file at path, which migrates it, closes it
// and returns the schema version it is now at.
func migrateDuckDB(ctx context.Context, path string) (int, error) {
	s, err := duckdb.Open(ctx, duckdb.Config{Path: path}, nil)
	if err != nil {
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
