//go:build !noduckdb

package duckdb

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestLatestFromTheUserIndex checks LatestForUser, read through the user
// index, against the latest record of each user computed from what was
// written, and against the read through users_latest, as records arrive
// out of order and with ties, in the hot segments and in the main file,
// after a reopen (the index rebuilt from the file), a redelivery, a
// retention delete and an erasure.
func TestLatestFromTheUserIndex(t *testing.T) {
	defer func(old int64) { segmentBytes = old }(segmentBytes)
	segmentBytes = 64 << 10 // several segments
	path := tempPath(t)
	s := openPath(t, path)
	rng := rand.New(rand.NewPCG(7, 16))
	var written []event.Record
	users := 40
	base := storetest.Base
	batch := func(seed uint64, n int) []event.Record {
		recs := storetest.Records(seed, n)
		for i := range recs {
			recs[i].User.ID = "u" + string(rune('A'+rng.IntN(users/2))) + string(rune('a'+rng.IntN(2)))
			// Whole seconds within an hour: ties are common, and a later
			// write often occurred earlier.
			recs[i].OccurredAt = base.Add(time.Duration(rng.IntN(3600)) * time.Second)
		}
		return recs
	}
	write := func(recs []event.Record) {
		t.Helper()
		if err := s.Write(t.Context(), recs); err != nil {
			t.Fatal(err)
		}
		written = append(written, recs...) // with their seq, as stored
	}
	check := func(when string) {
		t.Helper()
		want := latestOf(written)
		for c := 'A'; c < 'A'+rune(users/2); c++ {
			for _, suffix := range []string{"a", "b"} {
				user := "u" + string(c) + suffix
				for _, fast := range []bool{true, false} {
					latestFast = fast
					got, err := s.LatestForUser(t.Context(), user)
					latestFast = true
					w, ok := want[user]
					switch {
					case !ok && !errors.Is(err, store.ErrNotFound):
						t.Errorf("%s: LatestForUser(%s) (fast %v) = %s, %v; want ErrNotFound", when, user, fast, got.EventID, err)
					case ok && err != nil:
						t.Errorf("%s: LatestForUser(%s) (fast %v): %v", when, user, fast, err)
					case ok && got.EventID != w.EventID:
						t.Errorf("%s: LatestForUser(%s) (fast %v) = %s (seq %d, %v); want %s (seq %d, %v)",
							when, user, fast, got.EventID, got.Seq, got.OccurredAt, w.EventID, w.Seq, w.OccurredAt)
					case ok:
						if d := storetest.Diff(w, got); d != "" {
							t.Errorf("%s: LatestForUser(%s) (fast %v): %s", when, user, fast, d)
						}
					}
				}
			}
		}
	}

	for i := range 6 {
		write(batch(uint64(10+i), 150))
	}
	check("in the segments")
	if err := s.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	write(batch(20, 100))
	check("in the main file and a segment")

	// A redelivery: the stored records stand, nothing new.
	again := slices.Clone(written[:50])
	if err := s.Write(t.Context(), again); err != nil {
		t.Fatal(err)
	}
	check("after a redelivery")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openPath(t, path)
	check("after a reopen")
	write(batch(30, 100))
	check("after a reopen and writes")

	cut := base.Add(30 * time.Minute)
	if _, err := s.DeleteOccurredBefore(t.Context(), cut); err != nil {
		t.Fatal(err)
	}
	written = slices.DeleteFunc(written, func(r event.Record) bool { return r.OccurredAt.Before(cut) })
	check("after a retention delete")

	gone := []string{"uAa", "uBb", "uCa"}
	if _, err := s.DeleteUsers(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	written = slices.DeleteFunc(written, func(r event.Record) bool { return slices.Contains(gone, r.User.ID) })
	check("after an erasure")
	write(batch(40, 60))
	check("after an erasure and writes")
}

// TestUserIndexLatest: a delete that takes a user's latest record and
// leaves others makes the index not know the latest (LatestForUser then
// asks the store), and a later write does not make it known again, since
// an older record may have occurred later.
func TestUserIndexLatest(t *testing.T) {
	x := newUserIndex()
	x.add([]string{"a", "a", "b"}, []int64{1, 2, 3}, []int64{100, 50, 7})
	if seq, ok := x.latestSeq("a"); !ok || seq != 1 {
		t.Errorf("latest of a = %d, %v; want 1 (the earlier write occurred later)", seq, ok)
	}
	x.add([]string{"a"}, []int64{4}, []int64{100})
	if seq, _ := x.latestSeq("a"); seq != 4 {
		t.Errorf("latest of a after a tie = %d, want 4", seq)
	}
	x.remove([]string{"a"}, []int64{4})
	if seq, ok := x.latestSeq("a"); ok {
		t.Errorf("latest of a after its latest was deleted = %d, want unknown", seq)
	}
	x.add([]string{"a"}, []int64{5}, []int64{10})
	if seq, ok := x.latestSeq("a"); ok {
		t.Errorf("latest of a after another write = %d, want still unknown (record 1 occurred later)", seq)
	}
	x.remove([]string{"a", "a", "a"}, []int64{1, 2, 5})
	x.add([]string{"a"}, []int64{6}, []int64{1})
	if seq, ok := x.latestSeq("a"); !ok || seq != 6 {
		t.Errorf("latest of a after all its records went and one came = %d, %v; want 6", seq, ok)
	}
	x.removeUsers([]string{"b"})
	if _, ok := x.latestSeq("b"); ok {
		t.Error("latest of an erased user is known")
	}
	// noteLatestAt (at open) keeps the latest whatever the order.
	y := newUserIndex()
	for _, r := range []struct{ seq, at int64 }{{5, 10}, {2, 30}, {9, 30}, {1, 5}} {
		y.addUnordered([]byte("u"), r.seq)
		y.noteLatestAt("u", r.at, r.seq)
	}
	if seq, _ := y.latestSeq("u"); seq != 9 {
		t.Errorf("latest at load = %d, want 9", seq)
	}
}

// checkLatest checks that LatestForUser, through the user index, returns
// each user's latest record among recs, all the store holds.
func checkLatest(t *testing.T, s *Store, recs []event.Record) {
	t.Helper()
	want := latestOf(recs)
	known := 0
	for user, w := range want {
		if _, ok := s.users.latestSeq(user); ok {
			known++
		}
		got, err := s.LatestForUser(t.Context(), user)
		if err != nil || got.EventID != w.EventID {
			t.Errorf("LatestForUser(%s) = %s, %v; want %s", user, got.EventID, err, w.EventID)
		}
	}
	if known != len(want) {
		t.Errorf("the user index knows the latest record of %d of %d users", known, len(want))
	}
}

// latestOf returns each user's latest record among recs: by occurred_at,
// the later seq on a tie.
func latestOf(recs []event.Record) map[string]event.Record {
	want := map[string]event.Record{}
	for _, r := range recs {
		w, ok := want[r.User.ID]
		if !ok || r.OccurredAt.After(w.OccurredAt) || r.OccurredAt.Equal(w.OccurredAt) && r.Seq > w.Seq {
			want[r.User.ID] = r
		}
	}
	return want
}

// TestListUserQuoted lists the records of a user whose id holds quotes
// and SQL, in the main file (read by seq) and in a hot segment (read with
// the user as a literal): each way, every record and no other.
func TestListUserQuoted(t *testing.T) {
	defer func(spread, bytes int64) { minPointSpread, segmentBytes = spread, bytes }(minPointSpread, segmentBytes)
	minPointSpread = 1      // by a statement each, however close together
	segmentBytes = 64 << 10 // several segments
	s := openPath(t, tempPath(t))
	user := `o'brien' OR '1'='1`
	recs := storetest.Records(5, 600)
	var want []string
	for i := range recs {
		if i%3 == 0 {
			recs[i].User.ID = user
			want = append(want, recs[i].EventID)
		}
	}
	for b := 0; b < len(recs); b += 100 {
		if err := s.Write(t.Context(), recs[b:b+100]); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.segments()) < 2 || s.coldSeen.Load() == 0 {
		t.Fatalf("%d segments, cold_max %d: want records in both the main file and the segments", len(s.segments()), s.coldSeen.Load())
	}
	for _, points := range []bool{true, false} {
		listByUserPoints = points
		page, err := s.List(t.Context(), store.Query{UserID: user, Ascending: true, Limit: 1000})
		listByUserPoints = true
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range page.Records {
			got = append(got, r.EventID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("points %v: %d records, want %d", points, len(got), len(want))
		}
	}
}
