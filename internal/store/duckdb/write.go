//go:build !noduckdb

package duckdb

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Write stores recs in one transaction and returns once DuckDB has committed
// it (see the package documentation on durability). Records whose event_id
// is already stored, or repeated within recs, are dropped: the first wins.
// The store assigns seq. On success recs holds what is stored
// (store.Writer): a record Write inserted has its new seq; one whose
// event_id was stored before is replaced by the stored record, read back
// (only batches that hold such a redelivery pay for that read); a repeat
// within recs keeps Seq 0.
func (s *Store) Write(ctx context.Context, recs []event.Record) error {
	_, err := s.writeLines(ctx, recs, false)
	return err
}

// WriteLines is Write, and returns, for each record of recs that has a
// seq once written, its JSON and a newline as a read of the store returns
// it (store.LineWriter): what the row store keeps, encoded once for both.
// A line's times are in microseconds and its properties as the JSON
// column gives them back; nil at a repeat within recs.
func (s *Store) WriteLines(ctx context.Context, recs []event.Record) ([][]byte, error) {
	return s.writeLines(ctx, recs, true)
}

func (s *Store) writeLines(ctx context.Context, recs []event.Record, want bool) ([][]byte, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("duckdb: write %d records: %w", len(recs), ctx.Err())
	}
	defer func() { <-s.wsem }()
	if s.closed {
		return nil, fmt.Errorf("duckdb: write %d records: %w", len(recs), errClosed)
	}
	start := time.Now()
	lines, err := s.write(ctx, recs, want)
	if err != nil {
		return nil, fmt.Errorf("duckdb: write %d records: %w", len(recs), s.noteFatal(err))
	}
	if d := time.Since(start); d > slowWrite {
		s.log.WarnContext(ctx, "duckdb write slow (checkpoint?)", "records", len(recs), "duration_ms", d.Milliseconds())
	}
	return lines, nil
}

// write runs under wsem. It returns the records' lines (storedLines) if
// want is set.
func (s *Store) write(ctx context.Context, recs []event.Record, want bool) ([][]byte, error) {
	// seqs[i] is the seq of recs[i] once stored: for the first occurrence
	// of each event id of the batch, a new seq, in batch order, or the seq
	// of the record stored before under that id; 0 for repeats within the
	// batch. fresh[i] is the new seq of a record this write appends, else 0.
	seqs := make([]int64, len(recs))
	fresh := make([]int64, len(recs))
	first := make(map[string]struct{}, len(recs))
	probe := map[int]lookup{} // records whose id the index may hold
	for i := range recs {
		if _, dup := first[recs[i].EventID]; dup {
			continue
		}
		first[recs[i].EventID] = struct{}{}
		fresh[i] = -1
		if l := s.ids.lookup(recs[i].EventID); l.seq != 0 || l.scan {
			probe[i] = l
		}
	}
	// A redelivery: the stored record takes the place of the one sent, so
	// that the caller passes on what is stored (a crash between the commit
	// and the caller's publish must not hide those records for good).
	if len(probe) > 0 {
		stored, err := s.findStored(ctx, recs, probe)
		if err != nil {
			return nil, fmt.Errorf("look for stored event ids: %w", err)
		}
		for i := range probe {
			if r, ok := stored[recs[i].EventID]; ok {
				recs[i], seqs[i], fresh[i] = r, r.Seq, 0
			}
		}
	}
	n := int64(0)
	ids := make([]string, 0, len(recs))
	users := make([]string, 0, len(recs))
	ats := make([]int64, 0, len(recs))
	for i := range recs {
		ids = append(ids, recs[i].EventID)
		users = append(users, recs[i].User.ID)
		ats = append(ats, recs[i].OccurredAt.UnixMicro())
		if fresh[i] == -1 {
			n++
			fresh[i] = s.lastSeq + n
			seqs[i] = fresh[i]
		}
	}
	if s.lastSeq+n > rowSeqMask {
		// 17.6 T records: a row ref holds seqs below 2^44 (rowRef).
		return nil, fmt.Errorf("the store has handed out seq %d, and takes no more than %d", s.lastSeq, int64(rowSeqMask))
	}
	// The lines are encoded before the append, so that a record that
	// cannot be is refused before anything is committed.
	var lines [][]byte
	if want || (n > 0 && s.rows != nil) {
		var err error
		if lines, err = s.storedLines(recs, seqs); err != nil {
			return nil, err
		}
	}
	if n > 0 {
		if err := s.appendTo(ctx, s.active().alias, "events", recs, fresh); err != nil {
			// The append may have committed after all (for instance a
			// cancelled context racing the commit): find out, so that
			// seq values are never handed out twice nor ids forgotten.
			s.resync(ctx)
			return nil, err
		}
		s.lastSeq += n
		s.maxSeq.Store(s.lastSeq)
		s.ids.add(ids, users, fresh)
		s.users.add(users, fresh, ats)
		s.users.keepLatest(fresh, latestCopies(recs, fresh, ats))
		s.recent.add(recs, fresh)
		if s.rows != nil {
			s.putRows(ctx, recs, fresh, lines)
		}
	}
	for i := range recs {
		recs[i].Seq = seqs[i]
	}
	waited, err := s.rotateIfFull(ctx)
	if err != nil {
		// The records are stored; the writer goes on in this segment.
		s.log.WarnContext(ctx, "duckdb: start a new hot segment failed", "error", err.Error())
	}
	if waited > slowWrite {
		s.log.WarnContext(ctx, "duckdb: the writer waited for the mover", "hot_segments", len(s.segments()), "waited_ms", waited.Milliseconds())
	}
	if !want {
		return nil, nil
	}
	return lines, nil
}

