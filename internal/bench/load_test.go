package bench

import (
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// TestEventsAreValidAndLive: the load's events decode and validate as the
// server's ingest does, each with its own id, and occurred_at is the time
// the event was made, not the templates'.
func TestEventsAreValidAndLive(t *testing.T) {
	e, err := NewEvents("r1", 20)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UTC().Truncate(time.Microsecond)
	body, first := e.Body(nil, 5)
	one, _ := e.Append(nil)
	batch, _ := e.Batch(nil, 3)
	after := time.Now().UTC()
	seen := map[string]bool{}
	for _, b := range [][]byte{body, one, batch} {
		decoded, err := event.Decode(b, "application/json", 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range decoded {
			if len(d.Errors) > 0 {
				t.Fatalf("event %d: %v", i, d.Errors)
			}
			if errs := d.Event.Validate(i, after, 5*time.Minute); len(errs) > 0 {
				t.Fatalf("event %d: %v", i, errs)
			}
			if seen[d.Event.EventID] || e.Seq(d.Event.EventID) < first {
				t.Errorf("event id %q repeated or not this run's", d.Event.EventID)
			}
			seen[d.Event.EventID] = true
			if at := d.Event.OccurredAt; at.Before(before) || at.After(after) || at.Equal(occurredSentinel) {
				t.Errorf("occurred_at %v, want the time it was made, within [%v, %v]", at, before, after)
			}
		}
	}
	if len(seen) != 9 {
		t.Errorf("%d events, want 9", len(seen))
	}
}
