//go:build !noduckdb

package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unique"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// checkRollup checks that stats_minute holds what the main file's records
// up to rollup_hi aggregate to, per minute, country, event type and
// condition (rows of the same key summed), in one statement.
func checkRollup(t *testing.T, s *Store) (records int64) {
	t.Helper()
	const q = `WITH r AS (
  SELECT minute_us, location_country, event_type, weather_condition, sum(n) AS n, sum(nw) AS nw, sum(s) AS s, min(mn) AS mn, max(mx) AS mx
  FROM main.stats_minute GROUP BY ALL
), e AS (
  SELECT ` + minuteOf + ` AS minute_us, location_country, event_type, weather_condition, count(*) AS n, count(weather_temperature_c) AS nw,
    sum(weather_temperature_c) AS s, min(weather_temperature_c) AS mn, max(weather_temperature_c) AS mx
  FROM main.events WHERE seq <= (SELECT CAST(value AS BIGINT) FROM main.skyjoin_meta WHERE key = 'rollup_hi') GROUP BY ALL
)
SELECT count(*) FILTER (WHERE r.n IS DISTINCT FROM e.n OR r.nw IS DISTINCT FROM e.nw OR (r.s IS NULL) <> (e.s IS NULL)
    OR abs(r.s - e.s) > 1e-6 OR r.mn IS DISTINCT FROM e.mn OR r.mx IS DISTINCT FROM e.mx),
  CAST(coalesce(sum(e.n), 0) AS BIGINT), count(*)
FROM r FULL JOIN e ON r.minute_us = e.minute_us AND r.location_country = e.location_country AND r.event_type = e.event_type
  AND r.weather_condition IS NOT DISTINCT FROM e.weather_condition`
	var bad, keys int64
	if err := s.db.QueryRowContext(t.Context(), q).Scan(&bad, &records, &keys); err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Errorf("stats_minute differs from the main file's records in %d of %d keys", bad, keys)
	}
	return records
}

