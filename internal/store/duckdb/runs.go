//go:build !noduckdb

package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// User runs (Config.UserRuns; off by default): the main file's records
// again, clustered by user, for the reads of one user's records.
//
// The main file's events are in seq order (each moved segment's few
// seconds sorted by user), and a user's records are spread over all of
// it: at 100,000 users, one in 100,000 rows. Reading one
// costs DuckDB a scan of its row group's seq column and the vector of
// every column around it, 2.5 ms (0.6 ms for seq alone, about 40 us a
// column more), so a page of 100 took 250-750 ms on a 23 M-record store.
// A run is a copy of a range of seq of the main file's events, sorted by
// user_id then seq: there, a user's records are next to each other, and
// the row groups' min/max of user_id leave one to read. A page reads the
// runs that hold its records (3-4 ms each, measured on 4 M-record runs)
// and the few records above the last run by seq.
//
// The runs cover the main file's seq from 0 to the last run's hi without
// gaps, each (lo, hi], listed in table user_runs. The reads use the runs
// listed whether or not UserRuns is on (a store that had it on keeps its
// runs up to date through deletes and backfills, and no new ones are
// cut). The clusterer, a
// goroutine beside the mover that each move wakes (runClusterer), cuts a
// run off the records above the last run once there are runRows of seq
// in the main file, and merges the newest
// runFanIn runs of a level into one of the level above, up to
// runMaxLevel: a tiered merge, so that each record is sorted about
// runMaxLevel+1 times and a store holds a few runs of each level and
// many of the top one. A delete and a weather backfill change the runs in
// the transaction that changes the main file's records, under runsMu, as
// cutting and merging run: every run equals the main file's records in
// its range, which TestUserRuns checks after each kind of change. Moves
// go on while a run is cut or merged (they only add records above
// cold_max, which no run covers yet): the records of segments left
// waiting would sit in DuckDB's memory, which the sorts and the reads
// need.
//
// The cost: the runs take as much disk as the main file's events, and
// sorting takes CPU: each record is sorted twice (cut, then merged), about
// 17 us of CPU a record on this machine; see docs/benchmarks.md.

// userRunsDDL lists the runs: run id's table is user_run_<id>.
const userRunsDDL = `CREATE TABLE IF NOT EXISTS user_runs (id BIGINT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, level INTEGER NOT NULL)`

var (
	// runRows is the seq span of a run of level 0: the mover cuts one once
	// the main file has that many seq above the last run.
	runRows int64 = 1 << 18
	// runFanIn runs of a level merge into one of the next.
	runFanIn = 4
	// runMaxLevel is the highest level: runs of it are not merged. A
	// store whose main file has more records than a run of this level
	// above the last run (opened after an upgrade) gets runs of it cut
	// directly, if one sort may take that many. Level 1 (1 Mi records):
	// a level 2 cost the store 57 us of CPU a record written, against
	// about 17 for levels 0 and 1 (docs/benchmarks.md).
	runMaxLevel = 1
)

// run is one user run: the main file's records of seq in (lo, hi].
type run struct {
	id, lo, hi int64
	level      int
}

func (r run) table() string { return "main.user_run_" + strconv.FormatInt(r.id, 10) }

