//go:build !noduckdb

package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// segment is a hot segment: a DuckDB file of its own, attached to the
// store's database as hot_<n>, whose table events takes the writer's
// appends (the newest segment) or waits to be moved into the main file
// (the others). See the package documentation, "Hot segments".
type segment struct {
	n     int
	alias string
	path  string
	// mu is held shared by every read that may look at the segment, and
	// exclusively, for good, by the mover once it has taken the segment
	// out of the snapshot: it detaches the segment after the last such
	// read, and no read starts on it after that.
	mu sync.RWMutex
}

// snapshot is a segment list, oldest first (the last takes the writer's
// appends), and the FROM expression of reads over the main file and them.
// It does not change once published.
type snapshot struct {
	segs []*segment
	// from is every record: the main file's and the segments'. hot is the
	// segments' alone (records not yet moved), with the same rule.
	from, hot string
	// changed is closed when a newer snapshot replaces this one.
	changed chan struct{}
}

// SegmentBytes is the size of a hot segment's write-ahead log at which the
// writer starts a new segment. It stays well below the checkpoint
// threshold, so that no checkpoint ever runs in a segment: its WAL is
// replayed if the process dies, and deleted with it once moved.
const SegmentBytes = 16 << 20

// segmentBytes is SegmentBytes; tests vary it.
var segmentBytes int64 = SegmentBytes

// MaxSegments bounds the hot segments: the one the writer appends to and
// those waiting for the mover. A segment's records stay in DuckDB's memory
// until it is moved, so when the writer outruns the mover (a checkpoint of
// a large main file, or a saturated pipeline) a Write waits for a move
// rather than let DuckDB's memory grow; the backlog then stays in the
// broker, on disk, where admission control sees it. A delete starts a new
// segment without waiting, so one may pass the bound by one meanwhile.
const MaxSegments = 3

// maxSegments is MaxSegments; tests vary it.
var maxSegments = MaxSegments

// moverWaitHook, if set (by tests), is called with the number of hot
// segments when the writer starts waiting for the mover.
var moverWaitHook func(segments int)

// waitForMover returns once the hot segments are fewer than maxSegments,
// or ctx is done, and how long it waited. It runs under wsem, so that no
// other writer adds a segment meanwhile.
func (s *Store) waitForMover(ctx context.Context) (time.Duration, error) {
	var start time.Time
	for {
		sn := s.snap.Load()
		if len(sn.segs) < maxSegments {
			if start.IsZero() {
				return 0, nil
			}
			return time.Since(start), nil
		}
		if start.IsZero() {
			start = time.Now()
			s.kickMover()
			if moverWaitHook != nil {
				moverWaitHook(len(sn.segs))
			}
		}
		select {
		case <-sn.changed:
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("wait for the mover (%d hot segments): %w", len(sn.segs), ctx.Err())
		}
	}
}

// moveRetry is how long the mover waits after a failed move.
const moveRetry = 5 * time.Second

const segmentSuffix = ".hot-"

func segmentPath(base string, n int) string { return fmt.Sprintf("%s%s%06d", base, segmentSuffix, n) }

