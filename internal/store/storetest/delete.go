package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// testDeleteUsers: DeleteUsers removes every record of the named users
// (and only those) from every read, reports how many, and is idempotent;
// an id that holds SQL is a value; a record of an erased user written
// afterwards is stored again; seq never goes back.
func testDeleteUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	recs := Records(30, 200)
	write(t, s, recs)
	victims := []string{recs[0].User.ID, recs[1].User.ID, "' OR 1=1 --", "nobody"}
	want := 0
	for _, r := range recs {
		if slices.Contains(victims, r.User.ID) {
			want++
		}
	}
	n, err := s.DeleteUsers(ctx, victims)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(want) {
		t.Errorf("DeleteUsers = %d, want %d", n, want)
	}
	left := walk(t, s, store.Query{Ascending: true})
	if len(left) != len(recs)-want {
		t.Errorf("%d records left, want %d", len(left), len(recs)-want)
	}
	for _, r := range left {
		if slices.Contains(victims, r.User.ID) {
			t.Fatalf("record %s of %s is still listed", r.EventID, r.User.ID)
		}
	}
	for _, r := range recs {
		_, err := s.Get(ctx, r.EventID)
		if erased := slices.Contains(victims, r.User.ID); erased != errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%s) of user %s after erasure: %v", r.EventID, r.User.ID, err)
		}
	}
	for _, id := range victims[:2] {
		if _, err := s.LatestForUser(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LatestForUser(%s) after erasure: %v, want ErrNotFound", id, err)
		}
		if p, err := s.List(ctx, store.Query{UserID: id}); err != nil || len(p.Records) != 0 {
			t.Errorf("List(user %s) after erasure: %d records, %v", id, len(p.Records), err)
		}
	}
	if n, err := s.DeleteUsers(ctx, victims); n != 0 || err != nil {
		t.Errorf("DeleteUsers again = %d, %v; want 0, nil", n, err)
	}
	if n, err := s.DeleteUsers(ctx, nil); n != 0 || err != nil {
		t.Errorf("DeleteUsers(nil) = %d, %v", n, err)
	}
	// Written again afterwards (an event still in flight): stored again,
	// with a seq above every one handed out before.
	maxSeq := int64(0)
	for _, r := range recs {
		if got, err := s.Get(ctx, r.EventID); err == nil {
			maxSeq = max(maxSeq, got.Seq)
		}
	}
	again := []event.Record{recs[0]}
	write(t, s, again)
	got := get(t, s, recs[0].EventID)
	if d := Diff(recs[0], got); d != "" {
		t.Error(d)
	}
	if got.Seq <= maxSeq {
		t.Errorf("a record written after an erasure got seq %d, not above %d", got.Seq, maxSeq)
	}
}

// testDeleteOccurredBefore: retention (store.Expirer, skipped if the store
// does not implement it) deletes the records that occurred before the
// cutoff, by occurred_at, whatever their ingested_at, and no other.
func testDeleteOccurredBefore(t *testing.T, s store.Store) {
	e, ok := s.(store.Expirer)
	if !ok {
		t.Skip("the store does not implement store.Expirer (it expires data by itself)")
	}
	ctx := t.Context()
	recs := Records(31, 100)
	// An old event ingested just now is old; a new one is not.
	recs[10].OccurredAt, recs[10].IngestedAt = Base.Add(-48*time.Hour), Base.Add(time.Hour)
	cutoff := recs[50].OccurredAt
	write(t, s, recs)
	want := 0
	for _, r := range recs {
		if r.OccurredAt.Before(cutoff) {
			want++
		}
	}
	n, err := e.DeleteOccurredBefore(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(want) || want < 40 {
		t.Errorf("DeleteOccurredBefore = %d, want %d", n, want)
	}
	left := walk(t, s, store.Query{Ascending: true})
	if len(left) != len(recs)-want {
		t.Errorf("%d records left, want %d", len(left), len(recs)-want)
	}
	for _, r := range left {
		if r.OccurredAt.Before(cutoff) {
			t.Errorf("record %s occurred at %s, before the cutoff %s, is left", r.EventID, r.OccurredAt, cutoff)
		}
	}
	if n, err := e.DeleteOccurredBefore(ctx, cutoff); n != 0 || err != nil {
		t.Errorf("again = %d, %v", n, err)
	}
}
