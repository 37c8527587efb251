package bigquery

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform/iam"
	"github.com/skyjoin/skyjoin/internal/store"
)

var _ store.Reader = (*Reader)(nil)

// Reader reads deduplicated records with parameterised queries: the SQL
// text holds only column names and the table's name (both fixed by the
// schema and by a validated Config); every value (ids, country, times,
// cursor, limit) travels as a query parameter.
//
// # Pruning and cost
//
// Queries read the table, not the view: the filters on what every copy of
// an event shares (occurred_at, user_id, country, city, event type,
// properties, event_id) are applied to the table, where they prune its day
// partitions (occurred_at) and clusters (location_country, user_id), and
// the dedup (the view's QUALIFY) runs on what is left; the filters on what
// differs between copies (processed_at, the weather) apply after it, as
// they would on the view. Each query job carries Config.MaxBytesBilled:
// one that would read more fails instead of running.
//
// # Order, cursors and Seq
//
// BigQuery has no insertion sequence. List orders by (processed_at,
// event_id), the closest stand-in for "the order the store took them", and
// its cursor is that pair of the page's last record (opaque to clients:
// base64url of "v1:" + direction + ":" + processed_at in µs + ":" +
// event_id). Pages are stable: a record's position depends on its own
// values only, so records written between pages never shift a walk; newest
// first, a walk sees what was there when it started; oldest first, a walk
// sees records written later as long as their processed_at is later than
// the cursor (a worker whose clock runs behind, or a batch delayed past a
// later one, can land behind a cursor already passed). If a redelivered
// copy of an event has a later processed_at than the copy already listed,
// the view switches to it and an oldest-first walk can meet that event
// twice.
//
// Record.Seq is synthesised: processed_at in microseconds since the epoch
// (Write sets the same on the records it stores). It is ordered like List
// but not unique, and a duplicate is not told from a first write (Write
// gives every stored copy its Seq); do not use it as an identity.
// Query.AfterSeq selects processed_at after that time, so the live stream
// resumes by it.
type Reader struct {
	cfg    Config
	client *bigquery.Client
}

// NewReader opens a BigQuery client for reads.
func NewReader(ctx context.Context, cfg Config) (*Reader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := bigquery.NewClient(ctx, cfg.Project, cfg.QueryOptions...)
	if err != nil {
		return nil, fmt.Errorf("bigquery: reader: new client: %w", err)
	}
	c.Location = cfg.Location
	return &Reader{cfg: cfg, client: c}, nil
}

// Close closes the client.
func (r *Reader) Close() error { return r.client.Close() }

var selectColumns = func() string {
	cols := event.Columns()
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}()

// from returns the FROM clause of a read: the table's rows matching pre
// (conditions on columns every copy of an event shares), one per event as
// the view keeps them. With pre on the table itself, BigQuery prunes
// partitions and clusters before the window function runs.
func (r *Reader) from(pre []string) string { return from(r.cfg, pre) }

func from(cfg Config, pre []string) string {
	where := "TRUE"
	if len(pre) > 0 {
		where = strings.Join(pre, " AND ")
	}
	return " FROM (SELECT " + selectColumns + " FROM " + cfg.tableSQLName() + " WHERE " + where + " QUALIFY " + dedup + ")"
}

// ReaderGrants are the IAM grants of a process that reads: every read is
// a query job (roles/bigquery.jobUser on the project) over the table and
// the view (roles/bigquery.dataViewer on the dataset).
var ReaderGrants = []iam.Grant{
	{Role: "roles/bigquery.dataViewer", On: iam.Dataset},
	{Role: "roles/bigquery.jobUser", On: iam.Project},
}

// Ping reads the table's metadata: the readiness check of a process with
// this store. It runs no query, so it bills nothing, and needs only
// bigquery.tables.get, which WriterGrants and ReaderGrants both hold.
func (r *Reader) Ping(ctx context.Context) error {
	if _, err := r.client.Dataset(r.cfg.Dataset).Table(r.cfg.table()).Metadata(ctx); err != nil {
		return fmt.Errorf("bigquery: table %s.%s: %w", r.cfg.Dataset, r.cfg.table(), err)
	}
	return nil
}

