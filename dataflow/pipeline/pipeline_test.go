package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
	"github.com/skyjoin/skyjoin/internal/store/bigquery/bqtest"
)

// The tests run on Prism, Beam's portable runner, in this process: its
// workers call the DoFns here, so that collectFn can hand the dead letters
// to the test.
func TestMain(m *testing.M) { ptest.MainWithDefault(m, "prism") }

func init() { register.DoFn1x0[*pb.PubsubMessage](&collectFn{}) }

// collected holds what collectFn saw, by key (one per test).
var (
	collectedMu sync.Mutex
	collected   = map[string][]*pb.PubsubMessage{}
)

type collectFn struct{ Key string }

func (fn *collectFn) ProcessElement(m *pb.PubsubMessage) {
	collectedMu.Lock()
	defer collectedMu.Unlock()
	collected[fn.Key] = append(collected[fn.Key], m)
}

// places are where the test's users live (as test/e2e's); several share a
// weather cell.
var places = []struct {
	lat, lon      float64
	city, country string
}{
	{52.52, 13.41, "Berlin", "Germany"}, {48.85, 2.35, "Paris", "France"}, {40.42, -3.70, "Madrid", "Spain"},
	{-33.87, 151.21, "Sydney", "Australia"}, {35.68, 139.69, "Tokyo", "Japan"}, {-23.55, -46.63, "São Paulo", "Brazil"},
	{64.15, -21.94, "Reykjavík", "Iceland"}, {1.35, 103.82, "Singapore", "Singapore"}, {41.88, -87.63, "Chicago", "United States"},
	{-1.29, 36.82, "Nairobi", "Kenya"}, {52.53, 13.42, "Berlin", "Germany"},
}

func makeEvent(id int, at time.Time) event.Event {
	p := places[id%len(places)]
	lat, lon := p.lat, p.lon
	return event.Event{
		EventID:    fmt.Sprintf("df-%06d", id),
		EventType:  event.TypeUserObserved,
		OccurredAt: at.Truncate(time.Millisecond),
		User:       event.User{ID: fmt.Sprintf("user-%d", id%500), Name: fmt.Sprintf("User %d", id%500), Email: fmt.Sprintf("u%d@example.com", id%500)},
		Location:   event.Location{Latitude: &lat, Longitude: &lon, City: p.city, Country: p.country},
		Attributes: map[string]string{"n": fmt.Sprint(id)},
	}
}

// input is what the test sends, and what it expects.
type input struct {
	msgs      []*pb.PubsubMessage
	valid     map[string]event.Event // by event_id
	copies    map[string]int         // events sent in more than one message
	invalid   map[string]string      // event_id -> the field its reason names
	undecoded map[string]bool        // message ids of messages that cannot be decoded
	events    int
}

// makeInput builds n events in envelope messages as ingest makes them:
// single JSON objects, JSON arrays of 5 and NDJSON batches of 10. Two
// events in 20 are invalid (one with occurred_at in the future, one with a
// field the schema does not know); one in 50 is sent again, at the end, in
// another message; every 97th message is a body that is no JSON at all.
func makeInput(t *testing.T, n int, now time.Time) input {
	t.Helper()
	in := input{valid: map[string]event.Event{}, copies: map[string]int{}, invalid: map[string]string{}, undecoded: map[string]bool{}}
	var raws, again [][]byte
	for i := range n {
		// Events of the last hour: the current 15-minute slot's and past
		// hours' weather.
		ev := makeEvent(i, now.Add(-time.Duration(i%60)*time.Minute))
		switch {
		case i%20 == 7:
			ev.OccurredAt = now.Add(2 * time.Hour).Truncate(time.Millisecond)
			in.invalid[ev.EventID] = "occurred_at"
		case i%20 == 13:
			in.invalid[ev.EventID] = "bogus"
		default:
			in.valid[ev.EventID] = ev
		}
		b, err := event.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if i%20 == 13 {
			b = append([]byte(`{"bogus":1,`), b[1:]...)
		}
		raws = append(raws, b)
		if i%50 == 3 && in.invalid[ev.EventID] == "" {
			again = append(again, b) // sent again, at the end, in another message
			in.copies[ev.EventID] = 2
		}
	}
	raws = append(raws, again...)
	in.events = len(raws)
	add := func(m *broker.Message) {
		in.msgs = append(in.msgs, &pb.PubsubMessage{Data: m.Data, Attributes: m.Attributes})
	}
	ingested := now.Add(-time.Second)
	for i, k := 0, 0; i < len(raws); k++ {
		if k%97 == 96 {
			m := envelope.NewEvents([]byte("this is not JSON"), event.ContentTypeJSON, 1, ingested, envelope.SourceIngest)
			in.undecoded[m.ID] = true
			add(m)
			continue
		}
		size := []int{1, 5, 10}[k%3]
		group := raws[i:min(i+size, len(raws))]
		i += len(group)
		switch {
		case len(group) == 1:
			add(envelope.NewEvents(group[0], event.ContentTypeJSON, 1, ingested, envelope.SourceIngest))
		case k%3 == 1:
			body := append(append([]byte("["), bytes.Join(group, []byte(","))...), ']')
			add(envelope.NewEvents(body, event.ContentTypeJSON, len(group), ingested, envelope.SourceIngest))
		default:
			body := append(bytes.Join(group, []byte("\n")), '\n')
			add(envelope.NewEvents(body, event.ContentTypeNDJSON, len(group), ingested, envelope.SourceIngest))
		}
	}
	return in
}

