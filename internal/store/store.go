// Package store declares how the pipeline writes and reads enriched
// records, so that the embedded DuckDB store and BigQuery are
// interchangeable. Every backend passes the conformance suite in storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Writer writes enriched records.
type Writer interface {
	// Write stores records and returns nil only once they are durable.
	// Writing a record whose event_id is already stored leaves the stored
	// one as it is: the first write wins, so redeliveries are harmless.
	//
	// When Write returns nil, recs holds what the store holds, so that the
	// caller can pass the stored records on (publish them to the records
	// topic; the live stream resumes by Seq). Input Seq values are ignored.
	// For each event_id, its first occurrence in recs, recs[i], is:
	//
	//   - a record Write inserted: unchanged but for its new Seq;
	//   - a record whose event_id was already stored before this call (a
	//     redelivery): replaced by the stored record, with its stored Seq,
	//     weather, processed_at and every other field, so that a caller that
	//     crashed after the store committed and before it passed the records
	//     on can pass them on when the batch is redelivered.
	//
	// A later occurrence of an event_id within the same call is dropped and
	// gets Seq 0 (its first occurrence carries the stored record).
	//
	// A backend that cannot tell a duplicate at write time (BigQuery: an
	// at-least-once append, deduplicated by event_id in the view readers
	// read) stores every record again and returns each as written, with its
	// Seq; the copy readers see for the event_id is then the one written
	// last, which is what Write returned. There a later occurrence within
	// the call has a Seq too. Consumers of the records topic deduplicate by
	// event_id either way: a record can be passed on more than once.
	Write(ctx context.Context, recs []event.Record) error
}

// LineWriter is a Writer that gives back, with a write, the JSON of what
// it stored: a caller that passes the stored records on (the worker, to the
// records topic) sends those lines instead of encoding each record again.
type LineWriter interface {
	Writer
	// WriteLines is Write, and returns one entry for each record of recs:
	// for a record with a Seq once written, its JSON and a newline, as a
	// read of the store returns it (so a line may differ from encoding
	// recs[i]: times in the store's precision, for one); nil for a record
	// with Seq 0. The lines are not changed afterwards.
	WriteLines(ctx context.Context, recs []event.Record) ([][]byte, error)
}

