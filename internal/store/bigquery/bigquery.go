// Package bigquery is the store on Google BigQuery: a writer on the Storage
// Write API's default stream and a reader of parameterised queries.
//
// # Layout
//
// One table (Config.Table, default events) with one column per
// event.Columns(), in the schema of deploy/bigquery/events.schema.json
// (event.BigQuerySchema), partitioned by day on occurred_at with a partition
// expiration of Config.Retention, clustered by location_country and user_id;
// and a view (the table name + "_latest") that keeps the latest copy of
// each event_id by processed_at. Migrate creates both.
//
// # Guarantees
//
// The default stream is at-least-once, so the table may hold copies of an
// event (a retried append, a redelivered message); the view hides them and
// the Reader reads the view only. Where the DuckDB store keeps the first
// write of an event_id, the view shows the latest processed: a replay that
// re-enriches an event replaces what analysts and the API see. Write
// returns nil only once BigQuery acknowledged every record (an
// acknowledged append to the default stream is committed), or a *RowErrors
// naming the records BigQuery refused while the rest are stored.
package bigquery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/skyjoin/skyjoin/internal/store"
)

var _ store.Store = (*Store)(nil)

// Store is the BigQuery backend: a Writer and a Reader on one table.
type Store struct {
	*Writer
	*Reader
	closeOnce sync.Once
	closeErr  error
}

// Open connects a writer and a reader to the table of cfg, which must exist
// (see Migrate).
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r, err := NewReader(ctx, cfg)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(ctx, cfg, log)
	if err != nil {
		r.Close()
		return nil, err
	}
	return &Store{Writer: w, Reader: r}, nil
}

// Close closes the writer and the reader. Calling it again returns the
// first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := errors.Join(s.Writer.Close(), s.Reader.Close()); err != nil {
			s.closeErr = fmt.Errorf("bigquery: close: %w", err)
		}
	})
	return s.closeErr
}
