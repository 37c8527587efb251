//go:build !noduckdb && !unix

package duckdb

// openFilesLimit is unknown here: the row store keeps Pebble's default.
func openFilesLimit() uint64 { return 0 }
