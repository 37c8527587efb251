//go:build !noduckdb

package serve_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
)

// openStore opens the real DuckDB store in a temporary directory, writes
// recs, and returns it with recs as stored (Seq set), in insertion order.
func openStore(tb testing.TB, recs []event.Record) (store.Reader, []event.Record) {
	tb.Helper()
	ctx := context.Background()
	s, err := duckdb.Open(ctx, duckdb.Config{Path: filepath.Join(tb.TempDir(), "skyjoin.duckdb")}, nil)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	if err := s.Write(ctx, recs); err != nil {
		tb.Fatalf("write test records: %v", err)
	}
	page, err := s.List(ctx, store.Query{Ascending: true, Limit: store.MaxLimit})
	if err != nil || len(page.Records) != len(recs) || page.NextCursor != "" {
		tb.Fatalf("read back %d of %d test records (next %q): %v", len(page.Records), len(recs), page.NextCursor, err)
	}
	stored := slices.Clone(recs)
	for i := range stored {
		if page.Records[i].EventID != stored[i].EventID {
			tb.Fatalf("stored record %d is %s, want %s: Seq is not the insertion order", i, page.Records[i].EventID, stored[i].EventID)
		}
		stored[i].Seq = page.Records[i].Seq
	}
	return s, stored
}
