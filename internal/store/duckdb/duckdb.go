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
// Table events has one column per event.Columns() (types from
// event.DuckDBColumns) plus seq BIGINT, the store's insertion sequence, used
// as the pagination cursor and as the live-stream resume id. event_id is the
// primary key (redeliveries are dropped by ON CONFLICT DO NOTHING); user_id
// has an ART index for the per-user reads. List relies on DuckDB's per row
// group min/max statistics (zone maps) rather than an index: seq grows with
// the physical order of the table, so "seq < cursor" skips whole row groups.
// Table skyjoin_meta records the schema version.
//
// # Writes
//
// Writers are serialised inside the Store (DuckDB allows one process per
// file, so this Store is the only writer). Write numbers the first
// occurrence of each event_id of the batch from the store's sequence, in
// batch order (repeats within the batch are dropped in Go), and appends
// those records straight to events through one Appender, whose flush is
// one transaction; it fails as a whole if an event_id is already stored
// (the primary key). Then, and on any other failure of that path, Write
// appends the batch into a per-connection TEMP staging table (in memory,
// not WAL-logged) and runs INSERT INTO events SELECT ... FROM staging, one
// transaction; if that fails on the primary key too (the batch redelivers a
// stored event_id), it runs the same statement with ON CONFLICT (event_id)
// DO NOTHING, which is correct but scans the event_id column (see
// insertNewSQL), and then reads back the stored records of the event_ids it
// dropped, which Write returns in their place (store.Writer). seq is
// strictly increasing in insertion order; it has gaps where a record was
// dropped as a duplicate of a stored one.
//
// # Durability
//
// DuckDB appends a transaction's changes to the write-ahead log (Path +
// ".wal") and fsyncs it before COMMIT returns (checked with strace: one
// fsync of the .wal per Write), so a Write that returned nil survives a crash
// of the process (TestCrash kills a writer with SIGKILL) and, on a disk that
// honours fsync, of the machine. On the next open DuckDB replays the WAL.
// Very large commits (auto_checkpoint_skip_wal_threshold) skip the WAL and
// checkpoint before COMMIT returns, which is equally durable.
//
// # Checkpoints
//
// DuckDB checkpoints (folds the WAL into the file) automatically when the WAL
// passes checkpoint_threshold, synchronously in the commit that crossed it,
// and commits from other connections wait for a running checkpoint too: a
// Write stalls for the length of the checkpoint whichever connection runs
// it (a background CHECKPOINT was tried and did not avoid the stall). The
// checkpoint's cost grows with the WAL it folds in, and apparently with the
// table (the stalls at 16 MiB were not shorter than at 64 MiB). Measured on the 2-core dev machine with
// storetest records (about 420 bytes of WAL each): 20 MB of WAL took 0.25 s
// to checkpoint, 61 MB 0.7 s; opening a file with 61 MB of WAL to replay took
// 1.25 s. With the default 16 MiB, 300k records written in 1,000-record
// batches ran at 17-19k rows/s with stalls up to 0.9 s; with 64 MiB at
// 24-25k rows/s with stalls up to 0.75 s, about every 150k records; with
// 256 MiB no checkpoint happened in that run, but each would stall for
// seconds and a crash would leave seconds of replay. CheckpointThreshold
// is therefore 64 MiB. Reads go on during a checkpoint (a List and a Get
// took at most 0.1 s during a 1 s checkpoint). Close runs a
// final CHECKPOINT, so a clean restart replays nothing.
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
const SchemaVersion = 2

// migrations[v] takes a file from schema version v to v+1, inside the
// transaction of migrate. (Adding a column keeps the indexes; dropping and
// re-creating the user_id index in the same transaction crashes DuckDB
// 1.5, so it is left alone.)
var migrations = map[int][]string{
	1: {
		`ALTER TABLE events ADD COLUMN IF NOT EXISTS properties JSON`,
	},
}

// CheckpointThreshold is the WAL size at which DuckDB checkpoints
// automatically (DuckDB setting checkpoint_threshold, default 16 MiB).
const CheckpointThreshold = "64MiB"

// checkpointThreshold is CheckpointThreshold; benchmarks vary it.
var checkpointThreshold = CheckpointThreshold

// maxConns bounds the connections of the pool: one is the writer's, the rest
// serve reads concurrently with it.
const maxConns = 8

// slowWrite is how long a Write may take before it is logged as slow (for
// instance when it ran a checkpoint).
const slowWrite = time.Second

var _ store.Store = (*Store)(nil)

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
	row     []driver.Value // AppendRow buffer

	// maxSeq is lastSeq for readers: List's newest-first pages start from it.
	maxSeq atomic.Int64
}

// A process must not open one file twice: the driver would share the DuckDB
// instance and two Stores would hand out the same seq values.
var (
	openMu    sync.Mutex
	openPaths = map[string]bool{}
)

// Open opens or creates the store at cfg.Path.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
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

