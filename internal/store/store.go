// Package store declares how the pipeline writes and reads enriched
// records, so that the embedded DuckDB store and BigQuery are
// interchangeable. Every backend passes the conformance suite in storetest.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Writer writes enriched records.
type Writer interface {
	// Write stores records and returns nil only once they are durable.
	// Writing a record whose event_id is already stored leaves the stored
	// one as it is: the first write wins, so redeliveries are harmless.
	Write(ctx context.Context, recs []event.Record) error
}

// Reader reads enriched records.
type Reader interface {
	// List returns records matching q, newest first unless q.Ascending.
	List(ctx context.Context, q Query) (Page, error)
	// Get returns one record by event id, or ErrNotFound.
	Get(ctx context.Context, eventID string) (event.Record, error)
	// LatestForUser returns the user's record with the latest occurred_at,
	// or ErrNotFound.
	LatestForUser(ctx context.Context, userID string) (event.Record, error)
}

// Store is a backend: a writer and a reader.
type Store interface {
	Writer
	Reader
	Close() error
}

// Query selects records. Zero fields do not filter.
type Query struct {
	UserID  string
	Country string
	Since   time.Time // occurred_at >= Since
	Until   time.Time // occurred_at < Until
	// Limit bounds the page; zero means DefaultLimit, more than MaxLimit is
	// cut to MaxLimit.
	Limit int
	// Cursor continues a previous List from its Page.NextCursor.
	Cursor string
	// Ascending lists oldest stored first (in the order the store took them).
	Ascending bool
}

// Page limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Page is one page of a List.
type Page struct {
	Records []event.Record
	// NextCursor continues the listing; empty when there is nothing more
	// at the time of the call.
	NextCursor string
}

// ErrNotFound is returned when no record matches.
var ErrNotFound = errors.New("not found")

// ErrBadCursor is returned by List for a cursor it did not issue.
var ErrBadCursor = errors.New("bad cursor")

// EffectiveLimit applies DefaultLimit and MaxLimit to a requested limit.
func EffectiveLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}
