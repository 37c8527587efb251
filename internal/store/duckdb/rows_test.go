//go:build !noduckdb

package duckdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	gojson "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestConformanceNoRowStore runs the conformance suite without the row
// store (the suite itself runs with it, the default): a user's records
// come from DuckDB alone.
func TestConformanceNoRowStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), Config{Path: tempPath(t), NoRowStore: true}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// get returns the records of the row refs it holds (nil where it does
// not, and those refs in missing).
func (r *rowStore) get(refs []int64) (recs []*event.Record, missing []int64, err error) {
	got, missing, err := r.fetch(refs, false)
	if err != nil {
		return nil, nil, err
	}
	recs = make([]*event.Record, len(refs))
	for i := range got {
		recs[i] = got[i].rec
	}
	return recs, missing, nil
}

// rowUsers are TestRowStore's users.
var rowUsers = []string{"user-0", "user-1", "user-2", "user-3"}

// walkUser returns the JSON of every page of the user's records, pages of
// 7 in the order asked, and how many of the page's records the row store
// did not hold.
func walkUser(t *testing.T, s *Store, user string, asc bool) (pages []string, misses int64) {
	t.Helper()
	before := int64(0)
	if s.rows != nil {
		before = s.rows.misses.Load()
	}
	q := store.Query{UserID: user, Ascending: asc, Limit: 7}
	for range 1000 {
		p, err := s.List(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, string(b))
		checkEncodedPage(t, s, q, p)
		if p.NextCursor == "" {
			if s.rows != nil {
				misses = s.rows.misses.Load() - before
			}
			return pages, misses
		}
		q.Cursor = p.NextCursor
	}
	t.Fatalf("user %s: more than 1000 pages", user)
	return nil, 0
}

// checkEncodedPage requires ListEncoded to give the page p of List(q) as
// the API encodes it, byte for byte.
func checkEncodedPage(t *testing.T, s *Store, q store.Query, p store.Page) {
	t.Helper()
	e, err := s.ListEncoded(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	if e.NextCursor != p.NextCursor || len(e.Records) != len(p.Records) {
		t.Fatalf("ListEncoded(%+v): %d records, cursor %q; List: %d, %q", q, len(e.Records), e.NextCursor, len(p.Records), p.NextCursor)
	}
	for i := range p.Records {
		checkEncoded(t, "ListEncoded", e.Records[i], p.Records[i])
	}
}

// checkEncoded requires got to be want as the API encodes it.
func checkEncoded(t *testing.T, what string, got []byte, want event.Record) {
	t.Helper()
	w, err := gojson.Marshal(&want)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(w) {
		t.Fatalf("%s, seq %d:\n got %s\nwant %s", what, want.Seq, got, w)
	}
}

// walkBothWays walks the user's pages through the row store (got, with
// its misses) and from DuckDB alone (want).
func walkBothWays(t *testing.T, s *Store, user string, asc bool) (got, want []string, misses int64) {
	t.Helper()
	got, misses = walkUser(t, s, user, asc)
	rows := s.rows
	s.rows = nil
	want, _ = walkUser(t, s, user, asc)
	s.rows = rows
	return got, want, misses
}

// readByIDBothWays reads each of the user's records by its event id,
// and the user's latest record, through the row store (got) and from
// DuckDB alone (want), as JSON, and returns how many reads the row store
// answered.
func readByIDBothWays(t *testing.T, s *Store, user string) (got, want []string, hits int64) {
	t.Helper()
	ctx := t.Context()
	rows := s.rows
	s.rows = nil
	all, err := s.List(ctx, store.Query{UserID: user, Limit: 1000})
	s.rows = rows
	if err != nil {
		t.Fatal(err)
	}
	read := func() (out []string) {
		for _, r := range all.Records {
			rec, err := s.Get(ctx, r.EventID)
			if err != nil {
				t.Fatalf("Get(%s): %v", r.EventID, err)
			}
			b, _ := json.Marshal(rec)
			out = append(out, string(b))
			enc, err := s.GetEncoded(ctx, r.EventID)
			if err != nil {
				t.Fatalf("GetEncoded(%s): %v", r.EventID, err)
			}
			checkEncoded(t, "GetEncoded", enc, rec)
		}
		latest, err := s.LatestForUser(ctx, user)
		enc, encErr := s.LatestForUserEncoded(ctx, user)
		if errors.Is(err, store.ErrNotFound) {
			if !errors.Is(encErr, store.ErrNotFound) {
				t.Fatalf("LatestForUserEncoded(%s): %v, where LatestForUser found none", user, encErr)
			}
			return append(out, "not found")
		}
		if err != nil || encErr != nil {
			t.Fatalf("LatestForUser(%s): %v; encoded: %v", user, err, encErr)
		}
		checkEncoded(t, "LatestForUserEncoded", enc, latest)
		b, _ := json.Marshal(latest)
		return append(out, string(b))
	}
	before := rows.hits.Load()
	got = read()
	hits = rows.hits.Load() - before
	s.rows = nil
	want = read()
	s.rows = rows
	return got, want, hits
}

// checkRows compares every page of every user, both ways, read through
// the row store and from DuckDB alone, and each record read by its event
// id, and returns how many records the row store did not hold.
func checkRows(t *testing.T, s *Store, what string) (misses int64) {
	t.Helper()
	if err := s.rows.sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, user := range rowUsers {
		got, want, hits := readByIDBothWays(t, s, user)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: user %s: the records by event id through the row store\n%v\nfrom DuckDB\n%v", what, user, got, want)
		}
		if len(got) > 1 && hits == 0 && s.rows.failed.get() == nil {
			if lo, _ := s.rows.lowest(); lo != 0 {
				t.Errorf("%s: user %s: no read by event id came from the row store", what, user)
			}
		}
		for _, asc := range []bool{true, false} {
			got, want, m := walkBothWays(t, s, user, asc)
			misses += m
			if !slices.Equal(got, want) {
				for i := range min(len(got), len(want)) {
					if got[i] != want[i] {
						t.Fatalf("%s: user %s, ascending %v, page %d\nrow store: %s\nDuckDB:    %s", what, user, asc, i, got[i], want[i])
					}
				}
				t.Fatalf("%s: user %s, ascending %v: %d pages through the row store, %d from DuckDB", what, user, asc, len(got), len(want))
			}
		}
	}
	return misses
}

