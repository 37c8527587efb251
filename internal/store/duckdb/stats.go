//go:build !noduckdb

package duckdb

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/store"
)

var _ store.Aggregator = (*Store)(nil)

// Stats aggregates the records matching q's filters by country, city,
// property value or time bucket (store.Aggregator). One statement computes the groups and
// the count of each condition within them, so both see the same rows;
// the rows come back one per (group, condition).
func (s *Store) Stats(ctx context.Context, q store.StatsQuery) ([]store.StatsRow, error) {
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("duckdb: stats: %w", err)
	}
	// A read slower than slowRead is logged with the way it took.
	start, way := time.Now(), "records"
	defer func() {
		if d := time.Since(start); d > slowRead {
			s.log.WarnContext(ctx, "duckdb: slow stats read", "group_by", q.GroupBy, "way", way, "duration_ms", d.Milliseconds())
		}
	}()
	a := &statArgs{}
	conds := a.conds
	// k1 and k2 are the group's key over the records; k1r is k1 over the
	// rollup (by country or time only).
	var k1, k2, k1r, order string
	switch q.GroupBy {
	case store.GroupByCountry:
		k1, k2 = "location_country", "''"
		k1r = k1
		order = "g.n DESC, g.k1, g.k2"
	case store.GroupByCity:
		k1, k2 = "location_country", "location_city"
		order = "g.n DESC, g.k1, g.k2"
	case store.GroupByProp:
		// The value as text (store.PropText); k2 marks the group without
		// a value, so that the groups join on equality. The path is a
		// literal: its names are letters, digits and _ (ParsePropPath).
		p := "'" + store.PropJSONPath(q.Prop) + "'"
		// A number by its value (store.NumberText): whole numbers below
		// 10^15 as integers, others as DuckDB writes a DOUBLE.
		d := "TRY_CAST(json_extract_string(properties, " + p + ") AS DOUBLE)"
		v := "CASE WHEN json_type(properties, " + p + ") IN ('VARCHAR', 'BOOLEAN') THEN json_extract_string(properties, " + p + ")" +
			" WHEN json_type(properties, " + p + ") IN " + jsonNumberTypes + " THEN CASE WHEN " + d + " = trunc(" + d + ") AND abs(" + d + ") < 1e15" +
			" THEN CAST(CAST(" + d + " AS BIGINT) AS VARCHAR) ELSE CAST(" + d + " AS VARCHAR) END END"
		k1 = "coalesce(" + v + ", '')"
		k2 = "CASE WHEN " + v + " IS NULL THEN '-' ELSE '' END"
		order = "g.n DESC, g.k1, g.k2"
	case store.GroupByTime:
		// The start of the epoch-aligned bucket in microseconds: a floor
		// division that is exact in integers (also before 1970). A bucket
		// of whole minutes holds whole minutes, so the rollup's minute
		// falls in the same bucket as each of its records.
		b := a.add(q.Bucket.Microseconds())
		k1 = "epoch_us(occurred_at) - ((epoch_us(occurred_at) % " + b + ") + " + b + ") % " + b
		k1r = "minute_us - ((minute_us % " + b + ") + " + b + ") % " + b
		k2 = "''"
		order = "g.k1"
	}
	limit := ""
	if q.MaxGroups > 0 {
		// The largest groups, ties broken by key, as the answer is ordered.
		limit = "\n  ORDER BY n DESC, k1, k2 LIMIT " + strconv.Itoa(q.MaxGroups)
	}
	lo, hi, hasLo, hasHi, byRollup := rollupWindow(&q)
	if byRollup {
		// The whole minutes and the records above rollup_hi from memory,
		// if it holds them.
		out, ok, err := s.statsMinutes(ctx, &q, slices.Clone(a.args), lo, hi, hasLo, hasHi, k1, k2)
		if ok {
			way = "memory"
			s.statsFromMemory.Add(1)
			return out, err
		}
	}
	if byRollup && s.rollupMu.TryRLock() {
		// The records above rollup_hi from memory, if it holds them all.
		out, ok, err := s.statsRecent(ctx, &q, slices.Clone(a.args), lo, hi, hasLo, hasHi, k1, k1r, k2)
		s.rollupMu.RUnlock()
		if ok {
			way = "rollup and memory"
			return out, err
		}
	}
	sn, release := s.acquire()
	defer release()
	// The sources' aggregates by group and condition, each (k1, k2, cond,
	// n, nw, s, mn, mx).
	records := func(from, where string) string { return statsRecords(k1, k2, from, where) }
	var parts []string
	// Not beside a transaction that changes the rollup (rollupMu). Such a
	// transaction is small, but DuckDB may checkpoint the main file in
	// its commit (0.5-6.2 s on the 20 M-record store, docs/benchmarks.md,
	// tenth round): a read that would wait reads the records instead, as
	// it does a window the rollup cannot answer.
	if byRollup && !s.rollupMu.TryRLock() {
		byRollup = false
	}
	if byRollup {
		defer s.rollupMu.RUnlock()
		way = "rollup and hot segments"
	}
	rollupHiArg := -1 // the index in args of rollup_hi, read in the query's transaction
	if byRollup {
		// The whole minutes from the rollup, the rest of the window from
		// the main file's records, the whole minutes' records the rollup
		// does not cover yet (above rollup_hi: a move's at most), and the
		// hot segments' records.
		w := a.window(lo, hi, hasLo, hasHi)
		rq := q.Query
		rq.Since, rq.Until = time.Time{}, time.Time{}
		parts = append(parts, statsRollupSQL(k1r, k2, conds(&rq, w.inRollup...)))
		if len(w.outside) > 0 {
			parts = append(parts, records("main.events", conds(&q.Query, "("+strings.Join(w.outside, " OR ")+")", movedOnly)))
		}
		above := "seq > " + a.add(int64(0))
		rollupHiArg = len(a.args) - 1
		parts = append(parts, records("main.events", conds(&q.Query, append(w.inside, above, movedOnly)...)))
		parts = append(parts, records(sn.hot, conds(&q.Query)))
	} else {
		parts = append(parts, records(sn.from, conds(&q.Query)))
	}
	// The groups by group and condition (a) are rolled up per group (g):
	// a's rows with weather are the conditions' counts. a is
	// materialized, so that the records are read once (two aggregations
	// of a CTE of the records read them twice: 190 ms against 70 ms for
	// the last hour of a 23 M-record store, 3.1 M records).
	stmt := `WITH a AS MATERIALIZED (
  SELECT k1, k2, cond, CAST(sum(n) AS BIGINT) AS n, CAST(sum(nw) AS BIGINT) AS nw, sum(s) AS s, min(mn) AS mn, max(mx) AS mx
  FROM (` + strings.Join(parts, "\n  UNION ALL\n  ") + `)
  GROUP BY ALL
), g AS (
  SELECT k1, k2, CAST(sum(n) AS BIGINT) AS n, CAST(sum(nw) AS BIGINT) AS nw, sum(s) / nullif(sum(nw), 0) AS avg_t, min(mn) AS min_t, max(mx) AS max_t
  FROM a GROUP BY k1, k2` + limit + `
)
SELECT g.k1, g.k2, g.n, g.nw, g.avg_t, g.min_t, g.max_t, a.cond, a.nw
FROM g LEFT JOIN a ON g.k1 = a.k1 AND g.k2 = a.k2 AND a.nw > 0
ORDER BY ` + order + `, a.nw DESC, a.cond`
	var db queryer = s.db
	if byRollup {
		// The rollup and the rollup_hi it covers as of one moment.
		tx, done, err := s.readTx(ctx)
		if err != nil {
			return nil, fmt.Errorf("duckdb: stats by %s: %w", q.GroupBy, err)
		}
		defer done()
		var rollupHi int64
		if err := tx.QueryRowContext(ctx, `SELECT CAST(value AS BIGINT) FROM main.skyjoin_meta WHERE key = 'rollup_hi'`).Scan(&rollupHi); err != nil {
			return nil, fmt.Errorf("duckdb: stats by %s: read rollup_hi: %w", q.GroupBy, err)
		}
		a.args[rollupHiArg] = rollupHi
		db = tx
	}
	rows, err := db.QueryContext(ctx, stmt, a.args...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: stats by %s: %w", q.GroupBy, err)
	}
	defer rows.Close()
	var (
		out    []store.StatsRow
		lastK1 any
		lastK2 string
	)
	for rows.Next() {
		var (
			key1             any
			key2             string
			n, nw            int64
			avgT, minT, maxT sql.NullFloat64
			cond             sql.NullString
			cn               sql.NullInt64
		)
		if err := rows.Scan(&key1, &key2, &n, &nw, &avgT, &minT, &maxT, &cond, &cn); err != nil {
			return nil, fmt.Errorf("duckdb: stats by %s: scan: %w", q.GroupBy, err)
		}
		if len(out) == 0 || key1 != lastK1 || key2 != lastK2 {
			lastK1, lastK2 = key1, key2
			row := store.StatsRow{Count: n, WithWeather: nw,
				AvgTemp: nullFloat(avgT), MinTemp: nullFloat(minT), MaxTemp: nullFloat(maxT)}
			switch q.GroupBy {
			case store.GroupByCountry:
				row.Key, _ = key1.(string)
			case store.GroupByCity:
				row.Country, _ = key1.(string)
				row.Key = key2
			case store.GroupByProp:
				row.Key, _ = key1.(string)
				row.NoValue = key2 != ""
			case store.GroupByTime:
				us, ok := key1.(int64)
				if !ok {
					return nil, fmt.Errorf("duckdb: stats by time: bucket is %T, want int64", key1)
				}
				row.Bucket = time.UnixMicro(us).UTC()
				row.Key = row.Bucket.Format(time.RFC3339)
			}
			out = append(out, row)
		}
		if cond.Valid && cn.Valid && nw > 0 {
			row := &out[len(out)-1]
			if row.Conditions == nil {
				row.Conditions = make(map[string]float64)
			}
			row.Conditions[cond.String] = float64(cn.Int64) / float64(nw)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: stats by %s: %w", q.GroupBy, err)
	}
	return out, nil
}