// TestStatsRollup: the stats the rollup answers (by country, by time in
// whole minutes, filtered by country, type, condition and window) equal
// the reference over every record written, whatever the window's ends,
// while records sit in hot segments and in the main file, while the
// rollup is behind the main file (its transaction failed after moves, as a
// stop between the two commits leaves it), after a weather backfill,
// deletes of users and of old records, a reopen that catches the rollup
// up, and migrations that build the rollup from the records and record
// rollup_hi; and the rollup keeps equal to the main file's records up to
// rollup_hi throughout.
func TestStatsRollup(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 64 << 10
	// The minutes in memory: those from 10 minutes after the records'
	// first on, so that windows start on both sides of them.
	defer func(now func() time.Time, keep time.Duration) { minutesNow, minutesKeep = now, keep }(minutesNow, minutesKeep)
	minutesNow = func() time.Time { return storetest.Base.Add(100 * time.Minute) }
	minutesKeep = 90 * time.Minute
	ctx := t.Context()
	path := tempPath(t)
	s := openPath(t, path)
	live := storetest.Records(11, 3000) // about 100 minutes
	if err := s.Write(ctx, live); err != nil {
		t.Fatal(err)
	}
	// Every segment but the active one moved: records on both sides.
	for len(s.segments()) > 1 {
		time.Sleep(5 * time.Millisecond)
	}
	var types, conds []string
	for _, r := range live {
		if !slices.Contains(types, r.EventType) {
			types = append(types, r.EventType)
		}
		if r.Weather != nil && !slices.Contains(conds, r.Weather.Condition) {
			conds = append(conds, r.Weather.Condition)
		}
	}
	rng := rand.New(rand.NewPCG(16, 4))
	// at is a time within the records' span or a little outside it, at a
	// random microsecond.
	at := func() time.Time {
		return storetest.Base.Add(time.Duration(rng.Int64N(int64(110*time.Minute))) - 5*time.Minute)
	}
	// check compares 60 queries' answers with the reference, and returns
	// how many of them the minutes in memory answered.
	rollupHeld := false
	check := func(stage string) (fromMemory int) {
		t.Helper()
		if n := checkRollup(t, s); n == 0 {
			t.Fatalf("%s: no record in the main file: the rollup is not exercised", stage)
		}
		checkMinutes(t, s, rollupHeld)
		for i := range 60 {
			q := store.StatsQuery{GroupBy: store.GroupByCountry}
			switch i % 4 {
			case 1:
				q.GroupBy, q.Bucket = store.GroupByTime, time.Minute
			case 2:
				q.GroupBy, q.Bucket = store.GroupByTime, []time.Duration{5 * time.Minute, time.Hour, 7 * time.Second}[rng.IntN(3)]
			}
			if rng.IntN(4) > 0 {
				q.Since = at()
				if rng.IntN(4) == 0 {
					q.Since = q.Since.Truncate(time.Minute) // the start on a minute: no part-minute
				}
			}
			if rng.IntN(3) > 0 {
				q.Until = at()
				if rng.IntN(2) == 0 {
					q.Until = q.Until.Truncate(time.Minute) // the end on a minute
				}
			}
			switch rng.IntN(6) {
			case 0:
				q.Country = strings.ToUpper(storetest.Countries[rng.IntN(len(storetest.Countries))])
			case 1:
				q.EventType = types[rng.IntN(len(types))]
			case 2:
				q.Condition = strings.ToLower(conds[rng.IntN(len(conds))])
			case 3:
				q.City = live[rng.IntN(len(live))].Location.City // not in the rollup
			}
			if q.GroupBy == store.GroupByCountry && i%8 == 4 {
				q.MaxGroups = 3
			}
			// Three ways: the rollup's minutes and the records above
			// rollup_hi from memory, when it holds them; the records
			// above rollup_hi only; neither.
			for _, way := range []struct{ minutes, recent bool }{{true, true}, {false, true}, {false, false}} {
				minutesOn, recentStatsOn = way.minutes, way.recent
				before := s.statsFromMemory.Load()
				got, err := s.Stats(ctx, q)
				minutesOn, recentStatsOn = true, true
				if s.statsFromMemory.Load() > before {
					if !way.minutes {
						t.Fatalf("%s: %+v: answered from the minutes in memory with them off", stage, q)
					}
					fromMemory++
				}
				if err != nil {
					t.Fatalf("%s (%+v): %+v: %v", stage, way, q, err)
				}
				if d := storetest.DiffStats(storetest.ExpectedStats(live, q), got); d != "" {
					t.Errorf("%s (%+v): %+v:\n%s", stage, way, q, d)
				}
			}
		}
		t.Logf("%s: %d of 60 queries answered from the minutes in memory", stage, fromMemory)
		return fromMemory
	}
	if !recentUsable(s) {
		t.Fatal("written: the records above rollup_hi are not all in memory")
	}
	if check("written") == 0 {
		t.Error("written: no query answered from the minutes in memory")
	}

	// The rollup's transaction fails from now on: the records of the
	// moves that follow are in the main file and not in the rollup.
	rollupHook = func() error { return errors.New("rollup stopped by the test") }
	defer func() { rollupHook = nil }()
	more := storetest.Records(13, 1500)
	if err := s.Write(ctx, more); err != nil {
		t.Fatal(err)
	}
	live = append(live, more...)
	for len(s.segments()) > 1 {
		time.Sleep(5 * time.Millisecond)
	}
	behind := func() (rollupHi, coldMax int64) {
		t.Helper()
		if err := s.db.QueryRowContext(ctx, `SELECT (SELECT CAST(value AS BIGINT) FROM skyjoin_meta WHERE key = 'rollup_hi'),
  (SELECT CAST(value AS BIGINT) FROM skyjoin_meta WHERE key = 'cold_max')`).Scan(&rollupHi, &coldMax); err != nil {
			t.Fatal(err)
		}
		return rollupHi, coldMax
	}
	if hi, cold := behind(); hi >= cold {
		t.Fatalf("rollup_hi %d, cold_max %d: the rollup is not behind the main file", hi, cold)
	}
	if !recentUsable(s) {
		t.Fatal("rollup behind: the records above rollup_hi are not all in memory")
	}
	if check("rollup behind") == 0 {
		t.Error("rollup behind: no query answered from the minutes in memory")
	}

	// A backfill of the records without weather.
	backfillHalf(t, s, live)
	check("backfilled")

	// Users deleted, then the records before a time within a minute.
	var users []string
	for i := 0; i < len(live); i += 97 {
		users = append(users, live[i].User.ID)
	}
	if _, err := s.DeleteUsers(ctx, users); err != nil {
		t.Fatal(err)
	}
	live = slices.DeleteFunc(live, func(r event.Record) bool { return slices.Contains(users, r.User.ID) })
	check("users deleted")
	cut := storetest.Base.Add(17*time.Minute + 13500*time.Millisecond)
	if _, err := s.DeleteOccurredBefore(ctx, cut); err != nil {
		t.Fatal(err)
	}
	live = slices.DeleteFunc(live, func(r event.Record) bool { return r.OccurredAt.Before(cut) })
	check("old records deleted")

	// Reopened, the rollup working again: it catches up at the open.
	if hi, cold := behind(); hi >= cold {
		t.Fatalf("rollup_hi %d, cold_max %d before the reopen: the rollup is not behind the main file", hi, cold)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rollupHook = nil
	s = openPath(t, path)
	if hi, cold := behind(); hi != cold {
		t.Errorf("after the reopen rollup_hi is %d, cold_max %d", hi, cold)
	}
	check("reopened")
	// Once the rollup covers every record stored before the open (or a
	// delete, or a backfill), memory holds those written after it:
	// records of minutes the rollup already has.
	waitFor(t, "the rollup to cover the records stored before the reopen", func() bool { return recentUsable(s) })
	// The rollup stopped again, so that memory holds what follows.
	rollupHook = func() error { return errors.New("rollup stopped by the test") }
	after := storetest.Records(17, 700)
	if err := s.Write(ctx, after); err != nil {
		t.Fatal(err)
	}
	live = append(live, after...)
	if !recentUsable(s) {
		t.Fatal("after the reopen: the records above rollup_hi are not all in memory")
	}
	check("written after the reopen")
	gone := after[0].User.ID
	if _, err := s.DeleteUsers(ctx, []string{gone}); err != nil {
		t.Fatal(err)
	}
	live = slices.DeleteFunc(live, func(r event.Record) bool { return r.User.ID == gone })
	check("after a delete")
	s.recent.mu.Lock()
	kept, floor := len(s.recent.tuples), s.recent.floor
	s.recent.mu.Unlock()
	if kept > 0 || floor != s.maxSeq.Load() {
		t.Fatalf("after a delete memory keeps %d records above %d, want none above the last seq %d", kept, floor, s.maxSeq.Load())
	}
	// The rollup working again, the next moves' rollup covers the records
	// stored before the delete.
	rollupHook = nil
	again := storetest.Records(19, 700)
	if err := s.Write(ctx, again); err != nil {
		t.Fatal(err)
	}
	live = append(live, again...)
	waitFor(t, "the rollup to cover the records stored before the delete", func() bool { return recentUsable(s) })
	if check("after a delete, the rollup caught up") == 0 {
		t.Error("after a delete, the rollup caught up: no query answered from the minutes in memory")
	}
	// Memory is what answers: a record it alone has shows.
	ghost := storetest.Records(23, 1)
	ghost[0].Location.Country = "Lemuria"
	s.recent.add(ghost, []int64{s.maxSeq.Load() + 1000})
	ghostRows, err := s.Stats(ctx, store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{Country: "LEMURIA"}})
	if err != nil || len(ghostRows) != 1 || ghostRows[0].Count != 1 || ghostRows[0].Key != "Lemuria" {
		t.Errorf("stats of a country only memory has = %+v, %v; want one group of 1", ghostRows, err)
	}
	s.recent.reset(s.maxSeq.Load() + 1000)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A version 5 file, without rollup_hi: its rollup covers its main file.
	rawExec(t, path, append(toVersion6, `DELETE FROM skyjoin_meta WHERE key = 'rollup_hi'`, `UPDATE skyjoin_meta SET value = '5' WHERE key = 'schema_version'`)...)
	s = openPath(t, path)
	check("migrated from version 5")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A version 3 file, which the migration gives a rollup built from its
	// records.

	rawExec(t, path, append(toVersion6, `DROP TABLE stats_minute`, `DELETE FROM skyjoin_meta WHERE key = 'rollup_hi'`, `UPDATE skyjoin_meta SET value = '3' WHERE key = 'schema_version'`)...)
	s = openPath(t, path)
	check("migrated from version 3")

	// The rollup is what answers: a row added to it alone shows.
	if _, err := s.db.ExecContext(ctx, `INSERT INTO stats_minute VALUES ($1, 'Atlantis', 'x', NULL, 5, 0, NULL, NULL, NULL)`,
		floorMinute(storetest.Base.Add(50*time.Minute))); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Stats(ctx, store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{Country: "atlantis"}})
	if err != nil || len(rows) != 1 || rows[0].Count != 5 {
		t.Errorf("stats of a country only the rollup has = %+v, %v; want one group of 5", rows, err)
	}

	// While a transaction changes the rollup (rollupMu, which DuckDB's
	// checkpoint in its commit may hold for seconds), the reads do not
	// wait: they read the records (a read that waited would hang here),
	// which do not have the country only the rollup has, and are exact.
	s.rollupMu.Lock()
	rollupHeld = true
	rows, err = s.Stats(ctx, store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{Country: "atlantis"}})
	if err != nil || len(rows) != 0 {
		t.Errorf("stats beside a change of the rollup = %+v, %v; want the records' (none)", rows, err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM stats_minute WHERE location_country = 'Atlantis'`); err != nil {
		t.Fatal(err)
	}
	check("beside a change of the rollup")
	s.rollupMu.Unlock()
}

// checkMinutes checks that the rollup's minutes in memory are
// stats_minute's from their first on, by minute, country and condition,
// as of one rollup_hi: rollupMu (which rollUp holds until it has added
// to memory) held shared, or by the caller (held).
func checkMinutes(t *testing.T, s *Store, held bool) {
	t.Helper()
	if !held {
		s.rollupMu.RLock()
		defer s.rollupMu.RUnlock()
	}
	m := &s.minutes
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.loaded {
		t.Error("the rollup's minutes are not in memory")
		return
	}
	if m.hi != s.rollupHi {
		t.Errorf("the minutes in memory are as of rollup_hi %d, the rollup's is %d", m.hi, s.rollupHi)
	}
	rows, err := s.db.QueryContext(t.Context(), `SELECT minute_us, location_country, weather_condition, CAST(sum(n) AS BIGINT),
  CAST(sum(nw) AS BIGINT), sum(s), min(mn), max(mx)
FROM main.stats_minute WHERE minute_us >= $1 GROUP BY ALL`, m.from)
	if err != nil {
		t.Fatal(err)
	}
	want, err := scanMinuteRows(rows)
	if err != nil {
		t.Fatal(err)
	}
	keys := 0
	for _, of := range m.minutes {
		keys += len(of)
	}
	if keys != len(want) || m.keys != len(want) {
		t.Errorf("memory holds %d keys (counted %d) from minute %d, stats_minute %d", keys, m.keys, m.from, len(want))
	}
	for _, w := range want {
		got, ok := m.minutes[w.minute][w.k]
		if !ok || got.n != w.a.n || got.nw != w.a.nw || math.Abs(got.s-w.a.s) > 1e-6 || got.nw > 0 && (got.mn != w.a.mn || got.mx != w.a.mx) {
			t.Errorf("minute %d, %q/%q: memory %+v (held %v), stats_minute %+v", w.minute, w.k.country.Value(), w.k.condition.Value(), got, ok, w.a)
		}
	}
}

// TestRecentMinutesBound: the minutes in memory keep to minutesKeep
// before now and to maxMinuteKeys, dropping the oldest; a window that
// starts before the first minute held is not answered from them, one
// that starts within them is, exactly.
func TestRecentMinutesBound(t *testing.T) {
	defer func(now func() time.Time, keep time.Duration, bound int) {
		minutesNow, minutesKeep, maxMinuteKeys = now, keep, bound
	}(minutesNow, minutesKeep, maxMinuteKeys)
	now := storetest.Base.Add(time.Hour)
	minutesNow = func() time.Time { return now }
	minutesKeep, maxMinuteKeys = 30*time.Minute, 40
	base := floorMinute(storetest.Base)
	m := &recentMinutes{loaded: true, from: base, minutes: map[int64]map[minuteKey]statAgg{}}
	var recent recentStats
	// Minutes 0 to 59 after Base, 5 countries each: 300 keys, of which
	// the last 30 minutes' 150 are within minutesKeep, the last 8 minutes'
	// 40 within maxMinuteKeys.
	var rows []minuteRow
	for i := range int64(60) {
		for c := range 5 {
			k := minuteKey{country: unique.Make(strconv.Itoa(c)), conditionNull: true}
			rows = append(rows, minuteRow{minute: base + i*minuteUS, k: k, a: statAgg{n: i + 1}})
		}
	}
	if stale := m.roll(rows, 10, &recent); stale {
		t.Fatal("stale without a failed load")
	}
	if m.keys != 40 || len(m.minutes) != 8 || m.from != base+52*minuteUS || m.hi != 10 {
		t.Fatalf("held %d keys in %d minutes from minute %d, rollup_hi %d; want 40 in 8 from %d, 10", m.keys, len(m.minutes), (m.from-base)/minuteUS, m.hi, 52)
	}
	q := store.StatsQuery{GroupBy: store.GroupByCountry}
	if _, _, ok := m.aggregate(&q, base+51*minuteUS, 0, false, &recent, map[statKey]*statAgg{}); ok {
		t.Error("a window from before the first minute held was answered")
	}
	aggs := map[statKey]*statAgg{}
	hi, _, ok := m.aggregate(&q, base+52*minuteUS, base+59*minuteUS, true, &recent, aggs)
	if !ok || hi != 10 || len(aggs) != 5 {
		t.Fatalf("minutes 52 to 58: %v, rollup_hi %d, %d groups", ok, hi, len(aggs))
	}
	for k, a := range aggs {
		if want := int64(53 + 54 + 55 + 56 + 57 + 58 + 59); a.n != want || !k.condNull {
			t.Errorf("country %s: %d records, condition NULL %v; want %d, true", k.k1, a.n, k.condNull, want)
		}
	}
	// Time goes by: the minutes before minutesKeep go at the next roll.
	now = now.Add(10 * time.Minute)
	m.roll(nil, 11, &recent)
	if m.from != base+52*minuteUS || m.keys != 40 {
		t.Errorf("after 10 minutes: from minute %d, %d keys; want 52, 40", (m.from-base)/minuteUS, m.keys)
	}
	now = now.Add(30 * time.Minute)
	m.roll(nil, 12, &recent)
	if m.from != base+70*minuteUS || m.keys != 0 || len(m.minutes) != 0 {
		t.Errorf("after 40 minutes: from minute %d, %d keys in %d minutes; want 70, none", (m.from-base)/minuteUS, m.keys, len(m.minutes))
	}
	// A load that fails leaves none held, and the next roll reports it,
	// for rollUp to load them again.
	if err := m.load(t.Context(), failingQueryer{}, 13); err == nil || m.loaded {
		t.Errorf("a failed load: %v, loaded %v", err, m.loaded)
	}
	if stale := m.roll(nil, 14, &recent); !stale {
		t.Error("the roll after a failed load does not report it")
	}
	if _, _, ok := m.aggregate(&q, m.from, 0, false, &recent, map[statKey]*statAgg{}); ok {
		t.Error("answered from minutes a failed load left")
	}
}

// failingQueryer fails every statement.
type failingQueryer struct{}

func (failingQueryer) QueryContext(context.Context, string, ...any) (*sql.Rows, error) {
	return nil, errors.New("failed by the test")
}

// waitFor waits until cond holds (the mover's work; the go test timeout
// bounds it).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(5 * time.Millisecond)
	}
}

// recentUsable reports whether Stats would read the records above
// rollup_hi from memory.
func recentUsable(s *Store) bool {
	s.rollupMu.RLock()
	defer s.rollupMu.RUnlock()
	_, ok := s.recent.above(s.rollupHi)
	return ok
}

// backfillHalf gives every other record of live still without weather
// (by index) the weather, through UpdateWeather, in live too.
func backfillHalf(t *testing.T, s *Store, live []event.Record) {
	t.Helper()
	var fill []event.Record
	for i := range live {
		if live[i].Enrichment.Status == event.StatusUnavailable && i%2 == 0 {
			r := &live[i]
			r.Weather = &event.Weather{ObservedAt: r.OccurredAt.Truncate(15 * time.Minute), TemperatureC: float64(i%40) - 10,
				WeatherCode: 61, Condition: "Slight rain", Provider: "open-meteo"}
			r.Enrichment = event.Enrichment{Status: event.StatusEnriched}
			r.ProcessedAt = r.ProcessedAt.Add(time.Hour)
			fill = append(fill, *r)
		}
	}
	if n, err := s.UpdateWeather(t.Context(), fill); err != nil || n != int64(len(fill)) {
		t.Fatalf("UpdateWeather = %d, %v; want %d", n, err, len(fill))
	}
}

func TestMinutes(t *testing.T) {
	for _, c := range []struct {
		t           time.Time
		floor, ceil int64
	}{
		{time.Unix(120, 0), 120e6, 120e6},
		{time.Unix(120, 1000), 120e6, 180e6},
		{time.Unix(179, 999_999_999), 120e6, 180e6},
		{time.Unix(-1, 0), -60e6, 0},
		{time.Unix(-60, 0), -60e6, -60e6},
		{time.Unix(-61, 500), -120e6, -60e6},
		{time.Unix(0, 1), 0, 60e6}, // a nanosecond past: the next minute is the first whole one
	} {
		if f, c2 := floorMinute(c.t), ceilMinute(c.t); f != c.floor || c2 != c.ceil {
			t.Errorf("%v: floor %d ceil %d, want %d %d", c.t, f, c2, c.floor, c.ceil)
		}
	}
}

// TestStatsRollupCompacts: a minute that several moves added rollup rows to
// ends with one row per key once the moves have gone past it; only the
// last move's minutes may hold more.
func TestStatsRollupCompacts(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 64 << 10
	ctx := t.Context()
	s := openPath(t, tempPath(t))
	// One key (or two: with and without weather), so that every minute
	// two moves share has a key added to by both.
	recs := storetest.Records(12, 3000)
	for i := range recs {
		recs[i].EventType, recs[i].Location.Country = "page.view", "Norway"
		if recs[i].Weather != nil {
			recs[i].Weather.Condition = "Clear sky"
		}
	}
	for i := 0; i < len(recs); i += 100 {
		if err := s.Write(ctx, recs[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	for len(s.segments()) > 1 {
		time.Sleep(5 * time.Millisecond)
	}
	s.moveMu.Lock()
	last := slices.Collect(maps.Keys(s.rollupTouched))
	s.moveMu.Unlock()
	checkRollup(t, s)
	var minutes, rows int64
	if err := s.db.QueryRowContext(ctx, `SELECT count(DISTINCT minute_us), count(*) FROM stats_minute`).Scan(&minutes, &rows); err != nil {
		t.Fatal(err)
	}
	dups, err := s.seqs(ctx, `SELECT DISTINCT minute_us FROM stats_minute GROUP BY minute_us, location_country, event_type, weather_condition HAVING count(*) > 1`)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range dups {
		if !slices.Contains(last, m) {
			t.Errorf("minute %v has several rows for a key, and the last move did not touch it", time.UnixMicro(m).UTC())
		}
	}
	t.Logf("%d rollup rows over %d minutes; minutes of the last move: %d", rows, minutes, len(last))
}

// BenchmarkCompactRollup measures the compaction of one minute of 1,000
// rows (100 keys, 10 moves) at the end of a rollup of 3 M rows, as the
// mover runs it on a week-old store:
//
//	go test -run '^$' -bench CompactRollup -benchtime 20x ./internal/store/duckdb/
func BenchmarkCompactRollup(b *testing.B) {
	ctx := context.Background()
	s := openPath(b, tempPath(b))
	const old = 3_000_000
	if _, err := s.db.ExecContext(ctx, `INSERT INTO stats_minute
SELECT (i // 300) * 60000000, 'c' || (i % 20), 't' || (i % 5), 'w' || (i % 3), 1, 1, 1, 1, 1 FROM range(`+strconv.Itoa(old)+`) AS r(i)`); err != nil {
		b.Fatal(err)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		minute := int64(old/300+i) * minuteUS
		if _, err := s.db.ExecContext(ctx, `INSERT INTO stats_minute
SELECT $1, 'c' || (i % 100), 't', 'w', 1, 1, 1, 1, 1 FROM range(1000) AS r(i)`, minute); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := compactMinutes(ctx, tx, []int64{minute}); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	var rows int64
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM stats_minute WHERE minute_us >= $1`, int64(old/300)*minuteUS).Scan(&rows); err != nil || rows != int64(b.N)*100 {
		b.Fatalf("%d rows in the compacted minutes, want %d (%v)", rows, b.N*100, err)
	}
}

// BenchmarkStats measures a stats read of the last hour by country, with
// the records above rollup_hi (those of the active hot segment, and any
// moved but not yet rolled up) read from memory and from the store, the
// mover idle. cpu-ms/op is the process's CPU a read (DuckDB's threads
// too).
func BenchmarkStats(b *testing.B) {
	s := openPath(b, tempPath(b))
	const n = 300_000
	recs := storetest.Records(42, n)
	now := time.Now().UTC()
	for i := range recs { // 70 minutes up to now: the hour's first minute has records
		recs[i].OccurredAt = now.Add(-70*time.Minute + time.Duration(i)*(70*time.Minute)/n).Truncate(time.Microsecond)
	}
	ctx := context.Background()
	for i := 0; i < n; i += 5000 {
		if err := s.Write(ctx, recs[i:min(n, i+5000)]); err != nil {
			b.Fatal(err)
		}
	}
	idle := func() bool {
		s.moveMu.Lock()
		defer s.moveMu.Unlock()
		return len(s.segments()) == 1 && s.rollupHi == s.coldMax
	}
	for !idle() {
		time.Sleep(10 * time.Millisecond)
	}
	s.recent.mu.Lock()
	b.Logf("%d records above rollup_hi", len(s.recent.tuples))
	s.recent.mu.Unlock()
	q := store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{Since: now.Add(-time.Hour)}, MaxGroups: store.MaxStatsGroups + 1}
	// The rollup's minutes and the records above rollup_hi from memory,
	// the records above rollup_hi only, neither.
	for _, way := range []struct {
		name            string
		minutes, recent bool
	}{{"minutes_and_records_in_memory", true, true}, {"records_in_memory", false, true}, {"store", false, false}} {
		b.Run(way.name, func(b *testing.B) {
			defer func() { minutesOn, recentStatsOn = true, true }()
			minutesOn, recentStatsOn = way.minutes, way.recent
			report := reportCPU(b)
			for b.Loop() {
				if _, err := s.Stats(ctx, q); err != nil {
					b.Fatal(err)
				}
			}
			report()
		})
	}
}

// BenchmarkRecentAdd measures what the writer adds to each record it
// stores for Stats (recentStats.add), by the record.
func BenchmarkRecentAdd(b *testing.B) {
	recs := storetest.Records(42, 5000)
	seqs := make([]int64, len(recs))
	var r recentStats
	next := int64(0)
	for b.Loop() {
		for i := range seqs {
			next++
			seqs[i] = next
		}
		r.add(recs, seqs)
		r.trim(next)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}
