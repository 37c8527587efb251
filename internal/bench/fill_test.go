package bench

import (
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/sim"
)

// TestFiller: the fill's records are valid events with the simulator's
// weather for their cell and time, belong to FillUsers users, spread over
// FillSpan before the fill's time, carry properties, have the policy
// applied, and record i is the same whenever it is made (a fill resumes).
func TestFiller(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	spec, err := pii.ParseSpec("default")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := pii.New(spec, []byte("a-key-for-this-test-only-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	const n = FillUsers + 10
	f, err := NewFiller(n, now, policy)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	ids := map[string]bool{}
	var first, last time.Time
	recs := f.Records(nil, 0, n+10) // past n: cut at n
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	for i, r := range recs {
		if errs := r.Event.Validate(i, now, 0); len(errs) > 0 {
			t.Fatalf("record %d is not a valid event: %v", i, errs)
		}
		users[r.User.ID] = true
		ids[r.EventID] = true
		if i == 0 {
			first = r.OccurredAt
		}
		last = r.OccurredAt
		if r.Weather == nil || r.Enrichment.Status != event.StatusEnriched || len(r.Properties) == 0 {
			t.Fatalf("record %d: weather %v, status %q, properties %s", i, r.Weather, r.Enrichment.Status, r.Properties)
		}
		if r.User.Name != "" || r.Location.Street != "" {
			t.Fatalf("record %d: the policy's drops are not applied: %+v", i, r.User)
		}
	}
	if len(users) != FillUsers || len(ids) != n {
		t.Errorf("%d users and %d event ids, want %d and %d", len(users), len(ids), FillUsers, n)
	}
	// Users(k): k distinct users of the records, also of a filler made
	// with another key (the bench's is random).
	other, err := NewFiller(n, now.Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	some, remade := f.Users(1000), other.Users(1000)
	seen := map[string]bool{}
	for i, u := range some {
		if !users[u] || seen[u] || remade[i] != u {
			t.Fatalf("Users: %q (made again %q) is not a new user of the records", u, remade[i])
		}
		seen[u] = true
	}
	if len(some) != 1000 {
		t.Errorf("Users(1000): %d users", len(some))
	}
	if first.Before(now.Add(-FillSpan)) || !last.Before(now) || last.Sub(first) < FillSpan-time.Minute {
		t.Errorf("occurred_at from %s to %s, want the %s before %s", first, last, FillSpan, now)
	}
	// The weather is the simulator's for the record's cell and time (seen
	// without the policy, which coarsens the cell's coordinates).
	r := recs[12345]
	kept, err := NewFiller(n, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := kept.Record(12345)
	lat, lon := sim.Cell(*raw.Location.Latitude, *raw.Location.Longitude)
	if w := sim.Conditions(lat, lon, raw.OccurredAt); !sim.SameValues(w, *raw.Weather) || raw.Weather.CellLatitude != lat {
		t.Errorf("record 12345: weather %+v, the simulator says %+v", *raw.Weather, w)
	}
	// Made again, the same record.
	again := f.Record(12345)
	if again.EventID != r.EventID || !again.OccurredAt.Equal(r.OccurredAt) || again.User.ID != r.User.ID || !sim.SameValues(*again.Weather, *r.Weather) {
		t.Errorf("record 12345 made twice differs")
	}
}

func BenchmarkFillerRecord(b *testing.B) {
	spec, _ := pii.ParseSpec("default")
	policy, _ := pii.New(spec, []byte("a-key-for-this-test-only-0123456789"))
	f, err := NewFiller(20_000_000, time.Now(), policy)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		f.Record(int64(i))
	}
}
