//go:build !noduckdb

package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/skyjoin/skyjoin/internal/store"
)

var _ store.Expirer = (*Store)(nil)

// metaLastSeq is the key in skyjoin_meta of the highest seq handed out, kept
// when records are deleted: seq must never go back, even when the newest
// records (or all of them) were deleted and the store is reopened, or a
// live-stream client resuming from a seq would skip the records that
// reused it.
const metaLastSeq = "last_seq"

// DeleteUsers deletes the records of the users (store.Eraser). They are
// gone from every read at once, and from the WALs at the checkpoint that
// follows (the main file's) or when their hot segment is moved and deleted
// (started at once); their bytes leave the database file when it is
// compacted (see Compact and docs/data.md).
func (s *Store) DeleteUsers(ctx context.Context, userIDs []string) (int64, error) {
	if len(userIDs) == 0 {
		return 0, nil
	}
	marks := make([]string, len(userIDs))
	args := make([]any, len(userIDs))
	for i, id := range userIDs {
		marks[i] = "$" + strconv.Itoa(i+1)
		args[i] = id
	}
	cond := "user_id IN (" + strings.Join(marks, ", ") + ")"
	n, err := s.delete(ctx, cond, cond, args...)
	if err != nil {
		return n, fmt.Errorf("duckdb: delete the records of %d user ids: %w", len(userIDs), err)
	}
	return n, nil
}

// DeleteOccurredBefore deletes the records whose occurred_at is before t
// (store.Expirer): retention.
func (s *Store) DeleteOccurredBefore(ctx context.Context, t time.Time) (int64, error) {
	// A user whose latest record occurred before t has no record left.
	n, err := s.delete(ctx, "occurred_at < $1", "occurred_at < $1", t.UTC())
	if err != nil {
		return n, fmt.Errorf("duckdb: delete the records that occurred before %s: %w", t.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}

// delete deletes the records matching cond (a condition on events with
// args) from the hot segments and the main file, and the users_latest rows
// matching latestCond, each file in its own transaction (DuckDB writes one
// database per transaction), the main file's with the record of the last
// seq. Then, if it deleted anything, it checkpoints the main file, so that
// its WAL does not keep the deleted rows' data, and starts a new segment,
// so that the segments that held deleted rows are moved and their files
// deleted.
func (s *Store) delete(ctx context.Context, cond, latestCond string, args ...any) (int64, error) {
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-s.wsem }()
	if s.closed {
		return 0, errClosed
	}
	// Stats reads the store, not memory, until the rollup covers every
	// record stored now, and the rollup's minutes in memory are loaded
	// again once the main file's have changed.
	s.recent.reset(s.lastSeq)
	s.editMu.Lock()
	defer s.editMu.Unlock()
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	s.runsMu.Lock()
	defer s.runsMu.Unlock()
	var (
		total int64
		gone  deleted
	)
	for _, seg := range s.segments() {
		n, err := s.deleteIn(ctx, seg.alias+".events", cond, args, nil, &gone)
		if err != nil {
			return total, err
		}
		total += n
	}
	// The main file's transaction changes the stats rollup
	// (refreshMinutes): the rollup's reads wait for it (rollupMu).
	s.rollupMu.Lock()
	n, err := s.deleteIn(ctx, "main.events", cond, args, func(tx *sql.Tx, these *deleted) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM main.users_latest WHERE "+latestCond, args...); err != nil {
			return fmt.Errorf("delete from users_latest: %w", err)
		}
		runs, err := runTables(ctx, tx)
		if err != nil {
			return err
		}
		for _, table := range runs {
			if _, err := tx.ExecContext(ctx, "DELETE FROM "+table+" WHERE "+cond, args...); err != nil {
				return fmt.Errorf("delete from %s: %w", table, err)
			}
		}
		if err := refreshMinutes(ctx, tx, these.minutes, s.rollupHi); err != nil {
			return err
		}
		return saveLastSeq(ctx, tx, s.lastSeq)
	}, &gone)
	s.rollupMu.Unlock()
	if n > 0 || err != nil {
		s.reloadMinutes(ctx, s.wconn)
	}
	if err != nil {
		return total, err
	}
	total += n
	s.ids.remove(gone.ids)
	s.users.remove(gone.users, gone.seqs)
	if total == 0 {
		return 0, nil
	}
	if _, err := s.wconn.ExecContext(ctx, `CHECKPOINT`); err != nil {
		s.log.WarnContext(ctx, "duckdb: checkpoint after a delete failed; the next one folds the WAL in", "error", err.Error())
	}
	if err := s.rotate(ctx); err != nil {
		s.log.WarnContext(ctx, "duckdb: start a new hot segment after a delete failed", "error", err.Error())
	}
	return total, nil
}

// deleted are the event ids, user ids, seqs and minutes of occurred_at
// (epoch microseconds) of deleted records.
type deleted struct {
	ids, users    []string
	seqs, minutes []int64
}

