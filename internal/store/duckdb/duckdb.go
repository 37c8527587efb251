//go:build !noduckdb

// Package duckdb is the embedded store: one DuckDB file under the data
// directory, written through DuckDB's Appender and read with SQL.
//
// DuckDB is cgo. A build with -tags noduckdb (the static binary of the
// container image, docs/image.md) leaves the store out: only Config (its
// flags) remains, and the app answers a duckdb:// store URL with an error.
//
// # Layout
//
// The main file's table events has one column per event.Columns() (types
// from event.DuckDBColumns) plus seq BIGINT, the store's insertion
// sequence, used as the pagination cursor and as the live-stream resume
// id. It has no index: List, Get and the other reads rely on DuckDB's per
// row group min/max statistics (zone maps), and seq grows with the
// physical order of the table, so "seq = x" or "seq < cursor" skips whole
// row groups. Table users_latest holds the seq of each user's latest
// record (by occurred_at, then seq), the access path of LatestForUser.
// Table stats_minute is the stats rollup (rollup.go), kept with the
// records; tables user_run_<n>, listed in user_runs, the user runs
// (runs.go), copies of the records clustered by user. Table skyjoin_meta
// records the schema version, the last seq handed out by a delete,
// cold_max, the highest seq in the main file's events, and rollup_hi, the
// highest the stats rollup covers.
//
// # Hot segments
//
// The writer does not append to the main file. It appends to a hot
// segment: a DuckDB file of its own next to it (Path + ".hot-000001", ...),
// attached to the same DuckDB instance as hot_<n>, with the same table
// events. Once a segment's WAL reaches SegmentBytes (16 MiB, about 30,000
// records), the writer starts a new one, and a background mover copies
// the full one into the main file's events (in seq order, or, without
// the row store, sorted by user, then seq: moveByUser), with users_latest and
// cold_max, in one transaction, then detaches the segment and deletes its
// files. Every read runs over the union of the main file's events and the
// segments' (view), each segment's rows counted only above cold_max as of
// the same statement and the main file's only at or below it (movedOnly:
// DuckDB shows a move of whole row groups before its commit has updated
// cold_max), so that a record is seen once whether or not its segment has
// been moved yet; a moved segment is detached once no read is
// using it, in a goroutine of its own, so that neither the mover nor the
// writer waits for a read.
//
// A segment's records stay in DuckDB's memory until it is moved (38 MB
// for a segment of 34,000 of the conformance suite's records), so the hot
// segments are at most MaxSegments (3): a Write that fills the active one
// while the others wait for the mover waits for a move before it starts a
// new one. When the writer outruns the mover (a saturated pipeline, a long
// checkpoint of a large main file), the backlog stays in the broker, on
// disk, where admission control sees it, not in DuckDB's memory.
//
// Why: DuckDB checkpoints a database (folds its WAL into the file)
// synchronously, and a checkpoint that writes a table holds that table's
// lock, so that every commit into it waits, for a time that grows with the
// table: measured with BenchmarkWrite (1,000-record batches, no index),
// 0.3-3.7 s every 17k-137k records, whatever the checkpoint threshold,
// and the primary key's ART index made it no better. Commits into another
// attached database do not wait (a writer into one went on at a 28 ms
// worst case while the other took 300k-record bulk inserts and
// checkpoints). So the main file's checkpoints, run by the mover's
// commits, stall only the mover; a segment never reaches the checkpoint
// threshold, and is deleted rather than checkpointed.
//
// The main file's row groups are RowGroupSize (16,384) rows rather than
// DuckDB's 122,880, so that a move fills whole row groups, which DuckDB
// writes into the file, compressed, while the move's insert runs: the
// commit logs where they are, not the records, and the checkpoint has little
// left to do. The main file is attached (ATTACH's ROW_GROUP_SIZE) to an
// in-memory database that every connection uses as its default.
//
// # Idempotency
//
// event_id is the primary key, kept by the store in the process rather
// than as an ART index (which costs about 27 bytes per record in DuckDB's
// memory and writes itself at every checkpoint): idIndex maps a 64-bit
// hash of each stored event_id (seeded at random per process) to its seq,
// 16 bytes per record outside Go's heap (seqTable), built at Open from the
// stored records. Write
// looks each event_id up; a hit is confirmed by reading the record at that
// seq (a hash shared by two ids falls back to a scan of the event_id
// column), and a record whose event_id is stored is not stored again:
// Write returns the stored record in its place (store.Writer). Get reads
// by the seq the index gives.
//
// # Per-user reads
//
// userIndex, an in-process map, holds each user's seqs (8 bytes a record)
// and the seq and occurred_at of its latest record (a map entry a user),
// built from the file at open. It also keeps a copy of the latest record
// of the users of the last LatestCacheSize records written (keepLatest),
// which LatestForUser returns as a read of the store would (times in
// microseconds, the properties as DuckDB's JSON column gives them back;
// TestLatestKept compares the two field for field); a weather backfill
// drops the copies, a delete those of its records. For the other users
// LatestForUser reads that record by seq, in
// the main file or a hot segment; where the index does not know it (a
// delete took a user's latest and left others) it reads users_latest (one
// row per user, with its primary key, kept by the mover) and then the
// record by seq, plus the user's rows in the hot segments. List for a user
// takes the user's seqs from the index, and reads them a page at a time: those the user runs cover
// from the runs that hold them, the others by seq. A run (runs.go) is a
// copy of a range of the main file's records sorted by user, where a
// user's records sit together; read by seq from the main file, each
// record scattered over it costs DuckDB about 2.5 ms (it decompresses the
// vector of every column around the row): see docs/benchmarks.md.
//
// # Memory
//
// At Open the store reads every record's event_id, user_id and seq to
// build both indexes (by ranges of seq, collecting the garbage as it
// goes): 26 M records took about 38 s and leave 16 bytes a record in the
// id index, mapped outside Go's heap so that the collector neither scans
// it nor lets that much garbage pile up beside it, and 8 in the user index
// (a Go map of slices), plus the latest records kept (about 1.5 KB each,
// 6 MB for LatestCacheSize). DuckDB's own memory (its buffer pool of table
// blocks, and the hot segments' rows) is bounded by Config.MemoryLimit.
//
// # Writes
//
// Writers are serialised inside the Store (DuckDB allows one process per
// file, so this Store is the only writer). Write numbers the first
// occurrence of each event_id of the batch not stored before from the
// store's sequence, in batch order (repeats within the batch are dropped
// in Go), and appends those records to the active segment through one
// Appender, whose flush is one transaction. seq is strictly increasing in
// insertion order; it has gaps only where records were deleted or a
// failed append was skipped over. Deletes and weather updates run on the
// main file and every segment, each in a transaction of its own, under a
// lock that keeps the mover out meanwhile.
//
// # Durability
//
// DuckDB appends a transaction's changes to the write-ahead log of the
// database it writes (the segment's, Path + ".hot-N.wal") and fsyncs it
// before COMMIT returns, so a Write that returned nil survives a crash of
// the process (TestCrash kills a writer with SIGKILL, with segments small
// enough that the kill finds some being written, waiting or being moved)
// and, on a disk that honours fsync, of the machine. On the next open
// DuckDB replays the WALs; Open attaches the segments left behind, deletes
// those already moved (all their seq at or below cold_max) and hands the
// others to the mover. Close moves every segment and runs a final
// CHECKPOINT, so a clean restart replays nothing and leaves one file.
//
// # Checkpoints
//
// The main file's WAL is folded into the file by the mover: after each
// move, once the WAL has passed MainCheckpointBytes (64 MiB), it runs
// CHECKPOINT. DuckDB's own checkpoint, in the commit that crosses
// CheckpointThreshold (64 MiB, a setting of every attached database, which
// a segment's WAL never reaches), is not enough: the mover's commits update
// rows (users_latest, the rollup, cold_max), and DuckDB does not checkpoint
// a transaction's updates while another transaction is open on the file,
// which under a steady stream of reads is nearly always. The WAL then grew
// without bound (0.9 GB six minutes into a run on 23 M records), and with it
// the records DuckDB kept in memory and spilled to its temporary files. A
// CHECKPOINT statement runs beside reads (a concurrent checkpoint), but not
// beside one that began before the last commit into the file, so the mover
// tries again for a few seconds, committing nothing meanwhile, until such
// reads have ended. Reads go on during a checkpoint (a List and a Get took
// at most 0.1 s during a 1 s checkpoint), and the writer, in its segment,
// takes no lock the checkpoint holds, but shares the machine with it: on
// 2 cores under load its slowest writes grow (docs/benchmarks.md).
package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// SchemaVersion is the version of the table layout, recorded in
// skyjoin_meta. Open migrates a file of an older version (see migrations)
// and refuses one of a newer version.
//
//   - 1: the first layout.
//   - 2: properties JSON (typed event properties), added as the last
//     column (after seq): DuckDB adds columns at the end, and the store
//     names its columns in every statement and in the Appender, so their
//     order in the file does not matter.
//   - 3: no index on events (no primary key, no user_id index): the
//     event id index lives in the process (idIndex) and the per-user reads
//     use users_latest; skyjoin_meta records cold_max. The migration
//     rebuilds the table (DuckDB cannot drop a primary key).
//   - 4: stats_minute, the stats rollup (rollup.go), built from the
//     records by the migration.
//   - 5: user_runs, the records clustered by user (runs.go), cut after
//     the migration if Config.UserRuns is on.
//   - 6: rollup_hi in skyjoin_meta: the stats rollup covers the main
//     file's records up to it (rollup.go), which version 5 kept equal to
//     cold_max.
//   - 7: user_key, a number for the user of each record of the main file
//     (userKeyDDL), which the records above user_key_lo in skyjoin_meta
//     have: cold_max when the file was migrated, 0 for a new one.
const SchemaVersion = 7

