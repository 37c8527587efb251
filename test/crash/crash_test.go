// Package crash kills skyjoin with SIGKILL again and again while events
// stream in, and checks that every event answered 202 ends up stored exactly
// once. The load goes to loopback only, bounded in count and time.
package crash

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
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

// startUp starts `skyjoin up --demo --collect=false` on addr (a fixed port,
// so that clients find it again after a restart) and waits until it is ready.
func startUp(t *testing.T, dataDir, addr string) (*testbin.Proc, string) {
	t.Helper()
	return testbin.StartAPI(t, binary, "up", "--demo", "--collect=false", "--addr", addr, "--data-dir", dataDir,
		"--log-level", "warn", "--stats-every", "0", "--enrich-ack-wait", "3s")
}

func mkEvent(id int, now time.Time) event.Event {
	lat, lon := float64(id%170)-85, float64(id%350)-175
	return event.Event{EventID: fmt.Sprintf("crash-%07d", id), EventType: "crash.test", OccurredAt: now,
		User: event.User{ID: fmt.Sprintf("u%d", id%1000)}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
}

// nextBatch is the events from i on, 1 to 100 of them (not beyond end), and
// their JSON.
func nextBatch(rng *rand.Rand, i, end int, now time.Time) ([]event.Event, []byte) {
	batch := make([]event.Event, min(1+rng.IntN(100), end-i))
	for k := range batch {
		batch[k] = mkEvent(i+k, now)
	}
	body, _ := json.Marshal(batch)
	return batch, body
}

// waitStored waits (3 minutes at most) until the store holds every one of
// ids, and returns the count of each id stored.
func waitStored(t *testing.T, hc *http.Client, base string, ids map[string]bool) map[string]int {
	t.Helper()
	for wait := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		stored := testbin.ListIDs(t, hc, base)
		missing := testbin.Missing(stored, ids)
		if missing == 0 {
			return stored
		}
		if time.Now().After(wait) {
			t.Fatalf("%d events answered 202 are not stored after 3 minutes", missing)
		}
	}
}

