//go:build !noduckdb

package duckdb

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// smallRuns turns the user runs on (Config.UserRuns, through its
// environment variable) and makes them small for the test: level 0 of 100 seq,
// 400 and 1,600 above it, the runs above level 0 sorted in ranges of
// about 300 records.
func smallRuns(t *testing.T) {
	t.Setenv(platform.EnvName("duckdb-user-runs"), "true")
	oldRows, oldSort, oldSettle, oldLevel := runRows, runSortRows, settleSortRows, runMaxLevel
	runRows, runSortRows, settleSortRows, runMaxLevel = 100, 300, 300, 2
	t.Cleanup(func() { runRows, runSortRows, settleSortRows, runMaxLevel = oldRows, oldSort, oldSettle, oldLevel })
}

// checkRuns checks that the user runs cover the main file's seq from 0
// without gap or overlap, in levels that do not grow with seq, and that
// each holds the main file's records of its range, column by column,
// sorted by user then seq; it returns the runs and how many records they
// hold.
func checkRuns(t *testing.T, s *Store) ([]run, int64) {
	t.Helper()
	ctx := t.Context()
	// In one transaction: the clusterer may merge runs meanwhile.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	runs, err := loadRuns(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	var coldMax int64
	if err := tx.QueryRowContext(ctx, coldMaxSQL).Scan(&coldMax); err != nil {
		t.Fatal(err)
	}
	var (
		prev  run
		total int64
	)
	for i, r := range runs {
		if r.lo != prev.hi || r.hi <= r.lo || i > 0 && r.level > prev.level {
			t.Errorf("run %+v after %+v", r, prev)
		}
		prev = r
		var diff, n, unsorted int64
		rangeOf := fmt.Sprintf("main.events WHERE seq > %d AND seq <= %d", r.lo, r.hi)
		q := fmt.Sprintf(`SELECT
  (SELECT count(*) FROM (SELECT %[1]s FROM %[2]s EXCEPT ALL SELECT %[1]s FROM %[3]s)) +
  (SELECT count(*) FROM (SELECT %[1]s FROM %[3]s EXCEPT ALL SELECT %[1]s FROM %[2]s)),
  (SELECT count(*) FROM %[2]s),
  (SELECT count(*) FROM (SELECT user_id, seq, lag(user_id) OVER w AS pu, lag(seq) OVER w AS ps FROM %[2]s WINDOW w AS (ORDER BY rowid))
   WHERE pu > user_id OR pu = user_id AND ps >= seq)`, selectColumns, r.table(), rangeOf)
		if err := tx.QueryRowContext(ctx, q).Scan(&diff, &n, &unsorted); err != nil {
			t.Fatal(err)
		}
		if diff != 0 || unsorted != 0 {
			t.Errorf("run %+v: %d rows differ from the main file's, %d out of order (of %d)", r, diff, unsorted, n)
		}
		total += n
	}
	if hi := runsHi(runs); hi > coldMax {
		t.Errorf("the runs reach seq %d, beyond the main file's %d", hi, coldMax)
	}
	return runs, total
}