// TestPipelineOnPrism runs the pipeline on 10,000 events in envelope
// messages with the simulator as the weather provider and the
// BigQueryWrite fake as the table, and checks what test/e2e checks of the
// Go worker: valid events stored, enriched with the simulator's weather for
// their cell and time; invalid ones dead-lettered with their reason, in the
// worker's envelope; grouped messages split; events sent twice stored at
// least once and read once through the view's dedup.
func TestPipelineOnPrism(t *testing.T) {
	const apiKey = "sim-key"
	s := sim.New(sim.Options{APIKey: apiKey})
	weatherSrv := httptest.NewServer(s.OpenMeteo())
	t.Cleanup(weatherSrv.Close)
	t.Setenv("SKYJOIN_TEST_WEATHER_KEY", apiKey)
	fw := &bqtest.Write{}
	fw.Start(t)

	n := 10_000
	if testing.Short() {
		n = 2_000
	}
	now := time.Now().UTC()
	in := makeInput(t, n, now)

	cfg := Config{
		BQTable: "test-project.skyjoin.events", BQEndpoint: fw.Addr,
		WeatherProvider: ProviderOpenMeteo, WeatherURL: weatherSrv.URL, WeatherAPIKey: "env://SKYJOIN_TEST_WEATHER_KEY",
		WeatherQuota: "none", PIIPolicy: "keep", MaxClockSkew: 5 * time.Minute,
	}
	if err := cfg.Validate(true); err != nil {
		t.Fatal(err)
	}
	p, root := beam.NewPipelineWithRoot()
	msgs := beam.CreateList(root, in.msgs)
	dead, records := Build(root, msgs, cfg)
	beam.ParDo0(root, &collectFn{Key: t.Name()}, dead)
	beam.ParDo0(root, &collectFn{Key: t.Name() + "/records"}, records)
	start := time.Now()
	res, err := ptest.RunWithMetrics(p)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	t.Logf("%d events in %d messages through the pipeline on Prism in %s (%.0f events/s)",
		in.events, len(in.msgs), elapsed.Round(time.Millisecond), float64(in.events)/elapsed.Seconds())

	// Dead letters: each invalid event alone, with its reason, and each
	// message that could not be decoded whole.
	collectedMu.Lock()
	deadMsgs := collected[t.Name()]
	collectedMu.Unlock()
	var invalidSeen, undecodedSeen int
	for _, m := range deadMsgs {
		d := envelope.ParseDeadLetter(&broker.Message{Data: m.Data, Attributes: m.Attributes})
		if d.Subscription != "dataflow" || d.Attempts != 1 || d.FailedAt.IsZero() || d.ID == "" {
			t.Fatalf("dead letter attributes %+v", m.Attributes)
		}
		if d.Index < 0 {
			if d.Stage != "decode" || !in.undecoded[d.OriginalID] || string(d.Data) != "this is not JSON" {
				t.Fatalf("whole-message dead letter: stage %q reason %q original %q", d.Stage, d.Reason, d.OriginalID)
			}
			undecodedSeen++
			continue
		}
		// A one-event events message, which replays on its own.
		replay := envelope.Replay(&broker.Message{ID: "dl", Data: m.Data, Attributes: m.Attributes})
		evs, err := envelope.DecodeEvents(replay)
		if err != nil || len(evs.Events) != 1 {
			t.Fatalf("dead letter does not decode as one event: %v", err)
		}
		// The event as sent (an event that did not decode has no Event).
		var sent struct {
			ID string `json:"event_id"`
		}
		if err := json.Unmarshal(evs.Events[0].Raw, &sent); err != nil {
			t.Fatalf("dead letter data %q: %v", evs.Events[0].Raw, err)
		}
		id := sent.ID
		field, ok := in.invalid[id]
		if !ok {
			t.Fatalf("event %s dead-lettered (stage %s: %s), but it is valid", id, d.Stage, d.Reason)
		}
		wantStage := map[string]string{"occurred_at": "validate", "bogus": "decode"}[field]
		if d.Stage != wantStage || !strings.Contains(d.Reason, field) {
			t.Fatalf("event %s: dead letter stage %q reason %q, want stage %s naming %s", id, d.Stage, d.Reason, wantStage, field)
		}
		invalidSeen++
	}
	if invalidSeen != len(in.invalid) || undecodedSeen != len(in.undecoded) {
		t.Fatalf("dead letters: %d events of %d invalid, %d messages of %d undecodable",
			invalidSeen, len(in.invalid), undecodedSeen, len(in.undecoded))
	}

	// The table: every valid event at least once (events sent twice at
	// least twice), nothing else.
	rows := fw.Rows()
	count := map[string]int{}
	for _, r := range rows {
		count[r["event_id"].(string)]++
	}
	for id := range in.valid {
		if count[id] < max(in.copies[id], 1) {
			t.Fatalf("event %s stored %d times, want at least %d", id, count[id], max(in.copies[id], 1))
		}
	}
	if len(count) != len(in.valid) {
		t.Fatalf("%d distinct events stored, want the %d valid ones", len(count), len(in.valid))
	}

	// The records topic gets every stored record once BigQuery has it.
	collectedMu.Lock()
	recMsgs := collected[t.Name()+"/records"]
	collectedMu.Unlock()
	published := map[string]int{}
	for _, m := range recMsgs {
		recs, err := envelope.DecodeRecords(&broker.Message{Data: m.Data, Attributes: m.Attributes})
		if err != nil {
			t.Fatalf("records message: %v", err)
		}
		for _, r := range recs {
			published[r.EventID]++
		}
	}
	if !maps.Equal(published, count) {
		t.Fatalf("the records topic got %d events, the table %d", len(published), len(count))
	}

	// Through the view's query: each event once, as enriched.
	view := bqtest.Query(t, rows, func(table string) string { return bigquery.DedupSQL(table) })
	if len(view) != len(in.valid) {
		t.Fatalf("the view's dedup keeps %d rows, want %d", len(view), len(in.valid))
	}
	seen := map[string]bool{}
	for _, r := range view {
		id := r["event_id"].(string)
		if seen[id] {
			t.Fatalf("event %s twice through the view", id)
		}
		seen[id] = true
		checkRow(t, in.valid[id], r)
	}

	// Metrics.
	counters := map[string]int64{}
	for _, c := range res.Metrics().AllMetrics().Counters() {
		if c.Key.Namespace == "skyjoin" {
			counters[c.Key.Name] += c.Result() // committed, or attempted where the runner has no committed values
		}
	}
	wantCounters := map[string]int64{
		"messages": int64(len(in.msgs)), "events": int64(len(rows)), "dead_letters": int64(len(deadMsgs)),
		"records_written": int64(len(rows)), "weather_lookups": int64(len(rows)),
	}
	for name, want := range wantCounters {
		if counters[name] != want {
			t.Errorf("counter %s = %d, want %d (all: %v)", name, counters[name], want, counters)
		}
	}
	if calls := counters["weather_calls"]; calls < 1 || calls != s.Stats().OpenMeteoRequests {
		t.Errorf("counter weather_calls = %d, the simulator answered %d", calls, s.Stats().OpenMeteoRequests)
	}
	// More messages than one lookup takes: later lookups find the cells
	// that earlier ones fetched, in the process's one cache.
	if len(in.msgs) > maxBuffer && counters["weather_cache_hits"] < 1 {
		t.Errorf("no weather cache hits: %v", counters)
	}
}

