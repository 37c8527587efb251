//go:build !noduckdb

package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/store"
)

// The stats rollup: table stats_minute holds, for the main file's records,
// their count and temperature aggregates per minute of occurred_at,
// country, event type and weather condition. Stats answers a query that
// filters and groups only by those (by country, or by time in whole
// minutes) from it for the query's whole minutes, and from the records
// for the rest: the part of a minute at each end of the window, and the
// records of the hot segments (not yet moved). The last hour's stats then
// read about 60 minutes of rollup rows and at most two minutes of records,
// whatever the rate, rather than every record of the hour.
//
// It is exact, not an estimate. It covers the main file's records up to
// seq rollup_hi (skyjoin_meta), and Stats reads the main file's records
// above rollup_hi as records, in the same transaction as the rollup. After
// each move has committed, the mover adds the moved records' aggregates
// and raises rollup_hi in a transaction of its own (rollUp): that
// transaction is small, so the rollup's reads, which wait for it
// (rollupMu), wait little, where in the move's transaction they waited for
// the commit of 30,000 records (stats p99 from 55 to 100 ms on a 20 M-record
// store, docs/benchmarks.md). DuckDB may still checkpoint the main file
// in its commit, for seconds: a read that finds the lock taken reads the
// records instead (Stats). Between the two commits, or after a stop
// between them (Open catches up), the records above rollup_hi are a
// move's worth at most. Whatever changes records already in the main file
// (a delete, a weather backfill) recomputes the minutes it touched from
// the records up to rollup_hi, in its own transaction. Rows are only
// appended by rollUp, one per (minute, country, type, condition) per move,
// so a key may have several rows; readers sum them.
//
// Its size: each move appends at most one row per key of its records. A
// move carries about 30,000 records (SegmentBytes), a few seconds of a
// busy stream, so a minute of it is added to by several moves in a row;
// once the moves have gone past a minute that two or more of them added
// to, rollUp compacts it to one row per key. The
// rollup then holds one row per key and minute, a few per key for the
// minutes late records reach after their compaction: on the demo's
// population, about 3,000 keys a minute at most (21 countries, 5 event
// types, 28 conditions), 3.3 M rows for a 23 M-record store filled over
// a week.

// minuteOf is the start of occurred_at's minute in epoch microseconds (a
// floor division, exact also before 1970).
const minuteOf = "(epoch_us(occurred_at) - ((epoch_us(occurred_at) % 60000000) + 60000000) % 60000000)"

const minuteUS = int64(time.Minute / time.Microsecond)

const statsMinuteDDL = `CREATE TABLE IF NOT EXISTS stats_minute (
  minute_us BIGINT NOT NULL,
  location_country VARCHAR,
  event_type VARCHAR,
  weather_condition VARCHAR,
  n BIGINT NOT NULL,
  nw BIGINT NOT NULL,
  s DOUBLE,
  mn DOUBLE,
  mx DOUBLE
)`

// rollupSQL adds the aggregates of the records of from (a FROM clause
// with its WHERE) to stats_minute.
func rollupSQL(from string) string {
	return `INSERT INTO main.stats_minute
SELECT ` + minuteOf + `, location_country, event_type, weather_condition, count(*), count(weather_temperature_c),
  sum(weather_temperature_c), min(weather_temperature_c), max(weather_temperature_c)
FROM ` + from + ` GROUP BY ALL`
}

// refreshMinutes recomputes, in tx, the rollup of the given minutes (epoch
// microseconds) from the main file's records it covers, those of seq up to
// hi (rollupHi).
func refreshMinutes(ctx context.Context, tx *sql.Tx, minutes []int64, hi int64) error {
	if len(minutes) == 0 {
		return nil
	}
	minutes = slices.Clone(minutes)
	slices.Sort(minutes)
	minutes = slices.Compact(minutes)
	list := minuteList(minutes)
	if _, err := tx.ExecContext(ctx, "DELETE FROM main.stats_minute WHERE minute_us IN "+list); err != nil {
		return fmt.Errorf("stats rollup: clear %d minutes: %w", len(minutes), err)
	}
	// The range first, so that the zone maps skip the rest of the table.
	from, to := time.UnixMicro(minutes[0]).UTC(), time.UnixMicro(minutes[len(minutes)-1]+minuteUS).UTC()
	if _, err := tx.ExecContext(ctx, rollupSQL(
		"main.events WHERE occurred_at >= $1 AND occurred_at < $2 AND seq <= $3 AND "+minuteOf+" IN "+list), from, to, hi); err != nil {
		return fmt.Errorf("stats rollup: recompute %d minutes: %w", len(minutes), err)
	}
	return nil
}

