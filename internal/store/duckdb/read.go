//go:build !noduckdb

package duckdb

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// List returns one page of records matching q, by seq: newest first, or
// oldest first when q.Ascending.
func (s *Store) List(ctx context.Context, q store.Query) (store.Page, error) {
	page, _, err := s.list(ctx, q, false)
	return page, err
}

// ListEncoded is List with each record's JSON as the API returns it
// (store.EncodedReader): a page of a user's records from the row store is
// returned as it is kept there, neither decoded nor encoded again.
func (s *Store) ListEncoded(ctx context.Context, q store.Query) (store.EncodedPage, error) {
	page, enc, err := s.list(ctx, q, true)
	if err != nil {
		return store.EncodedPage{}, err
	}
	if enc == nil {
		if enc, err = encodeRecords(page.Records); err != nil {
			return store.EncodedPage{}, fmt.Errorf("duckdb: list: %w", err)
		}
	}
	return store.EncodedPage{Records: enc, NextCursor: page.NextCursor}, nil
}

// encodeRecords returns each record's JSON.
func encodeRecords(recs []event.Record) ([][]byte, error) {
	out := make([][]byte, len(recs))
	le := event.NewLineEncoder()
	for i := range recs {
		var err error
		if out[i], err = encodeRecord(le, &recs[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// encodeRecord returns the record's JSON (a copy), as the API returns it.
func encodeRecord(le *event.LineEncoder, r *event.Record) ([]byte, error) {
	b, err := le.Encode(r)
	if err != nil {
		return nil, fmt.Errorf("encode the record at seq %d: %w", r.Seq, err)
	}
	return bytes.Clone(bytes.TrimSuffix(b, []byte{'\n'})), nil
}

// list is List; with encoded, a page read from the row store is returned
// as the records' JSON (enc, and page.NextCursor), any other as records.
func (s *Store) list(ctx context.Context, q store.Query, encoded bool) (store.Page, [][]byte, error) {
	limit := store.EffectiveLimit(q.Limit)
	var (
		where []string
		args  []any
	)
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	cursor := int64(-1)
	if q.Cursor != "" {
		asc, seq, err := decodeCursor(q.Cursor)
		if err != nil || asc != q.Ascending {
			return store.Page{}, nil, fmt.Errorf("duckdb: list: %w", store.ErrBadCursor)
		}
		if asc {
			arg("seq > ?", seq)
		} else {
			arg("seq < ?", seq)
		}
		cursor = seq
	}
	order := " ORDER BY seq DESC"
	if q.Ascending {
		order = " ORDER BY seq ASC"
	}
	if q.UserID != "" && listByUserIndex {
		// The other filters: listByUser adds the user's where it needs it.
		other := q
		other.UserID = ""
		n := len(where)
		filterConds(&other, arg)
		if s.rows != nil && len(where) == n {
			return s.listByUserRows(ctx, q, limit, cursor, where, args, order, encoded)
		}
		page, err := s.listByUser(ctx, q, limit, cursor, where, args, order)
		return page, nil, err
	}
	filterConds(&q, arg)
	// Two steps, because DuckDB's top-N over all 42 columns reads far more
	// than the page (160 ms for 100 of 100k records): first the page's seq
	// values, reading only seq and the filtered columns, then the records in
	// that seq range, which the row groups' min/max statistics narrow to a
	// few row groups. The two statements see the same rows in that range:
	// new records only ever get a seq above every existing one.
	//
	// Newest first, DuckDB's top-N still reads every seq (14 ms at 100k
	// records), so the first step looks at a window of seq values below the
	// start and widens it until the page is full or the window reaches the
	// first record. Unfiltered, seq is dense and the first window suffices.
	from, release := s.view()
	defer release()
	seqQuery := func(extra []string, extraArgs []any) ([]int64, error) {
		conds := append(slices.Clone(where), extra...)
		a := append(slices.Clone(args), extraArgs...)
		a = append(a, limit+1)
		return s.seqs(ctx, "SELECT seq FROM "+from+whereClause(conds)+order+" LIMIT $"+strconv.Itoa(len(a)), a...)
	}
	var (
		seqs []int64
		err  error
	)
	if q.Ascending {
		seqs, err = seqQuery(nil, nil)
	} else {
		top := s.maxSeq.Load() + 1
		if cursor >= 0 {
			top = cursor
		}
		for window := int64(4 * (limit + 1)); ; window *= 8 {
			lo := top - window
			if lo <= 1 || lo <= q.AfterSeq {
				seqs, err = seqQuery(nil, nil)
				break
			}
			seqs, err = seqQuery([]string{"seq >= $" + strconv.Itoa(len(args)+1)}, []any{lo})
			if err != nil || len(seqs) > limit {
				break
			}
		}
	}
	if err != nil {
		return store.Page{}, nil, fmt.Errorf("duckdb: list: %w", err)
	}
	if len(seqs) == 0 {
		return store.Page{}, nil, nil
	}
	lo, hi := seqs[0], seqs[len(seqs)-1]
	if lo > hi {
		lo, hi = hi, lo
	}
	arg("seq >= ?", lo)
	arg("seq <= ?", hi)
	recs, err := s.query(ctx, "SELECT "+readColumns+" FROM "+from+whereClause(where)+order, args...)
	if err != nil {
		return store.Page{}, nil, fmt.Errorf("duckdb: list: %w", err)
	}
	if len(recs) != len(seqs) {
		return store.Page{}, nil, fmt.Errorf("duckdb: list: %d records in the range of %d seq values", len(recs), len(seqs))
	}
	page := store.Page{Records: recs}
	if len(recs) > limit {
		page.Records = recs[:limit]
		page.NextCursor = encodeCursor(q.Ascending, recs[limit-1].Seq)
	}
	return page, nil, nil
}

// listByUserIndex: List reads a user's records through the user index.
var listByUserIndex = true

// listByUser is List for a user's records, through the user index: the
// user's seqs beyond the cursor are the candidates, taken in the page's
// order in chunks (a page's worth, then 4 times more each time), each read
// with the other filters (where, args: all but the user's) until the page
// is full: those the user runs cover from the runs that hold them
// (runs.go); those in the main file no run covers with a statement each
// when they are sparse (listByUserPoints), or else by a scan of their
// range of seq that compares user_key, or user_id for the records without
// a key (listByUserKey); those not yet moved by a scan of the segments.
// The runs are listed in the
// transaction that reads them, so that a merge that commits meanwhile (and
// drops the runs it merged) changes nothing.
func (s *Store) listByUser(ctx context.Context, q store.Query, limit int, cursor int64, where []string, args []any, order string) (store.Page, error) {
	cands := s.userCandidates(q, cursor)
	if len(cands) == 0 {
		return store.Page{}, nil
	}
	recs, err := s.readUserSeqs(ctx, q, cands, limit, where, args, order)
	if err != nil {
		return store.Page{}, fmt.Errorf("duckdb: list: %w", err)
	}
	return userPage(q, recs, limit), nil
}

// userCandidates are the seqs of the user's records beyond the cursor and
// q.AfterSeq, in the page's order.
func (s *Store) userCandidates(q store.Query, cursor int64) []int64 {
	cands := slices.DeleteFunc(s.users.list(q.UserID), func(seq int64) bool {
		return seq <= q.AfterSeq || cursor >= 0 && (q.Ascending && seq <= cursor || !q.Ascending && seq >= cursor)
	})
	if !q.Ascending {
		slices.Reverse(cands)
	}
	return cands
}

// userPage is the page of recs (up to limit+1 records, in the page's
// order).
func userPage(q store.Query, recs []event.Record, limit int) store.Page {
	page := store.Page{Records: recs}
	if len(recs) > limit {
		page.Records = recs[:limit]
		page.NextCursor = encodeCursor(q.Ascending, recs[limit-1].Seq)
	}
	return page
}

// listByUserRows is listByUser without filters but the cursor, from the
// row store: every candidate is one of the page's records (the user index
// lists the user's records and no one else's), so the page is the first
// limit+1 candidates, each a point read of the row store; those it does
// not hold are read from DuckDB (readUserSeqs). Candidates found in
// neither were deleted meanwhile: the next ones take their place. With
// encoded, the page is the records' JSON (enc): those of the row store as
// it keeps them, those of DuckDB encoded.
func (s *Store) listByUserRows(ctx context.Context, q store.Query, limit int, cursor int64, where []string, args []any, order string, encoded bool) (page store.Page, enc [][]byte, err error) {
	fail := func(err error) (store.Page, [][]byte, error) {
		return store.Page{}, nil, fmt.Errorf("duckdb: list: %w", err)
	}
	cands := s.userCandidates(q, cursor)
	user := rowRef(q.UserID, 0)
	var got []rowRead
	for len(cands) > 0 && len(got) <= limit {
		part := cands[:min(limit+1-len(got), len(cands))]
		cands = cands[len(part):]
		refs := make([]int64, len(part))
		for i, seq := range part {
			refs[i] = user | seq
		}
		read, missing, err := s.rows.fetch(refs, encoded)
		if err != nil {
			return fail(err)
		}
		if len(missing) > 0 {
			for i := range missing {
				missing[i] = refSeq(missing[i])
			}
			recs, err := s.readUserSeqs(ctx, q, missing, len(missing), where, args, order)
			if err != nil {
				return fail(err)
			}
			bySeq := make(map[int64]*event.Record, len(recs))
			for i := range recs {
				bySeq[recs[i].Seq] = &recs[i]
			}
			for i, seq := range part {
				if r := bySeq[seq]; r != nil && !read[i].found() {
					read[i] = rowRead{rec: r, key: recordKey(r)}
				}
			}
		}
		for i := range read {
			r := &read[i]
			if !r.found() {
				continue
			}
			if r.key.User.ID != q.UserID || r.key.Seq != part[i] {
				return fail(fmt.Errorf("the row store holds at seq %d user %q's record of seq %d, where the user index lists user %q's", part[i], r.key.User.ID, r.key.Seq, q.UserID))
			}
			got = append(got, *r)
		}
	}
	if len(got) > limit {
		got = got[:limit]
		page.NextCursor = encodeCursor(q.Ascending, got[limit-1].key.Seq)
	}
	if !encoded {
		if len(got) > 0 {
			page.Records = make([]event.Record, len(got))
		}
		for i := range got {
			page.Records[i] = *got[i].rec
		}
		return page, nil, nil
	}
	// Never nil (even empty): nil is the page of records.
	enc = make([][]byte, len(got))
	var le *event.LineEncoder
	for i := range got {
		if enc[i] = got[i].json; enc[i] != nil {
			continue
		}
		if le == nil {
			le = event.NewLineEncoder()
		}
		if enc[i], err = encodeRecord(le, got[i].rec); err != nil {
			return fail(err)
		}
	}
	return page, enc, nil
}

// recordKey is the key of a record read decoded.
func recordKey(r *event.Record) rowRecordKey {
	var k rowRecordKey
	k.EventID, k.User.ID, k.Seq = r.EventID, r.User.ID, r.Seq
	return k
}

// readUserSeqs reads the user's records among cands (in the page's
// order) that match where, up to limit+1 of them, in the page's order.
func (s *Store) readUserSeqs(ctx context.Context, q store.Query, cands []int64, limit int, where []string, args []any, order string) ([]event.Record, error) {
	fail := func(err error) ([]event.Record, error) { return nil, err }
	// A literal (quote): a statement whose records all come by seq has no
	// use for a parameter, which DuckDB refuses.
	userWhere := append(slices.Clone(where), "user_id = "+quote(q.UserID))
	from, release := s.view()
	defer release()
	// Read before the transaction begins: the records up to it were
	// committed to the main file before, so the transaction sees them there.
	cold := s.coldSeen.Load()
	// Likewise: the records above it had their keys before.
	keyLo := s.userKeyLo.Load()
	tx, done, err := s.readTx(ctx)
	if err != nil {
		return fail(err)
	}
	defer done()
	var runs []run
	if listByUserRuns {
		if runs, err = loadRuns(ctx, tx); err != nil {
			return fail(err)
		}
	}
	hi := runsHi(runs)
	var recs []event.Record
	for chunk := limit + 1; len(cands) > 0 && len(recs) <= limit; chunk *= 4 {
		part := cands[:min(chunk, len(cands))]
		cands = cands[len(part):]
		// The seqs of each run (by index in runs), and of none (-1).
		bySource := map[int][]int64{}
		for _, seq := range part {
			src := -1
			if seq <= hi {
				src, _ = slices.BinarySearchFunc(runs, seq, func(r run, seq int64) int {
					switch {
					case seq <= r.lo:
						return 1
					case seq > r.hi:
						return -1
					}
					return 0
				})
			}
			bySource[src] = append(bySource[src], seq)
		}
		var parts []string
		// scan reads seqs from table, with the conditions (the user's
		// among them): the bounds let the row groups' min/max of seq skip
		// the others.
		scan := func(table string, conds []string, seqs []int64) {
			in := make([]string, len(seqs))
			for i, seq := range seqs {
				in[i] = strconv.FormatInt(seq, 10)
			}
			parts = append(parts, "SELECT "+readColumns+" FROM "+table+whereClause(append(slices.Clone(conds),
				fmt.Sprintf("seq BETWEEN %d AND %d", slices.Min(seqs), slices.Max(seqs)), "seq IN ("+strings.Join(in, ", ")+")")))
		}
		// points reads seqs of the main file, a statement each, without
		// the user: the user index lists the user's seqs and no one
		// else's (checked below), if they are sparse enough (spread):
		// it reports whether it did.
		points := func(seqs []int64, spread int64) bool {
			if !listByUserPoints || len(seqs) == 0 || len(seqs) > maxPointReads ||
				(slices.Max(seqs)-slices.Min(seqs)+1)/int64(len(seqs)) < spread {
				return false
			}
			for _, seq := range seqs {
				parts = append(parts, "SELECT "+readColumns+" FROM main.events"+whereClause(append(slices.Clone(where), "seq = "+strconv.FormatInt(seq, 10))))
			}
			return true
		}
		for src, seqs := range bySource {
			if src >= 0 {
				scan(runs[src].table(), userWhere, seqs)
				continue
			}
			// The main file's records with a user_key (keyed), those
			// without, and those not yet moved (hot).
			var keyed, unkeyed, hot []int64
			for _, seq := range seqs {
				switch {
				case seq > cold:
					hot = append(hot, seq)
				case seq > keyLo && listByUserKey:
					keyed = append(keyed, seq)
				default:
					unkeyed = append(unkeyed, seq)
				}
			}
			if len(keyed) > 0 && !points(keyed, keyedPointSpread) {
				scan("main.events", append(slices.Clone(where), "user_key = "+userKeyOf(quote(q.UserID))), keyed)
			}
			if len(unkeyed) > 0 && !points(unkeyed, minPointSpread) {
				hot = append(hot, unkeyed...)
			}
			if len(hot) > 0 {
				scan(from, userWhere, hot)
			}
		}
		a := append(slices.Clone(args), limit+1-len(recs))
		got, err := queryRecords(ctx, tx, "SELECT * FROM ("+strings.Join(parts, " UNION ALL ")+")"+order+" LIMIT $"+strconv.Itoa(len(a)), a...)
		if err != nil {
			return fail(err)
		}
		for _, r := range got {
			if r.User.ID != q.UserID {
				return fail(fmt.Errorf("the user index lists seq %d for user %q, whose record there is user %q's", r.Seq, q.UserID, r.User.ID))
			}
		}
		recs = append(recs, got...)
	}
	return recs, nil
}

// listByUserRuns: listByUser reads the records the user runs cover from
// them (benchmarks compare).
var listByUserRuns = true

// listByUserPoints: listByUser reads the main file's records no run
// covers with a statement each (seq = N) when they are sparse, rather
// than with one statement of seq IN (...) and the user (tests and
// benchmarks compare). DuckDB takes a long IN list as a join above the
// scan, with the list only to skip row groups: the scan then reads the
// user_id of every row in the records' range of seq and compares it, where
// a statement of seq = N reads one row group's seq. So the scan costs by
// the rows in the range (about 28 ns and 55 ns of CPU a row), a statement
// by the record (about 2 ms and 3.5 ms of CPU): on the 20 M-record store,
// a page of a user with a week of history (100 k rows a record) took 281
// ms and 550 ms of CPU by the scan, 209 ms and 350 ms by statements; a
// user of the load (whose records are close together) 20 ms by the scan,
// 135 ms by statements (docs/benchmarks.md, ninth round). Hence the
// statements only where the records are at least minPointSpread rows
// apart on average, and for no more than maxPointReads records at once.
var listByUserPoints = true

// listByUserKey: listByUser compares user_key, not user_id, to find the
// main file's records that have one (schema version 7) in a scan of
// their range (tests and benchmarks compare).
var listByUserKey = true

// keyedPointSpread is minPointSpread for the main file's records that
// have a user_key: a scan compares 8 bytes a row rather than a string,
// about 13 ns of CPU a row against 4.6 ms a record read by a statement
// (a user with a week of history on the 20 M-record store: 265 ms of CPU
// a page by the scan, docs/benchmarks.md, tenth round), so statements
// pay only for records farther apart than that.
var keyedPointSpread int64 = 350_000

// maxPointReads is the most records listByUser reads with a statement each.
const maxPointReads = 256

// minPointSpread is the least average distance in seq between the records
// listByUser reads with a statement each: about where the two ways cost
// the same CPU. Tests lower it, so that their small stores take both ways.
var minPointSpread int64 = 1 << 16

// Get returns the record with the event id, or store.ErrNotFound. The
// event id index gives its seq, which the row groups' min/max statistics
// find; an id whose hash two stored ids share is looked for by a scan.
func (s *Store) Get(ctx context.Context, eventID string) (event.Record, error) {
	return decodedRead(s.get(ctx, eventID, false))
}

// GetEncoded is Get with the record's JSON (store.EncodedReader): as the
// row store keeps it, if it holds it.
func (s *Store) GetEncoded(ctx context.Context, eventID string) ([]byte, error) {
	return encodedRead(s.get(ctx, eventID, true))
}

// decodedRead is the record of a read made decoded, or its error.
func decodedRead(r rowRead, err error) (event.Record, error) {
	if err != nil {
		return event.Record{}, err
	}
	return *r.rec, nil
}

// encodedRead is the JSON of a read's record (as read, or encoded if it
// was read decoded), or its error.
func encodedRead(r rowRead, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	if r.json != nil {
		return r.json, nil
	}
	return encodeRecord(event.NewLineEncoder(), r.rec)
}

// get is Get; with encoded, a record from the row store is read as its JSON.
func (s *Store) get(ctx context.Context, eventID string, encoded bool) (rowRead, error) {
	fail := func(err error) (rowRead, error) { return rowRead{}, fmt.Errorf("duckdb: get %q: %w", eventID, err) }
	l := s.ids.lookup(eventID)
	if l.seq == 0 && !l.scan {
		return fail(store.ErrNotFound)
	}
	var (
		r   rowRead
		err error
	)
	if l.scan {
		sn, release := s.acquire()
		var recs []event.Record
		recs, err = s.query(ctx, "SELECT "+readColumns+" FROM "+sn.from+" WHERE event_id = $1", eventID)
		release()
		if len(recs) > 0 {
			r = rowRead{rec: &recs[0], key: recordKey(&recs[0])}
		}
	} else {
		r, err = s.recordAt(ctx, l.ref, s.getMain, "event_id", eventID, encoded)
	}
	if err != nil {
		return fail(err)
	}
	if !r.found() {
		return fail(store.ErrNotFound)
	}
	return r, nil
}

// recordAt reads the record of the row ref (rowRef: its seq and its user),
// just looked up, whose column col (event_id or user_id) is v: from the row
// store if it holds it (a point read; it holds a record only once DuckDB
// committed it, and never a copy that differs; as its JSON with encoded),
// otherwise from DuckDB: from the main file alone by the prepared statement
// stmt if the record was moved there, otherwise from the segments of a
// snapshot taken now, after the lookup (it holds the segment the record was
// written to, unless the record is in the main file by now; its segments
// stay attached until it is released). It finds nothing if the record is
// not there (deleted).
func (s *Store) recordAt(ctx context.Context, ref int64, stmt *sql.Stmt, col, v string, encoded bool) (rowRead, error) {
	seq := refSeq(ref)
	if s.rows != nil {
		got, _, err := s.rows.fetch([]int64{ref}, encoded)
		if err != nil {
			return rowRead{}, err
		}
		// Another record at seq (an event id whose hash another one
		// shares) is for DuckDB's statement to rule out.
		if r := got[0]; r.found() && r.key.Seq == seq && (col == "event_id" && r.key.EventID == v || col == "user_id" && r.key.User.ID == v) {
			return r, nil
		}
	}
	sn, release := s.acquire()
	defer release()
	var (
		recs []event.Record
		err  error
	)
	if seq <= s.coldSeen.Load() {
		recs, err = queryRecords(ctx, preparedQueryer{stmt}, "", seq, v)
	} else {
		parts := make([]string, len(sn.segs))
		for i, seg := range sn.segs {
			parts[i] = "SELECT " + selectColumns + " FROM " + seg.alias + ".events"
		}
		recs, err = s.query(ctx, "SELECT "+readColumns+" FROM ("+strings.Join(parts, " UNION ALL ")+") AS events WHERE seq = $1 AND "+col+" = $2", seq, v)
	}
	if err != nil || len(recs) == 0 {
		return rowRead{}, err
	}
	return rowRead{rec: &recs[0], key: recordKey(&recs[0])}, nil
}

// LatestForUser returns the user's record with the latest occurred_at (the
// last stored of those on a tie), or store.ErrNotFound. The user index
// keeps the latest records of the users who wrote last in memory
// (keepLatest), and knows the seq of each user's latest record: for the
// others, one read by seq (latestFast).
// Where it does not (a user it has no records of, or one whose latest a
// delete took while others stayed), users_latest gives the seq of the
// user's latest record in the main file, read by seq, and the hot
// segments, a few seconds of records, are scanned; both statements run in
// one transaction, so they see the main file as of one moment.
func (s *Store) LatestForUser(ctx context.Context, userID string) (event.Record, error) {
	return decodedRead(s.latest(ctx, userID, false))
}

// LatestForUserEncoded is LatestForUser with the record's JSON
// (store.EncodedReader): as the row store keeps it, if it is read there.
func (s *Store) LatestForUserEncoded(ctx context.Context, userID string) ([]byte, error) {
	return encodedRead(s.latest(ctx, userID, true))
}

// latest is LatestForUser; with encoded, a record from the row store is
// read as its JSON.
func (s *Store) latest(ctx context.Context, userID string, encoded bool) (rowRead, error) {
	fail := func(err error) (rowRead, error) {
		return rowRead{}, fmt.Errorf("duckdb: latest for user %q: %w", userID, err)
	}
	if latestFast && latestKept {
		if rec, ok, err := s.users.latestRecord(userID); ok {
			return rowRead{rec: &rec, key: recordKey(&rec)}, nil
		} else if err != nil {
			s.log.WarnContext(ctx, "duckdb: a latest record kept in memory does not decode; reading the store", "user_id", userID, "error", err.Error())
		}
	}
	if seq, ok := s.users.latestSeq(userID); ok && latestFast {
		r, err := s.recordAt(ctx, rowRef(userID, seq), s.getMainUser, "user_id", userID, encoded)
		if err != nil {
			return fail(err)
		}
		if r.found() {
			return r, nil
		}
		// Deleted since it was looked up: ask the store.
	}
	sn, release := s.acquire()
	defer release()
	segs := sn.segs
	tx, done, err := s.readTx(ctx)
	if err != nil {
		return fail(err)
	}
	defer done()
	var (
		latest  sql.NullInt64
		coldMax int64
	)
	if err := tx.QueryRowContext(ctx, "SELECT (SELECT seq FROM main.users_latest WHERE user_id = $1), "+coldMaxSQL, userID).Scan(&latest, &coldMax); err != nil {
		return fail(err)
	}
	parts := []string{"SELECT " + readColumns + " FROM main.events WHERE seq = $2 AND user_id = $1"}
	for _, seg := range segs {
		parts = append(parts, "SELECT "+readColumns+" FROM "+seg.alias+".events WHERE seq > $3 AND user_id = $1")
	}
	recs, err := queryRecords(ctx, tx, "SELECT * FROM ("+strings.Join(parts, " UNION ALL ")+") ORDER BY occurred_at DESC, seq DESC LIMIT 1",
		userID, latest.Int64, coldMax)
	if err != nil {
		return fail(err)
	}
	if len(recs) == 0 {
		return fail(store.ErrNotFound)
	}
	return rowRead{rec: &recs[0], key: recordKey(&recs[0])}, nil
}

// latestFast: LatestForUser reads the latest record the user index knows
// by seq (tests and benchmarks compare with the read through users_latest).
var latestFast = true

// latestKept: LatestForUser answers from the latest records kept in memory
// (tests compare with the read by seq).
var latestKept = true

// readTx begins a transaction on a connection of its own, for reads whose
// statements must see the main file as of one moment; done ends both.
func (s *Store) readTx(ctx context.Context) (tx *sql.Tx, done func(), err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if tx, err = conn.BeginTx(ctx, nil); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return tx, func() { tx.Rollback(); conn.Close() }, nil
}

// filterConds adds q's filters (all but Limit, Cursor and Ascending) as
// conditions with parameters. Text comparisons that store.Query calls
// case-insensitive compare lower() of both sides.
func filterConds(q *store.Query, arg func(cond string, v any)) {
	if q.AfterSeq > 0 {
		arg("seq > ?", q.AfterSeq)
	}
	if q.UserID != "" {
		arg("user_id = ?", q.UserID)
	}
	if q.Country != "" {
		arg("lower(location_country) = lower(?)", q.Country)
	}
	if q.City != "" {
		arg("lower(location_city) = lower(?)", q.City)
	}
	if q.EventType != "" {
		arg("event_type = ?", q.EventType)
	}
	if !q.Since.IsZero() {
		arg("occurred_at >= ?", q.Since.UTC())
	}
	if !q.Until.IsZero() {
		arg("occurred_at < ?", q.Until.UTC())
	}
	if q.Condition != "" {
		arg("lower(weather_condition) = lower(?)", q.Condition)
	}
	// A record without weather has NULL here, which no comparison matches.
	if q.MinTemp != nil {
		arg("weather_temperature_c >= ?", *q.MinTemp)
	}
	if q.MaxTemp != nil {
		arg("weather_temperature_c <= ?", *q.MaxTemp)
	}
	for i := range q.Props {
		propCond(&q.Props[i], arg)
	}
}

// jsonNumberTypes are the json_type answers for a JSON number.
const jsonNumberTypes = "('BIGINT', 'UBIGINT', 'HUGEINT', 'DOUBLE')"

// propCond adds a property filter (store.PropFilter's semantics). The path
// is a literal: its names are letters, digits and _ (ParsePropFilter).
func propCond(f *store.PropFilter, arg func(cond string, v any)) {
	p := "'" + f.JSONPath() + "'"
	typ := "json_type(properties, " + p + ")"
	num := "TRY_CAST(json_extract_string(properties, " + p + ") AS DOUBLE)"
	switch f.Op {
	case store.PropExists:
		// A missing path gives NULL, which no comparison matches.
		arg(typ+" <> ?", "NULL")
	case store.PropGt, store.PropGte, store.PropLt, store.PropLte:
		op := map[string]string{store.PropGt: ">", store.PropGte: ">=", store.PropLt: "<", store.PropLte: "<="}[f.Op]
		arg(typ+" IN "+jsonNumberTypes+" AND "+num+" "+op+" ?", f.Num)
	case store.PropEq:
		// One parameter, the value's text: a number property compares with
		// it read as a number (NULL, no match, when it is not one).
		arg("CASE WHEN "+typ+" IN ('VARCHAR', 'BOOLEAN') THEN json_extract_string(properties, "+p+") = ?"+
			" WHEN "+typ+" IN "+jsonNumberTypes+" THEN coalesce("+num+" = TRY_CAST(? AS DOUBLE), false) ELSE false END", f.Value)
	}
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// seqs runs a SELECT of one BIGINT column.
func (s *Store) seqs(ctx context.Context, query string, args ...any) ([]int64, error) {
	return int64s(ctx, s.db, query, args...)
}

// int64s runs a query of one BIGINT column on q.
func int64s(ctx context.Context, q queryer, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// query runs a SELECT of selectColumns and decodes the rows.
func (s *Store) query(ctx context.Context, query string, args ...any) ([]event.Record, error) {
	return queryRecords(ctx, s.db, query, args...)
}

// queryer is a *sql.DB or a *sql.Conn.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// preparedQueryer is a prepared statement as a queryer: it ignores the
// query string.
type preparedQueryer struct{ stmt *sql.Stmt }

func (p preparedQueryer) QueryContext(ctx context.Context, _ string, args ...any) (*sql.Rows, error) {
	return p.stmt.QueryContext(ctx, args...)
}

// queryRecords runs a SELECT of selectColumns on db and decodes the rows.
func queryRecords(ctx context.Context, db queryer, query string, args ...any) ([]event.Record, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	n := len(columnNames)
	vals := make([]any, n+1)
	ptrs := make([]any, n+1)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var recs []event.Record
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		rec, err := event.FromValues(vals[:n])
		if err != nil {
			return nil, fmt.Errorf("decode row: %w", err)
		}
		seq, ok := vals[n].(int64)
		if !ok {
			return nil, fmt.Errorf("decode row: seq is %T", vals[n])
		}
		rec.Seq = seq
		recs = append(recs, rec)
		clear(vals)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return recs, nil
}

// Cursors are opaque to clients: base64url("v1:" + a|d + ":" + seq).
const cursorPrefix = "v1:"

func encodeCursor(asc bool, seq int64) string {
	dir := "d"
	if asc {
		dir = "a"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + dir + ":" + strconv.FormatInt(seq, 10)))
}

var errCursor = errors.New("malformed cursor")

func decodeCursor(c string) (asc bool, seq int64, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return false, 0, errCursor
	}
	rest, ok := strings.CutPrefix(string(b), cursorPrefix)
	if !ok {
		return false, 0, errCursor
	}
	dir, num, ok := strings.Cut(rest, ":")
	if !ok || (dir != "a" && dir != "d") {
		return false, 0, errCursor
	}
	seq, err = strconv.ParseInt(num, 10, 64)
	if err != nil || seq < 0 || strconv.FormatInt(seq, 10) != num {
		return false, 0, errCursor
	}
	return dir == "a", seq, nil
}
