package deliver

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/test/testbin"
)

// holdTarget is a webhook receiver that holds every request until release
// is closed: a held request is answered 200 once released, or not at all if
// its client goes away first (it was killed). got counts the event ids of
// the requests answered 200.
type holdTarget struct {
	idCounts // of the requests answered 200
	srv      *httptest.Server
	release  chan struct{}

	mu        sync.Mutex
	held      int             // requests waiting now
	abandoned map[string]bool // ids of held requests whose client went away
}

func newHoldTarget(t *testing.T) *holdTarget {
	tg := &holdTarget{release: make(chan struct{}), abandoned: map[string]bool{}}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The whole body is read first: the server then notices a client
		// that goes away, and cancels r.Context().
		ids, err := testbin.DeliveredIDs(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tg.mu.Lock()
		tg.held++
		tg.mu.Unlock()
		select {
		case <-tg.release:
		case <-r.Context().Done():
			tg.mu.Lock()
			tg.held--
			for _, id := range ids {
				tg.abandoned[id] = true
			}
			tg.mu.Unlock()
			return
		}
		tg.mu.Lock()
		tg.held--
		tg.mu.Unlock()
		tg.add(ids...)
	}))
	// Let held requests go before the server closes (Close waits for them).
	t.Cleanup(func() {
		select {
		case <-tg.release:
		default:
			close(tg.release)
		}
		tg.srv.Close()
	})
	return tg
}

func (tg *holdTarget) holding() int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.held
}

// abandonedIDs is the ids of the requests whose client went away while held.
func (tg *holdTarget) abandonedIDs() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	var ids []string
	for id := range tg.abandoned {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// TestKilledDeliverRecordsComeBack: records a deliver instance has fetched
// and not acked when it is killed with SIGKILL reach the target through
// another instance, after the ack wait. Instance a is alone on the records
// while the target holds its POST unanswered (so a has records in hand,
// unacked: the one in flight and those queued behind it); b starts only
// then, so whatever b delivers of those records came back from the broker
// after a died. Then the target answers, and every record, those of the
// request a was holding when it died among them, must arrive.
func TestKilledDeliverRecordsComeBack(t *testing.T) {
	const events = 300
	root := t.TempDir()
	_, brokerURL := testbin.Start(t, binary, testbin.BrokerURL, "broker", "--listen", testbin.FreeAddr(t),
		"--data-dir", filepath.Join(root, "broker"), "--log-level", "warn")
	// The ack wait is long enough that a's messages do not go to b while a
	// lives (the test takes a few seconds to start b and kill a), short
	// enough to keep the test short; the POST timeout outlasts the hold.
	deliverArgs := func(name string) []string {
		return append([]string{"deliver", "--broker", brokerURL, "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(root, name),
			"--log-level", "warn", "--webhook-timeout", "1m", "--webhook-max-attempts", "3", "--webhook-retry-delay", "50ms",
			"--webhook-max-retry-delay", "100ms", "--deliver-ack-wait", "8s"}, testbin.WebhookKeyArgs...)
	}
	keyed := testbin.Options{Env: []string{testbin.WebhookKeyEnv}}
	a, baseA := keyed.StartAPI(t, binary, deliverArgs("a")...)
	_, ingest := testbin.StartAPI(t, binary, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "ingest"), "--log-level", "warn")
	enrich, _ := testbin.StartAPI(t, binary, "enrich", "--demo", "--serve=false", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "enrich"), "--log-level", "warn", "--stats-every", "0", "--enrich-batch", "1")

	tg := newHoldTarget(t)
	hook := register(t, baseA, tg.srv.URL)
	ids := post(t, ingest, 0, events) // 3 events messages, so several records messages
	eventually(t, "every record stored", time.Minute, func() bool {
		return testbin.Counters(t, enrich.Ready(testbin.AdminURL)).Stored == events
	})
	eventually(t, "a's first POST held by the target", 30*time.Second, func() bool { return tg.holding() > 0 })

	_, baseB := keyed.StartAPI(t, binary, deliverArgs("b")...)
	eventually(t, "the webhook live in b", 10*time.Second, func() bool { return slices.Contains(listed(t, baseB), hook) })
	a.Kill(t)
	eventually(t, "the target to see a go", 10*time.Second, func() bool { return len(tg.abandonedIDs()) > 0 })
	held := tg.abandonedIDs()
	t.Logf("a was killed holding a POST of %d records", len(held))

	close(tg.release)
	for deadline := time.Now().Add(2 * time.Minute); tg.missing(ids) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("2 min after the target let requests go: %d of the %d records a held in its POST, %d of all %d, have not arrived",
				tg.missing(held), len(held), tg.missing(ids), events)
		}
	}
	if n := delivered(t, baseB, hook); n < events {
		t.Errorf("b delivered %d records, want all %d (a is dead)", n, events)
	}
}
