// Package deliver runs the consumers of the records topic as separate
// processes, next to `broker`, `ingest` and `enrich` processes: two
// `skyjoin deliver` instances share the records topic of one broker and the
// registry on it, and two `skyjoin serve` instances each stream every
// record. Every target and client is of this test, on 127.0.0.1; the load
// is bounded in count and time.
package deliver

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
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

// target is a webhook receiver: it counts each event id it was sent, and
// answers 500 while failing is set.
// idCounts counts how often each event id arrived; safe for concurrent use.
type idCounts struct {
	mu  sync.Mutex
	got map[string]int
}

func (c *idCounts) add(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got == nil {
		c.got = map[string]int{}
	}
	for _, id := range ids {
		c.got[id]++
	}
}

// absent returns the ids of ids that never arrived.
func (c *idCounts) absent(ids []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range ids {
		if c.got[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// missing counts the ids of ids that never arrived.
func (c *idCounts) missing(ids []string) int { return len(c.absent(ids)) }

// duplicates counts the arrivals beyond each id's first.
func (c *idCounts) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.got {
		n += k - 1
	}
	return n
}

// target is a webhook receiver that counts the event ids it is sent, or
// answers 500 while failing is set.
type target struct {
	idCounts
	srv     *httptest.Server
	posts   atomic.Int64
	failing atomic.Bool
}

func newTarget(t *testing.T) *target {
	tg := &target{}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.posts.Add(1)
		if tg.failing.Load() {
			http.Error(w, "down for the test", http.StatusInternalServerError)
			return
		}
		ids, err := testbin.DeliveredIDs(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tg.add(ids...)
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func call(t *testing.T, method, url string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, body)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, b)
		}
	}
	return resp.StatusCode
}

// register registers a webhook on a loopback target: allow_private (the
// processes run without auth, on loopback).
func register(t *testing.T, base, url string) string {
	t.Helper()
	var hook struct {
		ID string `json:"id"`
	}
	if code := call(t, http.MethodPost, base+"/v1/webhooks", map[string]any{
		"url": url, "secret": "a-long-random-secret-for-tests", "filter": "true", "max_wait_ms": 50, "allow_private": true}, &hook); code != http.StatusCreated {
		t.Fatalf("register a webhook through %s: %d", base, code)
	}
	return hook.ID
}

func listed(t *testing.T, base string) []string {
	var out struct {
		Webhooks []struct {
			ID string `json:"id"`
		} `json:"webhooks"`
	}
	call(t, http.MethodGet, base+"/v1/webhooks", nil, &out)
	var ids []string
	for _, h := range out.Webhooks {
		ids = append(ids, h.ID)
	}
	return ids
}

// delivered is the records one instance delivered for a webhook (its own
// counters, since it started).
func delivered(t *testing.T, base, hook string) int64 {
	var out struct {
		Stats struct {
			DeliveredRecords int64 `json:"delivered_records"`
		} `json:"stats"`
	}
	call(t, http.MethodGet, base+"/v1/webhooks/"+hook, nil, &out)
	return out.Stats.DeliveredRecords
}

func failures(t *testing.T, base, hook string) []string {
	var out struct {
		Failures []struct {
			ID string `json:"id"`
		} `json:"failures"`
	}
	call(t, http.MethodGet, base+"/v1/webhooks/"+hook+"/failures", nil, &out)
	var ids []string
	for _, f := range out.Failures {
		ids = append(ids, f.ID)
	}
	slices.Sort(ids)
	return ids
}

func eventually(t *testing.T, what string, wait time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, wait)
		}
	}
}