// loadRuns returns the runs, by seq.
func loadRuns(ctx context.Context, q queryer) ([]run, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, lo, hi, level FROM main.user_runs ORDER BY lo`)
	if err != nil {
		return nil, fmt.Errorf("read user_runs: %w", err)
	}
	defer rows.Close()
	var runs []run
	for rows.Next() {
		var r run
		if err := rows.Scan(&r.id, &r.lo, &r.hi, &r.level); err != nil {
			return nil, fmt.Errorf("read user_runs: %w", err)
		}
		runs = append(runs, r)
	}
	return runs, rows.Err()
}

// runsHi is the highest seq the runs cover.
func runsHi(runs []run) int64 {
	if len(runs) == 0 {
		return 0
	}
	return runs[len(runs)-1].hi
}

// levelRows is the seq span of a run of level.
func levelRows(level int) int64 {
	n := runRows
	for range level {
		n *= int64(runFanIn)
	}
	return n
}

// clusterStep cuts or merges one run, if one is due, sorting at most
// sortRows records in a statement, and reports whether it did.
func (s *Store) clusterStep(ctx context.Context, sortRows int64) (bool, error) {
	s.moveMu.Lock()
	coldMax := s.coldMax
	s.moveMu.Unlock()
	s.runsMu.Lock()
	defer s.runsMu.Unlock()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	runs, err := loadRuns(ctx, conn)
	if err != nil {
		return false, err
	}
	start := time.Now()
	// Merge the newest runFanIn runs if they share a level below the top.
	if k := len(runs) - runFanIn; k >= 0 && runs[k].level < runMaxLevel {
		level, same := runs[k].level, true
		for _, r := range runs[k:] {
			same = same && r.level == level
		}
		if same {
			if err := s.mergeRuns(ctx, conn, runs, runs[k:], sortRows); err != nil {
				return false, fmt.Errorf("merge %d user runs of level %d: %w", runFanIn, level, err)
			}
			s.log.DebugContext(ctx, "duckdb: user runs merged", "level", level+1, "ms", time.Since(start).Milliseconds())
			return true, nil
		}
	}
	lo := runsHi(runs)
	lag := coldMax - lo
	if lag < runRows {
		return false, nil
	}
	// Above level 0 only to catch up (after an upgrade), and no larger
	// than one sort.
	level := 0
	for level < runMaxLevel && levelRows(level+1) <= lag && levelRows(level+1) <= sortRows {
		level++
	}
	// Runs of a lower level than the newest's only ever follow it.
	if len(runs) > 0 && level > runs[len(runs)-1].level {
		level = runs[len(runs)-1].level
	}
	r := run{id: nextRunID(runs), lo: lo, hi: lo + levelRows(level), level: level}
	if err := s.writeRun(ctx, conn, r, "SELECT "+selectColumns+" FROM main.events WHERE seq > "+strconv.FormatInt(r.lo, 10)+
		" AND seq <= "+strconv.FormatInt(r.hi, 10), r.hi-r.lo, sortRows, nil); err != nil {
		return false, fmt.Errorf("cut a user run of level %d: %w", level, err)
	}
	s.log.DebugContext(ctx, "duckdb: user run cut", "level", level, "lo", r.lo, "hi", r.hi, "ms", time.Since(start).Milliseconds())
	return true, nil
}

func nextRunID(runs []run) int64 {
	var id int64
	for _, r := range runs {
		id = max(id, r.id)
	}
	return id + 1
}

// mergeRuns replaces the runs of merge (the newest of runs) by one run of
// the next level.
func (s *Store) mergeRuns(ctx context.Context, conn *sql.Conn, runs, merge []run, sortRows int64) error {
	parts := make([]string, len(merge))
	for i, r := range merge {
		parts[i] = "SELECT " + selectColumns + " FROM " + r.table()
	}
	r := run{id: nextRunID(runs), lo: merge[0].lo, hi: merge[len(merge)-1].hi, level: merge[0].level + 1}
	return s.writeRun(ctx, conn, r, strings.Join(parts, " UNION ALL "), r.hi-r.lo, sortRows, merge)
}

// runSortRows is the most records one statement of the clusterer sorts.
// DuckDB's sort of 4 M records (of 43 columns) ran out of the default 256
// MB memory limit alone; of 1 M it did not (7.8 s), but did while a store
// under load held its hot segments and reads in the same memory, and the
// reads failed for it. A sort of 256 Ki records takes about 2 s. A larger
// run is written in ranges of user_id of about that many records each,
// in order; a range reads the row groups (122,880 rows) of the sources
// that hold any of its users, so ranges much smaller than the sources'
// row groups read the sources many times over (1 M records from four
// runs took 9.2 s in 4 ranges, 24.5 s in 16). Settle, which runs with
// nothing else (skyjoin migrate, the bench's fill), sorts up to
// settleSortRows at once.
var (
	runSortRows    int64 = 1 << 18
	settleSortRows int64 = 1 << 20
)

// writeRun creates run r from the records of query (about rows of them),
// sorted by user_id then seq, and then, in one transaction, lists it and
// drops the runs of replace. Above sortRows records it sorts one range of
// user_id at a time, the ranges' bounds drawn from a sample of the user
// ids; a range reads only its row groups of a source that is a run. Each
// range commits on its own: a transaction holding a 4 M-record run ran
// DuckDB out of its memory limit, and the reads that needed memory then
// failed. Until it is listed, no read or change looks at the new table
// (runsMu keeps the deletes and updates out meanwhile); one left by a
// crash or a failure is replaced by the next attempt, which gets the same
// id.
func (s *Store) writeRun(ctx context.Context, conn *sql.Conn, r run, query string, rows, sortRows int64, replace []run) (err error) {
	var bounds []string
	if k := (rows + sortRows - 1) / sortRows; k > 1 {
		if bounds, err = sampleBounds(ctx, conn, query, k); err != nil {
			return err
		}
	}
	if _, err := conn.ExecContext(ctx, "CREATE OR REPLACE TABLE "+r.table()+" AS SELECT * FROM ("+query+") LIMIT 0"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+r.table())
		}
	}()
	for i := 0; i <= len(bounds); i++ {
		var conds []string
		if i > 0 {
			conds = append(conds, "user_id >= "+quote(bounds[i-1]))
		}
		if i < len(bounds) {
			conds = append(conds, "(user_id < "+quote(bounds[i])+" OR user_id IS NULL)")
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO "+r.table()+" SELECT * FROM ("+query+")"+whereClause(conds)+" ORDER BY user_id, seq"); err != nil {
			return err
		}
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, old := range replace {
		if _, err := tx.ExecContext(ctx, "DROP TABLE "+old.table()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM main.user_runs WHERE id = $1", old.id); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO main.user_runs VALUES ($1, $2, $3, $4)", r.id, r.lo, r.hi, r.level); err != nil {
		return err
	}
	return tx.Commit()
}

// sampleBounds returns up to k-1 user ids that cut the records of query
// into k ranges of about the same size, from a sample of 4,096.
func sampleBounds(ctx context.Context, conn *sql.Conn, query string, k int64) ([]string, error) {
	rows, err := conn.QueryContext(ctx, "SELECT user_id FROM ("+query+") USING SAMPLE reservoir(4096 ROWS) REPEATABLE (7) ORDER BY user_id")
	if err != nil {
		return nil, fmt.Errorf("sample the user ids: %w", err)
	}
	defer rows.Close()
	var users []string
	for rows.Next() {
		var u sql.NullString
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("sample the user ids: %w", err)
		}
		if u.Valid {
			users = append(users, u.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sample the user ids: %w", err)
	}
	var bounds []string
	for i := int64(1); i < k && len(users) > 0; i++ {
		b := users[int64(len(users))*i/k]
		if len(bounds) == 0 || bounds[len(bounds)-1] < b {
			bounds = append(bounds, b)
		}
	}
	return bounds, nil
}

// runTables returns the tables of the runs, read in tx.
func runTables(ctx context.Context, tx queryer) ([]string, error) {
	runs, err := loadRuns(ctx, tx)
	if err != nil {
		return nil, err
	}
	tables := make([]string, len(runs))
	for i, r := range runs {
		tables[i] = r.table()
	}
	return tables, nil
}

// Settle moves the hot segments the writer is done with into the main file
// and cuts and merges the user runs that are due, as the mover does in the
// background (with larger sorts: it is meant to run alone), and returns
// once nothing is left to do: a store filled in bulk (skyjoin bench
// --fill) is then measured as a store that has kept up, and an upgraded
// one (skyjoin migrate) starts with its runs.
func (s *Store) Settle(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if segs := s.segments(); len(segs) >= 2 {
			if err := s.move(ctx, segs[0]); err != nil {
				return fmt.Errorf("duckdb: settle: %w", err)
			}
			continue
		}
		if s.rows != nil {
			if err := s.fillRows(ctx); err != nil {
				return fmt.Errorf("duckdb: settle: %w", err)
			}
		}
		if !s.userRuns {
			return nil
		}
		did, err := s.clusterStep(ctx, settleSortRows)
		if err != nil {
			return fmt.Errorf("duckdb: settle: %w", err)
		}
		if !did {
			return nil
		}
	}
}