// TestKillUpRepeatedly streams events from 4 clients (batches of 1 to 100,
// retried until answered 202, as a careful client does), kills `skyjoin up`
// with SIGKILL at random moments, restarts it each time, and at the end
// checks that the store holds every event answered 202 exactly once.
func TestKillUpRepeatedly(t *testing.T) {
	total, kills := 100_000, 5
	if testing.Short() {
		total, kills = 20_000, 3
	}
	dataDir := t.TempDir()
	// Let the kernel pick a port, then start skyjoin on it: skyjoin must
	// come back on the same port after each kill.
	addr := testbin.FreeAddr(t)
	srv, base := startUp(t, dataDir, addr)

	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var accepted, attempts atomic.Int64
	var mu sync.Mutex
	acceptedIDs := make(map[string]bool, total)
	stop := make(chan struct{})
	deadline := time.Now().Add(10 * time.Minute)
	var wg sync.WaitGroup
	const clients = 4
	per := total / clients
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for i := c * per; i < (c+1)*per; {
				batch, body := nextBatch(rng, i, (c+1)*per, now)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if time.Now().After(deadline) {
						return
					}
					attempts.Add(1)
					if testbin.Post(hc, base, body) == http.StatusAccepted {
						break
					}
					time.Sleep(20 * time.Millisecond) // down, or 503: retry the same events
				}
				mu.Lock()
				for _, e := range batch {
					acceptedIDs[e.EventID] = true
				}
				mu.Unlock()
				accepted.Add(int64(len(batch)))
				i += len(batch)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	rng := rand.New(rand.NewPCG(42, 42))
	for k := range kills {
		// A random moment in the stream: after 10% to 90% of its share.
		target := int64(total) * int64(k+1) / int64(kills+1)
		target += int64(rng.IntN(total/(kills+1)/2+1)) - int64(total/(kills+1)/4)
		for accepted.Load() < target {
			select {
			case <-finished:
				t.Fatalf("the stream ended before kill %d", k+1)
			case <-time.After(5 * time.Millisecond):
			}
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		srv.Kill(t)
		t.Logf("kill %d: SIGKILL with %d events accepted", k+1, accepted.Load())
		srv, _ = startUp(t, dataDir, addr)
	}
	select {
	case <-finished:
	case <-time.After(time.Until(deadline) + time.Minute):
		close(stop)
		t.Fatal("the stream did not finish in time")
	}
	if got := accepted.Load(); got != int64(total) {
		t.Fatalf("%d of %d events accepted before the deadline", got, total)
	}

	// Wait until the store holds them all, then check exactly once.
	stored := waitStored(t, hc, base, acceptedIDs)
	dups := testbin.Duplicated(t, stored)
	t.Logf("%d events accepted (%d requests tried), %d kills; stored %d distinct, %d duplicated, 0 missing",
		total, attempts.Load(), kills, len(stored), dups)
}

// TestKillWorkerRepeatedly runs the stages as separate processes (broker,
// ingest, enrich) and kills the enrich worker with SIGKILL again and again
// while events stream in through ingest; at the end every event answered
// 202 is stored exactly once.
func TestKillWorkerRepeatedly(t *testing.T) {
	total, kills := 100_000, 5
	if testing.Short() {
		total, kills = 20_000, 3
	}
	root := t.TempDir()
	_, brokerURL := testbin.Start(t, binary, testbin.BrokerURL, "broker", "--listen", testbin.FreeAddr(t),
		"--data-dir", filepath.Join(root, "broker"), "--log-level", "warn")
	_, ingBase := testbin.StartAPI(t, binary, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "ingest"), "--log-level", "warn")
	enrichArgs := []string{"enrich", "--demo", "--broker", brokerURL, "--addr", testbin.FreeAddr(t), "--data-dir", filepath.Join(root, "enrich"),
		"--log-level", "warn", "--stats-every", "0", "--enrich-ack-wait", "3s"}
	worker, workerBase := testbin.StartAPI(t, binary, enrichArgs...)

	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var accepted atomic.Int64
	ids := make(map[string]bool, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(10 * time.Minute)
	const clients = 4
	per := total / clients
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			for i := c * per; i < (c+1)*per; {
				batch, body := nextBatch(rng, i, (c+1)*per, now)
				for time.Now().Before(deadline) {
					if testbin.Post(hc, ingBase, body) == http.StatusAccepted {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				for _, e := range batch {
					ids[e.EventID] = true
				}
				mu.Unlock()
				accepted.Add(int64(len(batch)))
				i += len(batch)
			}
		})
	}
	// Kill the worker while it works: at random points of its progress
	// through the stream (the store's newest seq).
	rng := rand.New(rand.NewPCG(7, 7))
	for k := range kills {
		target := int64(total) * int64(k+1) / int64(kills+1)
		target += int64(rng.IntN(total/(kills+1)/2+1)) - int64(total/(kills+1)/4)
		seq := int64(0)
		for time.Now().Before(deadline) {
			if seq = newestSeq(hc, workerBase); seq >= target {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		worker.Kill(t)
		t.Logf("kill %d: worker SIGKILLed at seq %d, %d events accepted", k+1, seq, accepted.Load())
		worker, workerBase = testbin.StartAPI(t, binary, enrichArgs...)
	}
	wg.Wait()
	if got := accepted.Load(); got != int64(total) {
		t.Fatalf("%d of %d events accepted before the deadline", got, total)
	}
	stored := waitStored(t, hc, workerBase, ids)
	testbin.Duplicated(t, stored)
	t.Logf("%d events accepted through ingest, worker killed %d times; %d stored, exactly once each", total, kills, len(stored))
}

// newestSeq is the seq of the newest stored record, 0 if none or unknown.
func newestSeq(hc *http.Client, base string) int64 {
	resp, err := hc.Get(base + "/v1/events?limit=1")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var page struct {
		Events []struct {
			Seq int64 `json:"seq"`
		} `json:"events"`
	}
	if json.NewDecoder(resp.Body).Decode(&page) != nil || len(page.Events) == 0 {
		return 0
	}
	return page.Events[0].Seq
}
