// Package e2e runs the real skyjoin binary as a separate process and drives
// it through its HTTP API only: the tests a user would do by hand.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// up is a running `skyjoin up`.
type up struct {
	*testbin.Proc
	base string // http://127.0.0.1:PORT
}

// start runs `skyjoin up --demo` without the collector on a free port.
func start(t *testing.T, dataDir string, args ...string) *up {
	t.Helper()
	all := append([]string{"up", "--demo", "--collect=false", "--addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--stats-every", "0", "--log-level", "warn"}, args...)
	p, base := testbin.StartAPI(t, binary, all...)
	return &up{p, base}
}

// places are where the test's users live; several share a weather cell.
var places = []struct {
	lat, lon      float64
	city, country string
}{
	{52.52, 13.41, "Berlin", "Germany"}, {48.85, 2.35, "Paris", "France"}, {40.42, -3.70, "Madrid", "Spain"},
	{-33.87, 151.21, "Sydney", "Australia"}, {35.68, 139.69, "Tokyo", "Japan"}, {-23.55, -46.63, "São Paulo", "Brazil"},
	{64.15, -21.94, "Reykjavík", "Iceland"}, {1.35, 103.82, "Singapore", "Singapore"}, {41.88, -87.63, "Chicago", "United States"},
	{-1.29, 36.82, "Nairobi", "Kenya"}, {52.53, 13.42, "Berlin", "Germany"}, {0, 0, "Null Island", ""},
}

func makeEvent(id int, at time.Time) event.Event {
	p := places[id%len(places)]
	lat, lon := p.lat, p.lon
	return event.Event{
		EventID:    fmt.Sprintf("e2e-%06d", id),
		EventType:  event.TypeUserObserved,
		OccurredAt: at.Truncate(time.Millisecond),
		User:       event.User{ID: fmt.Sprintf("user-%d", id%500), Name: fmt.Sprintf("User %d", id%500), Email: fmt.Sprintf("u%d@example.com", id%500)},
		Location:   event.Location{Latitude: &lat, Longitude: &lon, City: p.city, Country: p.country},
		Attributes: map[string]string{"n": fmt.Sprint(id)},
	}
}

type client struct {
	base string
	hc   *http.Client
}

