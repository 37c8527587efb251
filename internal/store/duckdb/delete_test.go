//go:build !noduckdb

package duckdb

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/sstable/block"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestDeleteKeepsSeqAcrossReopen: after the newest records (here: all of
// them) are deleted, a reopened store still hands out seq values above
// every one it handed out before.
func TestDeleteKeepsSeqAcrossReopen(t *testing.T) {
	path := tempPath(t)
	s := openPath(t, path)
	recs := storetest.Records(40, 50)
	if err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1].Seq
	if n, err := s.DeleteOccurredBefore(t.Context(), storetest.Base.AddDate(1, 0, 0)); err != nil || n != 50 {
		t.Fatalf("delete all: %d, %v", n, err)
	}
	s.Close()
	s = openPath(t, path)
	more := storetest.Records(41, 1)
	if err := s.Write(t.Context(), more); err != nil {
		t.Fatal(err)
	}
	if more[0].Seq <= last {
		t.Errorf("seq %d after reopen, want above %d", more[0].Seq, last)
	}
}

// TestErasedValuesNeedCompact: after DeleteUsers (which checkpoints) the
// erased users' records are gone from every read, but DuckDB keeps their
// bytes in the file's blocks (and the row store in its files); after
// Compact they are in neither the database file, a WAL nor the row
// store's files, and the positive control still finds a value that was
// not erased in each.
func TestErasedValuesNeedCompact(t *testing.T) {
	defer func(c *block.CompressionProfile, a bool) { rowCompression, rowAutoCompact = c, a }(rowCompression, rowAutoCompact)
	rowCompression, rowAutoCompact = block.NoCompression, false
	path := tempPath(t)
	s := openPath(t, path)
	recs := storetest.Records(42, 3000)
	victim := recs[7].User.ID
	planted := map[string]bool{}
	for i := range recs {
		if recs[i].User.ID == victim {
			recs[i].User.Email = fmt.Sprintf("planted-%d.erased@example.org", i)
			planted[recs[i].User.Email] = true
		}
	}
	control := recs[8].User.ID
	if err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	// Close moves the records from their hot segment into the file.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openPath(t, path)
	// The row store's copies of the records in a file of their own, apart
	// from the delete's tombstones to come, as in a store that has run a
	// while: a flush of a memtable that holds both drops the copies.
	if err := s.rows.db.Flush(); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteUsers(t.Context(), []string{victim})
	if err != nil || n != int64(len(planted)) {
		t.Fatalf("DeleteUsers = %d, %v; want %d", n, err, len(planted))
	}
	if _, err := s.Get(t.Context(), recs[7].EventID); err == nil {
		t.Fatal("the erased record is still readable")
	}
	grep := func(what string) bool {
		segs, err := filepath.Glob(path + segmentSuffix + "*")
		if err != nil {
			t.Fatal(err)
		}
		return grepFiles(t, append([]string{path, path + ".wal"}, segs...), what)
	}
	// grepRows looks in every file of the row store, whose blocks are
	// written uncompressed here, so that a value's bytes are there as
	// written.
	grepRows := func(what string) bool {
		files, err := filepath.Glob(filepath.Join(rowsDir(path), "*"))
		if err != nil {
			t.Fatal(err)
		}
		return grepFiles(t, files, what)
	}
	if !grepRows(victim) {
		t.Fatal("the erased user's records were never in the row store's files: the test proves nothing")
	}
	left, leftRows := 0, 0
	for v := range planted {
		if grep(v) {
			left++
		}
		if grepRows(v) {
			leftRows++
		}
	}
	t.Logf("after DeleteUsers and its checkpoint, %d of the %d erased e-mail addresses are still in the file's blocks, %d in the row store's files", left, len(planted), leftRows)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, after, err := Compact(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted %d -> %d bytes", before, after)
	for v := range planted {
		if grep(v) {
			t.Errorf("the erased value %q is still in the file or its WAL after Compact", v)
		}
		if grepRows(v) {
			t.Errorf("the erased value %q is still in the row store's files after Compact", v)
		}
	}
	if !grep(control) {
		t.Errorf("positive control: the kept user id %q is not found in the file: the grep proves nothing", control)
	}
	if !grepRows(control) {
		t.Errorf("positive control: the kept user id %q is not found in the row store's files: the grep proves nothing", control)
	}
	// The compacted store opens, holds the rest, and takes writes.
	s = openPath(t, path)
	if n, err := s.Count(t.Context()); err != nil || n != int64(len(recs)-len(planted)) {
		t.Errorf("Count after Compact = %d, %v; want %d", n, err, len(recs)-len(planted))
	}
	if _, err := s.LatestForUser(t.Context(), victim); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the erased user after Compact: %v", err)
	}
	more := storetest.Records(43, 1)
	if err := s.Write(t.Context(), more); err != nil || more[0].Seq <= recs[len(recs)-1].Seq {
		t.Errorf("write after Compact: seq %d, %v", more[0].Seq, err)
	}
	// The primary key survived: a redelivery is not stored twice.
	again := []event.Record{recs[100]}
	if err := s.Write(t.Context(), again); err != nil || again[0].Seq != recs[100].Seq {
		t.Errorf("redelivery after Compact: seq %d (stored %d), %v", again[0].Seq, recs[100].Seq, err)
	}
	if n, _ := s.Count(t.Context()); n != int64(len(recs)-len(planted)+1) {
		t.Errorf("Count after a redelivery = %d", n)
	}
	// The store's own lock: Compact refuses a file that is open.
	if _, _, err := Compact(t.Context(), path); err == nil {
		t.Error("Compact of an open store succeeded")
	}
}

// TestCancelledDeleteKeepsTheWriter: a delete whose context ends while its
// transaction is open leaves the writer's connection working: writes and
// Close go on (database/sql discards the connection of a transaction
// whose context ends, and the writer's is the store's one).
func TestCancelledDeleteKeepsTheWriter(t *testing.T) {
	s := openPath(t, tempPath(t))
	if err := s.Write(t.Context(), storetest.Records(3, 10)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	s.wsem <- struct{}{}
	_, err := s.deleteIn(ctx, "main.events", "seq < 0", nil, func(tx *sql.Tx, _ *deleted) error {
		cancel()
		// database/sql's watcher of the transaction's context acts in a
		// goroutine of its own: give it the time to.
		for range 200 {
			if _, err := tx.ExecContext(context.Background(), "SELECT 1"); err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		return nil
	}, &deleted{})
	<-s.wsem
	t.Logf("the cancelled delete: %v", err)
	if err := s.Write(t.Context(), storetest.Records(4, 10)); err != nil {
		t.Fatalf("a write after a cancelled delete: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after a cancelled delete: %v", err)
	}
}

// grepFiles reports whether any of files (those that exist) holds what.
func grepFiles(t *testing.T, files []string, what string) bool {
	t.Helper()
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(what)) {
			return true
		}
	}
	return false
}