// storedLines returns, for each record of recs with a seq (seqs[i] != 0),
// its row value: its JSON and a newline as a read of the store returns it
// (rowForm, with its seq), encoded once for the row store and the caller
// (WriteLines); nil at the others. The lines share one buffer that nothing
// changes afterwards, so that the row store's goroutine and the caller may
// both hold them.
func (s *Store) storedLines(recs []event.Record, seqs []int64) ([][]byte, error) {
	if s.lineEnc == nil {
		s.lineEnc = event.NewLineEncoder()
	}
	ends := make([]int, len(recs))
	var buf []byte
	for i := range recs {
		if seqs[i] == 0 {
			continue
		}
		c := recs[i]
		if w := c.Weather; w != nil { // rowForm changes the weather's time
			w := *w
			c.Weather = &w
		}
		c.Seq = seqs[i]
		b, err := rowValue(s.lineEnc, &c, true)
		if err != nil {
			return nil, fmt.Errorf("record at seq %d: %w", seqs[i], err)
		}
		if buf == nil {
			buf = make([]byte, 0, len(b)*len(recs)+len(b)/4*len(recs))
		}
		buf = append(buf, b...)
		ends[i] = len(buf)
	}
	lines := make([][]byte, len(recs))
	start := 0
	for i, end := range ends {
		if seqs[i] != 0 {
			lines[i] = buf[start:end:end]
			start = end
		}
	}
	return lines, nil
}

// putRows queues the row values of the records this write appended (those
// at fresh[i] != 0) for the row store.
func (s *Store) putRows(ctx context.Context, recs []event.Record, fresh []int64, lines [][]byte) {
	seqs := make([]int64, 0, len(recs))
	users := make([]string, 0, len(recs))
	vals := make([][]byte, 0, len(recs))
	for i := range recs {
		if fresh[i] == 0 {
			continue
		}
		seqs = append(seqs, fresh[i])
		users = append(users, recs[i].User.ID)
		vals = append(vals, lines[i])
	}
	if len(seqs) > 0 {
		s.rows.putLines(ctx, seqs, users, vals)
	}
}