// TestUserRuns: a user's records, listed by page in either order and with
// a filter, are the records written for the user, in seq order, and
// equal to those the scan of the records reads, while the user runs are
// cut and merged, after a weather backfill, deletes of users and of old
// records, a reopen, and an upgrade from schema version 4; the runs stay
// equal to the main file's records throughout, and are what answers.
func TestUserRuns(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 64 << 10
	smallRuns(t)
	ctx := t.Context()
	path := tempPath(t)
	s := openDuckOnly(t, path)
	live := storetest.Records(21, 4000)
	// A few users with many records, spread over every run.
	for i := range live {
		if i%4 == 0 {
			live[i].User.ID = fmt.Sprintf("heavy-%d", i%20/4)
		}
	}
	for b := 0; b < len(live); b += 250 {
		if err := s.Write(ctx, live[b:b+250]); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(21, 5))
	check := func(stage string) {
		t.Helper()
		if err := s.Settle(ctx); err != nil {
			t.Fatal(err)
		}
		runs, n := checkRuns(t, s)
		if n == 0 {
			t.Fatalf("%s: no record in a user run: they are not exercised", stage)
		}
		s.moveMu.Lock()
		coldMax := s.coldMax
		s.moveMu.Unlock()
		if hi := runsHi(runs); coldMax-hi >= runRows {
			t.Errorf("%s: settled with %d seq of the main file above the runs", stage, coldMax-hi)
		}
		for _, u := range []string{"heavy-0", "heavy-3", live[rng.IntN(len(live))].User.ID, live[rng.IntN(len(live))].User.ID} {
			for _, asc := range []bool{false, true} {
				q := store.Query{UserID: u, Ascending: asc, Limit: 10 + rng.IntN(40)}
				if rng.IntN(3) == 0 {
					q.EventType = live[rng.IntN(len(live))].EventType
				}
				var want []string
				for _, r := range live {
					if r.User.ID == u && (q.EventType == "" || r.EventType == q.EventType) {
						want = append(want, r.EventID)
					}
				}
				if !asc {
					slices.Reverse(want)
				}
				got := walk(t, s, q)
				// The main file's records, a statement each (points) and
				// by one scan.
				listByUserRuns, minPointSpread, keyedPointSpread = false, 1, 1
				points := walk(t, s, q)
				listByUserPoints = false
				scanned := walk(t, s, q)
				listByUserKey = false
				byUserID := walk(t, s, q)
				listByUserRuns, listByUserPoints, listByUserKey, minPointSpread, keyedPointSpread = true, true, true, 1<<16, 350_000
				if !slices.Equal(eventIDs(got), want) {
					t.Errorf("%s: %+v: %d records %v, want %d %v", stage, q, len(got), eventIDs(got), len(want), want)
					continue
				}
				if !slices.Equal(eventIDs(points), want) || !slices.Equal(eventIDs(scanned), want) || !slices.Equal(eventIDs(byUserID), want) {
					t.Errorf("%s: %+v: from the main file %v by points, %v by a scan of user_key, %v of user_id, want %v",
						stage, q, eventIDs(points), eventIDs(scanned), eventIDs(byUserID), want)
					continue
				}
				for i := range got {
					if d := storetest.Diff(scanned[i], got[i]); d != "" {
						t.Errorf("%s: %+v: record %s from the runs differs from the main file's: %s", stage, q, got[i].EventID, d)
					}
					if d := storetest.Diff(scanned[i], points[i]); d != "" {
						t.Errorf("%s: %+v: record %s read by its seq differs from the scan's: %s", stage, q, got[i].EventID, d)
					}
				}
			}
		}
	}
	check("written")
	runs, _ := checkRuns(t, s)
	var levels []int
	for _, r := range runs {
		levels = append(levels, r.level)
	}
	if !slices.Contains(levels, 2) || !slices.Contains(levels, 1) {
		t.Errorf("run levels %v: want runs merged twice (level 2) and once (level 1)", levels)
	}

	// A backfill of the records without weather.
	backfillHalf(t, s, live)
	check("backfilled")

	gone := []string{"heavy-1", live[7].User.ID, live[2001].User.ID}
	if _, err := s.DeleteUsers(ctx, gone); err != nil {
		t.Fatal(err)
	}
	live = slices.DeleteFunc(live, func(r event.Record) bool { return slices.Contains(gone, r.User.ID) })
	check("users deleted")
	cut := live[900].OccurredAt
	if _, err := s.DeleteOccurredBefore(ctx, cut); err != nil {
		t.Fatal(err)
	}
	live = slices.DeleteFunc(live, func(r event.Record) bool { return r.OccurredAt.Before(cut) })
	check("old records deleted")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDuckOnly(t, path)
	check("reopened")
	// A version 4 file: the runs are cut after the upgrade.
	var drops []string
	for _, r := range runs {
		drops = append(drops, "DROP TABLE IF EXISTS "+r.table())
	}
	runs, _ = checkRuns(t, s)
	for _, r := range runs {
		drops = append(drops, "DROP TABLE IF EXISTS "+r.table())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawExec(t, path, append(append(drops, toVersion6...), `DROP TABLE user_runs`, `DELETE FROM skyjoin_meta WHERE key = 'rollup_hi'`, `UPDATE skyjoin_meta SET value = '4' WHERE key = 'schema_version'`)...)
	s = openDuckOnly(t, path)
	check("upgraded from version 4")

	// The runs are what answers: a change made to a run alone shows.
	runs, _ = checkRuns(t, s)
	if _, err := s.db.ExecContext(ctx, "UPDATE "+runs[0].table()+" SET event_type = 'only-in-the-run' WHERE user_id = 'heavy-0'"); err != nil {
		t.Fatal(err)
	}
	p, err := s.List(ctx, store.Query{UserID: "heavy-0", EventType: "only-in-the-run", Limit: 1000})
	if err != nil || len(p.Records) == 0 {
		t.Errorf("records of a type only the run has = %d, %v; want some", len(p.Records), err)
	}
}

func eventIDs(recs []event.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.EventID
	}
	return ids
}

// walk lists every page of q.
func walk(t *testing.T, s *Store, q store.Query) []event.Record {
	t.Helper()
	var all []event.Record
	for {
		p, err := s.List(t.Context(), q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		all = append(all, p.Records...)
		if p.NextCursor == "" {
			return all
		}
		q.Cursor = p.NextCursor
	}
}

// TestUserRunsOff: without Config.UserRuns (the default), no run is cut,
// and a user's records are read by seq.
func TestUserRunsOff(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 64 << 10
	oldRows := runRows
	runRows = 100
	defer func() { runRows = oldRows }()
	ctx := t.Context()
	s := openDuckOnly(t, tempPath(t))
	live := storetest.Records(22, 1500)
	if err := s.Write(ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if runs, _ := checkRuns(t, s); len(runs) != 0 || s.coldMax < 3*runRows {
		t.Errorf("%d runs cut with %d records in the main file, want none", len(runs), s.coldMax)
	}
	u := live[0].User.ID
	var want []string
	for _, r := range live {
		if r.User.ID == u {
			want = append(want, r.EventID)
		}
	}
	if got := eventIDs(walk(t, s, store.Query{UserID: u, Ascending: true, Limit: 2})); !slices.Equal(got, want) {
		t.Errorf("user %s: %v, want %v", u, got, want)
	}
}