// segmentNumbers returns the numbers of the segment files (or their WALs)
// next to the database file at base, in increasing order.
func segmentNumbers(base string) ([]int, error) {
	names, err := filepath.Glob(base + segmentSuffix + "*")
	if err != nil {
		return nil, err
	}
	var ns []int
	for _, name := range names {
		rest := strings.TrimSuffix(strings.TrimPrefix(name, base+segmentSuffix), ".wal")
		n, err := strconv.Atoi(rest)
		if err != nil || n <= 0 || segmentPath(base, n) != base+segmentSuffix+rest {
			continue // not ours
		}
		if !slices.Contains(ns, n) {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	return ns, nil
}

var segmentDDL = "CREATE TABLE IF NOT EXISTS %s.events (\n" + event.DuckDBColumns() + ",\n  seq BIGINT NOT NULL\n)"

// coldMaxSQL is the highest seq moved into the main file, as of the
// statement's snapshot of it: rows of a segment at or below it are read
// from the main file, not from the segment, which may not be detached yet.
const coldMaxSQL = `(SELECT CAST(value AS BIGINT) FROM main.skyjoin_meta WHERE key = 'cold_max')`

// movedOnly is the condition on the main file's records that a read over
// the main file and the hot segments adds: the records of the moves its
// snapshot sees committed, and no others. A move's rows can be seen
// before its commit is: when a transaction appends at least a row group
// to a table (or appends to an empty one), DuckDB 1.5 hands the row groups
// to the table during the commit, visible to every statement until the
// commit stamps them with its id, while the same commit's update of
// cold_max stays invisible until it ends. Without the condition a
// statement in that window read a move's records twice, from the main
// file and from the segment (test/crash TestKillUpRepeatedly: "1054
// records in the range of 1001 seq values"); TestMoveSeenOnce.
const movedOnly = "seq <= " + coldMaxSQL

// attach attaches segment n (creating its file and table if needed) on
// conn.
func (s *Store) attach(ctx context.Context, conn *sql.Conn, n int) (*segment, error) {
	seg := &segment{n: n, alias: "hot_" + strconv.Itoa(n), path: segmentPath(s.path, n)}
	if _, err := conn.ExecContext(ctx, "ATTACH "+quote(seg.path)+" AS "+seg.alias); err != nil {
		return nil, fmt.Errorf("attach segment %s: %w", seg.path, err)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(segmentDDL, seg.alias)); err != nil {
		return nil, errors.Join(fmt.Errorf("create the table of segment %s: %w", seg.path, err), s.detach(ctx, conn, seg))
	}
	return seg, nil
}

// detach detaches seg and deletes its files.
func (s *Store) detach(ctx context.Context, conn *sql.Conn, seg *segment) error {
	if _, err := conn.ExecContext(ctx, "DETACH "+seg.alias); err != nil {
		return fmt.Errorf("detach segment %s: %w", seg.path, err)
	}
	var errs []error
	for _, p := range []string{seg.path, seg.path + ".wal"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// updateSegments publishes a snapshot of the segment list change makes
// of the current one. It waits for nothing but another change.
func (s *Store) updateSegments(change func([]*segment) []*segment) {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	var segs []*segment
	cur := s.snap.Load()
	if cur != nil {
		segs = slices.Clone(cur.segs)
		defer close(cur.changed)
	}
	segs = change(segs)
	var parts []string
	for _, seg := range segs {
		parts = append(parts, "SELECT "+selectColumns+" FROM "+seg.alias+".events WHERE seq > "+coldMaxSQL)
	}
	sn := &snapshot{segs: segs, hot: "(SELECT " + selectColumns + " FROM main.events WHERE false) AS events", changed: make(chan struct{})}
	if len(parts) > 0 {
		sn.hot = "(" + strings.Join(parts, " UNION ALL ") + ") AS events"
	}
	sn.from = "(" + strings.Join(append([]string{"SELECT " + selectColumns + " FROM main.events WHERE " + movedOnly}, parts...), " UNION ALL ") + ") AS events"
	s.snap.Store(sn)
}

// acquire returns the current snapshot with a read hold on each of its
// segments, which release gives back: none of them is detached until
// then. A segment the mover is retiring is no longer in the current
// snapshot, so acquire loads it again rather than wait. One statement
// over the snapshot's from sees each record once (coldMaxSQL).
func (s *Store) acquire() (_ *snapshot, release func()) {
	for {
		sn := s.snap.Load()
		held := 0
		for _, seg := range sn.segs {
			if !seg.mu.TryRLock() {
				break
			}
			held++
		}
		if held == len(sn.segs) {
			return sn, func() {
				for _, seg := range sn.segs {
					seg.mu.RUnlock()
				}
			}
		}
		for _, seg := range sn.segs[:held] {
			seg.mu.RUnlock()
		}
		runtime.Gosched()
	}
}

// view is acquire for the FROM expression alone.
func (s *Store) view() (from string, release func()) {
	sn, release := s.acquire()
	return sn.from, release
}

// segments returns the current segment list, oldest first. The caller
// must not change it.
func (s *Store) segments() []*segment { return s.snap.Load().segs }

// active returns the segment that takes the writer's appends.
func (s *Store) active() *segment {
	segs := s.segments()
	return segs[len(segs)-1]
}

// rotate starts a new segment for the writer's appends and hands the
// previous one to the mover. It runs under wsem.
func (s *Store) rotate(ctx context.Context) error {
	if err := s.closeAppender(); err != nil {
		// Flushed after every write: nothing is lost with it.
		s.log.WarnContext(ctx, "duckdb: close the writer's appender failed", "error", err.Error())
	}
	seg, err := s.attach(ctx, s.wconn, s.active().n+1)
	if err != nil {
		return err
	}
	s.updateSegments(func(segs []*segment) []*segment { return append(segs, seg) })
	s.kickMover()
	return nil
}

// rotateIfFull rotates when the active segment's WAL has reached
// segmentBytes, once the hot segments are fewer than maxSegments, and
// reports how long it waited for the mover. It runs under wsem.
func (s *Store) rotateIfFull(ctx context.Context) (time.Duration, error) {
	st, err := os.Stat(s.active().path + ".wal")
	if err != nil || st.Size() < segmentBytes {
		return 0, nil
	}
	waited, err := s.waitForMover(ctx)
	if err != nil {
		return waited, err
	}
	return waited, s.rotate(ctx)
}

func (s *Store) kickMover() { poke(s.kick) }

func (s *Store) kickClusterer() { poke(s.clusterKick) }

// poke wakes the goroutine waiting on ch (a channel of capacity 1), or
// leaves it the wake-up it has not taken yet.
func poke(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// runMover moves the segments the writer is done with into the main file,
// oldest first, until ctx is done.
func (s *Store) runMover(ctx context.Context) {
	defer close(s.moverDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		for {
			segs := s.segments()
			if len(segs) < 2 {
				break
			}
			if err := s.move(ctx, segs[0]); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.noteFatal(err)
				s.log.ErrorContext(ctx, "duckdb: move a hot segment into the main file failed; retrying", "segment", segs[0].path, "error", err.Error())
				select {
				case <-ctx.Done():
					return
				case <-time.After(moveRetry):
				}
				continue
			}
			s.kickClusterer()
		}
	}
}

// runClusterer cuts and merges the user runs that are due (runs.go), one
// step at a time, whenever the mover has moved a segment, until ctx is
// done. It runs beside the mover: a merge takes seconds to minutes, and
// the hot segments the mover would leave waiting meanwhile hold their
// records in DuckDB's memory, which the merge's sorts and the reads need.
func (s *Store) runClusterer(ctx context.Context) {
	defer close(s.clustererDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clusterKick:
		}
		for {
			did, err := s.clusterStep(ctx, runSortRows)
			if err == nil && !did {
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.ErrorContext(ctx, "duckdb: cut or merge user runs failed; retrying", "error", err.Error())
				select {
				case <-ctx.Done():
					return
				case <-time.After(moveRetry):
				}
			}
		}
	}
}

// move copies seg's records into the main file, with the per-user latest
// seq, in one transaction that also raises cold_max; then detaches seg and
// deletes its files. The writer must not be appending to seg: it is not the
// active segment, or wsem is held.
func (s *Store) move(ctx context.Context, seg *segment) error {
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	if !slices.Contains(s.segments(), seg) {
		return nil // moved by another caller (the mover, or Settle)
	}
	start := time.Now()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var hi sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT max(seq) FROM "+seg.alias+".events").Scan(&hi); err != nil {
		return fmt.Errorf("read the segment's last seq: %w", err)
	}
	var n int64
	if hi.Valid && hi.Int64 > s.coldMax {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		// Sorted by user (moveByUser), or in seq order without an ORDER
		// BY: the segment was written in seq order, and DuckDB keeps a
		// scan's order, or the ORDER BY's, in an insert
		// (preserve_insertion_order, on by default).
		order := ""
		if moveByUser && s.sortMoves {
			order = " ORDER BY user_key, seq"
		}
		res, err := tx.ExecContext(ctx, "INSERT INTO main.events ("+selectColumns+", user_key) SELECT "+selectColumns+", "+userKeyOf("user_id")+
			" AS user_key FROM "+seg.alias+".events WHERE seq > $1"+order, s.coldMax)
		if err != nil {
			return fmt.Errorf("copy the records: %w", err)
		}
		n, _ = res.RowsAffected()
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(upsertLatestSQL, seg.alias+".events WHERE seq > $1"), s.coldMax); err != nil {
			return fmt.Errorf("update the users' latest records: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE main.skyjoin_meta SET value = $1 WHERE key = 'cold_max'`, strconv.FormatInt(hi.Int64, 10)); err != nil {
			return fmt.Errorf("record cold_max: %w", err)
		}
		if err := s.commitTimed(ctx, tx, "move"); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		s.coldMax = hi.Int64
		s.coldSeen.Store(hi.Int64)
		// The stats rollup of the records moved, in a small transaction
		// of its own (rollUp). DuckDB may checkpoint in its commit; the
		// rollup's reads do not wait for it (Stats).
		if err := s.noteFatal(s.rollUp(ctx, conn)); err != nil {
			// The stats stay exact (they read the records the rollup does
			// not cover yet), and the next move tries again.
			s.log.WarnContext(ctx, "duckdb: stats rollup of a move failed; the next move tries again", "error", err.Error())
		}
		s.checkpointIfDue(ctx, conn)
	}
	copied := time.Since(start)
	s.updateSegments(func(segs []*segment) []*segment {
		return slices.DeleteFunc(segs, func(x *segment) bool { return x == seg })
	})
	s.retire(seg)
	s.log.DebugContext(ctx, "duckdb: hot segment moved", "segment", seg.path, "records", n,
		"copy_ms", copied.Milliseconds(), "total_ms", time.Since(start).Milliseconds())
	return nil
}

// moveByUser: the mover copies a segment into the main file sorted by
// user_key, then seq, rather than in seq order. A segment holds about
// 30,000 records, a few seconds of writes; sorted, the records a user
// wrote in those seconds sit next to each other, so that a page of a user
// who writes often (whose newest records are the last minute's, in the
// newest rows of the main file) decompresses a vector of each column a
// segment rather than one a record. The main file's row groups keep their
// min/max of seq (a segment's seqs are one range, a row group a few
// segments), so reads by seq skip the same row groups as before.
// Tests and benchmarks compare.
//
// Only without the row store (sortMoves): with it, a user's page is read
// there, and DuckDB reads a user's records only for the row store's misses
// and a page with other filters, while the sort costs every move: a
// fifth of the writer's CPU with moves (BenchmarkWrite, batches of 1,000:
// 50-62 CPU ms a write in seq order against 71-82 sorted) and DuckDB's
// memory for the sort (ORDER_BY, 21-29 MB at the bench's highest samples).
var moveByUser = true

// checkpointIfDue checkpoints the main file when its WAL has passed
// mainCheckpointBytes. DuckDB's own checkpoint in a commit, past
// checkpointThreshold, is left undone while any other transaction is open
// on the main file (see the package documentation). CHECKPOINT itself runs beside reads, but not
// beside one that began before the last commit into the main file (DuckDB
// keeps that commit's lock until such reads end), so it is tried again,
// backing off, for up to checkpointPatience: the reads then open end,
// and the mover commits nothing meanwhile. It runs under moveMu, so that
// no delete or update commits either; the clusterer may, and then the next
// move tries again.
func (s *Store) checkpointIfDue(ctx context.Context, conn *sql.Conn) {
	st, err := os.Stat(s.path + ".wal")
	if err != nil || st.Size() < mainCheckpointBytes {
		return
	}
	start := time.Now()
	wait := 10 * time.Millisecond
	for tries := 1; ; tries++ {
		_, err := conn.ExecContext(ctx, "CHECKPOINT")
		if s.noteFatal(err) == nil {
			s.log.DebugContext(ctx, "duckdb: main file checkpointed", "wal_bytes", st.Size(), "tries", tries,
				"duration_ms", time.Since(start).Milliseconds())
			return
		}
		if ctx.Err() != nil {
			return // Close stops the mover; it checkpoints the file itself
		}
		if time.Since(start) >= checkpointPatience {
			s.log.WarnContext(ctx, "duckdb: checkpoint of the main file failed; trying again after the next move",
				"wal_bytes", st.Size(), "tries", tries, "error", err.Error())
			return
		}
		if checkpointBusyHook != nil {
			checkpointBusyHook()
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// checkpointPatience is how long checkpointIfDue tries: longer than a
// page of a user's records under load takes (2-3 s), shorter than the
// writer's slack in the hot segments (two more segments, 12 s at 5,000
// records/s).
const checkpointPatience = 5 * time.Second

// checkpointBusyHook, if set (by tests), is called after each CHECKPOINT
// that failed and is to be tried again.
var checkpointBusyHook func()

// retire detaches a moved segment and deletes its files once the reads
// that still hold it have ended (no new one takes it: it is no longer in
// the snapshot), in a goroutine of its own, so that neither the mover nor,
// through maxSegments, the writer waits for a read. Close waits for it.
func (s *Store) retire(seg *segment) {
	s.retiring.Add(1)
	go func() {
		defer s.retiring.Done()
		seg.mu.Lock()
		// Not cancelled: the records are in the main file, the files only
		// wait to be deleted.
		ctx := context.Background()
		conn, err := s.db.Conn(ctx)
		if err == nil {
			err = s.detach(ctx, conn, seg)
			conn.Close()
		}
		if err != nil {
			// Its records are in the main file and no read looks at it any
			// more; a file left behind is deleted at the next open.
			s.log.WarnContext(ctx, "duckdb: a moved hot segment was not deleted", "segment", seg.path, "error", err.Error())
		}
	}()
}

// upsertLatestSQL keeps users_latest, the seq of each user's record with
// the latest occurred_at (the last stored of those on a tie), up to date
// with the records of a FROM clause (%s).
const upsertLatestSQL = `INSERT INTO main.users_latest (user_id, occurred_at, seq)
SELECT user_id, occurred_at, seq FROM %s
QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY occurred_at DESC, seq DESC) = 1
ON CONFLICT (user_id) DO UPDATE SET occurred_at = excluded.occurred_at, seq = excluded.seq
WHERE excluded.occurred_at > users_latest.occurred_at
   OR (excluded.occurred_at = users_latest.occurred_at AND excluded.seq > users_latest.seq)`

// commitTimed commits tx, a transaction on the main file, and logs a
// commit slower than slowWrite with whether it folded the main file's WAL
// (DuckDB checkpoints in a commit that finds the WAL past
// CheckpointThreshold).
func (s *Store) commitTimed(ctx context.Context, tx *sql.Tx, what string) error {
	before := fileSize(s.path + ".wal")
	start := time.Now()
	if err := tx.Commit(); err != nil {
		return err
	}
	if d := time.Since(start); d > slowWrite {
		after := fileSize(s.path + ".wal")
		s.log.WarnContext(ctx, "duckdb: slow commit on the main file", "what", what, "duration_ms", d.Milliseconds(),
			"wal_bytes_before", before, "wal_bytes_after", after, "checkpointed", after < before)
	}
	return nil
}

// fileSize is the size of the file at path, 0 if it cannot be read.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// keyChunk is how many seq of the main file KeyUsers keys in one
// transaction.
var keyChunk int64 = 1 << 20

// KeyUsers gives the main file's records at or below user_key_lo their
// user_key (a file migrated from schema version 6 keeps its records
// without one: the migration does not rewrite them), keyChunk seq at a
// time, downwards, each range in a transaction of its own that lowers
// user_key_lo, under moveMu as any change of the main file's records, then
// checkpoints the file when due. Reads go on meanwhile: they take
// user_key_lo as it was when they began, and read the records below it by
// user_id. skyjoin migrate runs it.
func (s *Store) KeyUsers(ctx context.Context) error {
	for {
		lo := s.userKeyLo.Load()
		if lo <= 0 {
			return nil
		}
		if err := s.keyRange(ctx, max(lo-keyChunk, 0), lo); err != nil {
			return fmt.Errorf("duckdb: key the records up to seq %d: %w", lo, err)
		}
	}
}

// keyRange keys the records of seq in (from, to] and records user_key_lo
// from, in one transaction.
func (s *Store) keyRange(ctx context.Context, from, to int64) error {
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "UPDATE main.events SET user_key = "+userKeyOf("user_id")+" WHERE seq > $1 AND seq <= $2", from, to); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE main.skyjoin_meta SET value = $1 WHERE key = 'user_key_lo'`, strconv.FormatInt(from, 10)); err != nil {
		return fmt.Errorf("record user_key_lo: %w", err)
	}
	if err := s.noteFatal(tx.Commit()); err != nil {
		return err
	}
	s.userKeyLo.Store(from)
	s.checkpointIfDue(ctx, conn)
	return nil
}
