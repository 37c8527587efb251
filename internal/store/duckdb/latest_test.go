//go:build !noduckdb

package duckdb

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
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
	defer func(spread, keyed, bytes int64) {
		minPointSpread, keyedPointSpread, segmentBytes = spread, keyed, bytes
	}(minPointSpread, keyedPointSpread, segmentBytes)
	minPointSpread, keyedPointSpread = 1, 1 // by a statement each, however close together
	segmentBytes = 64 << 10                 // several segments
	s := openDuckOnly(t, tempPath(t))
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
	for _, way := range []struct{ points, key bool }{{true, true}, {false, true}, {false, false}} {
		listByUserPoints, listByUserKey = way.points, way.key
		page, err := s.List(t.Context(), store.Query{UserID: user, Ascending: true, Limit: 1000})
		listByUserPoints, listByUserKey = true, true
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range page.Records {
			got = append(got, r.EventID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v: %d records, want %d", way, len(got), len(want))
		}
	}
}

// TestUserKey: the main file's records have user_key, their user's key
// (schema version 7), and a page of a user's records finds them by it; a
// file migrated from version 6 keeps its records without a key, found by
// user_id, and the records moved in after the migration get theirs.
func TestUserKey(t *testing.T) {
	defer func(bytes int64) { segmentBytes = bytes }(segmentBytes)
	segmentBytes = 64 << 10 // several segments
	path := tempPath(t)
	ctx := t.Context()
	const user = "keyed-user"
	recs := storetest.Records(21, 900)
	for i := range recs {
		if i%9 == 0 {
			recs[i].User.ID = user
		}
	}
	write := func(s *Store, recs []event.Record) {
		for b := 0; b < len(recs); b += 50 {
			if err := s.Write(ctx, recs[b:b+50]); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Settle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// keys checks every record of the main file: no key at or below
	// user_key_lo, its user's above it; and returns user_key_lo.
	keys := func(s *Store, stage string) int64 {
		var lo, without, wrong, keyed int64
		if err := s.db.QueryRowContext(ctx, `SELECT CAST(value AS BIGINT) FROM skyjoin_meta WHERE key = 'user_key_lo'`).Scan(&lo); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE seq <= $1 AND user_key IS NOT NULL),
  count(*) FILTER (WHERE seq > $1 AND user_key IS DISTINCT FROM `+userKeyOf("user_id")+`), count(*) FILTER (WHERE seq > $1)
  FROM main.events`, lo).Scan(&without, &wrong, &keyed); err != nil {
			t.Fatal(err)
		}
		if without != 0 || wrong != 0 || keyed == 0 {
			t.Errorf("%s: user_key_lo %d: %d records at or below it with a key, %d of %d above it without their user's", stage, lo, without, wrong, keyed)
		}
		return lo
	}
	list := func(s *Store, stage string, want []string) {
		t.Helper()
		for _, key := range []bool{true, false} {
			listByUserKey = key
			got := walk(t, s, store.Query{UserID: user, Ascending: true, Limit: 7})
			listByUserKey = true
			if !slices.Equal(eventIDs(got), want) {
				t.Errorf("%s, by user_key %v: %v, want %v", stage, key, eventIDs(got), want)
			}
		}
	}
	var want []string
	for _, r := range recs {
		if r.User.ID == user {
			want = append(want, r.EventID)
		}
	}

	s := openDuckOnly(t, path)
	write(s, recs[:450])
	if lo := keys(s, "new file"); lo != 0 {
		t.Errorf("a new file has user_key_lo %d, want 0", lo)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawExec(t, path, append(toVersion6, `UPDATE skyjoin_meta SET value = '6' WHERE key = 'schema_version'`)...)
	s = openDuckOnly(t, path)
	defer s.Close()
	write(s, recs[450:])
	lo := keys(s, "migrated from version 6")
	if cold := s.coldSeen.Load(); lo == 0 || lo >= cold {
		t.Fatalf("user_key_lo %d after the migration, cold_max %d: want records on both sides", lo, cold)
	}
	list(s, "migrated", want)

	// The key is what finds the records that have one: with their key
	// changed, those above user_key_lo are not found, the others are (by
	// user_id).
	if _, err := s.db.ExecContext(ctx, `UPDATE main.events SET user_key = 0 WHERE user_id = $1 AND seq > $2`, user, lo); err != nil {
		t.Fatal(err)
	}
	var below []string
	for _, r := range walkAll(t, s) {
		if r.User.ID == user && r.Seq <= lo {
			below = append(below, r.EventID)
		}
	}
	if len(below) == 0 || len(below) == len(want) {
		t.Fatalf("%d of the user's %d records at or below user_key_lo: want some on both sides", len(below), len(want))
	}
	got := walk(t, s, store.Query{UserID: user, Ascending: true, Limit: 7})
	if !slices.Equal(eventIDs(got), below) {
		t.Errorf("with the keys changed: %v, want the records without a key %v", eventIDs(got), below)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE main.events SET user_key = `+userKeyOf("user_id")+` WHERE user_id = $1 AND seq > $2`, user, lo); err != nil {
		t.Fatal(err)
	}

	// KeyUsers (skyjoin migrate) keys the records below user_key_lo, a
	// range at a time, reads beside it.
	defer func(n int64) { keyChunk = n }(keyChunk)
	keyChunk = 64
	var read heldRead
	defer read.end()
	read.hold(t, s)
	if err := s.KeyUsers(ctx); err != nil {
		t.Fatal(err)
	}
	list(s, "keyed with a read open", want)
	read.end()
	if lo := keys(s, "keyed"); lo != 0 {
		t.Errorf("user_key_lo %d after KeyUsers, want 0", lo)
	}
	s.Close()
	s = openDuckOnly(t, path)
	if lo := keys(s, "keyed and reopened"); lo != 0 {
		t.Errorf("user_key_lo %d after a reopen, want 0", lo)
	}
	list(s, "keyed and reopened", want)
}

// TestLatestKept checks the latest records the store keeps in memory
// (userIndex.keepLatest) against the same records read from the store:
// equal field for field, for records sent with nanoseconds and in a time
// zone other than UTC, with and without weather and coordinates; only
// the users who wrote last are kept; and a weather backfill, an erasure
// and a retention delete are seen at once.
func TestLatestKept(t *testing.T) {
	defer func(old int) { latestCacheSize = old }(latestCacheSize)
	latestCacheSize = 6
	s := openPath(t, tempPath(t))
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	recs := storetest.Records(51, 40) // 10 users
	for i := range recs {
		r := &recs[i]
		r.OccurredAt = r.OccurredAt.Add(time.Duration(i*137) * time.Nanosecond).In(zone)
		r.IngestedAt = r.IngestedAt.Add(999 * time.Nanosecond).In(zone)
		if i%3 == 0 {
			r.Weather, r.Enrichment = nil, event.Enrichment{Status: event.StatusUnavailable, Error: "provider down"}
		}
		if i%5 == 0 {
			r.Location.Latitude, r.Location.Longitude = nil, nil
		}
		if i%2 == 0 {
			r.Properties = json.RawMessage(`{"total": 12.50, "items": [1, 2e3], "note": "<b>&amp;</b> \u00e9t\u00e9", "gift": true}`)
		}
	}
	if err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	want := latestOf(recs)
	read := func(user string, kept bool) (event.Record, error) {
		t.Helper()
		latestKept = kept
		defer func() { latestKept = true }()
		return s.LatestForUser(t.Context(), user)
	}
	keptUsers := 0
	for user, w := range want {
		fromStore, err := read(user, false)
		if err != nil || fromStore.EventID != w.EventID {
			t.Fatalf("LatestForUser(%s) from the store = %s, %v; want %s", user, fromStore.EventID, err, w.EventID)
		}
		kept, ok, err := s.users.latestRecord(user)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		keptUsers++
		if !reflect.DeepEqual(kept, fromStore) {
			t.Errorf("the kept latest record of %s differs from the store's:\nkept  %+v\nstore %+v", user, kept, fromStore)
		}
		if got, err := read(user, true); err != nil || !reflect.DeepEqual(got, fromStore) {
			t.Errorf("LatestForUser(%s) = %+v, %v; want %+v", user, got, err, fromStore)
		}
	}
	// The users of the last records written, six of the ten.
	if keptUsers != latestCacheSize {
		t.Errorf("%d users' latest records kept, want %d", keptUsers, latestCacheSize)
	}
	lastUser := recs[len(recs)-1].User.ID
	if _, ok, _ := s.users.latestRecord(lastUser); !ok {
		t.Errorf("the latest record of %s, who wrote last, is not kept", lastUser)
	}

	// A backfill of the weather: LatestForUser gives the new weather.
	var unavailable []event.Record
	for _, w := range want {
		if w.Weather == nil {
			unavailable = append(unavailable, w)
		}
	}
	if len(unavailable) == 0 {
		t.Fatal("no latest record without weather: the test checks nothing")
	}
	filled := slices.Clone(unavailable)
	for i := range filled {
		temp := 21.5
		filled[i].Weather = &event.Weather{ObservedAt: storetest.Base, TemperatureC: temp, Condition: "clear", Provider: "test"}
		filled[i].Enrichment = event.Enrichment{Status: event.StatusEnriched}
	}
	if n, err := s.UpdateWeather(t.Context(), filled); err != nil || n != int64(len(filled)) {
		t.Fatalf("UpdateWeather = %d, %v; want %d", n, err, len(filled))
	}
	for _, u := range unavailable {
		got, err := read(u.User.ID, true)
		if err != nil || got.Weather == nil || got.Weather.Condition != "clear" {
			t.Errorf("LatestForUser(%s) after the backfill: weather %+v, %v; want the backfilled weather", u.User.ID, got.Weather, err)
		}
	}

	// Writes keep records again; an erasure takes them.
	more := storetest.Records(52, 8)
	if err := s.Write(t.Context(), more); err != nil {
		t.Fatal(err)
	}
	erased := more[len(more)-1].User.ID
	if _, ok, _ := s.users.latestRecord(erased); !ok {
		t.Fatalf("the latest record of %s is not kept after a write", erased)
	}
	if _, err := s.DeleteUsers(t.Context(), []string{erased}); err != nil {
		t.Fatal(err)
	}
	if got, err := read(erased, true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LatestForUser(%s) after its erasure = %s, %v; want ErrNotFound", erased, got.EventID, err)
	}
	// A retention delete of everything: none is found, kept or not.
	if _, err := s.DeleteOccurredBefore(t.Context(), storetest.Base.Add(1000*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, r := range append(recs, more...) {
		if got, err := read(r.User.ID, true); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LatestForUser(%s) after every record expired = %s, %v; want ErrNotFound", r.User.ID, got.EventID, err)
		}
	}
}