// statArgs numbers a statement's arguments as its conditions add them.
type statArgs struct{ args []any }

// add appends v and returns its placeholder.
func (a *statArgs) add(v any) string {
	a.args = append(a.args, v)
	return "$" + strconv.Itoa(len(a.args))
}

// conds turns a query's filters into a WHERE clause, with more, adding
// their arguments.
func (a *statArgs) conds(q *store.Query, more ...string) string {
	where := slices.Clone(more)
	filterConds(q, func(cond string, v any) {
		where = append(where, strings.ReplaceAll(cond, "?", a.add(v)))
	})
	return whereClause(where)
}

// statWindow splits a rollup query's window: the rollup's whole minutes
// (inRollup, on stats_minute), and the records before and after them
// (outside, any of which) or within them (inside, all of which).
type statWindow struct{ inRollup, outside, inside []string }

// window is the split of the whole minutes from lo (if hasLo) to hi (if
// hasHi), in epoch microseconds (rollupWindow), adding its arguments.
func (a *statArgs) window(lo, hi int64, hasLo, hasHi bool) statWindow {
	var w statWindow
	if hasLo {
		m, t := a.add(lo), a.add(time.UnixMicro(lo).UTC())
		w.inRollup = append(w.inRollup, "minute_us >= "+m)
		w.outside = append(w.outside, "occurred_at < "+t)
		w.inside = append(w.inside, "occurred_at >= "+t)
	}
	if hasHi {
		m, t := a.add(hi), a.add(time.UnixMicro(hi).UTC())
		w.inRollup = append(w.inRollup, "minute_us < "+m)
		w.outside = append(w.outside, "occurred_at >= "+t)
		w.inside = append(w.inside, "occurred_at < "+t)
	}
	return w
}