func newClient(base string) *client {
	return &client{base: base, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

// post sends events in one request as the given form: "single" (one
// object), "array" or "ndjson". It returns the status code (0 on a
// transport error).
func (c *client) post(form string, events []event.Event) (int, []byte) {
	var body []byte
	ct := "application/json"
	switch form {
	case "single":
		body, _ = json.Marshal(events[0])
	case "array":
		body, _ = json.Marshal(events)
	case "ndjson":
		body, _ = event.AppendNDJSON(nil, events...)
		ct = "application/x-ndjson"
	}
	resp, err := c.hc.Post(c.base+"/v1/events", ct, bytes.NewReader(body))
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// all pages through GET /v1/events in storage order.
func (c *client) all(t *testing.T) []event.Record {
	t.Helper()
	return testbin.List[event.Record](t, c.hc, c.base)
}

// waitStored waits until the store holds want records (and no more arrive).
func (c *client) waitStored(t *testing.T, want int) []event.Record {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	var recs []event.Record
	for time.Now().Before(deadline) {
		recs = c.all(t)
		if len(recs) >= want {
			return recs
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("store holds %d records after 120 s, want %d", len(recs), want)
	return nil
}

func TestPipelineEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	// Every field is checked against what was sent, and the weather against
	// the simulator's for the exact cell: the PII policy keeps everything
	// here (its own test is internal/app TestPIINeverInClear).
	p := start(t, dataDir, "--pii-policy", "keep")
	c := newClient(p.base)
	start := time.Now().UTC()

	// 10,000 events: 2,000 single-event requests, 40 arrays of 100 and 4
	// NDJSON bodies of 1,000, sent concurrently.
	const total = 10_000
	evs := make([]event.Event, total)
	for i := range evs {
		at := start.Add(-time.Duration(i%60) * time.Second)
		if i%10 == 0 {
			at = at.Add(-time.Duration(1+i%47) * time.Hour) // past hours: the provider's hourly data
		}
		evs[i] = makeEvent(i, at)
	}
	type job struct {
		form     string
		from, to int
	}
	var jobs []job
	for i := 0; i < 2000; i++ {
		jobs = append(jobs, job{"single", i, i + 1})
	}
	for i := 2000; i < 6000; i += 100 {
		jobs = append(jobs, job{"array", i, i + 100})
	}
	for i := 6000; i < total; i += 1000 {
		jobs = append(jobs, job{"ndjson", i, i + 1000})
	}
	jobc := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := map[int]int{}
	for range 8 {
		wg.Go(func() {
			for j := range jobc {
				code, body := c.post(j.form, evs[j.from:j.to])
				if code != http.StatusAccepted {
					mu.Lock()
					failures[code]++
					if failures[code] == 1 {
						t.Errorf("%s %d..%d: status %d %s", j.form, j.from, j.to, code, body)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, j := range jobs {
		jobc <- j
	}
	close(jobc)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("refused requests by status: %v", failures)
	}

	// Invalid events are refused with 400, name the field, and are not stored.
	bad := makeEvent(total+1, start)
	bad.Location.Latitude = ptr(123.0)
	badMissingID := makeEvent(total+2, start)
	badMissingID.EventID = ""
	for _, tc := range []struct {
		name   string
		form   string
		events []event.Event
		field  string
	}{
		{"latitude out of range", "single", []event.Event{bad}, "location.latitude"},
		{"missing event_id in a batch", "array", []event.Event{makeEvent(total+3, start), badMissingID}, "event_id"},
		{"bad event in ndjson", "ndjson", []event.Event{makeEvent(total+4, start), bad}, "location.latitude"},
	} {
		code, body := c.post(tc.form, tc.events)
		if code != http.StatusBadRequest || !strings.Contains(string(body), tc.field) {
			t.Errorf("%s: status %d body %s, want 400 naming %s", tc.name, code, body, tc.field)
		}
	}

	recs := c.waitStored(t, total)
	// Let anything late arrive, then read again: the count must stay.
	time.Sleep(time.Second)
	recs = c.all(t)
	if len(recs) != total {
		t.Fatalf("store holds %d records, want %d", len(recs), total)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.EventID] {
			t.Fatalf("event %s stored twice", r.EventID)
		}
		seen[r.EventID] = true
		var id int
		if _, err := fmt.Sscanf(r.EventID, "e2e-%06d", &id); err != nil || id >= total {
			t.Fatalf("unexpected event %s stored", r.EventID)
		}
		checkRecord(t, evs[id], r, start)
	}
	for _, id := range []string{bad.EventID, makeEvent(total+3, start).EventID, makeEvent(total+4, start).EventID} {
		resp, err := c.hc.Get(p.base + "/v1/events/" + id)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("refused event %s: GET answered %d, want 404", id, resp.StatusCode)
		}
	}
	// The user's latest record is the one with the latest occurred_at.
	resp, err := c.hc.Get(p.base + "/v1/users/user-7/latest")
	if err != nil {
		t.Fatal(err)
	}
	var latest event.Record
	json.NewDecoder(resp.Body).Decode(&latest)
	resp.Body.Close()
	if resp.StatusCode != 200 || latest.User.ID != "user-7" {
		t.Errorf("latest for user-7: %d %+v", resp.StatusCode, latest.User)
	}
	for _, r := range recs {
		if r.User.ID == "user-7" && r.OccurredAt.After(latest.OccurredAt) {
			t.Errorf("latest for user-7 is %s at %s, but %s is later (%s)", latest.EventID, latest.OccurredAt, r.EventID, r.OccurredAt)
			break
		}
	}
	p.Signal(t, syscall.SIGTERM)
}

func ptr[T any](v T) *T { return &v }

// checkRecord checks a stored record against the event sent and the
// simulator's weather for the recorded cell and time.
func checkRecord(t *testing.T, sent event.Event, r event.Record, testStart time.Time) {
	t.Helper()
	if r.EventType != sent.EventType || !r.OccurredAt.Equal(sent.OccurredAt) || r.User.ID != sent.User.ID ||
		r.User.Email != sent.User.Email || r.Location.City != sent.Location.City || r.Location.Lat() != sent.Location.Lat() ||
		r.Attributes["n"] != sent.Attributes["n"] {
		t.Fatalf("record %s differs from the event sent:\n got %+v\nsent %+v", r.EventID, r.Event, sent)
	}
	if r.Enrichment.Status != event.StatusEnriched || r.Weather == nil {
		t.Fatalf("record %s not enriched: %+v", r.EventID, r.Enrichment)
	}
	w := r.Weather
	// The cell is the simulator's grid cell of the (cache-rounded) place: its
	// centre is within one cell of the place.
	cellLat, cellLon := sim.Cell(w.CellLatitude, w.CellLongitude)
	if math.Abs(w.CellLatitude-cellLat) > 1e-6 || math.Abs(w.CellLongitude-cellLon) > 1e-6 ||
		math.Abs(w.CellLatitude-sent.Location.Lat()) > sim.CellDegrees || math.Abs(w.CellLongitude-sent.Location.Lon()) > sim.CellDegrees {
		t.Fatalf("record %s: weather cell %g,%g is not a simulator cell near %g,%g", r.EventID,
			w.CellLatitude, w.CellLongitude, sent.Location.Lat(), sent.Location.Lon())
	}
	// Weather for the event's time: current conditions (its 15-minute slot)
	// if the event is in the slot the worker processed it in, else the
	// provider's value for the event's hour.
	slot := w.ObservedAt
	wantSlot := sent.OccurredAt.Truncate(time.Hour)
	if sent.OccurredAt.Truncate(15 * time.Minute).Equal(r.ProcessedAt.Truncate(15 * time.Minute)) {
		wantSlot = sent.OccurredAt.Truncate(15 * time.Minute)
	}
	if !slot.Equal(wantSlot) {
		t.Fatalf("record %s: weather observed at %s, want %s for an event at %s processed at %s",
			r.EventID, slot, wantSlot, sent.OccurredAt, r.ProcessedAt)
	}
	want := sim.Conditions(w.CellLatitude, w.CellLongitude, slot)
	if !sim.SameValues(*w, want) {
		t.Fatalf("record %s: weather %+v, the simulator says %+v", r.EventID, *w, want)
	}
	if r.IngestedAt.Before(testStart) || r.ProcessedAt.Before(r.IngestedAt) {
		t.Fatalf("record %s: ingested %s processed %s (test start %s)", r.EventID, r.IngestedAt, r.ProcessedAt, testStart)
	}
}

// TestRestartKeepsEveryAcceptedEvent streams events, stops skyjoin in the
// middle (SIGTERM, then SIGKILL), starts it again on the same data dir, and
// checks that every event answered 202 is stored exactly once.
func TestRestartKeepsEveryAcceptedEvent(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dataDir := t.TempDir()
			p := start(t, dataDir)
			c := newClient(p.base)
			now := time.Now().UTC()

			var mu sync.Mutex
			accepted := map[string]bool{}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			const perWorker = 3000
			for w := range 4 {
				wg.Go(func() {
					for i := 0; i < perWorker && ctx.Err() == nil; {
						n := 1 + i%50 // batches of 1..50 events
						if i+n > perWorker {
							n = perWorker - i
						}
						batch := make([]event.Event, n)
						for k := range batch {
							batch[k] = makeEvent(w*perWorker+i+k, now)
						}
						form := []string{"array", "ndjson"}[i%2]
						if n == 1 {
							form = "single"
						}
						if code, _ := c.post(form, batch); code == http.StatusAccepted {
							mu.Lock()
							for _, e := range batch {
								accepted[e.EventID] = true
							}
							mu.Unlock()
						}
						i += n
					}
				})
			}
			// Stop the process once a good part of the stream is accepted,
			// while the clients keep sending.
			for deadline := time.Now().Add(60 * time.Second); ; {
				mu.Lock()
				n := len(accepted)
				mu.Unlock()
				if n >= 3000 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("only %d events accepted in 60 s", n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			p.Signal(t, sig)
			cancel()
			wg.Wait()
			mu.Lock()
			n := len(accepted)
			mu.Unlock()

			p2 := start(t, dataDir)
			c2 := newClient(p2.base)
			var recs []event.Record
			seen := map[string]int{}
			missing := n
			for deadline := time.Now().Add(120 * time.Second); missing > 0 && time.Now().Before(deadline); {
				time.Sleep(200 * time.Millisecond)
				recs = c2.all(t)
				clear(seen)
				for _, r := range recs {
					seen[r.EventID]++
				}
				missing = testbin.Missing(seen, accepted)
			}
			dup := testbin.Duplicated(t, seen)
			t.Logf("%v mid-stream: %d events accepted; after restart %d stored, %d accepted missing, %d duplicated",
				sig, n, len(recs), missing, dup)
			if missing > 0 {
				t.Fatalf("%d events answered 202 are not stored", missing)
			}
			p2.Signal(t, syscall.SIGTERM)
		})
	}
}

// run runs the skyjoin binary with args and returns its stdout.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("skyjoin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDeadLetterReplay: an event the worker refuses (here: a worker stricter
// about clock skew than ingest) is dead-lettered with its reason, listed by
// `skyjoin deadletters`, and stored by `skyjoin replay` once the cause is
// fixed (the worker restarted with the same skew as ingest).
func TestDeadLetterReplay(t *testing.T) {
	dataDir := t.TempDir()
	p := start(t, dataDir, "--ingest-max-clock-skew", "1h", "--enrich-max-clock-skew", "0s")
	c := newClient(p.base)
	future := makeEvent(1, time.Now().Add(30*time.Minute))
	ok := makeEvent(2, time.Now())
	if code, body := c.post("array", []event.Event{future, ok}); code != http.StatusAccepted {
		t.Fatalf("post: %d %s", code, body)
	}
	c.waitStored(t, 1)
	var out string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out = run(t, "deadletters", "--api", p.base)
		if strings.Contains(out, future.EventID) {
			break
		}
	}
	if !strings.Contains(out, "validate") || !strings.Contains(out, "occurred_at") || !strings.Contains(out, future.EventID) {
		t.Fatalf("deadletters does not list the refused event with its reason:\n%s", out)
	}
	p.Signal(t, syscall.SIGTERM)

	p2 := start(t, dataDir, "--ingest-max-clock-skew", "1h", "--enrich-max-clock-skew", "1h")
	if out := run(t, "replay", "--api", p2.base, "--stage", "validate"); !strings.Contains(out, "replayed 1 ") {
		t.Fatalf("replay: %s", out)
	}
	c2 := newClient(p2.base)
	recs := c2.waitStored(t, 2)
	if len(recs) != 2 || recs[1].EventID != future.EventID {
		t.Fatalf("after replay the store holds %d records: %v", len(recs), recs)
	}
	if out := run(t, "deadletters", "--api", p2.base); !strings.Contains(out, "no dead letters") {
		t.Fatalf("dead letters left after replay:\n%s", out)
	}
	p2.Signal(t, syscall.SIGTERM)
}