// List returns one page of records matching q, by (processed_at, event_id):
// newest first, or oldest first when q.Ascending.
func (r *Reader) List(ctx context.Context, q store.Query) (store.Page, error) {
	limit := store.EffectiveLimit(q.Limit)
	sql, params, err := listSQL(r.cfg, q, limit)
	if err != nil {
		return store.Page{}, fmt.Errorf("bigquery: list: %w", err)
	}
	recs, err := r.query(ctx, sql, params)
	if err != nil {
		return store.Page{}, fmt.Errorf("bigquery: list: %w", err)
	}
	page := store.Page{Records: recs}
	if len(recs) > limit {
		last := recs[limit-1]
		page.Records = recs[:limit]
		page.NextCursor = encodeCursor(cursor{asc: q.Ascending, processedAt: last.ProcessedAt, eventID: last.EventID})
	}
	return page, nil
}

// listSQL is List's query of q, with its parameters: up to limit+1 rows,
// the last telling whether there is a next page.
func listSQL(cfg Config, q store.Query, limit int) (string, []bigquery.QueryParameter, error) {
	var params []bigquery.QueryParameter
	param := func(name string, v any) {
		params = append(params, bigquery.QueryParameter{Name: name, Value: v})
	}
	pre, where := filterConds(&q, param)
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor)
		if err != nil || c.asc != q.Ascending {
			return "", nil, store.ErrBadCursor
		}
		op := "<"
		if c.asc {
			op = ">"
		}
		where = append([]string{"(processed_at " + op + " @cursor_time OR (processed_at = @cursor_time AND event_id " + op + " @cursor_id))"}, where...)
		param("cursor_time", c.processedAt)
		param("cursor_id", c.eventID)
	}
	order := " ORDER BY processed_at DESC, event_id DESC"
	if q.Ascending {
		order = " ORDER BY processed_at, event_id"
	}
	param("limit", int64(limit+1))
	return "SELECT " + selectColumns + from(cfg, pre) + whereClause(where) + order + " LIMIT @limit", params, nil
}

// Get returns the record with the event id, or store.ErrNotFound.
func (r *Reader) Get(ctx context.Context, eventID string) (event.Record, error) {
	recs, err := r.query(ctx, "SELECT "+selectColumns+r.from([]string{"event_id = @event_id"})+" LIMIT 1",
		[]bigquery.QueryParameter{{Name: "event_id", Value: eventID}})
	if err != nil {
		return event.Record{}, fmt.Errorf("bigquery: get %q: %w", eventID, err)
	}
	if len(recs) == 0 {
		return event.Record{}, fmt.Errorf("bigquery: get %q: %w", eventID, store.ErrNotFound)
	}
	return recs[0], nil
}

// LatestForUser returns the user's record with the latest occurred_at (the
// latest processed on a tie), or store.ErrNotFound.
func (r *Reader) LatestForUser(ctx context.Context, userID string) (event.Record, error) {
	recs, err := r.query(ctx, "SELECT "+selectColumns+r.from([]string{"user_id = @user_id"})+
		" ORDER BY occurred_at DESC, processed_at DESC, event_id DESC LIMIT 1",
		[]bigquery.QueryParameter{{Name: "user_id", Value: userID}})
	if err != nil {
		return event.Record{}, fmt.Errorf("bigquery: latest for user %q: %w", userID, err)
	}
	if len(recs) == 0 {
		return event.Record{}, fmt.Errorf("bigquery: latest for user %q: %w", userID, store.ErrNotFound)
	}
	return recs[0], nil
}

