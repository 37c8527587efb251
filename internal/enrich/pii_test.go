package enrich

import (
	"context"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
)

// TestPIIPolicyAppliedAfterJoin: the worker joins the weather at the exact
// place, then applies the policy before the store write, so the store and
// the records topic see only the coarsened place and the hashed e-mail;
// a dead letter keeps the event as sent, to be replayed.
func TestPIIPolicyAppliedAfterJoin(t *testing.T) {
	spec, err := pii.ParseSpec("")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := pii.New(spec, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	q := &queue{}
	s := &memStore{}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	w.PII = policy
	const email = "planted.person@example.org"
	good := `{"event_id":"a","event_type":"user.observed","occurred_at":"2026-11-26T11:50:00Z",` +
		`"user":{"id":"u-a","email":"` + email + `","name":"Planted Person"},"location":{"latitude":52.5164,"longitude":13.3777}}`
	bad := `{"event_id":"b","event_type":"user.observed","occurred_at":"2026-11-26T11:50:00Z",` +
		`"user":{"id":"u-b","email":"` + email + `"},"location":{"latitude":95,"longitude":13.3777}}`
	if err := w.Process(context.Background(), []*broker.Message{msg("1", event.ContentTypeNDJSON, good+"\n"+bad)}); err != nil {
		t.Fatal(err)
	}
	if len(s.recs) != 1 {
		t.Fatalf("stored %d records", len(s.recs))
	}
	r := s.recs[0]
	// The joiner derives the temperature from the exact latitude: the join
	// saw the place as sent.
	if r.Weather.TemperatureC != 52.5164/10 {
		t.Errorf("weather joined at %v, not at the exact place", r.Weather.TemperatureC*10)
	}
	if *r.Location.Latitude != 52.5 || *r.Location.Longitude != 13.4 || r.Weather.CellLatitude != 52.5 || r.Weather.CellLongitude != 13.4 {
		t.Errorf("stored place %v,%v cell %v,%v: not coarsened", *r.Location.Latitude, *r.Location.Longitude, r.Weather.CellLatitude, r.Weather.CellLongitude)
	}
	if !strings.HasPrefix(r.User.Email, pii.HashPrefix) || r.User.Name != "" {
		t.Errorf("stored user %+v", r.User)
	}
	recs, err := envelope.DecodeRecords(q.records[0])
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := event.Marshal(recs[0]); len(recs) != 1 || strings.Contains(string(b), email) || recs[0].User.Email != r.User.Email {
		t.Errorf("records topic: %+v", recs)
	}
	if len(q.dead) != 1 || !strings.Contains(string(q.dead[0].Data), email) {
		t.Errorf("the dead letter does not keep the event as sent: %d %s", len(q.dead), q.dead[0].Data)
	}
}