// migrations[v] takes a file from schema version v to v+1, inside the
// transaction of migrate. (Adding a column keeps the indexes; dropping and
// re-creating the user_id index in the same transaction crashes DuckDB
// 1.5, so it is left alone.)
var migrations = map[int][]string{
	1: {
		`ALTER TABLE events ADD COLUMN IF NOT EXISTS properties JSON`,
	},
	2: {
		// The new table also lets the coordinates be NULL, which files
		// made before version 2 required.
		strings.Replace(eventsDDL, "TABLE IF NOT EXISTS events ", "TABLE events_v3 ", 1),
		"INSERT INTO events_v3 (" + selectColumns + ") SELECT " + selectColumns + " FROM events ORDER BY seq",
		`DROP TABLE events`,
		`ALTER TABLE events_v3 RENAME TO events`,
		usersLatestDDL,
		fmt.Sprintf(upsertLatestSQL, "events"),
		coldMaxInit,
	},
	3: {
		statsMinuteDDL,
		`DELETE FROM stats_minute`,
		rollupSQL("events"),
	},
	// With Config.UserRuns, the clusterer cuts the runs in the background,
	// or Settle (skyjoin migrate) does: 23 M records in 5 min 37 s.
	4: {userRunsDDL},
	5: {rollupHiInit},
	// The records already in the file keep a NULL key: filling it in
	// rewrites the column of every record, which KeyUsers does a range at
	// a time (skyjoin migrate); until then a user's records below
	// user_key_lo are read by user_id, as before.
	6: {userKeyDDL, userKeyLoInit},
}

