//go:build !noduckdb

package duckdb

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

func tempPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "data", "skyjoin.duckdb")
}

func openPath(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{Path: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openDuckOnly is openPath without the row store: for the tests of the
// ways DuckDB reads a user's records, which the row store would answer.
func openDuckOnly(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{Path: path, NoRowStore: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openPath(t, tempPath(t)) })
}

// TestConformanceHashCollisions runs the conformance suite with an event
// id index whose hash collides often (a third of all ids share each
// value): every hit is told apart from a stored id by reading the record,
// and a shared hash by a scan.
func TestConformanceHashCollisions(t *testing.T) {
	defer func(h func(maphash.Seed, string) uint64, b func(maphash.Seed, []byte) uint64) {
		idHash, idHashBytes = h, b
	}(idHash, idHashBytes)
	idHash = func(_ maphash.Seed, id string) uint64 { return uint64(len(id) % 3) }
	idHashBytes = func(_ maphash.Seed, id []byte) uint64 { return uint64(len(id) % 3) }
	storetest.Run(t, func(t *testing.T) store.Store { return openPath(t, tempPath(t)) })
}

// TestConformanceSegments runs the conformance suite with a new hot
// segment after every write: the reads see records in many segments, some
// being moved into the main file meanwhile.
func TestConformanceSegments(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 1
	storetest.Run(t, func(t *testing.T) store.Store { return openPath(t, tempPath(t)) })
}

// TestConformancePoints runs the conformance suite with a user's records
// in the main file read by a statement each however close together
// (listByUserPoints), the records not yet moved by a scan of the segments,
// and a new hot segment after every write.
func TestConformancePoints(t *testing.T) {
	defer func(spread, keyed, bytes int64) {
		minPointSpread, keyedPointSpread, segmentBytes = spread, keyed, bytes
	}(minPointSpread, keyedPointSpread, segmentBytes)
	minPointSpread, keyedPointSpread, segmentBytes = 1, 1, 1
	storetest.Run(t, func(t *testing.T) store.Store { return openDuckOnly(t, tempPath(t)) })
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		path    string
		wantErr string
	}{
		{"data/skyjoin.duckdb", ""},
		{"/var/lib/skyjoin/x.db", ""},
		{"", "path is required"},
		{"  ", "path is required"},
		{":memory:", "not :memory:"},
		{"data/x.db?threads=1", "must not contain"},
		{"data/", "must name a file"},
	}
	for _, tt := range tests {
		err := Config{Path: tt.path}.Validate()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate(%q) = %v, want %q", tt.path, err, tt.wantErr)
		}
	}
	if _, err := Open(t.Context(), Config{}, nil); err == nil {
		t.Error("Open with an empty config succeeded")
	}
}

// TestConfigEnv: a variable that sets a field the caller left zero must
// parse, or Open names it.
func TestConfigEnv(t *testing.T) {
	for _, tt := range []struct{ flag, value string }{
		{"duckdb-user-runs", "yes please"},
		{"duckdb-threads", "two"},
		{"duckdb-threads", "-1"},
	} {
		t.Run(tt.flag+"="+tt.value, func(t *testing.T) {
			name := platform.EnvName(tt.flag)
			t.Setenv(name, tt.value)
			s, err := Open(t.Context(), Config{Path: tempPath(t)}, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open with %s=%q succeeded", name, tt.value)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("Open with %s=%q: %v, want the error to name %s", name, tt.value, err, name)
			}
		})
	}
	t.Setenv(platform.EnvName("duckdb-user-runs"), "true")
	t.Setenv(platform.EnvName("duckdb-threads"), "1")
	cfg, err := Config{Path: "x.duckdb"}.withDefaults()
	if err != nil || !cfg.UserRuns || cfg.Threads != 1 || cfg.MemoryLimit != DefaultMemoryLimit {
		t.Errorf("withDefaults from the environment = %+v, %v; want user runs, 1 thread, %s", cfg, err, DefaultMemoryLimit)
	}
}

