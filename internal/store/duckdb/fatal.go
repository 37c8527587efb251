//go:build !noduckdb

package duckdb

import (
	"errors"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// noteFatal marks the store failed if err is a fatal DuckDB error (for
// instance a checkpoint that found its in-memory state corrupt after an
// out-of-memory error in a commit). DuckDB then refuses every statement,
// "database has been invalidated", until the database is opened again, so
// a process that goes on serving would stay broken; Failed tells it to
// stop, and the next open recovers the store from its files (the main
// file's WAL, the hot segments) and the broker (what was not acked). It
// returns err.
func (s *Store) noteFatal(err error) error {
	var de *duckdb.Error
	if err == nil || !errors.As(err, &de) || de.Type != duckdb.ErrorTypeFatal {
		return err
	}
	s.failOnce.Do(func() {
		s.failure = err
		close(s.failed)
		s.log.Error("duckdb: the database failed for good (DuckDB invalidated it); the process must restart to recover it from its files", "error", err.Error())
	})
	return err
}

// Failed is closed once the store has failed for good (see noteFatal).
func (s *Store) Failed() <-chan struct{} { return s.failed }

// Failure is why the store failed for good, or nil.
func (s *Store) Failure() error {
	select {
	case <-s.failed:
		return s.failure
	default:
		return nil
	}
}
