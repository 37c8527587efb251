//go:build !noduckdb

package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unique"

	"github.com/skyjoin/skyjoin/internal/store"
)

// recentMinutes is stats_minute's recent minutes in memory: for each
// minute from `from` on, the rollup's aggregates by country and weather
// condition (event types summed). Stats answers a window that starts in
// them from here, the records above rollup_hi from recentStats, and only
// the parts of a minute at the window's ends from the main file's records
// (statsMinutes): one small statement the zone maps keep to a minute's
// rows, where the rollup's rows of an hour are 180,000 at 3,000 keys a
// minute. Under load a stats read's time was DuckDB's, reading and
// checksumming blocks of the main file (docs/benchmarks.md, twentieth
// round).
//
// It is exact or not used. It holds what stats_minute holds for each
// minute it has, as of rollup_hi (hi): Open and every change to the
// rollup's past minutes (a delete, a weather backfill) load it from
// stats_minute, and rollUp adds the rows it inserts, after they have
// committed, and drops the tuples of recentStats it rolled up in the same
// step (mu), so that a reader sees the minutes and the tuples of the same
// rollup_hi. Minutes older than minutesKeep before now are dropped, and
// `from` moves past them: the rows a move adds to a minute before `from`
// stay in the file only.
//
// Its size: the demo's population makes at most 21 countries x 28
// conditions = 588 keys a minute (about 200 at 5,000 events/s), a key
// about 80 bytes with the map's overhead: 2 hours of minutes are at most
// 5.6 MB. maxMinuteKeys bounds it whatever the records' countries.
type recentMinutes struct {
	mu      sync.RWMutex
	loaded  bool  // none held unless
	from    int64 // the first minute held, epoch microseconds
	hi      int64 // the rollup_hi it is in step with
	minutes map[int64]map[minuteKey]statAgg
	keys    int
	stale   bool // a load failed: rollUp tries again
}

// minuteKey is a key of the rollup within a minute.
type minuteKey struct {
	country, condition         unique.Handle[string]
	countryNull, conditionNull bool
}

// minutesKeep is how far before now the minutes are kept; minutesNow is
// the clock (tests set both).
var (
	minutesKeep = 2 * time.Hour
	minutesNow  = time.Now
)

// maxMinuteKeys bounds the keys held: past it the oldest minutes go.
var maxMinuteKeys = 1 << 18

// minutesOn is whether Stats answers from recentMinutes (tests compare
// both ways).
var minutesOn = true

// minuteRow is a row of stats_minute without its event type.
type minuteRow struct {
	minute int64
	k      minuteKey
	a      statAgg
}

// scanMinuteRows reads rows of (minute_us, location_country,
// weather_condition, n, nw, s, mn, mx).
func scanMinuteRows(rows *sql.Rows) ([]minuteRow, error) {
	defer rows.Close()
	var out []minuteRow
	for rows.Next() {
		var (
			r           minuteRow
			country     sql.NullString
			cond        sql.NullString
			sum, mn, mx sql.NullFloat64
		)
		if err := rows.Scan(&r.minute, &country, &cond, &r.a.n, &r.a.nw, &sum, &mn, &mx); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		r.k = minuteKey{country: unique.Make(country.String), countryNull: !country.Valid,
			condition: unique.Make(cond.String), conditionNull: !cond.Valid}
		r.a.s, r.a.mn, r.a.mx = sum.Float64, mn.Float64, mx.Float64
		out = append(out, r)
	}
	return out, rows.Err()
}

// load replaces the minutes with those of stats_minute from minutesKeep
// before now, as of rollup_hi hi, read on q (under moveMu: no rollUp
// meanwhile); on an error it holds none. The reads do not wait for its
// statement, only for the swap.
func (m *recentMinutes) load(ctx context.Context, q queryer, hi int64) error {
	from := floorMinute(minutesNow().Add(-minutesKeep))
	list, err := func() ([]minuteRow, error) {
		rows, err := q.QueryContext(ctx, `SELECT minute_us, location_country, weather_condition, CAST(sum(n) AS BIGINT), CAST(sum(nw) AS BIGINT),
  sum(s), min(mn), max(mx)
FROM main.stats_minute WHERE minute_us >= $1 GROUP BY ALL`, from)
		if err != nil {
			return nil, err
		}
		return scanMinuteRows(rows)
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.loaded, m.minutes, m.keys, m.stale = false, nil, 0, true
		return fmt.Errorf("stats rollup: load the minutes in memory: %w", err)
	}
	m.loaded, m.from, m.hi, m.minutes, m.keys, m.stale = true, from, hi, map[int64]map[minuteKey]statAgg{}, 0, false
	m.addLocked(list)
	return nil
}

// reloadMinutes loads the rollup's minutes in memory on conn: at the
// open, after a change to the main file's (under moveMu, with editMu
// held), and in rollUp after a load that failed, which leaves Stats
// reading them from the file until the next move.
func (s *Store) reloadMinutes(ctx context.Context, conn queryer) {
	if err := s.minutes.load(context.WithoutCancel(ctx), conn, s.rollupHi); err != nil {
		s.log.WarnContext(ctx, "duckdb: "+err.Error()+"; stats read them from the file until the next move")
	}
}

