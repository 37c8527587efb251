package duckdb

import (
	"errors"
	"strings"
)

// Config configures the DuckDB store.
type Config struct {
	// Path is the database file. Its parent directory is created if needed.
	// DuckDB keeps its write-ahead log next to it (Path + ".wal").
	Path string
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	switch {
	case strings.TrimSpace(c.Path) == "":
		errs = append(errs, errors.New("duckdb: path is required"))
	case c.Path == ":memory:" || strings.HasPrefix(c.Path, ":memory:"):
		errs = append(errs, errors.New("duckdb: path must be a file, not :memory: (the store must be durable)"))
	case strings.ContainsAny(c.Path, "?#"):
		// The driver reads anything after '?' as DuckDB settings.
		errs = append(errs, errors.New("duckdb: path must not contain '?' or '#'"))
	}
	if strings.HasSuffix(c.Path, "/") {
		errs = append(errs, errors.New("duckdb: path must name a file, not a directory"))
	}
	return errors.Join(errs...)
}