// userKeyDDL adds user_key to the main file's events: userKeyOf(user_id),
// set by the move that copies a record in (hot.go), NULL in the hot
// segments. A page of a user's records compares it rather than user_id
// over the rows of the records' range of seq: 8 bytes a row, where user_id
// is a string DuckDB decompresses (FSST) to compare; on the 20 M-record
// store a page of a user with a week of history took half the CPU
// (docs/benchmarks.md, tenth round).
const userKeyDDL = `ALTER TABLE events ADD COLUMN IF NOT EXISTS user_key UBIGINT`

// userKeyOf is the SQL of a user id's key: the low 64 bits of its MD5,
// which no version of DuckDB computes differently (its hash() may change).
func userKeyOf(expr string) string { return "md5_number_lower(" + expr + ")" }

// userKeyLoInit records user_key_lo: the main file's records of seq above
// it have their user_key.
const userKeyLoInit = `INSERT INTO skyjoin_meta SELECT 'user_key_lo', value FROM skyjoin_meta WHERE key = 'cold_max'`

// usersLatestDDL is the table of each user's latest record (by occurred_at,
// then seq) in the main file's events: the access path of LatestForUser.
// 100,000 users take a few MB; its primary key is an index of that size.
const usersLatestDDL = `CREATE TABLE IF NOT EXISTS users_latest (user_id VARCHAR PRIMARY KEY, occurred_at TIMESTAMP NOT NULL, seq BIGINT NOT NULL)`

// coldMaxInit records cold_max, the highest seq in the main file's events.
const coldMaxInit = `INSERT INTO skyjoin_meta SELECT 'cold_max', CAST(coalesce(max(seq), 0) AS VARCHAR) FROM events`

// rollupHiInit records rollup_hi, the highest seq of the main file's
// records the stats rollup covers (rollup.go), as cold_max: a file of
// version 5 or a new one has a rollup of every record of its main file.
const rollupHiInit = `INSERT INTO skyjoin_meta SELECT 'rollup_hi', value FROM skyjoin_meta WHERE key = 'cold_max'`

// CheckpointThreshold is the WAL size, in bytes, at which DuckDB
// checkpoints a database in the commit that finds its WAL past it (DuckDB
// setting checkpoint_threshold, default 16 MiB). It applies to the hot
// segments too, whose WAL must never reach it (SegmentBytes).
const CheckpointThreshold = 64 << 20

// checkpointThreshold is CheckpointThreshold; benchmarks vary it.
var checkpointThreshold int64 = CheckpointThreshold

// MainCheckpointBytes is the size of the main file's WAL past which the
// mover checkpoints it (checkpointIfDue). Each checkpoint of a large file
// costs the writer (docs/benchmarks.md: on 23 M records, one after every
// move, at 16 MiB, doubled the writer's stalls over 64 MiB), so it is not
// smaller than CheckpointThreshold.
const MainCheckpointBytes = CheckpointThreshold

// mainCheckpointBytes is MainCheckpointBytes; tests vary it.
var mainCheckpointBytes int64 = MainCheckpointBytes

// mainAlias is the main file's name in its DuckDB instance.
const mainAlias = "skyjoin"

// RowGroupSize is the main file's row group, in rows (DuckDB's default:
// 122,880). A transaction that appends at least a row group to a table
// has DuckDB write it into the file, compressed, while it runs (its
// optimistic writes): its commit logs where the row groups are rather
// than the records, and the checkpoint after it has them already. A move
// of a hot segment (about 30,000 records) is under DuckDB's default, so
// every record went into the WAL, and the checkpoint read and compressed
// it again. Such a commit shows its rows before its other changes
// (movedOnly says how reads stay exact).
const RowGroupSize = 16_384

