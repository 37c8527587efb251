//go:build !noduckdb

package duckdb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

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

// TestWriteLines: the lines WriteLines gives back are, byte for byte, the
// JSON a read of DuckDB alone returns for each stored record (times in
// microseconds, properties as the JSON column gives them back) and a
// newline, and the JSON the row store keeps; a redelivered record's line
// is the stored record's, and a repeat within the batch has none.
func TestWriteLines(t *testing.T) {
	ctx := t.Context()
	s := openPath(t, tempPath(t))
	recs := storetest.Records(5, 4)
	for i := range recs {
		recs[i].OccurredAt = recs[i].OccurredAt.Add(123 * time.Nanosecond)
		recs[i].IngestedAt = recs[i].IngestedAt.Add(456 * time.Nanosecond)
		recs[i].Properties = json.RawMessage(`{"a": "<b>", "n": [1, 2.5]}`)
	}
	first, err := s.WriteLines(ctx, recs[:1])
	if err != nil || len(first) != 1 || first[0] == nil {
		t.Fatalf("WriteLines of one record: %q, %v", first, err)
	}
	again := recs[0]
	again.Enrichment.Error = "sent again"
	batch := []event.Record{recs[1], again, recs[2], recs[2], recs[3]}
	lines, err := s.WriteLines(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(batch) || lines[3] != nil || batch[3].Seq != 0 {
		t.Fatalf("lines for a batch of %d with a repeat at 3: %d, the repeat's %q (seq %d)", len(batch), len(lines), lines[3], batch[3].Seq)
	}
	if !bytes.Equal(lines[1], first[0]) || bytes.Contains(lines[1], []byte("sent again")) {
		t.Errorf("the redelivery's line\n%s\nwant the stored record's\n%s", lines[1], first[0])
	}
	if err := s.rows.sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i, rec := range batch {
		if i == 3 {
			continue
		}
		if rec.Seq == 0 {
			t.Fatalf("record %d has no seq", i)
		}
		rows := s.rows
		s.rows = nil // DuckDB alone
		fromDuckDB, err := s.GetEncoded(ctx, rec.EventID)
		s.rows = rows
		if err != nil {
			t.Fatal(err)
		}
		if want := append(fromDuckDB, '\n'); !bytes.Equal(lines[i], want) {
			t.Errorf("record %d: line\n%s\nwant what DuckDB returns\n%s", i, lines[i], want)
		}
		kept, err := s.GetEncoded(ctx, rec.EventID)
		if err != nil || !bytes.Equal(kept, fromDuckDB) {
			t.Errorf("record %d: the row store keeps\n%s (%v)\nwant\n%s", i, kept, err, fromDuckDB)
		}
	}
	if bytes.Contains(lines[0], []byte(`"a": `)) || !bytes.Contains(lines[0], []byte(`\u003cb\u003e`)) {
		t.Errorf("the line's properties are not as the JSON column gives them back: %s", lines[0])
	}
}