// rollupWindow reports whether q can be answered from stats_minute for
// its whole minutes: it groups by country or by time in whole minutes,
// filters on nothing but country, event type, condition and the window, and
// its window holds at least one whole minute. The whole minutes are those
// from lo (if hasLo, else from the first) to hi (if hasHi, else to the
// last), in epoch microseconds; the records before lo and from hi on are
// read from the records.
func rollupWindow(q *store.StatsQuery) (lo, hi int64, hasLo, hasHi, ok bool) {
	switch {
	case q.GroupBy == store.GroupByCountry:
	case q.GroupBy == store.GroupByTime && q.Bucket > 0 && q.Bucket%time.Minute == 0:
	default:
		return 0, 0, false, false, false
	}
	if q.UserID != "" || q.City != "" || q.MinTemp != nil || q.MaxTemp != nil || len(q.Props) > 0 || q.AfterSeq > 0 {
		return 0, 0, false, false, false
	}
	if !q.Since.IsZero() {
		// The first minute that starts at or after Since (in whole
		// nanoseconds: at or after Since as DuckDB reads it too).
		lo, hasLo = ceilMinute(q.Since), true
	}
	if !q.Until.IsZero() {
		hi, hasHi = floorMinute(q.Until), true
	}
	if hasLo && hasHi && lo >= hi {
		return 0, 0, false, false, false
	}
	return lo, hi, hasLo, hasHi, true
}

// floorMinute is the start of t's minute in epoch microseconds.
func floorMinute(t time.Time) int64 {
	us := t.UnixMicro() // a floor: nanoseconds within a second are never negative
	return us - ((us%minuteUS)+minuteUS)%minuteUS
}

// ceilMinute is the start of the first minute at or after t, in epoch
// microseconds.
func ceilMinute(t time.Time) int64 {
	m := floorMinute(t)
	if time.UnixMicro(m).Before(t) {
		m += minuteUS
	}
	return m
}

// rollUp adds the aggregates of the main file's records above rollupHi,
// up to coldMax, to the rollup and compacts the minutes that moves have
// stopped adding to, in one transaction on conn that records the new
// rollup_hi. The mover calls it after each move's commit, and Open after
// a stop between the two. Its transaction is small (the aggregates of one
// move's records, a few hundred rows, not the records themselves), so
// that the reads of the rollup, which wait for it (rollupMu), wait a few
// milliseconds; the move's own commit, which writes the records, they do
// not wait for. It runs under moveMu, or before the mover starts.
//
// A minute of the previous moves that this one did not add to, and that
// two moves or more in a row added to, is compacted: its rows are
// replaced by one per key. The others are forgotten (a minute added to
// once has one row per key).
func (s *Store) rollUp(ctx context.Context, conn *sql.Conn) error {
	if s.rollupHi >= s.coldMax {
		return nil
	}
	s.rollupMu.Lock()
	defer s.rollupMu.Unlock()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// The rows it added, for the minutes in memory and the minutes it
	// added to.
	rows, err := tx.QueryContext(ctx, rollupSQL("main.events WHERE seq > $1 AND seq <= $2")+
		" RETURNING minute_us, location_country, weather_condition, n, nw, s, mn, mx", s.rollupHi, s.coldMax)
	if err != nil {
		return fmt.Errorf("add the records up to seq %d: %w", s.coldMax, err)
	}
	added, err := scanMinuteRows(rows)
	if err != nil {
		return fmt.Errorf("add the records up to seq %d: %w", s.coldMax, err)
	}
	counts := make(map[int64]int)
	for _, r := range added {
		counts[r.minute] = s.rollupTouched[r.minute] + 1
	}
	var settled []int64
	for m, moves := range s.rollupTouched {
		if _, again := counts[m]; !again && moves >= 2 {
			settled = append(settled, m)
		}
	}
	if err := compactMinutes(ctx, tx, settled); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE main.skyjoin_meta SET value = $1 WHERE key = 'rollup_hi'`, strconv.FormatInt(s.coldMax, 10)); err != nil {
		return fmt.Errorf("record rollup_hi: %w", err)
	}
	if rollupHook != nil {
		if err := rollupHook(); err != nil {
			return err
		}
	}
	if err := s.commitTimed(ctx, tx, "stats rollup"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.rollupHi = s.coldMax
	s.rollupTouched = counts
	if s.minutes.roll(added, s.rollupHi, &s.recent) {
		s.reloadMinutes(ctx, conn)
	}
	return nil
}

// compactMinutes replaces, in tx, the rollup rows of the minutes with one
// row per key.
func compactMinutes(ctx context.Context, tx *sql.Tx, minutes []int64) error {
	if len(minutes) == 0 {
		return nil
	}
	list := minuteList(minutes)
	for _, stmt := range []string{
		`CREATE OR REPLACE TEMP TABLE rollup_compact AS
SELECT minute_us, location_country, event_type, weather_condition, CAST(sum(n) AS BIGINT), CAST(sum(nw) AS BIGINT), sum(s), min(mn), max(mx)
FROM main.stats_minute WHERE minute_us IN ` + list + ` GROUP BY ALL`,
		`DELETE FROM main.stats_minute WHERE minute_us IN ` + list,
		`INSERT INTO main.stats_minute SELECT * FROM rollup_compact`,
		`DROP TABLE rollup_compact`,
	} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("compact %d minutes: %s: %w", len(minutes), firstLine(stmt), err)
		}
	}
	return nil
}

// rollupHook, if set (by tests), runs before rollUp commits; an error
// it returns fails rollUp, as a stop between a move's commit and its
// rollup's would leave the file.
var rollupHook func() error

// minuteList is a parenthesized subquery of the minutes, for IN.
func minuteList(minutes []int64) string {
	var b strings.Builder
	b.WriteString("(SELECT unnest([")
	for i, m := range minutes {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(m, 10))
	}
	b.WriteString("]::BIGINT[]))")
	return b.String()
}