func open(ctx context.Context, path string, cfg Config, log *slog.Logger) (_ *Store, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create directory: %w", err)
	}
	settings := url.Values{
		"checkpoint_threshold": {checkpointThreshold},
		"memory_limit":         {cfg.MemoryLimit},
		"threads":              {strconv.Itoa(cfg.Threads)},
	}
	connector, err := duckdb.NewConnector(path+"?"+settings.Encode(), nil)
	if err != nil {
		return nil, err // names the file and the reason, e.g. the lock held by another process
	}
	db := sql.OpenDB(connector) // db.Close closes the connector
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)

	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	if err := relaxLocation(ctx, db); err != nil {
		return nil, err
	}
	s := &Store{db: db, log: log, path: path, wsem: make(chan struct{}, 1)}
	if s.lastSeq, err = loadLastSeq(ctx, db); err != nil {
		return nil, fmt.Errorf("read last seq: %w", err)
	}
	s.maxSeq.Store(s.lastSeq)
	s.wconn, err = db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("writer connection: %w", err)
	}
	if _, err := s.wconn.ExecContext(ctx, stagingDDL); err != nil {
		s.wconn.Close()
		return nil, fmt.Errorf("create staging table: %w", err)
	}
	log.InfoContext(ctx, "duckdb store open", "path", path, "memory_limit", cfg.MemoryLimit, "threads", cfg.Threads, "schema_version", SchemaVersion, "last_seq", s.lastSeq)
	return s, nil
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

	eventsDDL = "CREATE TABLE IF NOT EXISTS events (\n" + event.DuckDBColumns() + ",\n  seq BIGINT NOT NULL,\n  PRIMARY KEY (event_id)\n)"
	// staging has the record columns and the seq each record gets if it is
	// stored (ord). It is a TEMP table: per connection, in memory, not in the
	// WAL. Write stages only the first occurrence of each event_id of a
	// batch, numbered in batch order, so moving it to events needs no window
	// or sort (measured on 5,000-record batches: the windowed INSERT took
	// about 86 ms of a 133 ms Write).
	stagingDDL = "CREATE TEMP TABLE IF NOT EXISTS staging (\n" + event.DuckDBColumns() + ",\n  ord BIGINT NOT NULL\n)"

	// insertSQL moves the staged batch into events. It fails with a
	// constraint error if an event_id is already stored.
	insertSQL = "INSERT INTO events (" + selectColumns + ")\n" +
		"SELECT " + recordColumns + ", ord FROM staging"
	// insertNewSQL is insertSQL dropping the event_ids already stored.
	// DuckDB runs ON CONFLICT as a join against a scan of events.event_id,
	// which costs time in proportion to the table (29 ms per 1,000-record
	// batch at 20k rows, 73 ms at 320k), while the plain INSERT checks the
	// primary key's ART index per row. So Write tries insertSQL first and
	// falls back to this one only when the batch holds a redelivery.
	insertNewSQL = insertSQL + "\nON CONFLICT (event_id) DO NOTHING"
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

// userIndexDDL creates the index of the per-user reads; benchmarks drop it.
var userIndexDDL = `CREATE INDEX IF NOT EXISTS events_user_id_idx ON events (user_id)`

// relaxLocation lets the coordinates be NULL (events without a location,
// stored with enrichment status no_location) in a file whose table still
// requires them (made before schema version 2). DuckDB refuses to alter a
// table that an index depends on, and crashes when the index is dropped
// and re-created in one transaction: so the index is dropped, the columns
// altered and the index re-created, each on its own. It is idempotent and
// costs one catalog query on a file that needs nothing.
func relaxLocation(ctx context.Context, db *sql.DB) error {
	var required int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM duckdb_columns()
		WHERE table_name = 'events' AND column_name IN ('location_latitude', 'location_longitude') AND NOT is_nullable`).Scan(&required)
	if err != nil {
		return fmt.Errorf("migrate: read the location columns: %w", err)
	}
	if required == 0 {
		_, err := db.ExecContext(ctx, userIndexDDL) // re-created if a run stopped between the steps
		return err
	}
	for _, stmt := range []string{
		`DROP INDEX IF EXISTS events_user_id_idx`,
		`ALTER TABLE events ALTER COLUMN location_latitude DROP NOT NULL`,
		`ALTER TABLE events ALTER COLUMN location_longitude DROP NOT NULL`,
		userIndexDDL,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("migrate: let coordinates be missing: %s: %w", firstLine(stmt), err)
		}
	}
	return nil
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
		for _, stmt := range []string{eventsDDL, userIndexDDL} {
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
	want := append(append([]string(nil), columnNames...), "seq")
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

// Close checkpoints the database (folds the WAL into the file) and closes
// it. It waits for a running Write. Close is idempotent.
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
	if _, err := s.wconn.ExecContext(context.Background(), `CHECKPOINT`); err != nil {
		errs = append(errs, fmt.Errorf("checkpoint: %w", err))
	}
	if err := s.wconn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close writer connection: %w", err))
	}

	if err := s.db.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("duckdb: close %s: %w", s.path, err)
	}
	s.log.Info("duckdb store closed", "path", s.path, "last_seq", s.lastSeq, "duration_ms", time.Since(start).Milliseconds())
	return nil
}

// Count returns the number of stored records.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("duckdb: count: %w", err)
	}
	return n, nil
}

// DB returns the store's connection pool, for the other parts of the
// process that keep their own tables in the same file (DuckDB lets only one
// process open it), such as the webhook registrations. They must not touch
// the events table, and must stop using the pool before Close.
func (s *Store) DB() *sql.DB { return s.db }