// RejectedRows is a Write error that names the records the store refused
// for what they hold (BigQuery's row errors), by their index in the batch,
// with the reason. Every record it does not name was stored: the caller
// dead-letters the named ones and acks the rest.
type RejectedRows interface {
	error
	Reasons() map[int]string
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

// EncodedReader is a Reader that can answer with each record's JSON, as
// the API returns it (what encoding the event.Record gives), so that the
// records it keeps encoded are neither decoded nor encoded again on their
// way to a client. Each method returns what its Reader method would, and
// the same errors.
type EncodedReader interface {
	ListEncoded(ctx context.Context, q Query) (EncodedPage, error)
	GetEncoded(ctx context.Context, eventID string) ([]byte, error)
	LatestForUserEncoded(ctx context.Context, userID string) ([]byte, error)
}

// EncodedPage is a Page of records' JSON.
type EncodedPage struct {
	// Records holds each record's JSON object, no newline after it.
	Records    [][]byte
	NextCursor string
}

// Eraser erases a person's records (DELETE /v1/users/{id}).
type Eraser interface {
	// DeleteUsers deletes every stored record (every copy, where a backend
	// keeps several) whose user.id is one of userIDs, and returns how many
	// rows it deleted. Deleting what is not there is not an error. A record
	// of those users written afterwards (a redelivery, an event still in
	// flight) is stored again.
	DeleteUsers(ctx context.Context, userIDs []string) (int64, error)
}

// Store is a backend: a writer, a reader and an eraser.
type Store interface {
	Writer
	Reader
	Eraser
	Close() error
}

// Expirer is implemented by a backend that enforces retention itself
// (DuckDB; BigQuery expires its day partitions by itself): the process that
// writes calls it periodically.
type Expirer interface {
	// DeleteOccurredBefore deletes every record whose occurred_at is before
	// t and returns how many it deleted.
	DeleteOccurredBefore(ctx context.Context, t time.Time) (int64, error)
}

// Query selects records. Zero fields do not filter; set fields combine
// with AND. Query.Match is the reference semantics of the filters in Go;
// every backend's List and Stats select the same records.
type Query struct {
	UserID  string    // user.id, exact
	Country string    // location.country, case-insensitive
	Since   time.Time // occurred_at >= Since
	Until   time.Time // occurred_at < Until
	// City is location.city, case-insensitive.
	City string
	// EventType is event_type, exact.
	EventType string
	// Condition is the text of the weather's WMO code (weather.condition,
	// e.g. "Clear sky", "Slight rain"), matched case-insensitively and
	// whole. Records without weather do not match.
	Condition string
	// MinTemp and MaxTemp bound weather.temperature_c, inclusive. Records
	// without weather do not match when either is set.
	MinTemp, MaxTemp *float64
	// Props filter on values within the record's properties (at most
	// MaxPropFilters), all of them.
	Props []PropFilter
	// AfterSeq, when positive, selects records with Seq > AfterSeq: the live
	// stream's resume point (its event ids are seqs). It combines with
	// Cursor and with either order.
	AfterSeq int64
	// Limit bounds the page; zero means DefaultLimit, more than MaxLimit is
	// cut to MaxLimit.
	Limit int
	// Cursor continues a previous List from its Page.NextCursor.
	Cursor string
	// Ascending lists oldest stored first (in the order the store took them).
	Ascending bool
}

// Match reports whether r passes q's filters (Limit, Cursor and Ascending
// play no part). It is the reference semantics of the filters, and what the
// live stream filters with.
func (q *Query) Match(r *event.Record) bool {
	switch {
	case q.AfterSeq > 0 && r.Seq <= q.AfterSeq,
		q.UserID != "" && r.User.ID != q.UserID,
		q.Country != "" && !strings.EqualFold(r.Location.Country, q.Country),
		q.City != "" && !strings.EqualFold(r.Location.City, q.City),
		q.EventType != "" && r.EventType != q.EventType,
		!q.Since.IsZero() && r.OccurredAt.Before(q.Since),
		!q.Until.IsZero() && !r.OccurredAt.Before(q.Until):
		return false
	}
	for i := range q.Props {
		if !q.Props[i].Match(r.Properties) {
			return false
		}
	}
	if q.Condition == "" && q.MinTemp == nil && q.MaxTemp == nil {
		return true
	}
	w := r.Weather
	switch {
	case w == nil,
		q.Condition != "" && !strings.EqualFold(w.Condition, q.Condition),
		q.MinTemp != nil && w.TemperatureC < *q.MinTemp,
		q.MaxTemp != nil && w.TemperatureC > *q.MaxTemp:
		return false
	}
	return true
}

// Aggregator computes aggregates over stored records. A backend that
// serves GET /v1/stats implements it next to Store.
type Aggregator interface {
	// Stats returns one row per group of the records matching q's filters
	// that has at least one record (empty time buckets are left out):
	// ordered by Count descending then Country, Key (then the group
	// without a value after the group of the empty string) for
	// GroupByCountry, GroupByCity and GroupByProp; by Bucket ascending for
	// GroupByTime. With q.MaxGroups it returns only the first MaxGroups of
	// those rows (a caller asks for one more to learn whether groups were
	// cut). It returns an error wrapping ErrBadStatsQuery when q.Validate
	// does.
	Stats(ctx context.Context, q StatsQuery) ([]StatsRow, error)
}

// Stats groupings.
const (
	GroupByCountry = "country" // location.country as stored (exact)
	GroupByCity    = "city"    // location.country and location.city as stored
	GroupByTime    = "time"    // occurred_at in buckets of StatsQuery.Bucket
	// GroupByProp groups by the value at StatsQuery.Prop within the
	// properties, as text (PropText); records where it is missing, null, an
	// object or an array form one group without a value (StatsRow.NoValue).
	GroupByProp = "prop"
)

// MaxStatsGroups bounds the groups of one GET /v1/stats answer (its limit
// parameter); StatsQuery.MaxGroups is at most one more.
const MaxStatsGroups = 1000

// StatsQuery selects records, as Query does (its Limit, Cursor and
// Ascending are ignored), and groups them.
type StatsQuery struct {
	Query
	// GroupBy is GroupByCountry, GroupByCity, GroupByTime or GroupByProp.
	GroupBy string
	// Prop is the property path of GroupByProp (ParsePropPath's names).
	Prop []string
	// MaxGroups, when positive, keeps only the first MaxGroups groups in
	// Stats' order (the largest), at most MaxStatsGroups; zero keeps every
	// group. It may be MaxStatsGroups+1: a caller that answers with at
	// most MaxStatsGroups asks for one more to learn whether groups were
	// cut. Not for GroupByTime, whose groups the window and the bucket
	// bound.
	MaxGroups int
	// Bucket is the width of a time bucket for GroupByTime: at least one
	// second, a whole number of seconds. Buckets are aligned to the Unix
	// epoch (UTC): a bucket of 1h starts on the hour.
	Bucket time.Duration
}

// ErrBadStatsQuery is wrapped by StatsQuery.Validate's errors.
var ErrBadStatsQuery = errors.New("bad stats query")

// Validate checks GroupBy, Prop, Bucket and MaxGroups.
func (q *StatsQuery) Validate() error {
	if q.MaxGroups < 0 || q.MaxGroups > MaxStatsGroups+1 {
		return fmt.Errorf("%w: max groups %d is not from 0 to %d", ErrBadStatsQuery, q.MaxGroups, MaxStatsGroups+1)
	}
	if (len(q.Prop) > 0) != (q.GroupBy == GroupByProp) {
		return fmt.Errorf("%w: a property path goes with group_by %q, and only with it", ErrBadStatsQuery, GroupByProp)
	}
	switch q.GroupBy {
	case GroupByCountry, GroupByCity, GroupByProp:
		if q.Bucket != 0 {
			return fmt.Errorf("%w: bucket is only for group_by %q", ErrBadStatsQuery, GroupByTime)
		}
		if q.GroupBy == GroupByProp {
			if _, err := ParsePropPath(strings.Join(q.Prop, ".")); err != nil {
				return fmt.Errorf("%w: %v", ErrBadStatsQuery, err)
			}
		}
	case GroupByTime:
		if q.Bucket < time.Second || q.Bucket%time.Second != 0 {
			return fmt.Errorf("%w: bucket %v is not a whole number of seconds, at least 1s", ErrBadStatsQuery, q.Bucket)
		}
		if q.MaxGroups != 0 {
			return fmt.Errorf("%w: max groups is not for group_by %q", ErrBadStatsQuery, GroupByTime)
		}
	default:
		return fmt.Errorf("%w: group_by %q is not one of %q, %q, %q, %q", ErrBadStatsQuery, q.GroupBy, GroupByCountry, GroupByCity, GroupByTime, GroupByProp)
	}
	return nil
}

// StatsRow is one group.
type StatsRow struct {
	// Key is the group's country (GroupByCountry), city (GroupByCity), the
	// bucket's start in RFC 3339 (GroupByTime), or the property's value as
	// text (GroupByProp, PropText). Records without a country or city form
	// the group with the empty key.
	Key string
	// NoValue marks the GroupByProp group of the records where the
	// property is missing, null, an object or an array (Key is empty).
	NoValue bool
	// Country is the country of a GroupByCity group; empty otherwise.
	Country string
	// Bucket is the start of a GroupByTime bucket (UTC); zero otherwise.
	Bucket time.Time
	// Count is the number of records in the group.
	Count int64
	// WithWeather is the number of those records that have weather: the
	// population of the temperatures and condition shares below.
	WithWeather int64
	// AvgTemp, MinTemp and MaxTemp are over weather.temperature_c; nil when
	// WithWeather is 0.
	AvgTemp, MinTemp, MaxTemp *float64
	// Conditions maps each weather.condition to its share of WithWeather
	// (0 < share <= 1; the shares add up to 1). Empty when WithWeather is 0.
	Conditions map[string]float64
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

// ErrTooCostly is returned by a read the store refuses for what it would
// cost (BigQuery: more bytes billed than the store's cap). The caller can
// narrow it (by time, user, country); the error's text says how.
var ErrTooCostly = errors.New("the read would cost more than the store allows")

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