// statsRecords is the statement of the aggregates by group (k1, k2) and
// condition of the records of from, with where: rows of (k1, k2, cond,
// n, nw, s, mn, mx).
func statsRecords(k1, k2, from, where string) string {
	return "SELECT " + k1 + " AS k1, " + k2 + " AS k2, weather_condition AS cond, count(*) AS n, count(weather_temperature_c) AS nw," +
		" sum(weather_temperature_c) AS s, min(weather_temperature_c) AS mn, max(weather_temperature_c) AS mx\n  FROM " + from + where + "\n  GROUP BY ALL"
}

// statsRollupSQL is the statement of the rollup's aggregates by group
// (k1r, k2) and condition, with where: rows as statsRecords'.
func statsRollupSQL(k1r, k2, where string) string {
	return "SELECT " + k1r + " AS k1, " + k2 + " AS k2, weather_condition AS cond, sum(n) AS n, sum(nw) AS nw," +
		" sum(s) AS s, min(mn) AS mn, max(mx) AS mx\n  FROM main.stats_minute" + where + "\n  GROUP BY ALL"
}

// statsRecent answers q, which rollupWindow accepts (its whole minutes
// from lo to hi), with rollupMu held shared: the whole minutes from the
// rollup, the rest of the window from the main file's records up to
// rollup_hi, and every record above rollup_hi from memory (recentStats);
// false if memory does not hold them all. args holds the arguments k1 and
// k1r use (the bucket, by time).
func (s *Store) statsRecent(ctx context.Context, q *store.StatsQuery, args []any, lo, hi int64, hasLo, hasHi bool, k1, k1r, k2 string) ([]store.StatsRow, bool, error) {
	tx, done, err := s.readTx(ctx)
	if err != nil {
		return nil, true, fmt.Errorf("duckdb: stats by %s: %w", q.GroupBy, err)
	}
	defer done()
	var rollupHi int64
	if err := tx.QueryRowContext(ctx, `SELECT CAST(value AS BIGINT) FROM main.skyjoin_meta WHERE key = 'rollup_hi'`).Scan(&rollupHi); err != nil {
		return nil, true, fmt.Errorf("duckdb: stats by %s: read rollup_hi: %w", q.GroupBy, err)
	}
	mem, ok := s.recent.above(rollupHi)
	if !ok {
		return nil, false, nil
	}
	a := &statArgs{args: args}
	w := a.window(lo, hi, hasLo, hasHi)
	rq := q.Query
	rq.Since, rq.Until = time.Time{}, time.Time{}
	parts := []string{statsRollupSQL(k1r, k2, a.conds(&rq, w.inRollup...))}
	if len(w.outside) > 0 {
		upTo := "seq <= " + a.add(rollupHi)
		parts = append(parts, statsRecords(k1, k2, "main.events", a.conds(&q.Query, "("+strings.Join(w.outside, " OR ")+")", upTo)))
	}
	stmt := "SELECT k1, k2, cond, CAST(sum(n) AS BIGINT), CAST(sum(nw) AS BIGINT), sum(s), min(mn), max(mx)\nFROM (" +
		strings.Join(parts, "\n  UNION ALL\n  ") + ")\nGROUP BY ALL"
	rows, err := tx.QueryContext(ctx, stmt, a.args...)
	if err != nil {
		return nil, true, fmt.Errorf("duckdb: stats by %s: %w", q.GroupBy, err)
	}
	aggs := map[statKey]*statAgg{}
	if err := scanStatAggs(rows, q, aggs); err != nil {
		return nil, true, err
	}
	aggregateTuples(mem, q, aggs)
	return statsRows(q, aggs), true, nil
}

