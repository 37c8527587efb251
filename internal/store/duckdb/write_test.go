//go:build !noduckdb

package duckdb

import (
	"fmt"
	"testing"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestAppenderKeptAndByName: the writer's appender is kept from write to
// write, across rotations; it takes a row by position only from a table
// whose columns are those of a row in that order, and by name from one in
// another order (here the active segment's table, remade with seq first),
// so that every record reads back as written either way.
func TestAppenderKeptAndByName(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 64 << 10 // a rotation every few writes
	s := openPath(t, tempPath(t))
	alias := s.active().alias
	for _, q := range []string{
		"ALTER TABLE " + alias + ".events RENAME TO events_canonical",
		"CREATE TABLE " + alias + ".events AS SELECT seq, * EXCLUDE (seq) FROM " + alias + ".events_canonical",
		"DROP TABLE " + alias + ".events_canonical",
	} {
		if _, err := s.wconn.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	recs := storetest.Records(7, 600)
	want := map[string]event.Record{}
	var byName, byPosition int
	for i := 0; i < len(recs); i += 50 {
		batch := append([]event.Record(nil), recs[i:i+50]...)
		for _, r := range batch {
			want[r.EventID] = r
		}
		if err := s.Write(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		if s.app == nil {
			continue // the write rotated: the next opens an appender on the new segment
		}
		if s.appPositional {
			byPosition++
		} else {
			byName++
		}
	}
	if byName == 0 || byPosition == 0 {
		t.Fatalf("%d writes by column name, %d by position; want both (the remade table by name, the segments after it by position), with the appender kept after each write that did not rotate", byName, byPosition)
	}
	for id, w := range want {
		got, err := s.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get(%q): %v", id, err)
		}
		if d := storetest.Diff(w, got); d != "" {
			t.Fatalf("%s: %s", id, d)
		}
	}
}

// TestNoteFatal: only a fatal DuckDB error, however wrapped, marks the
// store failed for good; an out-of-memory error, which fails only its
// statement, does not.
func TestNoteFatal(t *testing.T) {
	s := openPath(t, tempPath(t))
	oom := fmt.Errorf("copy the records: %w", &duckdb.Error{Type: duckdb.ErrorTypeOutOfMemory, Msg: "Out of Memory Error: could not allocate block"})
	if err := s.noteFatal(oom); err != oom {
		t.Fatalf("noteFatal returned %v; want its argument", err)
	}
	select {
	case <-s.Failed():
		t.Fatalf("an out-of-memory error marked the store failed: %v", s.Failure())
	default:
	}
	fatal := fmt.Errorf("duckdb: write 3 records: %w", fmt.Errorf("append to events: %w",
		&duckdb.Error{Type: duckdb.ErrorTypeFatal, Msg: "FATAL Error: Failed: database has been invalidated"}))
	s.noteFatal(fatal)
	s.noteFatal(fmt.Errorf("later: %w", &duckdb.Error{Type: duckdb.ErrorTypeFatal, Msg: "FATAL Error: another"}))
	select {
	case <-s.Failed():
	default:
		t.Fatal("a fatal error did not mark the store failed")
	}
	if s.Failure() != fatal {
		t.Fatalf("Failure() = %v; want the first fatal error, %v", s.Failure(), fatal)
	}
}