// deleteIn deletes the records matching cond from table in one
// transaction, running also (if not nil) with them before the commit, adds
// them to gone once committed, and returns how many.
func (s *Store) deleteIn(ctx context.Context, table, cond string, args []any, also func(*sql.Tx, *deleted) error, gone *deleted) (int64, error) {
	tx, err := s.writerTx(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "DELETE FROM "+table+" WHERE "+cond+" RETURNING event_id, user_id, seq, "+minuteOf, args...)
	if err != nil {
		return 0, fmt.Errorf("delete from %s: %w", table, err)
	}
	var these deleted
	for rows.Next() {
		var (
			id, user    string
			seq, minute int64
		)
		if err := rows.Scan(&id, &user, &seq, &minute); err != nil {
			rows.Close()
			return 0, fmt.Errorf("delete from %s: %w", table, err)
		}
		these.ids, these.users, these.seqs = append(these.ids, id), append(these.users, user), append(these.seqs, seq)
		these.minutes = append(these.minutes, minute)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("delete from %s: %w", table, err)
	}
	if also != nil {
		if err := also(tx, &these); err != nil {
			return 0, err
		}
	} else if len(these.ids) == 0 {
		return 0, nil
	}
	// Before the commit: a crash between the two leaves records the row
	// store no longer holds, read from DuckDB, never a deleted one there.
	if s.rows != nil {
		refs := make([]int64, len(these.seqs))
		for i, seq := range these.seqs {
			refs[i] = rowRef(these.users[i], seq)
		}
		if err := s.rows.drop(ctx, refs); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit the delete from %s: %w", table, err)
	}
	gone.ids = append(gone.ids, these.ids...)
	gone.users = append(gone.users, these.users...)
	gone.seqs = append(gone.seqs, these.seqs...)
	return int64(len(these.ids)), nil
}

func saveLastSeq(ctx context.Context, tx *sql.Tx, seq int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO skyjoin_meta VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		metaLastSeq, strconv.FormatInt(seq, 10))
	if err != nil {
		return fmt.Errorf("record the last seq: %w", err)
	}
	return nil
}

// loadLastSeq returns the highest seq handed out: that of the records, or
// the one recorded by a delete if higher.
func (s *Store) loadLastSeq(ctx context.Context) (int64, error) {
	var last int64
	var saved sql.NullString
	from, release := s.view()
	defer release()
	err := s.wconn.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0), (SELECT value FROM main.skyjoin_meta WHERE key = $1) FROM `+from, metaLastSeq).
		Scan(&last, &saved)
	if err != nil {
		return 0, err
	}
	if saved.Valid {
		n, err := strconv.ParseInt(saved.String, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("skyjoin_meta %s %q: %w", metaLastSeq, saved.String, err)
		}
		last = max(last, n)
	}
	return last, nil
}

// Compact rewrites the database file at path with its live data only, so
// that what was deleted (erased users, expired records) leaves the disk:
// DuckDB marks deleted rows and reuses freed blocks later, but neither
// overwrites them, and a DELETE that leaves a row group partly full keeps
// its rows' bytes in the file (TestErasedValuesNeedCompact). It copies the
// database into a new file next to it and renames that over the old one;
// the WAL is folded in. The file must not be open elsewhere (DuckDB's lock
// refuses it): run it while the process that owns the store is stopped.
// It returns the file's size before and after.
func Compact(ctx context.Context, path string) (before, after int64, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, 0, fmt.Errorf("duckdb: compact %s: %w", path, err)
	}
	fail := func(err error) (int64, int64, error) { return 0, 0, fmt.Errorf("duckdb: compact %s: %w", abs, err) }
	// DuckDB's file lock keeps other processes out; this process's own
	// Stores are checked here (a lock does not stop its own process).
	openMu.Lock()
	open := openPaths[abs]
	if !open {
		openPaths[abs] = true
		defer func() {
			openMu.Lock()
			delete(openPaths, abs)
			openMu.Unlock()
		}()
	}
	openMu.Unlock()
	if open {
		return fail(errors.New("the store is open in this process"))
	}
	if ns, err := segmentNumbers(abs); err != nil || len(ns) > 0 {
		return fail(fmt.Errorf("hot segments %s* hold records not yet in the file (the process was stopped uncleanly): open and close the store once first (%v)", abs+segmentSuffix, err))
	}
	st, err := os.Stat(abs)
	if err != nil {
		return fail(err)
	}
	before = st.Size()
	tmp := abs + ".compact"
	for _, p := range []string{tmp, tmp + ".wal"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fail(err)
		}
	}
	// In memory: it only attaches; it spills beside the file (tempDir).
	connector, err := duckdb.NewConnector("?"+url.Values{"temp_directory": {tempDir(abs)}}.Encode(), nil)
	if err != nil {
		return fail(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, stmt := range []string{
		"ATTACH " + quote(abs) + " AS src",
		"ATTACH " + quote(tmp) + " AS dst",
		"COPY FROM DATABASE src TO dst",
		"DETACH src",
		"DETACH dst",
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			os.Remove(tmp)
			return fail(fmt.Errorf("%s: %w", stmt, err))
		}
	}
	if err := db.Close(); err != nil {
		return fail(err)
	}
	if err := syncFile(tmp); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		return fail(err)
	}
	// The WAL was folded in when src was attached and detached (a clean
	// detach checkpoints); one left over would be replayed into the new file.
	if err := os.Remove(abs + ".wal"); err != nil && !os.IsNotExist(err) {
		return fail(err)
	}
	if err := syncFile(filepath.Dir(abs)); err != nil {
		return fail(err)
	}
	if st, err := os.Stat(abs); err == nil {
		after = st.Size()
	}
	// The row store's deleted records leave its files too.
	if err := compactRowStore(ctx, rowsDir(abs), slog.New(slog.DiscardHandler)); err != nil {
		return fail(err)
	}
	return before, after, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
