// Package fault injects faults into a running skyjoin made of separate
// processes and checks that no accepted event is lost and that it recovers
// by itself. Load goes to loopback only, bounded in count and time.
package fault

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

func mkEvent(id int, now time.Time) event.Event {
	lat, lon := float64(id%170)-85, float64(id%350)-175
	return event.Event{EventID: fmt.Sprintf("fault-%07d", id), EventType: "fault.test", OccurredAt: now,
		User: event.User{ID: fmt.Sprintf("u%d", id%1000)}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
}

// stream sends total events in batches of 50 from 2 clients, each batch
// retried until answered 202. It returns the count accepted so far and a
// channel closed when all are accepted, and counts the 503 answers.
func stream(base string, total int, deadline time.Time) (accepted, unavailable *atomic.Int64, done chan struct{}) {
	accepted, unavailable = &atomic.Int64{}, &atomic.Int64{}
	done = make(chan struct{})
	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Go(func() {
			for i := c * total / 2; i < (c+1)*total/2; i += 50 {
				batch := make([]event.Event, 50)
				for k := range batch {
					batch[k] = mkEvent(i+k, now)
				}
				body, _ := json.Marshal(batch)
				for time.Now().Before(deadline) {
					code := testbin.Post(hc, base, body)
					if code == http.StatusAccepted {
						accepted.Add(50)
						break
					}
					if code == http.StatusServiceUnavailable {
						unavailable.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	return accepted, unavailable, done
}

func waitAllStored(t *testing.T, base string, total int) {
	t.Helper()
	var stored map[string]int
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		stored = testbin.ListIDs(t, http.DefaultClient, base)
		if len(stored) >= total {
			break
		}
	}
	for i := range total {
		id := mkEvent(i, time.Time{}).EventID
		if stored[id] != 1 {
			t.Fatalf("%s stored %d times (%d distinct stored)", id, stored[id], len(stored))
		}
	}
	if len(stored) != total {
		t.Fatalf("%d distinct stored, want %d", len(stored), total)
	}
}

// TestBrokerDown: the broker runs as its own process; it is killed for a
// few seconds mid-stream. Ingest answers 503 meanwhile, nothing accepted is
// lost, and skyjoin carries on by itself when the broker is back: every
// event is stored once, and every record reaches a webhook (through the
// records topic and the registry, both on that broker).
func TestBrokerDown(t *testing.T) {
	total := 20_000
	if testing.Short() {
		total = 5_000
	}
	brokerDir, upDir := t.TempDir(), t.TempDir()
	brokerArgs := []string{"broker", "--listen", testbin.FreeAddr(t), "--data-dir", brokerDir, "--log-level", "warn"}
	br, brokerURL := testbin.Start(t, binary, testbin.BrokerURL, brokerArgs...)
	// The registry is on the broker, shared: a key seals webhook secrets.
	_, base := testbin.Options{Env: []string{testbin.WebhookKeyEnv}}.Start(t, binary, testbin.APIURL, "up", "--demo", "--collect=false", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		testbin.WebhookKeyArgs[0], testbin.WebhookKeyArgs[1],
		"--data-dir", upDir, "--log-level", "warn", "--stats-every", "0")

	hook := newHookTarget(t)
	reg, _ := json.Marshal(map[string]any{"url": hook.srv.URL, "secret": "a-long-random-secret-for-tests", "filter": "true",
		"allow_private": true}) // a loopback target
	if resp, err := http.Post(base+"/v1/webhooks", "application/json", bytes.NewReader(reg)); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register a webhook: %v %v", err, resp)
	}

	accepted, unavailable, done := stream(base, total, time.Now().Add(3*time.Minute))
	for accepted.Load() < int64(total/3) {
		time.Sleep(5 * time.Millisecond)
	}
	br.Kill(t)
	t.Logf("broker killed with %d events accepted", accepted.Load())
	before := accepted.Load()
	time.Sleep(3 * time.Second)
	if during := accepted.Load() - before; during > 100 {
		t.Errorf("%d events accepted while the broker was down", during)
	}
	testbin.Start(t, binary, testbin.BrokerURL, brokerArgs...)
	t.Logf("broker back; %d answers were 503 meanwhile", unavailable.Load())
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the stream did not finish: %d accepted", accepted.Load())
	}
	if unavailable.Load() == 0 {
		t.Error("no 503 while the broker was down")
	}
	waitAllStored(t, base, total)
	t.Logf("%d events accepted, all stored exactly once", total)
	for deadline := time.Now().Add(2 * time.Minute); hook.count() < total && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
	}
	if n := hook.count(); n != total {
		t.Fatalf("the webhook received %d of the %d records", n, total)
	}
	t.Logf("every record reached the webhook (%d deliveries, %d records sent again)", hook.posts.Load(), hook.again.Load())
}

// hookTarget is a webhook receiver on loopback that counts distinct event
// ids.
type hookTarget struct {
	srv          *httptest.Server
	mu           sync.Mutex
	ids          map[string]bool
	posts, again atomic.Int64
}

func newHookTarget(t *testing.T) *hookTarget {
	h := &hookTarget{ids: map[string]bool{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ids, err := testbin.DeliveredIDs(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.posts.Add(1)
		h.mu.Lock()
		for _, id := range ids {
			if h.ids[id] {
				h.again.Add(1)
			}
			h.ids[id] = true
		}
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookTarget) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ids)
}