// post sends n events from id `from` through ingest and returns their ids.
func post(t *testing.T, ingest string, from, n int) []string {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	var ids []string
	for i := from; i < from+n; i += 100 {
		batch := make([]event.Event, min(100, from+n-i))
		for k := range batch {
			id := i + k
			lat, lon := float64(id%170)-85, float64(id%350)-175
			batch[k] = event.Event{EventID: fmt.Sprintf("dlv-%06d", id), EventType: "deliver.test", OccurredAt: now,
				User: event.User{ID: fmt.Sprintf("u%d", id%100)}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
			ids = append(ids, batch[k].EventID)
		}
		body, _ := json.Marshal(batch)
		if code := testbin.Post(http.DefaultClient, ingest, body); code != http.StatusAccepted {
			t.Fatalf("post: %d", code)
		}
	}
	return ids
}

// TestTwoDeliverInstances: two deliver processes share the records; a
// webhook registered through either is live in both (each target gets
// every record, whichever instance a batch went to); a failure recorded by
// one is listed by both; and when one instance is killed with SIGKILL, the
// other delivers the records stored after the kill (that the records the
// killed one held come back is TestKilledDeliverRecordsComeBack's).
func TestTwoDeliverInstances(t *testing.T) {
	root := t.TempDir()
	_, brokerURL := testbin.Start(t, binary, testbin.BrokerURL, "broker", "--listen", testbin.FreeAddr(t),
		"--data-dir", filepath.Join(root, "broker"), "--log-level", "warn")
	// Both share the registry on the broker, so one key seals the
	// webhooks' secrets.
	deliverArgs := func(name string) []string {
		return append([]string{"deliver", "--broker", brokerURL, "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(root, name),
			"--log-level", "warn", "--webhook-max-attempts", "2", "--webhook-retry-delay", "50ms", "--webhook-max-retry-delay", "100ms",
			"--deliver-ack-wait", "3s"}, testbin.WebhookKeyArgs...)
	}
	keyed := testbin.Options{Env: []string{testbin.WebhookKeyEnv}}
	a, baseA := keyed.StartAPI(t, binary, deliverArgs("a")...)
	_, baseB := keyed.StartAPI(t, binary, deliverArgs("b")...)
	_, ingest := testbin.StartAPI(t, binary, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "ingest"), "--log-level", "warn")
	testbin.StartAPI(t, binary, "enrich", "--demo", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "enrich"), "--log-level", "warn", "--stats-every", "0", "--enrich-batch", "4")

	one, two := newTarget(t), newTarget(t)
	hookA := register(t, baseA, one.srv.URL) // through a
	hookB := register(t, baseB, two.srv.URL) // through b
	for _, base := range []string{baseA, baseB} {
		eventually(t, "both registrations listed by "+base, 10*time.Second, func() bool {
			ids := listed(t, base)
			return slices.Contains(ids, hookA) && slices.Contains(ids, hookB)
		})
	}

	// Every record reaches both targets: the records messages are split
	// between a and b, so each must deliver for both registrations.
	ids := post(t, ingest, 0, 2000)
	start := time.Now()
	eventually(t, "every record at both targets", 2*time.Minute, func() bool {
		return one.missing(ids) == 0 && two.missing(ids) == 0
	})
	t.Logf("2000 records at both targets %s after the last 202 (duplicates: %d and %d)",
		time.Since(start).Round(time.Millisecond), one.duplicates(), two.duplicates())
	// Each instance delivered for the registration made through the other.
	byB, byA := delivered(t, baseB, hookA), delivered(t, baseA, hookB)
	if byB == 0 || byA == 0 {
		t.Errorf("b delivered %d records of a's webhook, a %d of b's: want both > 0", byB, byA)
	}
	t.Logf("b delivered %d records for the webhook registered through a, a %d for b's", byB, byA)

	// A failure recorded by whichever instance had the batch is listed by
	// both.
	one.failing.Store(true)
	post(t, ingest, 2000, 200)
	var fa []string
	eventually(t, "failures of the first webhook", time.Minute, func() bool {
		fa = failures(t, baseA, hookA)
		return len(fa) > 0 && slices.Equal(fa, failures(t, baseB, hookA))
	})
	t.Logf("%d failed batches of the first webhook, listed alike by both instances", len(fa))
	one.failing.Store(false)

	// Kill a: b delivers on.
	a.Kill(t)
	more := post(t, ingest, 3000, 1000)
	eventually(t, "the records after the kill at the second target", 2*time.Minute, func() bool { return two.missing(more) == 0 })
	t.Logf("after a SIGKILL of one instance the other delivered all 1000 later records")
}
