package bench

import (
	"fmt"
	"net/http/httptest"
	"strconv"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/collect"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/sim"
)

// The shape of the records of a fill phase: they belong to FillUsers users
// and occurred over the FillSpan before the fill, so that "the last hour"
// of a filled store is a realistic slice (1/168 of it), as in a store that
// has run for a week.
const (
	FillUsers = 100_000
	FillSpan  = 7 * 24 * time.Hour
	// fillPlaces is how many of the simulator's users lend their profile
	// and place to the fill's users (FillUsers / fillPlaces users each).
	fillPlaces = sim.MaxResults
)

// Filler makes the records a fill phase writes: what the worker would have
// stored for a week of the demo population's events (the simulator's
// weather for each event's cell and time, typed properties, the PII policy
// applied). Record i is a pure function of i, n and the fill's time, so a
// fill that stopped half-way resumes where it stopped.
type Filler struct {
	n   int64
	now time.Time
	// places are the records of each place with the policy applied: a
	// record is its place's with the fields that change set (the policy
	// keeps user.id, and gives each place's fields the same value each
	// time, so it is applied once per place, not per record: it decodes
	// and encodes the properties, 10 µs a record).
	places []place
}

type place struct {
	rec              event.Record // policy applied
	cellLat, cellLon float64      // the cell of the exact coordinates, before the policy
}

// NewFiller prepares the records of a fill to n records, ending at now,
// with policy applied to each (nil: kept as they are).
func NewFiller(n int64, now time.Time, policy *pii.Policy) (*Filler, error) {
	if n <= 0 {
		return nil, fmt.Errorf("bench: fill: %d records: want a positive count", n)
	}
	s := sim.New(sim.Options{Users: fillPlaces})
	rec := httptest.NewRecorder()
	s.RandomUser().ServeHTTP(rec, httptest.NewRequest("GET", "/api/?seed=skyjoin-fill&results="+strconv.Itoa(fillPlaces), nil))
	if rec.Code != 200 {
		return nil, fmt.Errorf("bench: fill: simulated users: %d %s", rec.Code, rec.Body.String())
	}
	evs, _, err := collect.Decode(rec.Body.Bytes(), now)
	if err != nil {
		return nil, fmt.Errorf("bench: fill: simulated users: %w", err)
	}
	if policy == nil {
		policy = pii.KeepAll()
	}
	if r := policy.Spec().Rule("user.id"); r.Action != pii.Keep {
		return nil, fmt.Errorf("bench: fill: the policy's rule %s: the fill keeps user ids", r)
	}
	f := &Filler{n: n, now: now.UTC().Truncate(time.Second)}
	for _, ev := range evs {
		if ev.Location.Latitude == nil || ev.Location.Longitude == nil {
			continue
		}
		p := place{}
		p.cellLat, p.cellLon = sim.Cell(*ev.Location.Latitude, *ev.Location.Longitude)
		ev.Properties = json.RawMessage(benchProperties)
		ev.Attributes = nil
		w := event.Weather{Provider: "sim", CellLatitude: p.cellLat, CellLongitude: p.cellLon}
		p.rec = event.Record{Event: ev, Weather: &w, Enrichment: event.Enrichment{Status: event.StatusEnriched}}
		policy.Apply(&p.rec)
		f.places = append(f.places, p)
	}
	if len(f.places) == 0 {
		return nil, fmt.Errorf("bench: fill: no simulated user has coordinates")
	}
	return f, nil
}

// fillTypes are the event types of the fill, in turn.
var fillTypes = []string{"page.view", "user.observed", "Order Completed", "page.view", "search"}

// Record returns record i (0 <= i < n) of the fill.
func (f *Filler) Record(i int64) event.Record {
	user := i % FillUsers
	p := &f.places[user%int64(len(f.places))]
	r := p.rec // shares the place's maps, slices and pointers, which nothing writes
	r.EventID = "fill-" + strconv.FormatInt(i, 10)
	r.EventType = fillTypes[i%int64(len(fillTypes))]
	r.User.ID = p.rec.User.ID + "-" + strconv.FormatInt(user/int64(len(f.places)), 10)
	// Spread evenly over the span, the newest last (seq follows time, as
	// in a store that ran for a week).
	r.OccurredAt = f.now.Add(-FillSpan + time.Duration(float64(FillSpan)*float64(i)/float64(f.n)))
	w := sim.Conditions(p.cellLat, p.cellLon, r.OccurredAt)
	w.Provider, w.CellLatitude, w.CellLongitude = p.rec.Weather.Provider, p.rec.Weather.CellLatitude, p.rec.Weather.CellLongitude
	r.Weather = &w
	r.IngestedAt = r.OccurredAt.Add(300 * time.Millisecond)
	r.ProcessedAt = r.OccurredAt.Add(450 * time.Millisecond)
	return r
}

// Users returns k of the fill's users (fewer if it has fewer), spread
// over them.
func (f *Filler) Users(k int) []string {
	n := min(f.n, FillUsers)
	k = int(min(int64(k), n))
	users := make([]string, k)
	for i := range users {
		users[i] = f.Record(int64(i) * n / int64(k)).User.ID
	}
	return users
}

// Records appends records [from, to) of the fill to recs.
func (f *Filler) Records(recs []event.Record, from, to int64) []event.Record {
	for i := from; i < min(to, f.n); i++ {
		recs = append(recs, f.Record(i))
	}
	return recs
}