// findStored returns the stored records, by event id, of the records of
// recs at the indexes of probe, whose ids the index may hold (probe has
// what it said). Those whose index entry is a seq are read by seq (the row
// groups' min/max statistics find it), and kept if their event id is the
// one sent; the others, and those whose seq holds another id (a hash two
// ids share), by a scan of the event_id column.
func (s *Store) findStored(ctx context.Context, recs []event.Record, probe map[int]lookup) (map[string]event.Record, error) {
	var bySeq []string
	var scan []any
	for i, l := range probe {
		if l.scan {
			scan = append(scan, recs[i].EventID)
		} else {
			bySeq = append(bySeq, strconv.FormatInt(l.seq, 10))
		}
	}
	from, release := s.view()
	defer release()
	found := make(map[string]event.Record, len(probe))
	if len(bySeq) > 0 {
		got, err := queryRecords(ctx, s.wconn, "SELECT "+readColumns+" FROM "+from+" WHERE seq IN ("+strings.Join(bySeq, ", ")+")")
		if err != nil {
			return nil, err
		}
		bySeqOf := make(map[int64]event.Record, len(got))
		for _, r := range got {
			bySeqOf[r.Seq] = r
		}
		for i, l := range probe {
			if l.scan {
				continue
			}
			if r, ok := bySeqOf[l.seq]; ok && r.EventID == recs[i].EventID {
				found[r.EventID] = r
			} else {
				scan = append(scan, recs[i].EventID) // another id holds the hash: only a scan tells
			}
		}
	}
	if len(scan) > 0 {
		marks := make([]string, len(scan))
		for i := range scan {
			marks[i] = "$" + strconv.Itoa(i+1)
		}
		got, err := queryRecords(ctx, s.wconn, "SELECT "+readColumns+" FROM "+from+" WHERE event_id IN ("+strings.Join(marks, ", ")+")", scan...)
		if err != nil {
			return nil, err
		}
		for _, r := range got {
			found[r.EventID] = r
		}
	}
	return found, nil
}

// stage replaces the staging table's contents with the records of recs whose
// seqs[i] is not 0, each with its seq, through the Appender.
func (s *Store) stage(ctx context.Context, recs []event.Record, seqs []int64) error {
	if _, err := s.wconn.ExecContext(ctx, `DELETE FROM staging`); err != nil {
		return fmt.Errorf("clear staging: %w", err)
	}
	if err := s.appendTo(ctx, "temp", "staging", recs, seqs); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return ctx.Err()
}