// checkRow checks a stored row against the event sent and the simulator's
// weather for the recorded cell and time (as test/e2e's checkRecord).
func checkRow(t *testing.T, sent event.Event, r map[string]any) {
	t.Helper()
	id := sent.EventID
	micros := func(col string) time.Time { return time.UnixMicro(r[col].(int64)).UTC() }
	f := func(col string) float64 { return r[col].(float64) }
	if r["user_email"] != sent.User.Email || r["location_city"] != sent.Location.City ||
		f("location_latitude") != sent.Location.Lat() || !micros("occurred_at").Equal(sent.OccurredAt) ||
		!strings.Contains(r["attributes"].(string), `"n":"`+sent.Attributes["n"]+`"`) {
		t.Fatalf("row %s differs from the event sent: %v", id, r)
	}
	if r["enrichment_status"] != event.StatusEnriched {
		t.Fatalf("row %s not enriched: %v %v", id, r["enrichment_status"], r["enrichment_error"])
	}
	w := event.Weather{
		ObservedAt: micros("weather_observed_at"), TemperatureC: f("weather_temperature_c"),
		ApparentTemperature: f("weather_apparent_temperature_c"), RelativeHumidity: f("weather_relative_humidity_pct"),
		PrecipitationMM: f("weather_precipitation_mm"), WindSpeedKMH: f("weather_wind_speed_kmh"),
		WindDirectionDeg: f("weather_wind_direction_deg"), WeatherCode: int(r["weather_code"].(int64)),
		Condition: r["weather_condition"].(string), CellLatitude: f("weather_cell_latitude"), CellLongitude: f("weather_cell_longitude"),
	}
	cellLat, cellLon := sim.Cell(w.CellLatitude, w.CellLongitude)
	if math.Abs(w.CellLatitude-cellLat) > 1e-6 || math.Abs(w.CellLongitude-cellLon) > 1e-6 ||
		math.Abs(w.CellLatitude-sent.Location.Lat()) > sim.CellDegrees || math.Abs(w.CellLongitude-sent.Location.Lon()) > sim.CellDegrees {
		t.Fatalf("row %s: weather cell %g,%g is not a simulator cell near %g,%g", id, w.CellLatitude, w.CellLongitude,
			sent.Location.Lat(), sent.Location.Lon())
	}
	// Current conditions (the 15-minute slot) if the event is in the slot
	// it was processed in, else the hour's values.
	want := sent.OccurredAt.Truncate(time.Hour)
	if sent.OccurredAt.Truncate(15 * time.Minute).Equal(micros("processed_at").Truncate(15 * time.Minute)) {
		want = sent.OccurredAt.Truncate(15 * time.Minute)
	}
	if !w.ObservedAt.Equal(want) {
		t.Fatalf("row %s: weather observed at %s, want %s for an event at %s", id, w.ObservedAt, want, sent.OccurredAt)
	}
	if sw := sim.Conditions(w.CellLatitude, w.CellLongitude, w.ObservedAt); !sim.SameValues(w, sw) {
		t.Fatalf("row %s: weather %+v, the simulator says %+v", id, w, sw)
	}
}

