package deliver

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/test/testbin"
)

// BenchmarkDownstreamLatency measures, with the stages as separate
// processes (broker, ingest, enrich, serve, deliver), the time from a 202
// of POST /v1/events to the record's arrival at an SSE client of the
// process that owns the store (enrich --serve), at one of a separate
// `skyjoin serve` (a DuckDB file of its own: its live stream comes from the
// records topic, as on Google Cloud) and at a webhook target through a
// separate deliver. All three read the records topic. It sends single events at 200/s for 10 s, to loopback
// only, whatever b.N is:
//
//	go test ./test/deliver -run '^$' -bench DownstreamLatency -benchtime 1x
func BenchmarkDownstreamLatency(b *testing.B) {
	const rate, seconds = 200, 10
	root := b.TempDir()
	_, brokerURL := testbin.Start(b, binary, testbin.BrokerURL, "broker", "--listen", testbin.FreeAddr(b),
		"--data-dir", filepath.Join(root, "broker"), "--log-level", "warn")
	_, ingest := testbin.StartAPI(b, binary, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "ingest"), "--log-level", "warn")
	_, serve := testbin.StartAPI(b, binary, "enrich", "--demo", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "enrich"), "--log-level", "warn", "--stats-every", "0")
	serveDir := filepath.Join(root, "serve")
	_, separate := testbin.StartAPI(b, binary, "serve", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", serveDir, "--store", "duckdb://"+filepath.Join(serveDir, "own.duckdb"), "--log-level", "warn")
	_, deliver := testbin.Options{Env: []string{testbin.WebhookKeyEnv}}.StartAPI(b, binary, append([]string{"deliver", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "deliver"), "--log-level", "warn"}, testbin.WebhookKeyArgs...)...)

	var mu sync.Mutex
	accepted, atSSE, atServe, atHook := map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		ids, _ := testbin.DeliveredIDs(r.Body)
		mu.Lock()
		for _, id := range ids {
			if _, ok := atHook[id]; !ok {
				atHook[id] = now
			}
		}
		mu.Unlock()
	}))
	defer hook.Close()
	body, _ := json.Marshal(map[string]any{"url": hook.URL, "secret": "a-long-random-secret-for-tests", "filter": "true", "max_wait_ms": 0, "batch_size": 1,
		"allow_private": true}) // a loopback target
	resp, err := http.Post(deliver+"/v1/webhooks", "application/json", bytes.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusCreated {
		b.Fatalf("register: %v %v", err, resp)
	}
	resp.Body.Close()

	for _, st := range []struct {
		base string
		at   map[string]time.Time
	}{{serve, atSSE}, {separate, atServe}} {
		stream, err := http.Get(st.base + "/v1/stream")
		if err != nil {
			b.Fatal(err)
		}
		defer stream.Body.Close()
		go func(at map[string]time.Time) {
			sc := bufio.NewScanner(stream.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				now := time.Now()
				var rec struct {
					EventID string `json:"event_id"`
				}
				if json.Unmarshal([]byte(line), &rec) == nil && rec.EventID != "" {
					mu.Lock()
					at[rec.EventID] = now
					mu.Unlock()
				}
			}
		}(st.at)
	}
	time.Sleep(time.Second) // the stream and the webhook are live

	b.ResetTimer()
	hc := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	start := time.Now()
	for i := range rate * seconds {
		<-tick.C
		lat, lon := float64(i%170)-85, float64(i%350)-175
		e := event.Event{EventID: fmt.Sprintf("lat-%06d", i), EventType: "latency.test", OccurredAt: time.Now().UTC(),
			User: event.User{ID: "u"}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
		body, _ := json.Marshal(e)
		if code := testbin.Post(hc, ingest, body); code == http.StatusAccepted {
			mu.Lock()
			accepted[e.EventID] = time.Now()
			mu.Unlock()
		}
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		done := len(atSSE) >= len(accepted) && len(atServe) >= len(accepted) && len(atHook) >= len(accepted)
		mu.Unlock()
		if done {
			break
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	report := func(name string, at map[string]time.Time) {
		var ds []time.Duration
		for id, t0 := range accepted {
			if t1, ok := at[id]; ok {
				ds = append(ds, t1.Sub(t0))
			}
		}
		if len(ds) < len(accepted) {
			b.Errorf("%s: %d of %d records arrived", name, len(ds), len(accepted))
		}
		if len(ds) == 0 {
			return
		}
		slices.Sort(ds)
		p := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000 }
		b.ReportMetric(p(0.5), name+"-p50-ms")
		b.ReportMetric(p(0.99), name+"-p99-ms")
		b.Logf("%s: %d records, p50 %.1f ms, p99 %.1f ms, max %.1f ms", name, len(ds), p(0.5), p(0.99), p(1))
	}
	b.Logf("%d events accepted at %d/s over %s", len(accepted), rate, time.Since(start).Round(time.Second))
	report("sse", atSSE)
	report("sse-separate-serve", atServe)
	report("webhook", atHook)
}