// appendTo appends the records of recs whose seqs[i] is not 0, each with
// its seq, to a table of the record columns and a BIGINT, through the
// writer's appender, flushed once: one transaction.
func (s *Store) appendTo(ctx context.Context, catalog, table string, recs []event.Record, seqs []int64) error {
	a, err := s.appender(ctx, catalog, table)
	if err != nil {
		return fmt.Errorf("append to %s: %w", table, err)
	}
	err = s.wconn.Raw(func(any) error {
		row := s.row[:0]
		for i := range recs {
			if seqs[i] == 0 {
				continue
			}
			row = row[:0]
			for j, v := range recs[i].Values() {
				if s, ok := v.(string); ok && j == propertiesIndex {
					// The driver writes a JSON column's value as
					// json.Marshal gives it: the text as it is.
					v = json.RawMessage(s)
				}
				row = append(row, v)
			}
			row = append(row, seqs[i])
			if err := a.AppendRow(row...); err != nil {
				// The rows appended so far are not flushed: they go with
				// the appender.
				return errors.Join(fmt.Errorf("append record %d (event_id %q): %w", i, recs[i].EventID, err), s.dropAppender())
			}
		}
		s.row = row
		if err := a.FlushWithCancel(ctx); err != nil {
			return errors.Join(fmt.Errorf("flush appender: %w", err), s.dropAppender())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append to %s: %w", table, err)
	}
	return nil
}

// appender returns the writer's appender to catalog.table, opening one if
// the kept one is to another table. It takes a row by position when the
// table has exactly the columns of a row, in that order (a table this
// binary created: a hot segment's, the staging table), and by column name
// otherwise (a table a migration left in another order): an appender given
// column names costs DuckDB a third more a flush.
func (s *Store) appender(ctx context.Context, catalog, table string) (*duckdb.Appender, error) {
	key := catalog + "." + table
	if s.app != nil && s.appKey == key {
		return s.app, nil
	}
	if err := s.closeAppender(); err != nil {
		s.log.WarnContext(ctx, "duckdb: close the writer's appender failed", "error", err.Error())
	}
	cols := appendColumns
	if table == "staging" {
		cols = stagingColumns
	}
	got, err := s.columnsOf(ctx, catalog, table)
	if err != nil {
		return nil, err
	}
	positional := slices.Equal(got, cols)
	var a *duckdb.Appender
	err = s.wconn.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		if positional {
			a, err = duckdb.NewAppender(conn, catalog, "main", table)
		} else {
			a, err = duckdb.NewAppenderWithColumns(conn, catalog, "main", table, cols)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("appender: %w", err)
	}
	s.app, s.appKey, s.appPositional = a, key, positional
	return a, nil
}

// columnsOf returns the column names of catalog.main.table, in order.
func (s *Store) columnsOf(ctx context.Context, catalog, table string) ([]string, error) {
	rows, err := s.wconn.QueryContext(ctx, `SELECT column_name FROM duckdb_columns()
WHERE database_name = $1 AND schema_name = 'main' AND table_name = $2 ORDER BY column_index`, catalog, table)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s.%s: %w", catalog, table, err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		got = append(got, c)
	}
	return got, rows.Err()
}

// closeAppender closes the writer's appender, if open. It holds nothing
// unflushed: every write flushes it.
func (s *Store) closeAppender() error {
	if s.app == nil {
		return nil
	}
	err := s.app.Close()
	s.app, s.appKey = nil, ""
	if err != nil {
		return fmt.Errorf("close the writer's appender: %w", err)
	}
	return nil
}

// dropAppender closes the writer's appender after a failed append or
// flush, discarding what it holds, so that the next write starts afresh.
func (s *Store) dropAppender() error {
	if s.app == nil {
		return nil
	}
	if err := s.app.Clear(); err != nil {
		s.log.Warn("duckdb: clear the writer's appender failed", "error", err.Error())
	}
	return s.closeAppender()
}

// appendColumns are the columns appendTo fills, in the order of a row.
var (
	appendColumns  = append(append([]string(nil), columnNames...), "seq")
	stagingColumns = append(append([]string(nil), columnNames...), "ord")
	// propertiesIndex is the index of the JSON column in a record's Values.
	propertiesIndex = slices.IndexFunc(event.Columns(), func(c event.Column) bool { return c.Kind == event.KindObject })
)

// writerTx begins a transaction on the writer's connection, which the
// store keeps for its life. The transaction's context is ctx without its
// end: database/sql discards the connection of a transaction whose
// context ends before its commit or rollback (duckdb-go's connections
// cannot reset a session), which for the writer's connection made every
// later write, and Close, fail with "connection is already closed" (a
// retention delete under way at shutdown; an erasure whose client went
// away). The statements take ctx and stop with it; the caller's deferred
// Rollback ends the transaction.
func (s *Store) writerTx(ctx context.Context) (*sql.Tx, error) {
	return s.wconn.BeginTx(context.WithoutCancel(ctx), nil)
}

// resync sets lastSeq, and the event id index, from the table after a
// failed append, which may have committed after all.
func (s *Store) resync(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	from, release := s.view()
	defer release()
	recs, err := queryRecords(ctx, s.wconn, "SELECT "+readColumns+" FROM "+from+" WHERE seq > $1", s.lastSeq)
	if err != nil {
		// Skip far ahead rather than risk handing its seq values out
		// again; the ids, if committed, are found again at the next open.
		s.log.ErrorContext(ctx, "duckdb: read back after a failed append failed", "error", err.Error())
		s.lastSeq += 1 << 20
		s.maxSeq.Store(s.lastSeq)
		s.recent.reset(s.lastSeq)
		return
	}
	ids := make([]string, len(recs))
	users := make([]string, len(recs))
	seqs := make([]int64, len(recs))
	ats := make([]int64, len(recs))
	slices.SortFunc(recs, func(a, b event.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	for i, r := range recs {
		ids[i], users[i], seqs[i], ats[i] = r.EventID, r.User.ID, r.Seq, r.OccurredAt.UnixMicro()
		s.lastSeq = max(s.lastSeq, r.Seq)
	}
	s.ids.add(ids, users, seqs)
	s.users.add(users, seqs, ats)
	s.maxSeq.Store(s.lastSeq)
	// Those records are not in memory for Stats.
	s.recent.reset(s.lastSeq)
}

// latestCopies returns, for each user of recs, a copy of the user's
// latest record among those at seqs[i] != 0 (by occurred_at, ats, then
// seq), and nil for every other record: the ones the user index may keep
// in memory (userIndex.keepLatest). The copy shares no memory a caller
// may change (the weather, the coordinates, the attributes, the
// properties); it is made what the store keeps when it is read
// (storedValues), since few of the records kept are ever read.
func latestCopies(recs []event.Record, seqs, ats []int64) []*event.Record {
	if latestCacheSize == 0 {
		return nil
	}
	best := make(map[string]int, len(recs))
	for i := range recs {
		if seqs[i] == 0 {
			continue
		}
		u := recs[i].User.ID
		if j, ok := best[u]; !ok || (latestRec{at: ats[j], seq: seqs[j]}).later(ats[i], seqs[i]) {
			best[u] = i
		}
	}
	copies := make([]*event.Record, len(recs))
	for _, i := range best {
		c := ownCopy(recs[i])
		copies[i] = &c
	}
	return copies
}

// ownCopy is a copy of c that shares no memory a caller may change: the
// weather, the coordinates, the attributes, the properties.
func ownCopy(c event.Record) event.Record {
	if w := c.Weather; w != nil {
		w := *w
		c.Weather = &w
	}
	if p := c.Location.Latitude; p != nil {
		f := *p
		c.Location.Latitude = &f
	}
	if p := c.Location.Longitude; p != nil {
		f := *p
		c.Location.Longitude = &f
	}
	c.Attributes = maps.Clone(c.Attributes)
	c.Properties = slices.Clone(c.Properties)
	return c
}

// storedProperties are properties as a read of the store returns them: as
// the driver writes a JSON column (json.Marshal of the text: compacted,
// with <, >, &, U+2028 and U+2029 escaped). Properties that hold none of
// those and no whitespace are already so (ingest checked they are JSON).
func storedProperties(p json.RawMessage) (json.RawMessage, error) {
	if !bytes.ContainsAny(p, " \t\r\n<>&\u2028\u2029") && utf8.Valid(p) {
		return p, nil
	}
	return json.Marshal(p)
}

// storedValues are rec's column values as a read of the store returns
// them: times in microseconds, DuckDB's precision, and the properties as
// the driver writes a JSON column (json.Marshal of the text: compacted,
// with <, > and & escaped).
func storedValues(rec *event.Record) ([]any, error) {
	v := rec.Values()
	for i, x := range v {
		switch x := x.(type) {
		case time.Time:
			v[i] = x.Truncate(time.Microsecond)
		case string:
			if i == propertiesIndex {
				b, err := storedProperties(json.RawMessage(x))
				if err != nil {
					return nil, err
				}
				v[i] = string(b)
			}
		}
	}
	return v, nil
}
