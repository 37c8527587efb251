//go:build !noduckdb

package app

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/skyjoin/skyjoin/internal/store/duckdb"
)

// TestBenchFillOnly: --phases none with --fill fills the data dir's store
// through its write path and stops there: no skyjoin is started (none
// would have been given a port, nor a key), and the store holds the
// records asked for.
func TestBenchFillOnly(t *testing.T) {
	dir := t.TempDir()
	const n = 3000
	if err := runBench(context.Background(), []string{"--phases", "none", "--fill", "3000", "--data-dir", dir}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	// No skyjoin ran: its broker's directory and the API key it needs
	// were never made.
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); !os.IsNotExist(err) {
		t.Errorf("the data dir has a broker directory (%v): a skyjoin was started", err)
	}
	s, err := duckdb.Open(t.Context(), duckdb.Config{Path: filepath.Join(dir, "skyjoin.duckdb")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Count(t.Context()); err != nil || got != n {
		t.Fatalf("Count = %d, %v; want %d", got, err, n)
	}
}