// addLocked merges rows into the minutes from `from` on, then drops the
// minutes before minutesKeep and, past maxMinuteKeys, the oldest.
func (m *recentMinutes) addLocked(rows []minuteRow) {
	for _, r := range rows {
		if r.minute < m.from {
			continue
		}
		keys := m.minutes[r.minute]
		if keys == nil {
			keys = map[minuteKey]statAgg{}
			m.minutes[r.minute] = keys
		}
		a, had := keys[r.k]
		a.merge(r.a)
		keys[r.k] = a
		if !had {
			m.keys++
		}
	}
	m.raiseFrom(floorMinute(minutesNow().Add(-minutesKeep)))
	if m.keys > maxMinuteKeys {
		held := slices.Sorted(func(yield func(int64) bool) {
			for min := range m.minutes {
				if !yield(min) {
					return
				}
			}
		})
		for _, min := range held {
			if m.keys <= maxMinuteKeys {
				break
			}
			m.raiseFrom(min + minuteUS)
		}
	}
}

// raiseFrom drops the minutes before from.
func (m *recentMinutes) raiseFrom(from int64) {
	if from <= m.from {
		return
	}
	for min, keys := range m.minutes {
		if min < from {
			m.keys -= len(keys)
			delete(m.minutes, min)
		}
	}
	m.from = from
}

// roll adds the rows rollUp committed, which raised rollup_hi to hi, and
// drops recent's tuples up to hi, in one step for the readers; it reports
// whether a load failed before (stale), for rollUp to load them.
func (m *recentMinutes) roll(rows []minuteRow, hi int64, recent *recentStats) (stale bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loaded {
		m.addLocked(rows)
		m.hi = hi
	}
	recent.trim(hi)
	return m.stale
}

// aggregate adds to aggs the minutes from lo to hi (if hasHi) that pass
// q's filters, grouped as q groups (by country, or by time in whole
// minutes), and returns the rollup_hi they are as of with the tuples of
// recent above it; false if the minutes do not hold the window's or
// recent does not hold the tuples.
func (m *recentMinutes) aggregate(q *store.StatsQuery, lo, hi int64, hasHi bool, recent *recentStats, aggs map[statKey]*statAgg) (int64, []statTuple, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !minutesOn || !m.loaded || lo < m.from {
		return 0, nil, false
	}
	tuples, ok := recent.above(m.hi)
	if !ok {
		return 0, nil, false
	}
	bucket := q.Bucket.Microseconds()
	country, condition := newFoldMatch(q.Country), newFoldMatch(q.Condition)
	groups := handleGroups{}
	for min, keys := range m.minutes {
		if min < lo || hasHi && min >= hi {
			continue
		}
		for k, a := range keys {
			if q.Country != "" && (k.countryNull || !country.match(k.country)) || q.Condition != "" && (k.conditionNull || !condition.match(k.condition)) {
				continue
			}
			hk := handleKey{condition: k.condition, condNull: k.conditionNull}
			switch q.GroupBy {
			case store.GroupByCountry:
				hk.country, hk.countryNull = k.country, k.countryNull
			case store.GroupByTime:
				hk.ki = min - ((min%bucket)+bucket)%bucket
			}
			groups.merge(hk, a)
		}
	}
	groups.into(q, aggs)
	return m.hi, tuples, true
}

// statsMinutes answers q, which rollupWindow accepts (its whole minutes
// from lo to hi), from recentMinutes, the records above rollup_hi from
// recentStats, and the parts of a minute at the window's ends from the
// main file's records up to rollup_hi; false if memory does not hold the
// window. args holds the arguments k1 uses (the bucket, by time).
func (s *Store) statsMinutes(ctx context.Context, q *store.StatsQuery, args []any, lo, hi int64, hasLo, hasHi bool, k1, k2 string) ([]store.StatsRow, bool, error) {
	// The rollup's minutes by event type are not in memory.
	if !hasLo || q.EventType != "" {
		return nil, false, nil
	}
	// Not beside a change to records already rolled up: the minutes and
	// the ends' records would not be of the same moment.
	if !s.editMu.TryRLock() {
		return nil, false, nil
	}
	defer s.editMu.RUnlock()
	aggs := map[statKey]*statAgg{}
	rollupHi, tuples, ok := s.minutes.aggregate(q, lo, hi, hasHi, &s.recent, aggs)
	if !ok {
		return nil, false, nil
	}
	// The ends: from Since to the first whole minute, from the last to
	// Until. Records up to rollup_hi are in the main file, and only a
	// delete or a backfill changes them (editMu).
	a := &statArgs{args: args}
	var ends []string
	if !q.Since.Equal(time.UnixMicro(lo)) {
		ends = append(ends, "occurred_at < "+a.add(time.UnixMicro(lo).UTC()))
	}
	if hasHi && !q.Until.Equal(time.UnixMicro(hi)) {
		ends = append(ends, "occurred_at >= "+a.add(time.UnixMicro(hi).UTC()))
	}
	if len(ends) > 0 {
		where := a.conds(&q.Query, "("+strings.Join(ends, " OR ")+")", "seq <= "+a.add(rollupHi))
		rows, err := s.db.QueryContext(ctx, statsRecords(k1, k2, "main.events", where), a.args...)
		if err != nil {
			return nil, true, fmt.Errorf("duckdb: stats by %s: %w", q.GroupBy, err)
		}
		if err := scanStatAggs(rows, q, aggs); err != nil {
			return nil, true, err
		}
	}
	aggregateTuples(tuples, q, aggs)
	return statsRows(q, aggs), true, nil
}