// filterConds returns the conditions of q's filters, adding their values
// with param. The semantics are store.Query.Match's. pre holds those on
// what every copy of an event shares (the event's own fields): they go on
// the table, before the dedup, where they prune (Reader.from). post holds
// those on what a copy's processing set (processed_at, the weather): they
// apply to the deduplicated rows, as on the view.
func filterConds(q *store.Query, param func(name string, v any)) (pre, post []string) {
	cond := func(to *[]string, c, name string, v any) {
		*to = append(*to, c)
		param(name, v)
	}
	if !q.Since.IsZero() {
		cond(&pre, "occurred_at >= @since", "since", q.Since.UTC())
	}
	if !q.Until.IsZero() {
		cond(&pre, "occurred_at < @until", "until", q.Until.UTC())
	}
	if q.UserID != "" {
		cond(&pre, "user_id = @user_id", "user_id", q.UserID)
	}
	if q.Country != "" {
		// A function of a clustering column does not prune its blocks: a
		// range on the column itself does. For ASCII text, every casing of
		// a name lies between its upper- and lower-case forms (upper-case
		// letters sort first); the LOWER equality keeps the exact
		// semantics. (A name that is not ASCII has no such cheap bound:
		// it is filtered, unpruned, by the equality alone.)
		if lo, hi, ok := caseRange(q.Country); ok {
			pre = append(pre, "location_country BETWEEN @country_lo AND @country_hi")
			param("country_lo", lo)
			param("country_hi", hi)
		}
		cond(&pre, "LOWER(location_country) = LOWER(@country)", "country", q.Country)
	}
	if q.City != "" {
		cond(&pre, "LOWER(location_city) = LOWER(@city)", "city", q.City)
	}
	if q.EventType != "" {
		cond(&pre, "event_type = @event_type", "event_type", q.EventType)
	}
	for i := range q.Props {
		pre = append(pre, propCond(&q.Props[i], fmt.Sprintf("prop_%d", i), param))
	}
	if q.AfterSeq > 0 { // Seq is processed_at in µs
		cond(&post, "processed_at > @after_time", "after_time", time.UnixMicro(q.AfterSeq).UTC())
	}
	if q.Condition != "" {
		cond(&post, "LOWER(weather_condition) = LOWER(@condition)", "condition", q.Condition)
	}
	// A record without weather has NULL here, which no comparison matches.
	if q.MinTemp != nil {
		cond(&post, "weather_temperature_c >= @min_temp", "min_temp", *q.MinTemp)
	}
	if q.MaxTemp != nil {
		cond(&post, "weather_temperature_c <= @max_temp", "max_temp", *q.MaxTemp)
	}
	return pre, post
}

// caseRange returns the bounds, in BigQuery's string order, of every
// casing of s when s is ASCII: its upper- and its lower-case form. (The
// Kelvin sign, which lowers to k, is the one non-ASCII character whose
// lower case is ASCII: a country spelt with it is not found.)
func caseRange(s string) (lo, hi string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return "", "", false
		}
	}
	return strings.ToUpper(s), strings.ToLower(s), true
}

