//go:build !noduckdb

package app

import (
	"runtime/debug"
	"testing"
)

// TestMemoryBudgetLeavesDuckDBItsShare: `up --memory-limit` sets the Go
// heap's soft limit to the budget less twice the DuckDB store's memory
// limit and a tenth in reserve.
func TestMemoryBudgetLeavesDuckDBItsShare(t *testing.T) {
	keepMemoryLimit(t)
	_, stop := startInProcess(t, upHooks{}, "--memory-limit=1GiB", "--duckdb-memory-limit=128MB")
	got := debug.SetMemoryLimit(-1)
	stop()
	if want := int64(1<<30 - 2*128e6 - (1<<30)/10); got != want {
		t.Errorf("the Go heap's soft limit is %d, want %d (1 GiB less twice DuckDB's 128 MB and a tenth)", got, want)
	}
}