// TestPipelineAppliesPIIPolicy: with the default PII policy (the worker's
// default), the records the table receives have the user's email hashed and
// the name dropped, with the key of the pii_key secret reference.
func TestPipelineAppliesPIIPolicy(t *testing.T) {
	weatherSrv := httptest.NewServer(sim.New(sim.Options{}).OpenMeteo())
	t.Cleanup(weatherSrv.Close)
	t.Setenv("SKYJOIN_TEST_PII_KEY", "test-pii-key")
	fw := &bqtest.Write{}
	fw.Start(t)
	in := makeInput(t, 40, time.Now().UTC())
	cfg := Config{BQTable: "test-project.skyjoin.events", BQEndpoint: fw.Addr, WeatherProvider: ProviderOpenMeteo,
		WeatherURL: weatherSrv.URL, WeatherQuota: "none", PIIPolicy: "default", PIIKey: "env://SKYJOIN_TEST_PII_KEY",
		MaxClockSkew: 5 * time.Minute}
	if err := cfg.Validate(true); err != nil {
		t.Fatal(err)
	}
	p, root := beam.NewPipelineWithRoot()
	dead, _ := Build(root, beam.CreateList(root, in.msgs), cfg)
	beam.ParDo0(root, &collectFn{Key: t.Name()}, dead)
	if _, err := ptest.RunWithMetrics(p); err != nil {
		t.Fatal(err)
	}
	rows := fw.Rows()
	if len(rows) == 0 {
		t.Fatal("nothing stored")
	}
	spec, err := pii.ParseSpec("default")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := pii.New(spec, []byte("test-pii-key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		sent := in.valid[r["event_id"].(string)]
		want := event.Record{Event: sent}
		policy.Apply(&want)
		email, _ := r["user_email"].(string)
		if !strings.HasPrefix(email, pii.HashPrefix) || email != want.User.Email {
			t.Fatalf("row %v: user_email %q, want %q (hashed with the pii_key)", r["event_id"], email, want.User.Email)
		}
		if name, _ := r["user_name"].(string); name != "" {
			t.Fatalf("row %v: user_name %q kept, the policy drops it", r["event_id"], name)
		}
	}
}