// rowGroupSize is RowGroupSize; benchmarks vary it.
var rowGroupSize = RowGroupSize

// maxConns bounds the connections of the pool: one is the writer's, the rest
// serve reads concurrently with it.
const maxConns = 8

// slowWrite is how long a Write may take before it is logged as slow (for
// instance when it ran a checkpoint).
const slowWrite = 250 * time.Millisecond

// slowRead is how long a stats read may take before it is logged as slow,
// with the way it took (stats.go).
const slowRead = 100 * time.Millisecond

var _ store.Store = (*Store)(nil)
var _ store.LineWriter = (*Store)(nil)

// Store is the DuckDB store. It is safe for concurrent use.
type Store struct {
	db   *sql.DB
	log  *slog.Logger
	path string // absolute, the key in openPaths

	// wsem serialises writers and Close; it guards the fields below.
	wsem    chan struct{}
	wconn   *sql.Conn // the writer's connection; holds the staging table
	lastSeq int64     // the highest seq handed out
	closed  bool
	row     []driver.Value     // AppendRow buffer
	lineEnc *event.LineEncoder // storedLines' encoder
	// app is the writer's appender, kept open across writes to the table
	// appKey names (catalog.table): a new appender costs DuckDB as much as
	// a flush of a hundred records (it binds every column and sets up a
	// chunk of each). Each write flushes it, committing; closeAppender
	// ends it before the table goes (a rotation) and at Close.
	app           *duckdb.Appender
	appKey        string
	appPositional bool // it takes a row by position, not by column name

	// failed is closed, and failure set, once DuckDB has answered with a
	// fatal error: it has invalidated the database, and every statement
	// fails until the process opens the files again (noteFatal).
	failOnce sync.Once
	failed   chan struct{}
	failure  error

	// maxSeq is lastSeq for readers: List's newest-first pages start from it.
	maxSeq atomic.Int64

	// ids maps stored event ids to their seq (the primary key); users
	// each user id to its records' seqs.
	ids   *idIndex
	users *userIndex

	// snap is the current segment list and the FROM expression of reads
	// over it; segMu serialises its changes (a new segment, a moved one).
	snap  atomic.Pointer[snapshot]
	segMu sync.Mutex
	// retiring counts the moved segments waiting for their reads to end
	// before they are detached (retire).
	retiring sync.WaitGroup

	// moveMu serialises moves of segments with deletes and updates, and
	// guards coldMax, the highest seq in the main file's events, and
	// rollupHi, the highest the stats rollup covers (rollup.go).
	moveMu   sync.Mutex
	coldMax  int64
	rollupHi int64
	// userKeyLo is user_key_lo: the main file's records of seq above it
	// have their user_key (schema version 7). It only goes down
	// (KeyUsers), after the commit that gave the records their keys.
	userKeyLo atomic.Int64
	// rollupMu keeps the reads of the stats rollup (stats_minute) apart
	// from the transactions that change it, from their first change to
	// their commit: a read beside a move's insert into the rollup saw
	// garbage strings now and then (about once in 100 runs of
	// TestConformanceSegments/Stats with the CPU busy; not with the
	// rollup read left out, nor with the compaction left out: the move's
	// insert). Reads hold it shared. The transactions that take it are
	// small (rollUp), but DuckDB may checkpoint in their commit, so a read
	// that finds it taken reads the records instead (Stats).
	rollupMu sync.RWMutex
	// recent holds the records above rollup_hi for Stats (recent.go).
	recent recentStats
	// minutes holds the rollup's recent minutes for Stats (minutes.go).
	minutes recentMinutes
	// editMu keeps Stats' reads from memory (statsMinutes) apart from
	// the changes to records already rolled up: deletes and weather
	// backfills take it, the reads hold it shared.
	editMu sync.RWMutex
	// statsFromMemory counts the stats reads statsMinutes answered.
	statsFromMemory atomic.Int64
	// rollupTouched are the minutes the last move added stats_minute rows
	// to, with how many moves in a row did (rollUp); moveMu
	// guards it.
	rollupTouched map[int64]int
	// runsMu serialises cutting and merging the user runs (runs.go) with
	// the deletes and updates that change them; it is taken after moveMu.
	runsMu sync.Mutex
	// coldSeen is coldMax for the reads, set once the main file has the
	// records up to it: a record of seq <= coldSeen is read from the main
	// file alone, one above it from the segments of the read's snapshot.
	coldSeen atomic.Int64
	// getMain reads a record of the main file by seq and event_id, and
	// getMainUser by seq and user_id, prepared once (planning a read costs
	// as much as running it).
	getMain, getMainUser *sql.Stmt

	kick      chan struct{}
	stopMover context.CancelFunc
	moverDone chan struct{}
	// userRuns: Config.UserRuns. clusterKick wakes runClusterer;
	// clustererDone closes when it ends (stopMover stops it too), or at
	// once without user runs.
	userRuns      bool
	clusterKick   chan struct{}
	clustererDone chan struct{}
	// rows is the row store (rows.go), nil with Config.NoRowStore.
	rows *rowStore
	// sortMoves: the mover sorts a segment by user (moveByUser), as there
	// is no row store to read a user's page from (Config.NoRowStore).
	sortMoves bool
}

