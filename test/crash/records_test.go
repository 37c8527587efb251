package crash

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/jetstream"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/test/testbin"

	json "github.com/goccy/go-json"
)

// TestCrashBetweenStoreAndRecordsPublish kills the enrich worker with
// SIGKILL right after a store write committed and before its records were
// published to the records topic (SKYJOIN_FAILPOINT), then restarts it: the
// batch comes back from the broker, the store returns the records it holds,
// and every stored record reaches the records topic, the ones of the
// crashed batch included, with the seq they were stored with.
func TestCrashBetweenStoreAndRecordsPublish(t *testing.T) {
	root := t.TempDir()
	_, brokerURL := testbin.Start(t, binary, testbin.BrokerURL, "broker", "--listen", testbin.FreeAddr(t),
		"--data-dir", filepath.Join(root, "broker"), "--log-level", "warn")
	// A downstream consumer of the records topic, subscribed before any
	// record is published.
	ctx := t.Context()
	b, err := jetstream.Open(ctx, jetstream.Config{URL: brokerURL}, platform.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, err := b.Subscribe(ctx, broker.TopicRecords, "crash-test", broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	seen := map[string]int64{} // event id -> seq, as published
	read := func(wait time.Duration) {
		for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
			msgs, err := sub.Fetch(ctx, 100, 200*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				recs, err := envelope.DecodeRecords(m)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					if old, ok := seen[r.EventID]; ok && old != r.Seq {
						t.Errorf("%s published with seq %d, then %d", r.EventID, old, r.Seq)
					}
					seen[r.EventID] = r.Seq
				}
			}
			if len(msgs) > 0 {
				if err := sub.Ack(ctx, msgs...); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	_, ingBase := testbin.StartAPI(t, binary, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "ingest"), "--log-level", "warn")
	// One message per worker batch (--enrich-batch 1): the worker dies right
	// after its third store write has committed. The events are posted once
	// it is up.
	enrichArgs := []string{"enrich", "--demo", "--broker", brokerURL, "--addr", testbin.FreeAddr(t), "--data-dir", filepath.Join(root, "enrich"),
		"--log-level", "warn", "--stats-every", "0", "--enrich-ack-wait", "3s", "--enrich-batch", "1"}
	worker, _ := testbin.Options{Env: []string{"SKYJOIN_FAILPOINT=enrich-after-store:3"}}.StartAPI(t, binary, enrichArgs...)
	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	ids := map[string]bool{}
	const total, per = 2000, 50
	for i := 0; i < total; i += per {
		batch := make([]event.Event, per)
		for k := range batch {
			batch[k] = mkEvent(i+k, now)
			ids[batch[k].EventID] = true
		}
		body, _ := json.Marshal(batch)
		if code := testbin.Post(hc, ingBase, body); code != http.StatusAccepted {
			t.Fatalf("post: %d", code)
		}
	}

	select {
	case <-worker.Done():
	case <-time.After(2 * time.Minute):
		t.Fatal("the worker did not reach its failpoint")
	}
	if err := worker.Err(); err == nil || err.Error() != "signal: killed" {
		t.Fatalf("the worker exited with %v, want signal: killed", err)
	}
	read(2 * time.Second)
	before := len(seen)
	var maxSeen int64
	for _, s := range seen {
		maxSeen = max(maxSeen, s)
	}
	t.Logf("killed after its third store write; %d records published before the kill (seq <= %d)", before, maxSeen)

	_, base := testbin.StartAPI(t, binary, enrichArgs...)
	stored := waitStored(t, hc, base, ids)
	testbin.Duplicated(t, stored)
	for deadline := time.Now().Add(2 * time.Minute); len(seen) < total && time.Now().Before(deadline); {
		read(time.Second)
	}
	if missing := testbin.Missing(map[string]int(countOf(seen)), ids); missing > 0 {
		t.Fatalf("%d of %d stored records never reached the records topic", missing, total)
	}
	// The records of the crashed batch were stored before the kill, with
	// the seqs after those published then, and published after the
	// restart with those same seqs.
	hidden := 0
	for _, s := range seen {
		if s > maxSeen && s <= maxSeen+per {
			hidden++
		}
	}
	if hidden != per {
		t.Errorf("%d records with the seqs of the crashed batch (%d..%d) reached the topic, want %d", hidden, maxSeen+1, maxSeen+per, per)
	}
	t.Logf("after the restart all %d records reached the records topic, the %d of the batch stored just before the kill included", total, hidden)
}

func countOf(seen map[string]int64) map[string]int {
	out := make(map[string]int, len(seen))
	for id := range seen {
		out[id] = 1
	}
	return out
}