func TestReopen(t *testing.T) {
	path := tempPath(t)
	s := openPath(t, path)
	first := storetest.Records(1, 300)
	// A redelivery in the second batch leaves a gap in seq at the end.
	if err := s.Write(t.Context(), first[:200]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(t.Context(), append(first[200:], first[0])); err != nil {
		t.Fatal(err)
	}
	last, err := s.List(t.Context(), store.Query{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	maxSeq := last.Records[0].Seq
	if _, err := Open(t.Context(), Config{Path: path}, nil); err == nil {
		t.Fatal("second Open of the same file in one process succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Write(t.Context(), storetest.Records(9, 1)); err == nil {
		t.Error("Write after Close succeeded")
	}

	s = openPath(t, path)
	if n, err := s.Count(t.Context()); err != nil || n != 300 {
		t.Fatalf("Count after reopen = %d, %v; want 300", n, err)
	}
	for _, i := range []int{0, 150, 299} {
		got, err := s.Get(t.Context(), first[i].EventID)
		if err != nil {
			t.Fatal(err)
		}
		if d := storetest.Diff(first[i], got); d != "" {
			t.Error(d)
		}
	}
	second := storetest.Records(2, 10)
	if err := s.Write(t.Context(), append([]event.Record{first[5]}, second...)); err != nil {
		t.Fatal(err)
	}
	all, err := s.List(t.Context(), store.Query{Ascending: true, Limit: store.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Records) != 310 {
		t.Fatalf("%d records, want 310", len(all.Records))
	}
	for i, r := range all.Records[300:] {
		if r.EventID != second[i].EventID || r.Seq <= maxSeq {
			t.Errorf("after reopen: record %s has seq %d; want %s with seq > %d", r.EventID, r.Seq, second[i].EventID, maxSeq)
		}
	}
	var version string
	if err := s.db.QueryRowContext(t.Context(), `SELECT value FROM skyjoin_meta WHERE key = 'schema_version'`).Scan(&version); err != nil || version != fmt.Sprint(SchemaVersion) {
		t.Errorf("schema_version = %q, %v", version, err)
	}
}

// rawExec runs statements on the database file at path, not through a
// Store.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range stmts {
		if _, err := db.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// toVersion6 takes a file of schema version 7 back to version 6: no
// user_key (the migrations to older versions start from it).
var toVersion6 = []string{`ALTER TABLE events DROP COLUMN user_key`, `DELETE FROM skyjoin_meta WHERE key = 'user_key_lo'`}

// TestMigrateFromVersion1: a file of schema version 1 (no properties
// column, coordinates required, the primary key and the user_id index)
// opens as the current version: its records read back without
// properties, and new records keep theirs.
func TestMigrateFromVersion1(t *testing.T) {
	path := tempPath(t)
	s := openPath(t, path)
	old := storetest.Records(7, 3)
	for i := range old {
		old[i].Properties = nil
	}
	if err := s.Write(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it a version 1 file: version 3's table without the properties
	// column, with the constraints and indexes of version 1, and no
	// users_latest, cold_max nor stats_minute.
	v1 := strings.Replace(strings.Replace(eventsDDL, "TABLE IF NOT EXISTS events ", "TABLE events_v1 ", 1),
		"\n)", ",\n  PRIMARY KEY (event_id)\n)", 1)
	var cols []string
	for _, c := range strings.Split(selectColumns, ", ") {
		if c != "properties" {
			cols = append(cols, c)
		}
	}
	rawExec(t, path,
		v1,
		`ALTER TABLE events_v1 DROP COLUMN properties`,
		`ALTER TABLE events_v1 ALTER COLUMN location_latitude SET NOT NULL`,
		`ALTER TABLE events_v1 ALTER COLUMN location_longitude SET NOT NULL`,
		"INSERT INTO events_v1 ("+strings.Join(cols, ", ")+") SELECT "+strings.Join(cols, ", ")+" FROM events",
		`DROP TABLE events`,
		`ALTER TABLE events_v1 RENAME TO events`,
		`CREATE INDEX events_user_id_idx ON events (user_id)`,
		`DROP TABLE users_latest`,
		`DROP TABLE stats_minute`,
		`DELETE FROM skyjoin_meta WHERE key IN ('cold_max', 'rollup_hi', 'user_key_lo')`,
		`UPDATE skyjoin_meta SET value = '1' WHERE key = 'schema_version'`,
	)
	s, err := Open(t.Context(), Config{Path: path}, nil)
	if err != nil {
		t.Fatalf("open a version 1 file: %v", err)
	}
	defer s.Close()
	var version string
	if err := s.db.QueryRowContext(t.Context(), `SELECT value FROM skyjoin_meta WHERE key = 'schema_version'`).Scan(&version); err != nil || version != fmt.Sprint(SchemaVersion) {
		t.Errorf("schema_version = %q, %v; want %d", version, err, SchemaVersion)
	}
	var indexes int
	if err := s.db.QueryRowContext(t.Context(), `SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'events' AND constraint_type = 'PRIMARY KEY'`).Scan(&indexes); err != nil || indexes != 0 {
		t.Errorf("events keeps %d primary keys (%v), want none", indexes, err)
	}
	if err := s.db.QueryRowContext(t.Context(), `SELECT count(*) FROM duckdb_indexes() WHERE table_name = 'events'`).Scan(&indexes); err != nil || indexes != 0 {
		t.Errorf("events keeps %d indexes (%v), want none", indexes, err)
	}
	checkRollup(t, s)
	for _, r := range old {
		got, err := s.LatestForUser(t.Context(), r.User.ID)
		if err != nil || got.User.ID != r.User.ID || got.OccurredAt.Before(r.OccurredAt) {
			t.Errorf("LatestForUser(%s) after the migration = %s at %v, %v; want one of the user's, not before %v", r.User.ID, got.EventID, got.OccurredAt, err, r.OccurredAt)
		}
	}
	for _, r := range old {
		got, err := s.Get(t.Context(), r.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if d := storetest.Diff(r, got); d != "" {
			t.Error(d)
		}
	}
	fresh := storetest.Records(8, 3)
	fresh[0].Properties = []byte(`{"amount":12.5,"items":[{"sku":"a","qty":2}],"gift":false}`)
	if err := s.Write(t.Context(), fresh); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(t.Context(), fresh[0].EventID)
	if err != nil {
		t.Fatal(err)
	}
	if d := storetest.Diff(fresh[0], got); d != "" {
		t.Error(d)
	}
	// A redelivery of a stored event goes through the staging table.
	if err := s.Write(t.Context(), []event.Record{fresh[0], storetest.Records(9, 1)[0]}); err != nil {
		t.Fatal(err)
	}
	// Version 1 required coordinates; version 2 stores an event without.
	nowhere := storetest.Records(10, 1)
	nowhere[0].Location.Latitude, nowhere[0].Location.Longitude = nil, nil
	nowhere[0].Weather = nil
	nowhere[0].Enrichment = event.Enrichment{Status: event.StatusNoLocation}
	if err := s.Write(t.Context(), nowhere); err != nil {
		t.Fatalf("write an event without coordinates to a migrated file: %v", err)
	}
}

func TestSchemaVersionMismatch(t *testing.T) {
	path := tempPath(t)
	s := openPath(t, path)
	if _, err := s.db.ExecContext(t.Context(), `UPDATE skyjoin_meta SET value = '99' WHERE key = 'schema_version'`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), Config{Path: path}, nil)
	if err == nil || !strings.Contains(err.Error(), "schema version 99") {
		t.Fatalf("Open of a file with schema version 99: %v", err)
	}
	// The failed Open released the file.
	s = openPath(t, path+".other")
	s.Close()
}

// Crash test: a child process writes batches and reports each one that
// Write returned nil for; the parent kills it with SIGKILL mid-stream and
// checks, on reopen, that every reported batch is stored exactly once and
// that no batch is stored in part.

const (
	crashEnv       = "SKYJOIN_DUCKDB_CRASH_CHILD"
	crashBatch     = 250
	crashReportsAt = 30 // batches the parent waits for before the kill

	crashRunRows, crashRunSortRows = 500, 300
)

// crashBatchRecords is batch b of the child: new records plus a redelivery
// of the first record of the previous batch.
func crashBatchRecords(b int) []event.Record {
	recs := storetest.Records(uint64(10_000+b), crashBatch)
	if b > 0 {
		recs = append(recs, storetest.Records(uint64(10_000+b-1), 1)[0])
	}
	return recs
}

func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("run by TestCrash")
	}
	// Small hot segments: the kill finds segments being written, waiting
	// to be moved, being moved, and moved but not yet deleted.
	segmentBytes = 200 << 10
	// Small user runs: the kill also finds runs being cut or merged.
	runRows, runSortRows = crashRunRows, crashRunSortRows
	s, err := Open(context.Background(), Config{Path: path, UserRuns: true}, nil)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	for b := 0; ; b++ {
		if err := s.Write(context.Background(), crashBatchRecords(b)); err != nil {
			fmt.Println("write:", err)
			os.Exit(2)
		}
		fmt.Printf("written %d\n", b)
	}
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := tempPath(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reported := -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		n, ok := strings.CutPrefix(line, "written ")
		if !ok {
			t.Logf("child: %s", line)
			continue
		}
		b, err := strconv.Atoi(n)
		if err != nil || b != reported+1 {
			t.Fatalf("child reported %q after batch %d", line, reported)
		}
		reported = b
		if reported+1 == crashReportsAt {
			// Let the child get a varying way into its next batch: staging,
			// inserting or committing.
			time.Sleep(time.Duration(rand.IntN(150_000)) * time.Microsecond)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	// Reports the child printed before it died count too.
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "written "); ok {
			reported, _ = strconv.Atoi(n)
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL (it reported %d batches)", err, reported+1)
	}
	if reported+1 < crashReportsAt {
		t.Fatalf("child reported only %d batches", reported+1)
	}
	left, err := segmentNumbers(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the child left %d hot segments: %v", len(left), left)

	defer func(rows, sort int64) { runRows, runSortRows = rows, sort }(runRows, runSortRows)
	runRows, runSortRows = crashRunRows, crashRunSortRows
	t.Setenv(platform.EnvName("duckdb-user-runs"), "true")
	s := openPath(t, path)
	// The stats rollup and the user runs match the main file's records,
	// whatever move, compaction, cut or merge the kill interrupted.
	checkRollup(t, s)
	if _, n := checkRuns(t, s); n == 0 {
		t.Error("no record in a user run: the kill did not meet them")
	}
	all := walkAll(t, s)
	byID := map[string]event.Record{}
	for _, r := range all {
		if _, dup := byID[r.EventID]; dup {
			t.Fatalf("%s stored twice", r.EventID)
		}
		byID[r.EventID] = r
	}
	// The user index, rebuilt at the open, knows each user's latest
	// record, in the main file and in the segments the kill left.
	checkLatest(t, s, all)
	// The row store, whose puts the kill interrupted, gives each user's
	// pages as DuckDB does.
	var users []string
	for _, r := range all {
		if !slices.Contains(users, r.User.ID) && len(users) < 20 {
			users = append(users, r.User.ID)
		}
	}
	for _, user := range users {
		for _, asc := range []bool{true, false} {
			got, want, _ := walkBothWays(t, s, user, asc)
			if !slices.Equal(got, want) {
				t.Errorf("after the kill, user %s, ascending %v: the pages through the row store differ from DuckDB's", user, asc)
			}
		}
	}
	if s.rows.hits.Load() == 0 {
		t.Error("after the kill, the row store held none of the records read")
	}
	// The rollup caught up with a move the kill left without its rollup,
	// and the stats it answers are those of the records.
	var rollupHi int64
	if err := s.db.QueryRowContext(t.Context(), `SELECT CAST(value AS BIGINT) FROM skyjoin_meta WHERE key = 'rollup_hi'`).Scan(&rollupHi); err != nil {
		t.Fatal(err)
	}
	if s.moveMu.Lock(); rollupHi != s.coldMax {
		t.Errorf("after the open rollup_hi is %d, cold_max %d", rollupHi, s.coldMax)
	}
	s.moveMu.Unlock()
	for _, q := range []store.StatsQuery{{GroupBy: store.GroupByCountry}, {GroupBy: store.GroupByTime, Bucket: time.Minute}} {
		got, err := s.Stats(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		if d := storetest.DiffStats(storetest.ExpectedStats(all, q), got); d != "" {
			t.Errorf("stats by %s after the kill:\n%s", q.GroupBy, d)
		}
	}
	// Every reported batch is there; the next one (in flight at the kill)
	// is there entirely or not at all; nothing after it.
	var stored int
	for b := 0; b <= reported+2; b++ {
		fresh := crashBatchRecords(b)[:crashBatch]
		n := 0
		for _, r := range fresh {
			if _, ok := byID[r.EventID]; ok {
				n++
			}
		}
		switch {
		case b <= reported && n != crashBatch:
			t.Errorf("batch %d was reported written but %d of %d records are stored", b, n, crashBatch)
		case n != 0 && n != crashBatch:
			t.Errorf("batch %d is stored in part: %d of %d records", b, n, crashBatch)
		case b > reported+1 && n != 0:
			t.Errorf("batch %d was never written but %d records are stored", b, n)
		}
		stored += n
		if b <= reported {
			got := byID[fresh[7].EventID]
			if d := storetest.Diff(fresh[7], got); d != "" {
				t.Errorf("batch %d: %s", b, d)
			}
		}
	}
	if stored != len(all) {
		t.Errorf("%d records stored, %d accounted for", len(all), stored)
	}
	// seq follows batch order and continues after the crash.
	if !slices.IsSortedFunc(all, func(a, b event.Record) int { return strings.Compare(a.EventID, b.EventID) }) {
		t.Error("seq order is not batch order")
	}
	if err := s.Write(t.Context(), storetest.Records(1, 5)); err != nil {
		t.Fatal(err)
	}
	after := walkAll(t, s)
	if got, last := after[len(after)-1].Seq, all[len(all)-1].Seq; got <= last {
		t.Errorf("seq after reopen %d, want > %d", got, last)
	}
	t.Logf("child reported %d batches before SIGKILL; %d records stored", reported+1, len(all))
}

// reportCPU starts counting the process's CPU; the func it returns reports
// it as cpu-ms/op of b's b.N operations.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		b.ReportMetric(float64((processCPU()-start).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
}

// processCPU is the CPU the process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// diffAt is the first index at which a and b differ.
func diffAt(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func walkAll(t *testing.T, s *Store) []event.Record {
	t.Helper()
	var all []event.Record
	q := store.Query{Ascending: true, Limit: store.MaxLimit}
	for {
		p, err := s.List(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Records...)
		if p.NextCursor == "" {
			return all
		}
		q.Cursor = p.NextCursor
	}
}

// Benchmarks. For the write path:
//
//	go test -run '^$' -bench . -benchtime 200x ./internal/store/duckdb/
//
// rows/s is the throughput; max_ms the slowest Write; cpu-ms/op the
// process's CPU a Write, the mover's included (the benchmark waits for
// the moves before it stops); moved the records moved into the main file.
// Writes over 250 ms are logged.
// SKYJOIN_BENCH_CHECKPOINT_THRESHOLD (bytes) overrides CheckpointThreshold,
// SKYJOIN_BENCH_ROW_GROUP_SIZE (rows) RowGroupSize.

func BenchmarkWrite(b *testing.B) {
	batch := benchEnvInt(b, "SKYJOIN_BENCH_BATCH", 1000, 1)
	if v := os.Getenv("SKYJOIN_BENCH_CHECKPOINT_THRESHOLD"); v != "" {
		defer func(old int64) { checkpointThreshold = old }(checkpointThreshold)
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1<<10 {
			b.Fatalf("SKYJOIN_BENCH_CHECKPOINT_THRESHOLD=%q: want bytes, at least 1024", v)
		}
		checkpointThreshold = n
	}
	if v := os.Getenv("SKYJOIN_BENCH_LATEST_CACHE"); v != "" { // the latest records kept: 0 for none
		defer func(old int) { latestCacheSize = old }(latestCacheSize)
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("SKYJOIN_BENCH_LATEST_CACHE=%q: want a number of records", v)
		}
		latestCacheSize = n
	}
	if v := os.Getenv("SKYJOIN_BENCH_ROW_GROUP_SIZE"); v != "" {
		defer func(old int) { rowGroupSize = old }(rowGroupSize)
		n, err := strconv.Atoi(v)
		if err != nil || n < 2048 || n%2048 != 0 {
			b.Fatalf("SKYJOIN_BENCH_ROW_GROUP_SIZE=%q: want rows, a multiple of 2,048", v)
		}
		rowGroupSize = n
	}
	cfg := Config{Path: tempPath(b)}
	if v := os.Getenv("SKYJOIN_BENCH_ROW_STORE"); v != "" { // off: DuckDB alone, the row store's share of a write's cost
		if v != "off" && v != "on" {
			b.Fatalf("SKYJOIN_BENCH_ROW_STORE=%q: want on or off", v)
		}
		cfg.NoRowStore = v == "off"
	}
	cfg.Threads = benchEnvInt(b, "SKYJOIN_BENCH_THREADS", 0, 1) // DuckDB's threads; unset: the store's default (or SKYJOIN_DUCKDB_THREADS)
	s, err := Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	pool := make([][]event.Record, 20)
	for i := range pool {
		pool[i] = storetest.Records(uint64(i), batch)
	}
	// Each write's event ids, made before the CPU is counted.
	ids := make([][]string, b.N)
	for i := range ids {
		ids[i] = make([]string, batch)
		for j := range ids[i] {
			ids[i][j] = fmt.Sprintf("bench-%d-%d", i, j)
		}
	}
	var slowest time.Duration
	b.ResetTimer()
	done := reportCPU(b)
	defer done()
	for i := 0; i < b.N; i++ {
		recs := pool[i%len(pool)]
		for j := range recs {
			recs[j].EventID = ids[i][j]
		}
		start := time.Now()
		if err := s.Write(ctx, recs); err != nil {
			b.Fatal(err)
		}
		if d := time.Since(start); d > 250*time.Millisecond {
			b.Logf("write %d, after %d records: %v", i, i*batch, d)
		}
		slowest = max(slowest, time.Since(start))
	}
	b.StopTimer()
	for len(s.snap.Load().segs) > 1 {
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportMetric(float64(s.coldSeen.Load()), "moved")
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(slowest.Microseconds())/1000, "max_ms")
	b.ReportMetric(0, "ns/op")
}

// readStore is a store with n records for the read benchmarks.
func readStore(b *testing.B, n int) (*Store, []event.Record) {
	b.Helper()
	s := openPath(b, tempPath(b))
	recs := storetest.Records(42, n)
	for i := 0; i < n; i += 5000 {
		if err := s.Write(context.Background(), recs[i:min(n, i+5000)]); err != nil {
			b.Fatal(err)
		}
	}
	return s, recs
}

func BenchmarkList(b *testing.B) {
	s, recs := readStore(b, 100_000)
	ctx := context.Background()
	p, err := s.List(ctx, store.Query{Limit: 100})
	if err != nil {
		b.Fatal(err)
	}
	middle := p.NextCursor
	for _, bc := range []struct {
		name string
		q    store.Query
	}{
		{"newest", store.Query{Limit: 100}},
		{"ascending", store.Query{Limit: 100, Ascending: true}},
		{"next_page", store.Query{Limit: 100, Cursor: middle}},
		{"user", store.Query{Limit: 100, UserID: recs[500].User.ID}},
		{"country", store.Query{Limit: 100, Country: "norway"}},
		{"time_range", store.Query{Limit: 100, Since: recs[50_000].OccurredAt, Until: recs[60_000].OccurredAt}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.List(ctx, bc.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGet reads a record by its event id: any of 100,000 (most in
// the main file), or one of the newest 2,000 (in the hot segments: what a
// client that polls for a record it just sent reads), through the row
// store or from DuckDB alone.
func BenchmarkGet(b *testing.B) {
	s, recs := readStore(b, 100_000)
	if err := s.rows.sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	rows := s.rows
	ctx := context.Background()
	for _, which := range []struct {
		name string
		recs []event.Record
	}{{"any", recs}, {"newest", recs[len(recs)-2000:]}} {
		for _, viaRows := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/row_store_%v", which.name, viaRows), func(b *testing.B) {
				defer func() { s.rows = rows }()
				if !viaRows {
					s.rows = nil
				}
				done := reportCPU(b)
				i := 0
				for b.Loop() {
					if _, err := s.Get(ctx, which.recs[i%len(which.recs)].EventID); err != nil {
						b.Fatal(err)
					}
					i += 7919
				}
				done()
			})
		}
	}
}

// BenchmarkLatest reads the latest record of a user of the last records
// written (in the hot segments), kept in memory or read by seq.
func BenchmarkLatest(b *testing.B) {
	s, recs := readStore(b, 100_000)
	ctx := context.Background()
	users := map[string]bool{}
	for _, r := range recs[len(recs)-2000:] {
		users[r.User.ID] = true
	}
	ids := slices.Collect(maps.Keys(users))
	for _, kept := range []bool{true, false} {
		b.Run(map[bool]string{true: "kept", false: "by_seq"}[kept], func(b *testing.B) {
			defer func() { latestKept = true }()
			latestKept = kept
			i := 0
			for b.Loop() {
				if _, err := s.LatestForUser(ctx, ids[i%len(ids)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkListUserOfTheLoad reads a page of the newest 100 records of a
// user who writes often: 300,000 records of 2,000 users (the bench's load:
// a user's page is its last 200,000 seq), all moved into the main file,
// with the mover copying segments sorted by user or in seq order. The
// write and the move are not timed; cpu-ms/op is the process's CPU a page.
func BenchmarkListUserOfTheLoad(b *testing.B) {
	const n, users = 300_000, 2_000
	// With the row store the mover keeps seq order (sortMoves).
	for _, st := range []struct{ rows, byUser bool }{{true, false}, {false, true}, {false, false}} {
		b.Run(fmt.Sprintf("row_store_%v/moved_by_user_%v", st.rows, st.byUser), func(b *testing.B) {
			defer func(old bool) { moveByUser = old }(moveByUser)
			moveByUser = st.byUser
			ctx := context.Background()
			path := tempPath(b)
			open := openDuckOnly
			if st.rows {
				open = openPath
			}
			s := open(b, path)
			recs := storetest.Records(7, n)
			rng := rand.New(rand.NewPCG(7, 7))
			for i := range recs {
				recs[i].User.ID = "load-" + strconv.Itoa(rng.IntN(users))
			}
			for i := 0; i < n; i += 1000 {
				if err := s.Write(ctx, recs[i:i+1000]); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Settle(ctx); err != nil {
				b.Fatal(err)
			}
			b.Logf("main file %d MB", fileSize(path)>>20)
			if s.rows != nil {
				// The row store's puts landed and compacted (as most of a
				// grown store's are), so that no compaction runs beside
				// the reads.
				if err := s.rows.sync(ctx); err != nil {
					b.Fatal(err)
				}
				if err := s.rows.db.Compact(ctx, rowKey(0), rowKey(1<<63-1), true); err != nil {
					b.Fatal(err)
				}
			}
			// The page decoded (List), and as the API's JSON (ListEncoded:
			// the row store's records as kept, the others encoded); with
			// the row store, read by an iterator or by a Get a record.
			for _, way := range []struct{ encoded, iter bool }{{false, true}, {true, true}, {true, false}} {
				encoded := way.encoded
				if !way.iter && !st.rows {
					continue
				}
				b.Run(fmt.Sprintf("encoded_%v/iterator_%v", encoded, way.iter), func(b *testing.B) {
					defer func(old int) { rowIterFrom = old }(rowIterFrom)
					if !way.iter {
						rowIterFrom = math.MaxInt
					}
					defer reportCPU(b)()
					for i := 0; b.Loop(); i++ {
						q := store.Query{UserID: "load-" + strconv.Itoa(i*7919%users), Limit: 100}
						n := 0
						var err error
						if encoded {
							var p store.EncodedPage
							p, err = s.ListEncoded(ctx, q)
							n = len(p.Records)
						} else {
							var p store.Page
							p, err = s.List(ctx, q)
							n = len(p.Records)
						}
						if err != nil || n != 100 {
							b.Fatal(n, err)
						}
					}
				})
			}
		})
	}
}

// TestWritesAndReadsDoNotWaitForAHeldRead: a read that holds a snapshot
// (a long scan) keeps its segments attached, and nothing else waits for
// it: the writer starts new segments, the mover moves the others, and new
// reads go on. Broken, the test hangs (and fails at the go test timeout).
func TestWritesAndReadsDoNotWaitForAHeldRead(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 1
	s := openPath(t, tempPath(t))
	first := storetest.Records(1, 10)
	if err := s.Write(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	held, release := s.acquire()
	var recs []event.Record
	for b := range 5 {
		batch := storetest.Records(uint64(100+b), 10)
		if err := s.Write(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, batch...)
	}
	for _, r := range append(recs, first...) {
		if _, err := s.Get(t.Context(), r.EventID); err != nil {
			t.Fatalf("Get(%s) while a read holds an old snapshot: %v", r.EventID, err)
		}
	}
	// The held snapshot still reads what it saw, each record once.
	var n int
	if err := s.db.QueryRowContext(t.Context(), "SELECT count(*) FROM "+held.from).Scan(&n); err != nil || n < len(first) {
		t.Errorf("the held snapshot counts %d records (%v), want at least %d", n, err, len(first))
	}
	release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left, err := segmentNumbers(s.path); err != nil || len(left) > 0 {
		t.Errorf("segments left after Close: %v %v", left, err)
	}
}

// BenchmarkReadsOnStore measures the downstream reads on an existing store
// (a copy of one `skyjoin bench --fill N --data-dir DIR` made), idle:
//
//	SKYJOIN_BENCH_STORE=DIR/skyjoin.duckdb go test -run '^$' -bench ReadsOnStore -benchtime 20x ./internal/store/duckdb/
//
// "spread" users are the fill's (their records spread over the whole
// table), "recent" ones the latest written (the bench's load users).
func BenchmarkReadsOnStore(b *testing.B) {
	path := os.Getenv("SKYJOIN_BENCH_STORE")
	if path == "" {
		b.Skip("SKYJOIN_BENCH_STORE is not set")
	}
	start := time.Now()
	s := openPath(b, path)
	opened := time.Since(start)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, _ := os.ReadFile("/proc/self/status")
	rss := ""
	for line := range strings.Lines(string(status)) {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			rss += strings.Join(strings.Fields(line), " ") + " "
		}
	}
	b.Logf("open: %v, %d records; Go heap in use after a GC %d MB; %s", opened, s.ids.len(), ms.HeapAlloc>>20, rss)
	// The user runs of a store made by an older version are cut here.
	start = time.Now()
	if err := s.Settle(context.Background()); err != nil {
		b.Fatal(err)
	}
	runs, err := loadRuns(context.Background(), s.db)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("settled in %v: %d user runs up to seq %d of %d", time.Since(start), len(runs), runsHi(runs), s.coldMax)
	pick := func(q string) []string {
		rows, err := s.db.QueryContext(context.Background(), q)
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		var users []string
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				b.Fatal(err)
			}
			users = append(users, u)
		}
		return users
	}
	groups := map[string][]string{
		"spread": pick("SELECT user_id FROM users_latest ORDER BY occurred_at LIMIT 20"),
		"recent": pick("SELECT user_id FROM users_latest ORDER BY occurred_at DESC LIMIT 20"),
	}
	ctx := context.Background()
	for _, g := range []string{"spread", "recent"} {
		users := groups[g]
		for _, way := range []struct{ runs, points, key bool }{{true, true, true}, {false, true, true}, {false, false, true}, {false, true, false}, {false, false, false}} {
			b.Run(fmt.Sprintf("list_user_%s_runs_%v_points_%v_key_%v", g, way.runs, way.points, way.key), func(b *testing.B) {
				defer func(runs, points, key bool) {
					listByUserRuns, listByUserPoints, listByUserKey = runs, points, key
				}(listByUserRuns, listByUserPoints, listByUserKey)
				listByUserRuns, listByUserPoints, listByUserKey = way.runs, way.points, way.key
				defer reportCPU(b)()
				for i := 0; b.Loop(); i++ {
					if p, err := s.List(ctx, store.Query{UserID: users[i%len(users)], Limit: 100}); err != nil || len(p.Records) == 0 {
						b.Fatal(len(p.Records), err)
					}
				}
			})
		}
		// The pages as the API sends them, read from the row store by an
		// iterator a part or by a Get a record.
		for _, iter := range []bool{true, false} {
			b.Run(fmt.Sprintf("list_user_%s_encoded_iterator_%v", g, iter), func(b *testing.B) {
				defer func(old int) { rowIterFrom = old }(rowIterFrom)
				if !iter {
					rowIterFrom = math.MaxInt
				}
				defer reportCPU(b)()
				for i := 0; b.Loop(); i++ {
					if p, err := s.ListEncoded(ctx, store.Query{UserID: users[i%len(users)], Limit: 100}); err != nil || len(p.Records) == 0 {
						b.Fatal(len(p.Records), err)
					}
				}
			})
		}
		for _, fast := range []bool{true, false} {
			b.Run(fmt.Sprintf("latest_%s_index_%v", g, fast), func(b *testing.B) {
				defer func(old bool) { latestFast = old }(latestFast)
				latestFast = fast
				for i := 0; b.Loop(); i++ {
					if _, err := s.LatestForUser(ctx, users[i%len(users)]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	// A page of each of 2,000 users drawn at random, each read once, half
	// with the row store's reads one at a time and half in parts at once:
	// after the page cache is dropped (echo 3 >/proc/sys/vm/drop_caches),
	// what a user's older history costs when it is on disk only.
	if s.rows != nil {
		sample := pick("SELECT user_id FROM users_latest USING SAMPLE 2000 ROWS")
		for k, readers := range []int{1, rowReaders} {
			users := sample[k*len(sample)/2 : (k+1)*len(sample)/2]
			b.Run(fmt.Sprintf("list_user_sample_readers_%d", readers), func(b *testing.B) {
				defer func(old int) { rowReaders = old }(rowReaders)
				rowReaders = readers
				defer reportCPU(b)()
				before := s.rows.db.Metrics().BlockCache
				defer func() {
					m := s.rows.db.Metrics().BlockCache
					b.ReportMetric(float64(m.Misses-before.Misses)/float64(b.N), "block-misses/op")
					b.ReportMetric(float64(m.Hits-before.Hits)/float64(b.N), "block-hits/op")
				}()
				for i := 0; b.Loop(); i++ {
					if i == len(users) {
						b.Log("each user read once: the reads from here on are of pages read before")
					}
					if p, err := s.List(ctx, store.Query{UserID: users[i%len(users)], Limit: 100}); err != nil || len(p.Records) == 0 {
						b.Fatal(len(p.Records), err)
					}
				}
			})
		}
	}
	// The store's last hour: the hour before its newest record (a copy
	// of a store is read after its load stopped).
	var newest time.Time
	if err := s.db.QueryRowContext(ctx, "SELECT max(occurred_at) FROM "+s.snap.Load().from).Scan(&newest); err != nil {
		b.Fatal(err)
	}
	// With the rollup's minutes from memory and from the file (a store
	// whose newest record is less than an hour old has them in memory).
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("stats_country_last_hour_minutes_in_memory_%v", on), func(b *testing.B) {
			defer func(old bool) { minutesOn = old }(minutesOn)
			minutesOn = on
			before := s.statsFromMemory.Load()
			defer reportCPU(b)()
			for b.Loop() {
				if _, err := s.Stats(ctx, store.StatsQuery{GroupBy: store.GroupByCountry, Query: store.Query{Since: newest.Add(-time.Hour)}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(s.statsFromMemory.Load()-before)/float64(b.N), "from-memory/op")
		})
	}
}

// TestMainRowGroups: the main file's row groups are RowGroupSize rows, and
// a move of whole row groups leaves little in the main file's WAL: DuckDB
// wrote them into the file as the move ran (its optimistic writes), where
// with its default row group (122,880 rows, more than the move) every
// record goes into the WAL. The records read back after a reopen.
func TestMainRowGroups(t *testing.T) {
	defer func(old int64, rg int) { segmentBytes, rowGroupSize = old, rg }(segmentBytes, rowGroupSize)
	segmentBytes = 1 // each write its own segment
	recs := storetest.Records(3, 2*RowGroupSize)
	wal := map[int]int64{}
	for _, rg := range []int{RowGroupSize, 122_880} {
		rowGroupSize = rg
		path := tempPath(t)
		s := openPath(t, path)
		for i := 0; i < len(recs); i += RowGroupSize {
			if err := s.Write(t.Context(), recs[i:i+RowGroupSize]); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Settle(t.Context()); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path + ".wal")
		if err != nil {
			t.Fatal(err)
		}
		wal[rg] = st.Size()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if rg != RowGroupSize {
			continue
		}
		s = openPath(t, path)
		if got, want := eventIDs(walkAll(t, s)), eventIDs(recs); !slices.Equal(got, want) {
			t.Fatalf("the records in seq order: %d, want %d (first difference at %d)", len(got), len(want), diffAt(got, want))
		}
		var groups, largest int64
		if err := s.db.QueryRowContext(t.Context(), `SELECT count(*), max(n) FROM (SELECT row_group_id, max(start + count) - min(start) AS n
FROM pragma_storage_info('main.events') WHERE column_id = 0 GROUP BY row_group_id)`).Scan(&groups, &largest); err != nil {
			t.Fatal(err)
		}
		if groups < 2 || largest > int64(RowGroupSize) {
			t.Errorf("%d row groups, the largest of %d rows; want 2 or more of at most %d", groups, largest, RowGroupSize)
		}
	}
	t.Logf("the main file's WAL after moving %d records: %d bytes with row groups of %d rows, %d with 122,880", len(recs), wal[RowGroupSize], RowGroupSize, wal[122_880])
	if wal[RowGroupSize]*4 > wal[122_880] {
		t.Errorf("the main file's WAL after the moves: %d bytes with row groups of %d rows, %d with 122,880; want under a quarter", wal[RowGroupSize], RowGroupSize, wal[122_880])
	}
}

// TestMoveSeenOnce: reads beside moves of whole row groups (the moves
// DuckDB hands to the table during their commit, visible before the
// commit's update of cold_max: see movedOnly) see each record once, through
// the store's view of every record, a page of the newest records and the
// stats, and all of them once the writes end.
func TestMoveSeenOnce(t *testing.T) {
	defer func(old int64, rg int) { segmentBytes, rowGroupSize = old, rg }(segmentBytes, rowGroupSize)
	segmentBytes = 1 // each write its own segment, moved as it is
	rowGroupSize = 2048
	const writes = 40
	recs := storetest.Records(11, writes*rowGroupSize)
	s := openPath(t, tempPath(t))
	ctx := t.Context()
	done := make(chan struct{})
	var reads, moved atomic.Int64
	var wg sync.WaitGroup
	fail := make(chan string, 2)
	// reader calls read until the writes end or read fails (a message);
	// the test reports the first failure.
	reader := func(read func() string) {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if msg := read(); msg != "" {
					fail <- msg
					return
				}
				reads.Add(1)
			}
		})
	}
	reader(func() string {
		from, release := s.view()
		defer release()
		var n, distinct int64
		if err := s.db.QueryRowContext(ctx, "SELECT count(*), count(DISTINCT seq) FROM "+from).Scan(&n, &distinct); err != nil {
			return err.Error()
		}
		if n != distinct {
			return fmt.Sprintf("a statement over the store's view read %d records of %d seqs", n, distinct)
		}
		return ""
	})
	reader(func() string {
		p, err := s.List(ctx, store.Query{Limit: store.MaxLimit})
		if err != nil {
			return err.Error()
		}
		for i := 1; i < len(p.Records); i++ {
			if p.Records[i].Seq >= p.Records[i-1].Seq {
				return fmt.Sprintf("a page of the newest records: seq %d after %d", p.Records[i].Seq, p.Records[i-1].Seq)
			}
		}
		rows, err := s.Stats(ctx, store.StatsQuery{GroupBy: store.GroupByCountry})
		if err != nil {
			return err.Error()
		}
		var total int64
		for _, r := range rows {
			total += r.Count
		}
		if total > moved.Load()+int64(rowGroupSize) {
			return fmt.Sprintf("the stats counted %d records with at most %d written", total, moved.Load()+int64(rowGroupSize))
		}
		return ""
	})
	for i := 0; i < len(recs); i += rowGroupSize {
		if err := s.Write(ctx, recs[i:i+rowGroupSize]); err != nil {
			t.Fatal(err)
		}
		moved.Add(int64(rowGroupSize))
	}
	if err := s.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	close(done)
	wg.Wait()
	select {
	case msg := <-fail:
		t.Fatal(msg)
	default:
	}
	if got, want := eventIDs(walkAll(t, s)), eventIDs(recs); !slices.Equal(got, want) {
		t.Fatalf("the records in seq order: %d, want %d (first difference at %d)", len(got), len(want), diffAt(got, want))
	}
	t.Logf("%d reads beside %d moves of %d records", reads.Load(), writes, rowGroupSize)
}

// TestOpenContextEnds: the context Open was given ends with the start-up
// (as the app's does); the connections the pool opens afterwards, for the
// mover and for Close, still attach the main file.
func TestOpenContextEnds(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 1
	ctx, cancel := context.WithCancel(t.Context())
	s, err := Open(ctx, Config{Path: tempPath(t)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	// Without the fix the pool's new connections fail and the mover
	// retries for ever: a bound turns that into an error.
	opCtx, stop := context.WithTimeout(t.Context(), time.Minute)
	defer stop()
	recs := storetest.Records(5, 300)
	for i := 0; i < len(recs); i += 100 {
		if err := s.Write(opCtx, recs[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Settle(opCtx); err != nil {
		t.Fatal(err)
	}
	if got, want := eventIDs(walkAll(t, s)), eventIDs(recs); !slices.Equal(got, want) {
		t.Fatalf("the records in seq order: %d, want %d", len(got), len(want))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMovedByUser: without the row store the mover copies each segment
// into the main file sorted by user_key, then seq (moveByUser), each
// segment's records together; with moveByUser off, or with the row store
// (which serves a user's pages), as written, in seq order (rowid is a
// row's place in the table).
func TestMovedByUser(t *testing.T) {
	defer func(old int64, by bool) { segmentBytes, moveByUser = old, by }(segmentBytes, moveByUser)
	segmentBytes = 1
	for _, c := range []struct{ moveByUser, rowStore, byUser bool }{{true, false, true}, {false, false, false}, {true, true, false}} {
		t.Run(fmt.Sprintf("move_by_user_%v/row_store_%v", c.moveByUser, c.rowStore), func(t *testing.T) {
			moveByUser = c.moveByUser
			byUser := c.byUser
			path := tempPath(t)
			s, err := Open(t.Context(), Config{Path: path, NoRowStore: !c.rowStore}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			recs := storetest.Records(1, 3000)
			writes := 0
			for i := 0; i < len(recs); i += 100 {
				batch := append([]event.Record{}, recs[i:i+100]...)
				if i > 0 {
					batch = append(batch, recs[i-1]) // a redelivery: a gap in seq
				}
				if err := s.Write(t.Context(), batch); err != nil {
					t.Fatal(err)
				}
				writes++
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := sql.Open("duckdb", path)
			if err != nil {
				t.Fatal(err)
			}
			// Runs: the rows, by rowid, cut wherever (user_key, seq), or seq
			// alone, does not increase; and whether each run's seqs lie
			// above the run's before it.
			key := "user_key, seq"
			if !byUser {
				key = "seq"
			}
			var n, runs, overlaps int64
			err = db.QueryRowContext(t.Context(), `WITH r AS (SELECT rowid, seq, CASE WHEN (`+key+`) > lag((`+key+`)) OVER (ORDER BY rowid) THEN 0 ELSE 1 END AS cut FROM events),
g AS (SELECT seq, sum(cut) OVER (ORDER BY rowid) AS run FROM r),
b AS (SELECT run, min(seq) AS lo, max(seq) AS hi FROM g GROUP BY run)
SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM b),
       (SELECT count(*) FROM (SELECT lo, lag(hi) OVER (ORDER BY run) AS prev FROM b) WHERE lo <= prev)`).Scan(&n, &runs, &overlaps)
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			want := int64(writes)
			if !byUser {
				want = 1
			}
			if n != int64(len(recs)) || runs < 1 || runs > want || overlaps != 0 {
				t.Fatalf("%d rows in the main file in %d runs of increasing (%s), %d of them below the run before; want %d rows in 1 to %d runs, none below", n, runs, key, overlaps, len(recs), want)
			}
			// Every record reads back in seq order, and each user's, newest
			// first, page by page.
			s = openDuckOnly(t, path)
			if got, want := eventIDs(walkAll(t, s)), eventIDs(recs); !slices.Equal(got, want) {
				t.Fatalf("the records in seq order: %d, want %d (first difference at %d)", len(got), len(want), diffAt(got, want))
			}
			for _, u := range []int{0, 17, 1500, 2999} {
				var want []string
				for i := len(recs) - 1; i >= 0; i-- {
					if recs[i].User.ID == recs[u].User.ID {
						want = append(want, recs[i].EventID)
					}
				}
				if got := eventIDs(walk(t, s, store.Query{UserID: recs[u].User.ID, Limit: 2})); !slices.Equal(got, want) {
					t.Errorf("user %s: %v, want %v", recs[u].User.ID, got, want)
				}
			}
		})
	}
}

// TestGetDuringMoves: Get and LatestForUser read a record from the main
// file alone once it is moved and from the segments before; while every
// write starts a new segment and the mover moves them, a record written is
// always found, and a user's latest is never older than the latest written.
func TestGetDuringMoves(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 1
	s := openPath(t, tempPath(t))
	recs := storetest.Records(3, 3000) // 30 segments: each holds DuckDB memory until moved
	var written atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := 0; i < len(recs); i += 100 {
			if err := s.Write(context.Background(), slices.Clone(recs[i:i+100])); err != nil {
				done <- err
				return
			}
			written.Store(int64(i + 100))
		}
		done <- nil
	}()
	gets := 0
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		n := written.Load()
		if n == 0 {
			continue
		}
		for _, i := range []int64{n - 1, n / 2, int64(gets) % n} {
			got, err := s.Get(t.Context(), recs[i].EventID)
			if err != nil || got.EventID != recs[i].EventID {
				t.Fatalf("Get(%s) after %d written: %v", recs[i].EventID, n, err)
			}
			// The user's latest of the records written by then (at
			// least n; later writes may add one of theirs).
			user := recs[i].User.ID
			want := -1
			for k := range recs[:n] {
				if recs[k].User.ID == user && (want < 0 || !recs[k].OccurredAt.Before(recs[want].OccurredAt)) {
					want = k
				}
			}
			latest, err := s.LatestForUser(t.Context(), user)
			if err != nil {
				t.Fatalf("LatestForUser(%s) after %d written: %v", user, n, err)
			}
			if w := recs[want]; latest.OccurredAt.Before(w.OccurredAt) || latest.OccurredAt.Equal(w.OccurredAt) && latest.Seq < int64(want+1) {
				t.Fatalf("LatestForUser(%s) = %s (%v), want %s (%v) or later", user, latest.EventID, latest.OccurredAt, w.EventID, w.OccurredAt)
			}
			gets++
		}
	}
	t.Logf("%d gets while %d records were written and moved", gets, len(recs))
}

// TestWriterWaitsForTheMover: while the mover cannot move, a writer whose
// every batch fills a segment stops at maxSegments hot segments, and goes
// on, losing nothing, once the mover moves again.
func TestWriterWaitsForTheMover(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 1
	waiting := make(chan int, 1)
	moverWaitHook = func(n int) {
		select {
		case waiting <- n:
		default:
		}
	}
	defer func() { moverWaitHook = nil }()
	s := openPath(t, tempPath(t))
	s.moveMu.Lock() // the mover waits for it before each move
	const batches = 10
	var recs []event.Record
	done := make(chan error, 1)
	go func() {
		for b := range batches {
			batch := storetest.Records(uint64(100+b), 10)
			if err := s.Write(t.Context(), batch); err != nil {
				done <- err
				return
			}
			recs = append(recs, batch...)
		}
		done <- nil
	}()
	select {
	case n := <-waiting:
		if n != maxSegments || len(s.segments()) != maxSegments {
			t.Errorf("the writer waits at %d hot segments (%d now), want %d", n, len(s.segments()), maxSegments)
		}
	case err := <-done:
		s.moveMu.Unlock()
		t.Fatalf("%d writes, each filling a segment, went through with the mover stopped (%v): %d hot segments, want the writer to wait at %d",
			batches, err, len(s.segments()), maxSegments)
	}
	s.moveMu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(s.segments()); n > maxSegments {
		t.Errorf("%d hot segments, want at most %d", n, maxSegments)
	}
	for _, r := range recs {
		got, err := s.Get(t.Context(), r.EventID)
		if err != nil || got.EventID != r.EventID {
			t.Fatalf("Get(%s) = %v, %v", r.EventID, got.EventID, err)
		}
	}
}

// heldRead is a read transaction a test keeps open on the main file,
// which it ends when it likes.
type heldRead struct{ done func() }

// hold begins one, if none is open, that has read the main file.
func (r *heldRead) hold(t *testing.T, s *Store) {
	t.Helper()
	if r.done != nil {
		return
	}
	tx, done, err := s.readTx(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRowContext(t.Context(), "SELECT count(*) FROM main.events").Scan(&n); err != nil {
		done()
		t.Fatal(err)
	}
	r.done = done
}

// end ends the one open, if any.
func (r *heldRead) end() {
	if r.done != nil {
		r.done()
		r.done = nil
	}
}

// TestCheckpointBesideReads: the main file's WAL is folded into the file
// once it passes mainCheckpointBytes although a read is open on the main
// file at each move's commit (DuckDB's own checkpoint in a commit gives way
// to any open transaction when the commit updated rows, as the mover's
// do): the mover's CHECKPOINT, tried again once the read has ended.
func TestCheckpointBesideReads(t *testing.T) {
	defer func(seg, cp int64) { segmentBytes, mainCheckpointBytes = seg, cp }(segmentBytes, mainCheckpointBytes)
	segmentBytes, mainCheckpointBytes = 64<<10, 256<<10
	path := tempPath(t)
	s := openPath(t, path)
	ctx := t.Context()
	var (
		read    heldRead
		retries int
	)
	defer read.end()
	// A CHECKPOINT beside the read fails; the read then ends, as reads do.
	checkpointBusyHook = func() { retries++; read.end() }
	defer func() { checkpointBusyHook = nil }()
	want := 0
	var walMax int64
	for b := range 40 {
		read.hold(t, s)
		if err := s.Write(ctx, storetest.Records(uint64(1000+b), 200)); err != nil {
			t.Fatal(err)
		}
		want += 200
		if err := s.Settle(ctx); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(path + ".wal"); err == nil { // none once checkpointed
			walMax = max(walMax, st.Size())
		} else if !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if walMax >= mainCheckpointBytes || retries == 0 {
		t.Errorf("the main file's WAL reached %d bytes after a move, with %d checkpoints tried again beside a read; want it checkpointed below %d",
			walMax, retries, mainCheckpointBytes)
	}
	read.end()
	if n := len(walkAll(t, s)); n != want {
		t.Errorf("%d records, want %d", n, want)
	}
}

// TestMemory: the buffer manager's memory, by tag, grows with the records
// not yet moved into the main file, and its total is the tags' sum.
func TestMemory(t *testing.T) {
	s := openPath(t, tempPath(t))
	ctx := context.Background()
	before, err := s.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, storetest.Records(1, 5000)); err != nil {
		t.Fatal(err)
	}
	after, err := s.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before %+v, after %+v", before, after)
	if after.Bytes <= before.Bytes {
		t.Errorf("memory after writing 5,000 records = %d bytes, before %d: want more", after.Bytes, before.Bytes)
	}
	if after.IDIndexBytes != 0 { // 5,000 ids over 256 parts stay in Go's heap (offHeapMin); TestIDIndexMappedBytes
		t.Errorf("the event id index's mapped memory with 5,000 records: %d bytes, want 0", after.IDIndexBytes)
	}
	var sum int64
	for _, n := range after.ByTag {
		sum += n
	}
	if sum != after.Bytes {
		t.Errorf("the tags sum to %d bytes, the total is %d", sum, after.Bytes)
	}
	if a := after.Allocator; runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		if a == nil {
			t.Fatal("no allocator figures: DuckDB's Linux build has jemalloc")
		}
		t.Logf("allocator %+v", *a)
		if a.Allocated < after.Bytes || a.Resident < a.Active || a.Active < a.Allocated {
			t.Errorf("allocator %+v: want allocated ≥ the buffer manager's %d, active ≥ allocated, resident ≥ active", *a, after.Bytes)
		}
	}
}

// TestTempDirectory: DuckDB spills beside the store's file, not into the
// process's working directory (its default for the in-memory database the
// file is attached to).
func TestTempDirectory(t *testing.T) {
	path := tempPath(t)
	s := openPath(t, path)
	var dir string
	if err := s.db.QueryRowContext(t.Context(), `SELECT current_setting('temp_directory')`).Scan(&dir); err != nil {
		t.Fatal(err)
	}
	if want := path + ".tmp"; dir != want {
		t.Fatalf("temp_directory %q, want %q", dir, want)
	}
}
