//go:build !noduckdb && !(linux && amd64)

package duckdb

// readAllocator: DuckDB uses the system's allocator here (no jemalloc).
func readAllocator() (*Allocator, bool) { return nil, false }
