package app

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestUpWebhooksOnBrokerRegistry: `up` keeps webhooks in the key-value
// bucket on its embedded broker; a registration delivers stored records and
// survives a restart.
func TestUpWebhooksOnBrokerRegistry(t *testing.T) {
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Add(int64(strings.Count(string(body), `"event_id"`)))
	}))
	defer rcv.Close()
	dir := t.TempDir()
	base, stop := startInProcess(t, upHooks{}, "--data-dir", dir)
	reg := `{"url": "` + rcv.URL + `", "secret": "test-secret-0123456789", "max_wait_ms": 0}`
	resp, err := http.Post(base+"/v1/webhooks", "application/json", bytes.NewReader([]byte(reg)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	postEvents(t, base, 0, 5)
	for deadline := time.Now().Add(30 * time.Second); got.Load() < 5; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the webhook got %d records of 5", got.Load())
		}
	}
	stop()

	base, stop = startInProcess(t, upHooks{}, "--data-dir", dir)
	defer stop()
	resp, err = http.Get(base + "/v1/webhooks")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), rcv.URL) {
		t.Fatalf("after a restart: %d %s", resp.StatusCode, body)
	}
}