// propCond returns the condition of a property filter on the JSON column
// (store.PropFilter's semantics), adding its parameters, named after name:
// the JSON path, the JSON type names and the value are parameters, as
// every value of a query is.
func propCond(f *store.PropFilter, name string, param func(name string, v any)) string {
	param(name+"_path", f.JSONPath())
	p := "@" + name + "_path"
	typ := "JSON_TYPE(JSON_QUERY(properties, " + p + "))"
	num := "LAX_FLOAT64(JSON_QUERY(properties, " + p + "))"
	switch f.Op {
	case store.PropExists:
		// A missing path gives NULL, which no comparison matches.
		param(name, "null")
		return typ + " <> @" + name
	case store.PropGt, store.PropGte, store.PropLt, store.PropLte:
		op := map[string]string{store.PropGt: ">", store.PropGte: ">=", store.PropLt: "<", store.PropLte: "<="}[f.Op]
		param(name+"_tn", "number")
		param(name, f.Num)
		return "(" + typ + " = @" + name + "_tn AND " + num + " " + op + " @" + name + ")"
	}
	// eq: one value parameter, the value's text; a number property
	// compares with it read as a number (NULL, no match, when it is not).
	param(name+"_tn", "number")
	param(name+"_ts", "string")
	param(name+"_tb", "boolean")
	param(name, f.Value)
	return "(CASE WHEN " + typ + " IN (@" + name + "_ts, @" + name + "_tb) THEN JSON_VALUE(properties, " + p + ") = @" + name +
		" WHEN " + typ + " = @" + name + "_tn THEN COALESCE(" + num + " = SAFE_CAST(@" + name + " AS FLOAT64), FALSE) ELSE FALSE END)"
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// query runs a SELECT of selectColumns and decodes the rows.
func (r *Reader) query(ctx context.Context, sql string, params []bigquery.QueryParameter) ([]event.Record, error) {
	it, err := r.read(ctx, sql, params)
	if err != nil {
		return nil, err
	}
	var recs []event.Record
	for {
		var row []bigquery.Value
		err := it.Next(&row)
		if errors.Is(err, iterator.Done) {
			return recs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read rows: %w", err)
		}
		vals := make([]any, len(row))
		for i, v := range row {
			vals[i] = v
		}
		rec, err := event.FromValues(vals)
		if err != nil {
			return nil, fmt.Errorf("decode row: %w", err)
		}
		rec.Seq = max(rec.ProcessedAt.UnixMicro(), 0)
		recs = append(recs, rec)
	}
}

// read runs a reader query: its parameters, the dataset's location and the
// cap on the bytes it may bill.
func (r *Reader) read(ctx context.Context, sql string, params []bigquery.QueryParameter) (*bigquery.RowIterator, error) {
	it, err := r.readQuery(sql, params).Read(ctx)
	if err != nil {
		if reason(err) == "bytesBilledLimitExceeded" {
			return nil, fmt.Errorf("%w: it would bill more than max_bytes_billed=%d bytes (narrow it by time, user or country, or raise the store URL's max_bytes_billed): %w",
				store.ErrTooCostly, r.cfg.maxBytesBilled(), err)
		}
		return nil, fmt.Errorf("query: %w", err)
	}
	return it, nil
}

// readQuery is a reader query job with its parameters, the dataset's
// location and the cap on the bytes it may bill.
func (r *Reader) readQuery(sql string, params []bigquery.QueryParameter) *bigquery.Query {
	q := r.client.Query(sql)
	q.Parameters = params
	q.Location = r.cfg.Location
	q.MaxBytesBilled = r.cfg.maxBytesBilled()
	return q
}

// reason is the first reason of a BigQuery API error, or "".
func reason(err error) string {
	var e *googleapi.Error
	if errors.As(err, &e) {
		for _, it := range e.Errors {
			if it.Reason != "" {
				return it.Reason
			}
		}
	}
	return ""
}

type cursor struct {
	asc         bool
	processedAt time.Time
	eventID     string
}

const cursorPrefix = "v1:"

var cursorEncoding = base64.RawURLEncoding.Strict()

func encodeCursor(c cursor) string {
	dir := "d"
	if c.asc {
		dir = "a"
	}
	return cursorEncoding.EncodeToString([]byte(cursorPrefix + dir + ":" + strconv.FormatInt(c.processedAt.UnixMicro(), 10) + ":" + c.eventID))
}

var errCursor = errors.New("malformed cursor")

func decodeCursor(s string) (cursor, error) {
	b, err := cursorEncoding.DecodeString(s)
	if err != nil || cursorEncoding.EncodeToString(b) != s {
		return cursor{}, errCursor
	}
	rest, ok := strings.CutPrefix(string(b), cursorPrefix)
	if !ok {
		return cursor{}, errCursor
	}
	dir, rest, ok1 := strings.Cut(rest, ":")
	num, id, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || (dir != "a" && dir != "d") || !validEventID(id) {
		return cursor{}, errCursor
	}
	us, err := strconv.ParseInt(num, 10, 64)
	if err != nil || strconv.FormatInt(us, 10) != num {
		return cursor{}, errCursor
	}
	return cursor{asc: dir == "a", processedAt: time.UnixMicro(us).UTC(), eventID: id}, nil
}

// validEventID checks an id against the event schema's pattern
// (^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$, at most 128 characters).
func validEventID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("._:@/+=-", rune(c))) {
			return false
		}
	}
	return true
}