// TestRowStore: a page of a user's records read through the row store is
// the one DuckDB alone gives, page by page and cursor by cursor, in both
// orders, after writes over several hot segments, a weather backfill, a
// user's erasure and retention; the copies of deleted records are gone
// from it; a store opened without it removes it, and one opened with it
// again (or whose copies are of another schema version) starts empty and
// is filled by Settle.
func TestRowStore(t *testing.T) {
	defer func(b, chunk int64) { segmentBytes, rowFillChunk = b, chunk }(segmentBytes, rowFillChunk)
	segmentBytes = 64 << 10 // several segments, most moved
	rowFillChunk = 100
	ctx := t.Context()
	path := tempPath(t)
	s := openPath(t, path)
	// A new store's row store has nothing to be filled with: the writes
	// put every record.
	if to, err := s.rows.filledDownTo(); err != nil || to != 1 {
		t.Fatalf("a new store's row store is to be filled from seq %d (%v)", to-1, err)
	}
	recs := storetest.Records(11, 1200)
	for i := range recs {
		recs[i].User.ID = rowUsers[i%len(rowUsers)]
		if i%5 == 0 {
			recs[i].Weather = nil
			recs[i].Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "weather: HTTP 503"}
		}
	}
	for b := 0; b < len(recs); b += 100 {
		if err := s.Write(ctx, recs[b:b+100]); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.segments()) < 2 || s.coldSeen.Load() == 0 {
		t.Fatalf("%d segments, cold_max %d: want records in both the main file and the segments", len(s.segments()), s.coldSeen.Load())
	}
	if m := checkRows(t, s, "after the writes"); m != 0 {
		t.Errorf("after the writes: the row store missed %d records", m)
	}

	// A backfill: the records updated are read with their new weather,
	// from the row store.
	var upd []event.Record
	for after := int64(0); ; {
		page, next, err := s.Unavailable(ctx, 50, after)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			r.Weather = &event.Weather{ObservedAt: time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC), TemperatureC: 4.5,
				Condition: "Slight rain", Provider: "open-meteo", CellLatitude: 52.55, CellLongitude: 13.45}
			r.Enrichment = event.Enrichment{Status: event.StatusEnriched}
			upd = append(upd, r)
		}
		if next == 0 {
			break
		}
		after = next
	}
	if len(upd) < 200 {
		t.Fatalf("%d unavailable records", len(upd))
	}
	if n, err := s.UpdateWeather(ctx, upd); err != nil || n != int64(len(upd)) {
		t.Fatalf("UpdateWeather: %d, %v; want %d", n, err, len(upd))
	}
	if m := checkRows(t, s, "after the backfill"); m != 0 {
		t.Errorf("after the backfill: the row store missed %d records", m)
	}
	got, _, err := s.rows.get([]int64{rowRef(upd[0].User.ID, upd[0].Seq)})
	if err != nil || got[0] == nil || got[0].Enrichment.Status != event.StatusEnriched || got[0].Weather == nil || got[0].Weather.Condition != "Slight rain" {
		t.Fatalf("the row store's copy of an updated record: %+v, %v", got, err)
	}

	// An erasure and retention: the records deleted leave the row store.
	var erased []int64
	for _, seq := range s.users.list("user-0") {
		erased = append(erased, rowRef("user-0", seq))
	}
	if _, err := s.DeleteUsers(ctx, []string{"user-0"}); err != nil {
		t.Fatal(err)
	}
	if _, missing, err := s.rows.get(erased); err != nil || len(missing) != len(erased) {
		t.Fatalf("the row store still holds %d of user-0's %d records (%v)", len(erased)-len(missing), len(erased), err)
	}
	times := make([]time.Time, len(recs))
	for i := range recs {
		times[i] = recs[i].OccurredAt
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	cut := times[len(times)/2]
	var expired []int64
	for _, u := range rowUsers[1:] {
		page, err := s.List(ctx, store.Query{UserID: u, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			if r.OccurredAt.Before(cut) {
				expired = append(expired, rowRef(r.User.ID, r.Seq))
			}
		}
	}
	if n, err := s.DeleteOccurredBefore(ctx, cut); err != nil || n != int64(len(expired)) {
		t.Fatalf("DeleteOccurredBefore: %d, %v; want %d", n, err, len(expired))
	}
	if _, missing, err := s.rows.get(expired); err != nil || len(missing) != len(expired) {
		t.Fatalf("the row store still holds %d of the %d expired records (%v)", len(expired)-len(missing), len(expired), err)
	}
	if m := checkRows(t, s, "after the deletes"); m != 0 {
		t.Errorf("after the deletes: the row store missed %d records", m)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Without the row store: its directory goes.
	off, err := Open(ctx, Config{Path: path, NoRowStore: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rowsDir(path)); !os.IsNotExist(err) {
		t.Fatalf("the row store's directory after an open without it: %v", err)
	}
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}

	// With it again: empty, every record read from DuckDB until Settle
	// fills it.
	s = openPath(t, path)
	if lo, err := s.rows.lowest(); err != nil || lo != 0 {
		t.Fatalf("a new row store holds seq %d (%v)", lo, err)
	}
	if to, err := s.rows.filledDownTo(); err != nil || to != s.lastSeq+1 {
		t.Fatalf("a new row store of a store at seq %d is to be filled from seq %d (%v), want %d", s.lastSeq, to-1, err, s.lastSeq)
	}
	if m := checkRows(t, s, "reopened"); m == 0 {
		t.Error("reopened: the new row store held records")
	}
	if err := s.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if m := checkRows(t, s, "settled"); m != 0 {
		t.Errorf("settled: the row store missed %d records", m)
	}
	if to, err := s.rows.filledDownTo(); err != nil || to != 1 {
		t.Fatalf("a filled row store is filled down to seq %d (%v), want 1", to, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Copies of another schema version, or of another JSON form of a
	// record (rowFormat), are not used; those of this one are.
	// The form before the layout of rowRef: keyed by seq alone.
	bySeq := strings.TrimSuffix(rowFormat(), "/"+rowLayout)
	for _, other := range []string{fmt.Sprint(SchemaVersion - 1), fmt.Sprint(SchemaVersion) + "/0123456789abcdef", bySeq, ""} {
		s = openPath(t, path)
		if err := s.Settle(ctx); err != nil {
			t.Fatal(err)
		}
		if lo, err := s.rows.lowest(); err != nil || lo == 0 {
			t.Fatalf("the row store holds nothing after Settle (%v)", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if other == "" {
			// This form: kept.
			s = openPath(t, path)
			if lo, err := s.rows.lowest(); err != nil || lo == 0 {
				t.Fatalf("the row store's copies of this form were dropped at the open (%v)", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		db, err := pebble.Open(rowsDir(path), &pebble.Options{Logger: pebbleLogger{slog.New(slog.DiscardHandler), newRowFailure(slog.New(slog.DiscardHandler))}})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Set(rowSchemaKey, []byte(other), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		s = openPath(t, path)
		if lo, err := s.rows.lowest(); err != nil || lo != 0 {
			t.Fatalf("a row store of form %q holds seq %d after the open (%v)", other, lo, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Compact rewrites it too.
	if _, _, err := Compact(context.Background(), path); err != nil {
		t.Fatal(err)
	}
}

// TestRowFormat: the form of the row store's copies is the schema version,
// a fingerprint of a record's JSON, the same at every call (a map's keys
// in one order), and the layout of its keys.
func TestRowFormat(t *testing.T) {
	f := rowFormat()
	if !strings.HasPrefix(f, fmt.Sprint(SchemaVersion)+"/") || !strings.HasSuffix(f, "/user19-seq44") || len(f) != len(fmt.Sprint(SchemaVersion))+17+len("/user19-seq44") {
		t.Fatalf("rowFormat() = %q", f)
	}
	for range 50 {
		if g := rowFormat(); g != f {
			t.Fatalf("rowFormat() = %q, then %q", f, g)
		}
	}
}

// TestStoredProperties: the properties as a read of the store returns
// them are json.Marshal's of the text, whether or not they were compact
// already.
func TestStoredProperties(t *testing.T) {
	for _, p := range []string{
		`{"a":1,"b":[true,null,"x"]}`,
		`{"a": 1}`,
		"{\"a\":\n1}",
		`{"html":"<b>&</b>"}`,
		"{\"sep\":\"\u2028\u2029\"}",
		`{"esc":"\u003c","uni":"é"}`,
		`{"nested":{"k":[1.5,-2e3]}}`,
	} {
		want, err := json.Marshal(json.RawMessage(p))
		if err != nil {
			t.Fatal(err)
		}
		got, err := storedProperties(json.RawMessage(p))
		if err != nil || string(got) != string(want) {
			t.Errorf("storedProperties(%s) = %s, %v; want %s", p, got, err, want)
		}
	}
}

// TestRowStoreFailed: when one of Pebble's writes finds its disk full
// (injected: until the row store's ballast is removed, which frees the
// space), the ballast goes, the write is tried again, and the row store
// fails rather than the process: Pebble panics with its lock in a state
// that ends the process when its WAL cannot be written or a new one made.
// The store goes on without the row store: the writes that follow are
// stored, a user's pages are DuckDB's, a delete fails (no copy its files
// keep can become stale) and Close returns. Opened again (with room for
// the ballast), the row store is used again.
func TestRowStoreFailed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		op    errorfs.OpKind
		pages bool // walk every user's pages (seconds) before and after
	}{
		// Pebble's WAL writer writes a record in the background.
		{"a write to its WAL", errorfs.OpFileWrite, true},
		// When a memtable is full, a commit closes its WAL and makes a new
		// one: the disk full then is what ended the process in CI.
		{"a new WAL", errorfs.OpCreate, false},
	} {
		t.Run(tc.name, func(t *testing.T) { testRowStoreFailed(t, tc.op, tc.pages) })
	}
}

func testRowStoreFailed(t *testing.T, op errorfs.OpKind, pages bool) {
	var full atomic.Bool
	var hits atomic.Int64
	defer func(fs vfs.FS) { rowFS = fs }(rowFS)
	path := tempPath(t)
	ballast := rowsDir(path) + "/" + rowBallast
	rowFS = errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(o errorfs.Op) error {
		if full.Load() && o.Kind == op && strings.HasSuffix(o.Path, ".log") {
			if _, err := os.Stat(ballast); err == nil {
				hits.Add(1)
				return syscall.ENOSPC
			}
		}
		return nil
	}))
	ctx := t.Context()
	s, err := Open(ctx, Config{Path: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	recs := storetest.Records(12, 400)
	for i := range recs {
		recs[i].User.ID = rowUsers[i%len(rowUsers)]
	}
	if err := s.Write(ctx, recs[:200]); err != nil {
		t.Fatal(err)
	}
	if pages {
		if m := checkRows(t, s, "before the failure"); m != 0 {
			t.Fatalf("before the failure: the row store missed %d records", m)
		}
	}
	if fi, err := os.Stat(ballast); err != nil || fi.Size() != rowBallastBytes {
		t.Fatalf("the row store's ballast: %v, %v; want %d bytes", fi, err, rowBallastBytes)
	}
	full.Store(true)
	for b := 200; b < len(recs); b += 10 {
		if err := s.Write(ctx, recs[b:b+10]); err != nil {
			t.Fatalf("a write while the row store's disk is full: %v", err)
		}
	}
	// Puts of their own until the row store fails, past a memtable (at
	// seqs DuckDB does not have: the failed row store is not read).
	enc := event.NewLineEncoder()
	for seq := int64(1 << 40); s.rows.failed.get() == nil; seq += 100 {
		if seq > 1<<40+4*rowMemTableBytes/1000 {
			t.Fatalf("no failure after %d puts past a memtable's worth", seq-1<<40)
		}
		seqs := make([]int64, 100)
		for i := range seqs {
			seqs[i] = seq + int64(i)
		}
		users, vals := make([]string, len(seqs)), make([][]byte, len(seqs))
		for i := range seqs {
			c := ownCopy(recs[i])
			c.Seq = seqs[i]
			v, err := rowValue(enc, &c, true)
			if err != nil {
				t.Fatal(err)
			}
			users[i], vals[i] = c.User.ID, slices.Clone(v)
		}
		s.rows.putLines(ctx, seqs, users, vals)
	}
	if hits.Load() == 0 {
		t.Fatal("the row store failed, but not on the disk full injected")
	}
	if _, err := os.Stat(ballast); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the ballast after the disk full: %v; want it removed", err)
	}
	full.Store(false)
	// A drop queued after them finds the failure.
	if err := s.rows.sync(ctx); err == nil || !strings.Contains(err.Error(), "row store failed") {
		t.Fatalf("sync after the failed put: %v, want the row store's failure", err)
	}
	for _, user := range rowUsers {
		for _, asc := range []bool{true, false} {
			got, want, _ := walkBothWays(t, s, user, asc)
			if !slices.Equal(got, want) || len(got) == 0 {
				t.Fatalf("user %s, ascending %v: %d pages with the failed row store, %d from DuckDB", user, asc, len(got), len(want))
			}
		}
		if !pages {
			break // one user's
		}
	}
	if n, err := s.Count(ctx); err != nil || n != int64(len(recs)) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(recs))
	}
	if _, err := s.DeleteUsers(ctx, []string{rowUsers[0]}); err == nil {
		t.Error("a delete succeeded though the row store could not drop its copies")
	}
	if page, err := s.List(ctx, store.Query{UserID: rowUsers[0], Limit: 1}); err != nil || len(page.Records) != 1 {
		t.Errorf("the user of the failed delete: %d records, %v; want them kept", len(page.Records), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close leaves a failed Pebble to the process's exit (it may hold its
	// lock); this one is whole (the write was tried again), so the test
	// closes it to open the store again.
	<-s.rows.done
	if err := s.rows.db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, Config{Path: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.rows.failed.get(); err != nil {
		t.Fatalf("the row store opened again: %v", err)
	}
	if fi, err := os.Stat(ballast); err != nil || fi.Size() != rowBallastBytes {
		t.Fatalf("the ballast opened again: %v, %v; want %d bytes", fi, err, rowBallastBytes)
	}
	more := storetest.Records(13, 20)
	for i := range more {
		more[i].User.ID = rowUsers[i%len(rowUsers)]
	}
	if err := s.Write(ctx, more); err != nil {
		t.Fatal(err)
	}
	if err := s.rows.sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.rows.hits.Load()
	for _, r := range more {
		if _, err := s.Get(ctx, r.EventID); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.rows.hits.Load() - before; got != int64(len(more)) {
		t.Errorf("opened again: %d of the %d records written since read from the row store", got, len(more))
	}
}

// TestRowOpenFiles: the row store keeps open a quarter of the files the
// process may open, within [1,000, 16,384], and Pebble's 1,000 when the
// limit is unknown; on Linux, this process's limit is known.
func TestRowOpenFiles(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{{0, 1000}, {1024, 1000}, {20000, 5000}, {1 << 20, 16384}, {1<<63 + 1, 16384}} {
		if got := rowOpenFiles(tc.limit); got != tc.want {
			t.Errorf("rowOpenFiles(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	if openFilesLimit() == 0 && runtime.GOOS == "linux" {
		t.Error("the process's limit of open files is unknown")
	}
}

// TestRowCompression: the row store's sstables are compressed as
// rowCompression asks for its data blocks. Pebble falls back to snappy,
// without a word, for a profile its sstable format cannot hold: the row
// store asked for zstd until the twenty-sixth round and wrote snappy all
// along (with the "balanced" profile this test fails).
func TestRowCompression(t *testing.T) {
	r, err := openPebble(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	enc := event.NewLineEncoder()
	recs := storetest.Records(3, 2000)
	b := r.db.NewBatch()
	for i := range recs {
		v, err := rowValue(enc, &recs[i], true)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Set(rowKey(rowRef(recs[i].User.ID, int64(i+1))), v, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := r.db.Flush(); err != nil {
		t.Fatal(err)
	}
	m := r.db.Metrics().Table
	got := map[string]int64{"Snappy": m.CompressedCountSnappy, "ZSTD": m.CompressedCountZstd, "MinLZ": m.CompressedCountMinLZ,
		"NoCompression": m.CompressedCountNone, "unknown": m.CompressedCountUnknown}
	want := rowCompression.DataBlocks.Algorithm.String()
	for alg, n := range got {
		if (alg == want) != (n > 0) {
			t.Errorf("the sstables' compression: %v; want %s only (rowCompression %s)", got, want, rowCompression.Name)
			break
		}
	}
}

// TestRowRef: a row ref is a hash of the user id (the same in every
// process: the refs are on disk) above the seq, which it gives back; a
// user's refs sort by seq, and no other user's fall between them unless
// the two share the hash.
func TestRowRef(t *testing.T) {
	// xxHash64 of "u-1": its top 19 bits.
	if got, want := rowRef("u-1", 5), int64(0x821a0434b1f1dd6a>>45)<<44|5; got != want {
		t.Fatalf("rowRef(u-1, 5) = %#x, want %#x", got, want)
	}
	if rowRefBytes([]byte("u-1"), 7) != rowRef("u-1", 7) {
		t.Fatal("rowRef of the bytes and the string of one id differ")
	}
	users := make([]string, 1000)
	prefixes := map[int64]string{}
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
		prefixes[rowRef(users[i], 0)] = users[i]
	}
	if len(prefixes) < 990 {
		t.Errorf("1,000 users have %d hashes", len(prefixes))
	}
	var refs []int64
	owner := map[int64]string{}
	for seq := int64(1); seq <= 5000; seq++ {
		u := users[(seq*7919)%int64(len(users))]
		ref := rowRef(u, seq)
		if ref <= 0 || refSeq(ref) != seq {
			t.Fatalf("rowRef(%s, %d) = %#x: seq %d", u, seq, ref, refSeq(ref))
		}
		refs, owner[ref] = append(refs, ref), u
	}
	for _, seq := range []int64{1, 1 << 40, rowSeqMask} {
		if got := refSeq(rowRef("someone", seq)); got != seq {
			t.Errorf("refSeq(rowRef(someone, %d)) = %d", seq, got)
		}
	}
	slices.Sort(refs)
	seen := map[string]bool{}
	for i, ref := range refs {
		u := owner[ref]
		if i > 0 && owner[refs[i-1]] != u {
			if seen[u] && prefixes[rowRef(u, 0)] == u {
				t.Fatalf("user %s's records are not together in the order of their refs", u)
			}
		} else if i > 0 && refSeq(refs[i-1]) >= refSeq(ref) {
			t.Fatalf("user %s's refs out of seq order", u)
		}
		seen[u] = true
	}
}

// TestWriteSeqLimit: the store hands out no seq a row ref cannot hold.
func TestWriteSeqLimit(t *testing.T) {
	s := openPath(t, tempPath(t))
	defer s.Close()
	recs := storetest.Records(3, 10)
	s.lastSeq = rowSeqMask - 5
	err := s.Write(t.Context(), recs)
	if err == nil || !strings.Contains(err.Error(), "takes no more") {
		t.Fatalf("a write past seq 2^44: %v", err)
	}
	if err := s.Write(t.Context(), recs[:5]); err != nil {
		t.Fatalf("a write up to seq 2^44-1: %v", err)
	}
	if got, err := s.Get(t.Context(), recs[4].EventID); err != nil || got.Seq != rowSeqMask {
		t.Fatalf("the record at the last seq: %v, %v", got.Seq, err)
	}
}
