//go:build !noduckdb

package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Unavailable returns up to limit records whose enrichment status is
// unavailable and whose seq is above after, in seq order, and the cursor to
// pass as after for the next page (0 when there is none). `skyjoin backfill`
// walks them with it.
func (s *Store) Unavailable(ctx context.Context, limit int, after int64) ([]event.Record, int64, error) {
	if limit <= 0 {
		return nil, 0, fmt.Errorf("duckdb: unavailable records: limit %d, want > 0", limit)
	}
	from, release := s.view()
	defer release()
	recs, err := s.query(ctx, "SELECT "+readColumns+" FROM "+from+" WHERE enrichment_status = $1 AND seq > $2 ORDER BY seq LIMIT $3",
		event.StatusUnavailable, after, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("duckdb: unavailable records after %d: %w", after, err)
	}
	var next int64
	if len(recs) == limit {
		next = recs[len(recs)-1].Seq
	}
	return recs, next, nil
}

// weatherColumns are the columns UpdateWeather sets: the weather, the
// enrichment status and error, and processed_at.
var weatherColumns = func() []string {
	var cols []string
	for _, c := range columnNames {
		if strings.HasPrefix(c, "weather_") || strings.HasPrefix(c, "enrichment_") || c == "processed_at" {
			cols = append(cols, c)
		}
	}
	return cols
}()

// updateWeatherSQL updates a table of records (%s) from the staged ones.
var updateWeatherSQL = func() string {
	set := make([]string, len(weatherColumns))
	for i, c := range weatherColumns {
		set[i] = c + " = staging." + c
	}
	return "UPDATE %s AS t SET " + strings.Join(set, ", ") +
		" FROM staging WHERE t.event_id = staging.event_id AND t.enrichment_status = '" + event.StatusUnavailable + "'"
}()

// UpdateWeather sets the weather, enrichment and processed_at of stored
// records, by event_id, in one transaction, and returns how many it
// updated. Only records still unavailable are updated: a record enriched
// meanwhile is left alone, so running a backfill twice is harmless. Every
// other field of recs is ignored.
func (s *Store) UpdateWeather(ctx context.Context, recs []event.Record) (int64, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("duckdb: update weather of %d records: %w", len(recs), ctx.Err())
	}
	defer func() { <-s.wsem }()
	if s.closed {
		return 0, fmt.Errorf("duckdb: update weather of %d records: %w", len(recs), errClosed)
	}
	// The latest records kept in memory may be among those updated: they
	// go, and the writer, which keeps them, waits for wsem meanwhile.
	s.users.forgetKept()
	// So are the records Stats keeps in memory: it reads the store until
	// the rollup covers every record stored now, and the rollup's minutes
	// in memory are loaded again once the main file's have changed.
	s.recent.reset(s.lastSeq)
	s.editMu.Lock()
	defer s.editMu.Unlock()
	ords := make([]int64, len(recs))
	for i := range ords {
		ords[i] = int64(i) + 1
	}
	if err := s.stage(ctx, recs, ords); err != nil {
		return 0, fmt.Errorf("duckdb: update weather of %d records: %w", len(recs), err)
	}
	// The main file and each hot segment, in a transaction of its own
	// (DuckDB writes one database per transaction); a move copies none
	// of them meanwhile.
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	s.runsMu.Lock()
	defer s.runsMu.Unlock()
	// The row store's copies of the records to update go first: a crash
	// after leaves them to be read from DuckDB, never their old weather.
	var updated []int64
	if s.rows != nil {
		from, release := s.view()
		seqs, refs, err := s.seqsAndRefs(ctx, "SELECT seq, user_id FROM "+from+" WHERE enrichment_status = '"+event.StatusUnavailable+"' AND event_id IN (SELECT event_id FROM staging)")
		release()
		if err != nil {
			return 0, fmt.Errorf("duckdb: update weather of %d records: the records to update: %w", len(recs), err)
		}
		if err := s.rows.drop(ctx, refs); err != nil {
			return 0, fmt.Errorf("duckdb: update weather of %d records: %w", len(recs), err)
		}
		updated = seqs
	}
	total, err := s.updateMainWeather(ctx)
	if total > 0 || err != nil {
		s.reloadMinutes(ctx, s.wconn)
	}
	if err != nil {
		return 0, fmt.Errorf("duckdb: update weather of %d records: %w", len(recs), err)
	}
	for _, seg := range s.segments() {
		res, err := s.wconn.ExecContext(ctx, fmt.Sprintf(updateWeatherSQL, seg.alias+".events"))
		if err != nil {
			return total, fmt.Errorf("duckdb: update weather of %d records: %w", len(recs), err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("duckdb: update weather of %d records: %w", len(recs), err)
		}
		total += n
	}
	s.reputRows(ctx, updated)
	return total, nil
}

// seqsAndRefs runs query, of seq and user_id, on the writer's connection,
// and returns the seqs and their row refs.
func (s *Store) seqsAndRefs(ctx context.Context, query string) (seqs, refs []int64, err error) {
	rows, err := s.wconn.QueryContext(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			seq  int64
			user sql.RawBytes
		)
		if err := rows.Scan(&seq, &user); err != nil {
			return nil, nil, fmt.Errorf("scan: %w", err)
		}
		seqs, refs = append(seqs, seq), append(refs, rowRefBytes(user, seq))
	}
	return seqs, refs, rows.Err()
}

// reputRows puts into the row store the records at seqs as they are now
// stored (after UpdateWeather, under wsem): a failure leaves them to be
// read from DuckDB.
func (s *Store) reputRows(ctx context.Context, seqs []int64) {
	if len(seqs) == 0 {
		return
	}
	in := make([]string, len(seqs))
	for i, seq := range seqs {
		in[i] = strconv.FormatInt(seq, 10)
	}
	from, release := s.view()
	defer release()
	recs, err := queryRecords(ctx, s.wconn, "SELECT "+readColumns+" FROM "+from+" WHERE seq IN ("+strings.Join(in, ", ")+")")
	if err == nil {
		err = s.rows.putRecords(ctx, recs)
	}
	if err != nil {
		s.log.WarnContext(ctx, "duckdb: the row store's copies of updated records; they are read from DuckDB", "records", len(seqs), "error", err.Error())
	}
}

// updateMainWeather updates the main file's records from the staged ones,
// recomputes the stats rollup of their minutes and updates the user runs'
// copies of the records, in one transaction.
func (s *Store) updateMainWeather(ctx context.Context) (int64, error) {
	tx, err := s.writerTx(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	minutes, err := int64s(ctx, tx, fmt.Sprintf(updateWeatherSQL, "main.events")+" RETURNING "+minuteOf)
	if err != nil {
		return 0, err
	}
	if len(minutes) == 0 {
		return 0, nil
	}
	runs, err := runTables(ctx, tx)
	if err != nil {
		return 0, err
	}
	for _, table := range runs {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(updateWeatherSQL, table)); err != nil {
			return 0, fmt.Errorf("update %s: %w", table, err)
		}
	}
	// The rollup's reads wait for its change and the commit (rollupMu).
	s.rollupMu.Lock()
	defer s.rollupMu.Unlock()
	if err := refreshMinutes(ctx, tx, minutes, s.rollupHi); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return int64(len(minutes)), nil
}
