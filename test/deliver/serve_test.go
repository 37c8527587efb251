package deliver

import (
	"bufio"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/test/testbin"
)

// sseClient reads GET /v1/stream of one serve instance and counts the
// event ids of its records.
// sseClient counts the event ids of the records a live stream sends.
type sseClient struct{ idCounts }

// openStream connects to base/v1/stream; once it returns, the stream is
// subscribed (the server subscribes before it answers 200). It reads until
// the test ends.
func openStream(t *testing.T, base string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s/v1/stream: %v", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s/v1/stream: %d", base, resp.StatusCode)
	}
	c := &sseClient{}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				event = v
				continue
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			if event != "record" {
				t.Errorf("%s/v1/stream: event %q: %s", base, event, data)
				continue
			}
			var rec struct {
				EventID string `json:"event_id"`
			}
			if err := json.Unmarshal([]byte(data), &rec); err != nil || rec.EventID == "" {
				t.Errorf("%s/v1/stream: a record without an event id: %v: %s", base, err, data)
				continue
			}
			c.add(rec.EventID)
		}
	}()
	return c
}

// TestTwoServeInstancesStream: two `skyjoin serve` processes, each with
// its own store (an empty DuckDB file of its own: the live stream comes
// from the records topic, not the store), next to `broker`, `ingest` and
// an `enrich` worker that serves nothing. An SSE client of each instance
// gets every record the worker stored, once: each instance has its own
// subscription to the records topic, so neither takes records from the
// other.
func TestTwoServeInstancesStream(t *testing.T) {
	const events = 1000
	root := t.TempDir()
	_, brokerURL := testbin.Start(t, binary, testbin.BrokerURL, "broker", "--listen", testbin.FreeAddr(t),
		"--data-dir", filepath.Join(root, "broker"), "--log-level", "warn")
	serveArgs := func(name string) []string {
		dir := filepath.Join(root, name)
		return []string{"serve", "--broker", brokerURL, "--addr", "127.0.0.1:0", "--data-dir", dir,
			"--store", "duckdb://" + filepath.Join(dir, "own.duckdb"), "--log-level", "warn"}
	}
	_, baseA := testbin.StartAPI(t, binary, serveArgs("serve-a")...)
	_, baseB := testbin.StartAPI(t, binary, serveArgs("serve-b")...)
	_, ingest := testbin.StartAPI(t, binary, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "ingest"), "--log-level", "warn")
	enrich, _ := testbin.StartAPI(t, binary, "enrich", "--demo", "--serve=false", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(root, "enrich"), "--log-level", "warn", "--stats-every", "0", "--enrich-batch", "4")

	a, b := openStream(t, baseA), openStream(t, baseB)
	ids := post(t, ingest, 0, events)
	eventually(t, "every record stored", time.Minute, func() bool {
		return testbin.Counters(t, enrich.Ready(testbin.AdminURL)).Stored == events
	})
	for deadline := time.Now().Add(time.Minute); a.missing(ids) > 0 || b.missing(ids) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("1 min after every record was stored, the first stream lacks %d of %d, the second %d", a.missing(ids), events, b.missing(ids))
		}
	}
	if da, db := a.duplicates(), b.duplicates(); da != 0 || db != 0 {
		t.Errorf("records sent more than once: %d by the first instance, %d by the second", da, db)
	}
}