// scanStatAggs adds rows of (k1, k2, cond, n, nw, s, mn, mx) to aggs, and
// closes them.
func scanStatAggs(rows *sql.Rows, q *store.StatsQuery, aggs map[statKey]*statAgg) error {
	defer rows.Close()
	for rows.Next() {
		var (
			key1        any
			k           statKey
			cond        sql.NullString
			a           statAgg
			sum, mn, mx sql.NullFloat64
		)
		if err := rows.Scan(&key1, &k.k2, &cond, &a.n, &a.nw, &sum, &mn, &mx); err != nil {
			return fmt.Errorf("duckdb: stats by %s: scan: %w", q.GroupBy, err)
		}
		switch v := key1.(type) {
		case nil:
			k.k1Null = true
		case string:
			k.k1 = v
		case int64:
			k.ki = v
		default:
			return fmt.Errorf("duckdb: stats by %s: key is %T", q.GroupBy, key1)
		}
		k.cond, k.condNull = cond.String, !cond.Valid
		a.s, a.mn, a.mx = sum.Float64, mn.Float64, mx.Float64
		if prev := aggs[k]; prev != nil {
			prev.merge(a)
		} else {
			aggs[k] = &a
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("duckdb: stats by %s: %w", q.GroupBy, err)
	}
	return nil
}

// statsRows makes Stats' answer of the aggregates by group and condition:
// the groups ordered as Stats orders them (the largest first, then by
// key; by time, by bucket), at most MaxGroups of the largest, each with
// its conditions' shares of the records with weather.
func statsRows(q *store.StatsQuery, aggs map[statKey]*statAgg) []store.StatsRow {
	type group struct {
		k     statKey // without the condition
		a     statAgg
		conds map[string]int64
	}
	groups := map[statKey]*group{}
	for k, a := range aggs {
		gk := k
		gk.cond, gk.condNull = "", false
		g := groups[gk]
		if g == nil {
			g = &group{k: gk}
			groups[gk] = g
		}
		g.a.merge(*a)
		if a.nw > 0 && !k.condNull {
			if g.conds == nil {
				g.conds = map[string]int64{}
			}
			g.conds[k.cond] += a.nw
		}
	}
	list := make([]*group, 0, len(groups))
	for _, g := range groups {
		list = append(list, g)
	}
	// As the statement orders them: NULL keys last.
	byKey := func(a, b *group) int {
		return cmp.Or(cmp.Compare(b2i(a.k.k1Null), b2i(b.k.k1Null)), strings.Compare(a.k.k1, b.k.k1), cmp.Compare(a.k.ki, b.k.ki), strings.Compare(a.k.k2, b.k.k2))
	}
	slices.SortFunc(list, func(a, b *group) int { return cmp.Or(cmp.Compare(b.a.n, a.a.n), byKey(a, b)) })
	if q.MaxGroups > 0 && len(list) > q.MaxGroups {
		list = list[:q.MaxGroups]
	}
	if q.GroupBy == store.GroupByTime {
		slices.SortFunc(list, byKey)
	}
	out := make([]store.StatsRow, 0, len(list))
	for _, g := range list {
		row := store.StatsRow{Count: g.a.n, WithWeather: g.a.nw}
		if g.a.nw > 0 {
			avg, mn, mx := g.a.s/float64(g.a.nw), g.a.mn, g.a.mx
			row.AvgTemp, row.MinTemp, row.MaxTemp = &avg, &mn, &mx
			row.Conditions = make(map[string]float64, len(g.conds))
			for c, nw := range g.conds {
				row.Conditions[c] = float64(nw) / float64(g.a.nw)
			}
		}
		switch q.GroupBy {
		case store.GroupByCountry:
			row.Key = g.k.k1
		case store.GroupByTime:
			row.Bucket = time.UnixMicro(g.k.ki).UTC()
			row.Key = row.Bucket.Format(time.RFC3339)
		}
		out = append(out, row)
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nullFloat(f sql.NullFloat64) *float64 {
	if !f.Valid {
		return nil
	}
	return &f.Float64
}