// A process must not open one file twice: the driver would share the DuckDB
// instance and two Stores would hand out the same seq values.
var (
	openMu    sync.Mutex
	openPaths = map[string]bool{}
)

// Open opens or creates the store at cfg.Path.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("duckdb: open: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("duckdb: open %s: %w", cfg.Path, err)
	}
	openMu.Lock()
	if openPaths[abs] {
		openMu.Unlock()
		return nil, fmt.Errorf("duckdb: open %s: already open in this process", abs)
	}
	openPaths[abs] = true
	openMu.Unlock()

	s, err := open(ctx, abs, cfg, log)
	if err != nil {
		openMu.Lock()
		delete(openPaths, abs)
		openMu.Unlock()
		return nil, fmt.Errorf("duckdb: open %s: %w", abs, err)
	}
	return s, nil
}

// tempDir is where DuckDB spills what does not fit its memory limit (a
// large sort of the mover's, a compaction's copy): beside the file, as
// DuckDB does for a database opened as a file. The store's database is
// in memory with the file attached, for which DuckDB's default is .tmp in
// the process's working directory: records, personal data among them,
// would land wherever the process was started.
func tempDir(path string) string { return path + ".tmp" }

func open(ctx context.Context, path string, cfg Config, log *slog.Logger) (_ *Store, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create directory: %w", err)
	}
	settings := url.Values{
		"checkpoint_threshold": {strconv.FormatInt(checkpointThreshold>>10, 10) + "KiB"},
		"memory_limit":         {cfg.MemoryLimit},
		"threads":              {strconv.Itoa(cfg.Threads)},
		"temp_directory":       {tempDir(path)},
	}
	// The main file is attached to an in-memory database, rather than
	// opened as it, for its row group size (RowGroupSize), an option of
	// ATTACH only; every connection uses it as its default database.
	attach := "ATTACH IF NOT EXISTS " + quote(path) + " AS " + mainAlias + " (ROW_GROUP_SIZE " + strconv.Itoa(rowGroupSize) + ")"
	// Not ctx: the pool opens connections for as long as the store is open.
	connCtx := context.WithoutCancel(ctx)
	connector, err := duckdb.NewConnector("?"+settings.Encode(), func(ex driver.ExecerContext) error {
		if _, err := ex.ExecContext(connCtx, attach, nil); err != nil {
			return err // names the file and the reason, e.g. the lock held by another process
		}
		_, err := ex.ExecContext(connCtx, "USE "+mainAlias, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector) // db.Close closes the connector
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)

	// A hot segment is deleted once moved: its detach must not write its
	// records into its file first (a third of the writer's CPU). Close
	// checkpoints the main file itself.
	if _, err := db.ExecContext(ctx, `PRAGMA disable_checkpoint_on_shutdown`); err != nil {
		return nil, err
	}
	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	s := &Store{db: db, log: log, path: path, wsem: make(chan struct{}, 1), kick: make(chan struct{}, 1), moverDone: make(chan struct{}),
		clusterKick: make(chan struct{}, 1), clustererDone: make(chan struct{}), userRuns: cfg.UserRuns,
		failed: make(chan struct{})}
	if err := db.QueryRowContext(ctx, `SELECT CAST(value AS BIGINT) FROM skyjoin_meta WHERE key = 'cold_max'`).Scan(&s.coldMax); err != nil {
		return nil, fmt.Errorf("read cold_max: %w", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT CAST(value AS BIGINT) FROM skyjoin_meta WHERE key = 'rollup_hi'`).Scan(&s.rollupHi); err != nil {
		return nil, fmt.Errorf("read rollup_hi: %w", err)
	}
	var keyLo int64
	if err := db.QueryRowContext(ctx, `SELECT CAST(value AS BIGINT) FROM skyjoin_meta WHERE key = 'user_key_lo'`).Scan(&keyLo); err != nil {
		return nil, fmt.Errorf("read user_key_lo: %w", err)
	}
	s.userKeyLo.Store(keyLo)
	s.coldSeen.Store(s.coldMax)
	if s.getMain, err = db.PrepareContext(ctx, "SELECT "+readColumns+" FROM main.events WHERE seq = $1 AND event_id = $2"); err != nil {
		return nil, fmt.Errorf("prepare the read by seq: %w", err)
	}
	if s.getMainUser, err = db.PrepareContext(ctx, "SELECT "+readColumns+" FROM main.events WHERE seq = $1 AND user_id = $2"); err != nil {
		return nil, fmt.Errorf("prepare the read by seq: %w", err)
	}
	s.wconn, err = db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("writer connection: %w", err)
	}
	defer func() {
		if err != nil {
			s.wconn.Close()
		}
	}()
	if _, err := s.wconn.ExecContext(ctx, stagingDDL); err != nil {
		return nil, fmt.Errorf("create staging table: %w", err)
	}
	if s.rollupHi < s.coldMax {
		// A stop between a move's commit and its rollup's: the reads are
		// exact meanwhile (Stats), the rollup catches up now.
		if err := s.rollUp(ctx, s.wconn); err != nil {
			return nil, fmt.Errorf("stats rollup: %w", err)
		}
	}
	// Without them stats read the rollup from the file; the next move
	// loads them again.
	s.reloadMinutes(ctx, s.wconn)
	// The segments a stopped process left: those already moved into the
	// main file are deleted, the others wait for the mover. The writer
	// starts a new one.
	ns, err := segmentNumbers(path)
	if err != nil {
		return nil, fmt.Errorf("find hot segments: %w", err)
	}
	var segs []*segment
	for _, n := range ns {
		seg, err := s.attach(ctx, s.wconn, n)
		if err != nil {
			return nil, err
		}
		var hi sql.NullInt64
		if err := s.wconn.QueryRowContext(ctx, "SELECT max(seq) FROM "+seg.alias+".events").Scan(&hi); err != nil {
			return nil, fmt.Errorf("read segment %s: %w", seg.path, err)
		}
		if !hi.Valid || hi.Int64 <= s.coldMax {
			if err := s.detach(ctx, s.wconn, seg); err != nil {
				return nil, err
			}
			continue
		}
		segs = append(segs, seg)
	}
	next := 1
	if len(ns) > 0 {
		next = ns[len(ns)-1] + 1
	}
	active, err := s.attach(ctx, s.wconn, next)
	if err != nil {
		return nil, err
	}
	s.updateSegments(func([]*segment) []*segment { return append(segs, active) })
	if s.lastSeq, err = s.loadLastSeq(ctx); err != nil {
		return nil, fmt.Errorf("read last seq: %w", err)
	}
	s.maxSeq.Store(s.lastSeq)
	// The records stored so far are not in memory.
	s.recent.reset(s.lastSeq)
	if err := s.loadIDs(ctx); err != nil {
		if s.ids != nil {
			s.ids.free() // off the heap: not collected
		}
		return nil, err
	}
	s.sortMoves = cfg.NoRowStore
	if cfg.NoRowStore {
		if err := removeRowStore(rowsDir(path)); err != nil {
			s.ids.free()
			return nil, err
		}
	} else if s.rows, err = openRowStore(rowsDir(path), log, s.lastSeq); err != nil {
		s.ids.free()
		return nil, err
	}
	moverCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopMover = stop
	go s.runMover(moverCtx)
	if s.userRuns {
		go s.runClusterer(moverCtx)
	} else {
		close(s.clustererDone)
	}
	if len(segs) > 0 {
		s.kickMover()
	}
	// User runs may be due (after an upgrade, or a stop in the middle of
	// cutting one).
	s.kickClusterer()
	log.InfoContext(ctx, "duckdb store open", "path", path, "memory_limit", cfg.MemoryLimit, "threads", cfg.Threads, "user_runs", cfg.UserRuns, "row_store", !cfg.NoRowStore,
		"schema_version", SchemaVersion, "last_seq", s.lastSeq, "records", s.ids.len(), "hot_segments_left", len(segs))
	return s, nil
}

// loadIDs builds the event id index from every stored record.
func (s *Store) loadIDs(ctx context.Context) error {
	start := time.Now()
	from, release := s.view()
	defer release()
	var n int64
	if err := s.wconn.QueryRowContext(ctx, "SELECT count(*) FROM "+from).Scan(&n); err != nil {
		return fmt.Errorf("count the records: %w", err)
	}
	s.ids, s.users = newIDIndex(), newUserIndex()
	ids := s.ids.loader(int(n))
	// The driver makes a string of each id, garbage once hashed: collect
	// it often rather than let the heap grow to twice the index.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	// By ranges of seq, which the row groups' statistics narrow: the
	// driver takes a query's whole result into memory (all of it at
	// once took 2 GB at 20 M records).
	for lo := int64(0); lo < s.lastSeq; lo += loadChunk {
		if err := s.loadIDRange(ctx, from, ids, lo, lo+loadChunk); err != nil {
			return err
		}
	}
	ids.finish()
	s.users.sortAll()
	if err := s.loadLatest(ctx, from); err != nil {
		return err
	}
	// The driver's strings were garbage as soon as hashed: give the
	// memory back now rather than at the next GC cycles.
	debug.FreeOSMemory()
	if d := time.Since(start); d > time.Second {
		s.log.InfoContext(ctx, "duckdb: event id index built", "records", n, "duration_ms", d.Milliseconds())
	}
	return nil
}

// loadLatest notes each user's latest record in the user index: those of
// the main file from users_latest, which the mover keeps in the
// transaction that moves records (one row a user), then the hot segments'
// records, above cold_max. Reading occurred_at of every record instead
// made opening a store of 20 M records 15 s longer.
func (s *Store) loadLatest(ctx context.Context, from string) error {
	for _, query := range []string{
		"SELECT user_id, epoch_us(occurred_at), seq FROM main.users_latest",
		"SELECT user_id, epoch_us(occurred_at), seq FROM " + from + " WHERE seq > " + strconv.FormatInt(s.coldMax, 10),
	} {
		rows, err := s.wconn.QueryContext(ctx, query)
		if err != nil {
			return fmt.Errorf("read the users' latest records: %w", err)
		}
		for rows.Next() {
			var (
				user    string
				at, seq int64
			)
			if err := rows.Scan(&user, &at, &seq); err != nil {
				rows.Close()
				return fmt.Errorf("read the users' latest records: %w", err)
			}
			s.users.noteLatestAt(user, at, seq)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("read the users' latest records: %w", err)
		}
	}
	return nil
}

// loadChunk is the range of seq that loadIDs reads at once.
const loadChunk = 1 << 20

// loadIDRange adds the ids of the records with lo < seq <= hi to the
// index. No lock: the index is not shared yet. The ids are hashed as read,
// not kept.
func (s *Store) loadIDRange(ctx context.Context, from string, ids *idLoader, lo, hi int64) error {
	rows, err := s.wconn.QueryContext(ctx, "SELECT event_id, user_id, seq FROM "+from+" WHERE seq > $1 AND seq <= $2", lo, hi)
	if err != nil {
		return fmt.Errorf("read the event ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, user sql.RawBytes
			seq      int64
		)
		if err := rows.Scan(&id, &user, &seq); err != nil {
			return fmt.Errorf("read the event ids: %w", err)
		}
		ids.add(id, user, seq)
		s.users.addUnordered(user, seq)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the event ids: %w", err)
	}
	return nil
}

// Column lists, derived from the event schema.
var (
	columnNames = func() []string {
		cols := event.Columns()
		names := make([]string, len(cols))
		for i, c := range cols {
			names[i] = c.Name
		}
		return names
	}()
	recordColumns = strings.Join(columnNames, ", ")
	selectColumns = recordColumns + ", seq"
	// readColumns is selectColumns for a SELECT that decodes records: the
	// JSON column as its text (the driver would decode it into Go maps,
	// losing the order of names and the precision of large numbers).
	readColumns = readColumnsOf("")

	eventsDDL = "CREATE TABLE IF NOT EXISTS events (\n" + event.DuckDBColumns() + ",\n  seq BIGINT NOT NULL\n)"
	// staging has the record columns and the seq each record gets if it is
	// stored (ord). It is a TEMP table: per connection, in memory, not in the
	// WAL. Write stages only the first occurrence of each event_id of a
	// batch, numbered in batch order, so moving it to events needs no window
	// or sort (measured on 5,000-record batches: the windowed INSERT took
	// about 86 ms of a 133 ms Write).
	stagingDDL = "CREATE TEMP TABLE IF NOT EXISTS staging (\n" + event.DuckDBColumns() + ",\n  ord BIGINT NOT NULL\n)"
)

// readColumnsOf is readColumns with each column qualified by prefix ("e.").
func readColumnsOf(prefix string) string {
	cols := event.Columns()
	out := make([]string, 0, len(cols)+1)
	for _, c := range cols {
		if c.Kind == event.KindObject {
			out = append(out, "CAST("+prefix+c.Name+" AS VARCHAR) AS "+c.Name)
		} else {
			out = append(out, prefix+c.Name)
		}
	}
	return strings.Join(append(out, prefix+"seq"), ", ")
}

func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS skyjoin_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: create skyjoin_meta: %w", err)
	}
	var (
		version string
		exists  bool
	)
	if err := tx.QueryRowContext(ctx, `SELECT count(*) > 0 FROM duckdb_tables()
		WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'events'`).Scan(&exists); err != nil {
		return fmt.Errorf("migrate: look for table events: %w", err)
	}
	err = tx.QueryRowContext(ctx, `SELECT value FROM skyjoin_meta WHERE key = 'schema_version'`).Scan(&version)
	switch {
	case errors.Is(err, sql.ErrNoRows) && exists:
		return fmt.Errorf("migrate: table events exists without a schema version in skyjoin_meta: not a file of this program")
	case errors.Is(err, sql.ErrNoRows):
		// A new file: the current layout.
		for _, stmt := range []string{eventsDDL, userKeyDDL, usersLatestDDL, statsMinuteDDL, userRunsDDL, coldMaxInit, rollupHiInit, userKeyLoInit} {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate: %s: %w", firstLine(stmt), err)
			}
		}
		version = fmt.Sprint(SchemaVersion)
		if _, err := tx.ExecContext(ctx, `INSERT INTO skyjoin_meta VALUES ('schema_version', $1)`, version); err != nil {
			return fmt.Errorf("migrate: record schema version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	v, err := strconv.Atoi(version)
	if err != nil || v < 1 {
		return fmt.Errorf("migrate: file has schema version %q, not a version of this program", version)
	}
	if v > SchemaVersion {
		return fmt.Errorf("migrate: file has schema version %d, this build knows only up to %d", v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate: schema version %d to %d: %s: %w", v, v+1, firstLine(stmt), err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE skyjoin_meta SET value = $1 WHERE key = 'schema_version'`, fmt.Sprint(v+1)); err != nil {
			return fmt.Errorf("migrate: record schema version %d: %w", v+1, err)
		}
	}
	// A table created by another build with other columns is not ours to
	// guess about: the columns must be this version's, in any order.
	rows, err := tx.QueryContext(ctx, `SELECT column_name FROM duckdb_columns()
		WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'events'
		ORDER BY column_name`)
	if err != nil {
		return fmt.Errorf("migrate: read columns: %w", err)
	}
	var have []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return fmt.Errorf("migrate: read columns: %w", err)
		}
		have = append(have, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate: read columns: %w", err)
	}
	want := append(append([]string(nil), columnNames...), "seq", "user_key")
	slices.Sort(want)
	if !slices.Equal(have, want) {
		return fmt.Errorf("migrate: table events has columns %v, schema version %d wants %v", have, SchemaVersion, want)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

var errClosed = errors.New("store closed")

// Close moves the hot segments into the main file, checkpoints it (folds
// the WAL into the file) and closes it. It waits for a running Write. Close
// is idempotent.
func (s *Store) Close() error {
	s.wsem <- struct{}{}
	defer func() { <-s.wsem }()
	if s.closed {
		return nil
	}
	s.closed = true
	defer func() {
		openMu.Lock()
		delete(openPaths, s.path)
		openMu.Unlock()
	}()
	start := time.Now()
	var errs []error
	s.stopMover()
	<-s.moverDone
	<-s.clustererDone
	if err := s.closeAppender(); err != nil { // before its segment is moved
		errs = append(errs, err)
	}
	// What is not moved now stays in its segment file, durable, and is
	// moved after the next open.
	for _, seg := range s.segments() {
		if err := s.move(context.Background(), seg); err != nil {
			errs = append(errs, fmt.Errorf("move hot segment: %w", err))
			break
		}
	}
	s.retiring.Wait() // the moved segments' detaches
	if s.rows != nil {
		if err := s.rows.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := s.wconn.ExecContext(context.Background(), `CHECKPOINT`); err != nil {
		errs = append(errs, fmt.Errorf("checkpoint: %w", err))
	}
	if err := s.wconn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close writer connection: %w", err))
	}
	for _, st := range []*sql.Stmt{s.getMain, s.getMainUser} {
		if err := st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close a prepared statement: %w", err))
		}
	}

	if err := s.db.Close(); err != nil {
		errs = append(errs, err)
	}
	s.ids.free() // off the heap: not collected
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("duckdb: close %s: %w", s.path, err)
	}
	s.log.Info("duckdb store closed", "path", s.path, "last_seq", s.lastSeq, "duration_ms", time.Since(start).Milliseconds())
	return nil
}

