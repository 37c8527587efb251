package fault

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/test/testbin"
)

// wxEvent is event id of the weather tests: each in its own 0.1-degree
// weather cell (the simulator's grid), so that no event can be enriched from
// the cache of another's answer: an event's weather is fetched for it.
func wxEvent(id int, now time.Time) event.Event {
	lat := -60 + float64(id/3000) + 0.05
	lon := -175 + float64(id%3000)*0.1 + 0.05
	return event.Event{EventID: fmt.Sprintf("wx-%07d", id), EventType: "fault.weather", OccurredAt: now,
		User: event.User{ID: fmt.Sprintf("u%d", id%1000)}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
}

// paced sends the events [from, to) in batches of 50 from 2 clients at
// about rate events/s in all, each batch retried until answered 202 (or the
// deadline). It returns the count accepted so far and a channel closed when
// the clients are done.
func paced(base string, from, to int, rate float64, deadline time.Time) (accepted *atomic.Int64, done chan struct{}) {
	const batch = 50
	accepted = &atomic.Int64{}
	done = make(chan struct{})
	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	start := time.Now()
	every := time.Duration(float64(time.Second) * batch / rate)
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Go(func() {
			for k := c; from+k*batch < to; k += 2 {
				time.Sleep(time.Until(start.Add(time.Duration(k) * every)))
				evs := make([]event.Event, 0, batch)
				for i := from + k*batch; i < min(from+(k+1)*batch, to); i++ {
					evs = append(evs, wxEvent(i, now))
				}
				body, _ := json.Marshal(evs)
				for time.Now().Before(deadline) {
					if testbin.Post(hc, base, body) == http.StatusAccepted {
						accepted.Add(int64(len(evs)))
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	return accepted, done
}

// wxRecord is what the weather tests read of a stored record.
type wxRecord struct {
	EventID     string    `json:"event_id"`
	IngestedAt  time.Time `json:"ingested_at"`
	ProcessedAt time.Time `json:"processed_at"`
	Enrichment  struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"enrichment"`
	Weather *struct {
		TemperatureC float64 `json:"temperature_c"`
	} `json:"weather"`
}

// listRecords pages through every stored record; copies counts each
// event_id's records.
func listRecords(t *testing.T, base string) (recs map[string]wxRecord, copies map[string]int) {
	t.Helper()
	recs, copies = map[string]wxRecord{}, map[string]int{}
	testbin.ListEach(t, http.DefaultClient, base, func(r wxRecord) {
		recs[r.EventID] = r
		copies[r.EventID]++
	})
	return recs, copies
}

// TestWeatherProviderDown runs the weather provider (`skyjoin sim`) as its
// own process and kills it for a few seconds while events stream into
// `skyjoin up`. Every accepted event is stored exactly once; with
// --enrich-on-weather-failure=store (the default) the records processed
// while the provider was down are stored unavailable (or stale); with
// =retry they are held and stored enriched once it is back. In both modes
// skyjoin recovers by itself: events after the restart are enriched.
//
// The breaker and retry timings are shortened (open 2 s, backoff 100 ms)
// so that the test takes seconds; the defaults (30 s, 500 ms) only make the
// recovery slower.
func TestWeatherProviderDown(t *testing.T) {
	for _, mode := range []string{"store", "retry"} {
		t.Run(mode, func(t *testing.T) { weatherDown(t, mode) })
	}
}

func weatherDown(t *testing.T, mode string) {
	total, down, rate := 12_000, 4*time.Second, 1000.0
	if testing.Short() {
		total, down = 6_000, 3*time.Second
	}
	simArgs := []string{"sim", "--addr", testbin.FreeAddr(t), "--log-level", "warn"}
	wx, wxURL := testbin.Start(t, binary, testbin.WeatherURL, simArgs...)
	_, base := testbin.Start(t, binary, testbin.APIURL, "up", "--weather-url", wxURL, "--collect=false", "--addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--weather-quota", "none", "--log-level", "warn", "--stats-every", "0",
		"--enrich-on-weather-failure", mode, "--weather-breaker-open-for", "2s",
		"--weather-backoff", "100ms", "--weather-max-backoff", "500ms")

	accepted, done := paced(base, 0, total, rate, time.Now().Add(3*time.Minute))
	for accepted.Load() < int64(total/4) {
		time.Sleep(5 * time.Millisecond)
	}
	wx.Kill(t)
	killedAt := time.Now()
	t.Logf("weather provider killed with %d events accepted", accepted.Load())
	time.Sleep(down)
	restartedAt := time.Now()
	testbin.Start(t, binary, testbin.WeatherURL, simArgs...)
	t.Logf("weather provider back after %s; %d events accepted", restartedAt.Sub(killedAt).Round(time.Millisecond), accepted.Load())
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the stream did not finish: %d accepted", accepted.Load())
	}
	if got := accepted.Load(); got != int64(total) {
		t.Fatalf("%d of %d events accepted", got, total)
	}

	// Every accepted event is stored, exactly once.
	var recs map[string]wxRecord
	var copies map[string]int
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		recs, copies = listRecords(t, base)
		if len(recs) >= total || time.Now().After(deadline) {
			break
		}
	}
	for i := range total {
		id := wxEvent(i, time.Time{}).EventID
		if copies[id] != 1 {
			t.Fatalf("%s stored %d times (%d distinct stored of %d)", id, copies[id], len(recs), total)
		}
	}
	if len(recs) != total {
		t.Fatalf("%d distinct stored, want %d", len(recs), total)
	}

	// Classify by the records' own times: looked up entirely while the
	// provider was down (ingested after the kill, processed before the
	// restart), ingested while it was down, and before the kill.
	statuses := map[string]int{}
	var before, whileDown, downIngested, heldThenEnriched, afterUnavail int
	for _, r := range recs {
		st := r.Enrichment.Status
		statuses[st]++
		if st == event.StatusEnriched && r.Weather == nil {
			t.Errorf("%s: status enriched without weather", r.EventID)
		}
		if r.ProcessedAt.Before(killedAt) {
			before++
			if st != event.StatusEnriched {
				t.Errorf("%s processed before the kill with status %q (%s)", r.EventID, st, r.Enrichment.Error)
			}
		}
		if r.IngestedAt.After(killedAt) && r.ProcessedAt.Before(restartedAt) {
			whileDown++
			if st != event.StatusUnavailable && st != event.StatusStale {
				t.Errorf("%s processed while the provider was down with status %q", r.EventID, st)
			}
		}
		if r.IngestedAt.After(killedAt) && r.IngestedAt.Before(restartedAt) {
			downIngested++
			if mode == "retry" && st == event.StatusEnriched {
				if r.ProcessedAt.Before(restartedAt) {
					t.Errorf("%s: enriched at %s, before the provider was back", r.EventID, r.ProcessedAt)
				}
				heldThenEnriched++
			}
		}
		if r.ProcessedAt.After(restartedAt) && st == event.StatusUnavailable {
			afterUnavail++
		}
	}
	t.Logf("%d events stored exactly once; statuses %v; %d processed before the kill, %d ingested while the provider was down, %d processed while down, %d held and enriched after the restart, %d stored unavailable after the restart (breaker still open)",
		total, statuses, before, downIngested, whileDown, heldThenEnriched, afterUnavail)
	if before == 0 || downIngested == 0 {
		t.Fatalf("the test did not exercise the outage: %d processed before the kill, %d ingested while down", before, downIngested)
	}
	switch mode {
	case "store":
		if whileDown == 0 {
			t.Error("no record was processed while the provider was down")
		}
	case "retry":
		if statuses[event.StatusUnavailable] > 0 {
			t.Errorf("%d records stored unavailable with --enrich-on-weather-failure=retry", statuses[event.StatusUnavailable])
		}
		if whileDown > 0 {
			t.Errorf("%d records stored while the provider was down with --enrich-on-weather-failure=retry", whileDown)
		}
	}

	// Recovery by itself: new events are enriched again (bounded wait).
	recovered := false
	next := total
	for deadline := time.Now().Add(time.Minute); !recovered && time.Now().Before(deadline); next += 50 {
		_, d := paced(base, next, next+50, rate, deadline)
		<-d
		for wait := time.Now().Add(30 * time.Second); time.Now().Before(wait); time.Sleep(200 * time.Millisecond) {
			got, enriched := 0, 0
			for i := next; i < next+50; i++ {
				r, ok := getRecord(base, wxEvent(i, time.Time{}).EventID)
				if ok {
					got++
					if r.Enrichment.Status == event.StatusEnriched {
						enriched++
					}
				}
			}
			if got == 50 {
				recovered = enriched == 50
				break
			}
		}
	}
	if !recovered {
		t.Fatal("events sent after the provider came back are not enriched within a minute")
	}
	t.Logf("recovered: %d probe batch(es) of 50 after the stream, the last all enriched", (next-total)/50)
}

func getRecord(base, id string) (wxRecord, bool) {
	var r wxRecord
	resp, err := http.Get(base + "/v1/events/" + id)
	if err != nil {
		return r, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, false
	}
	return r, json.NewDecoder(resp.Body).Decode(&r) == nil
}