// Count returns the number of stored records.
func (s *Store) Count(ctx context.Context) (int64, error) {
	from, release := s.view()
	defer release()
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM `+from).Scan(&n); err != nil {
		return 0, fmt.Errorf("duckdb: count: %w", err)
	}
	return n, nil
}

// DB returns the store's connection pool, for the other parts of the
// process that keep their own tables in the same file (DuckDB lets only one
// process open it), such as the webhook registrations. They must not touch
// the events table, and must stop using the pool before Close.
func (s *Store) DB() *sql.DB { return s.db }

// Memory reads what the store holds in memory: DuckDB's buffer manager
// (duckdb_memory()), its allocator, and the event id index's mapped arrays.
func (s *Store) Memory(ctx context.Context) (Memory, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory()`)
	if err != nil {
		return Memory{}, fmt.Errorf("duckdb: memory: %w", err)
	}
	defer rows.Close()
	m := Memory{ByTag: map[string]int64{}}
	for rows.Next() {
		var (
			tag       string
			mem, temp int64
		)
		if err := rows.Scan(&tag, &mem, &temp); err != nil {
			return Memory{}, fmt.Errorf("duckdb: memory: %w", err)
		}
		m.Bytes += mem
		m.TempBytes += temp
		if mem > 0 {
			m.ByTag[tag] = mem
		}
	}
	if err := rows.Err(); err != nil {
		return Memory{}, fmt.Errorf("duckdb: memory: %w", err)
	}
	m.Allocator, _ = readAllocator()
	m.IDIndexBytes = s.IDIndexBytes()
	if s.rows != nil {
		m.RowStoreBytes = s.rows.memoryBytes()
	}
	return m, nil
}

// IDIndexBytes is the memory the event id index has mapped outside Go's
// heap (Memory's IDIndexBytes), without a statement to DuckDB.
func (s *Store) IDIndexBytes() int64 { return s.ids.mappedBytes() }
