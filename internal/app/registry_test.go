package app

import (
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/webhook"
)

// TestUpWebhooksOnBrokerRegistry: `up` keeps webhooks in the key-value
// bucket on its embedded broker; a registration delivers stored records and
// survives a restart. The loopback target takes allow_private (the process
// runs without auth, on loopback); without it the guard refuses it. The
// secret is sealed with a key generated in the data dir (0600), and is in
// none of the data dir's other files.
func TestUpWebhooksOnBrokerRegistry(t *testing.T) {
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Add(int64(strings.Count(string(body), `"event_id"`)))
	}))
	defer rcv.Close()
	dir := t.TempDir()
	base, stop := startInProcess(t, upHooks{}, "--data-dir", dir)
	const secret = "test-secret-0123456789"
	reg := `{"url": "` + rcv.URL + `", "secret": "` + secret + `", "max_wait_ms": 0`
	resp, err := http.Post(base+"/v1/webhooks", "application/json", bytes.NewReader([]byte(reg+`}`)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"field":"url"`) {
		t.Fatalf("register a loopback target without allow_private: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Post(base+"/v1/webhooks", "application/json", bytes.NewReader([]byte(reg+`, "allow_private": true}`)))
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
	st, err := os.Stat(filepath.Join(dir, webhook.KeyFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the key file: %v %v", st, err)
	}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(secret)) {
				t.Errorf("the webhook secret in clear in %s", path)
			}
		}
		return nil
	})

	base, stop = startInProcess(t, upHooks{}, "--data-dir", dir)
	defer stop()
	resp, err = http.Get(base + "/v1/webhooks")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), rcv.URL) {
		t.Fatalf("after a restart: %d %s", resp.StatusCode, body)
	}
}

// TestDeliverNeedsTheKeyOnASharedRegistry: `skyjoin deliver` on a registry
// other processes share refuses to start without --webhook-secret-key, and
// takes only a reference; `up` on its own embedded broker needs none.
func TestDeliverNeedsTheKeyOnASharedRegistry(t *testing.T) {
	for _, tt := range []struct {
		cmd  string
		args []string
		want string // in the error; "" for none
	}{
		{"deliver", []string{"--broker", "nats://127.0.0.1:4222"}, "webhook-secret-key is required"},
		{"deliver", []string{"--broker", "nats://u:pw-0123456789@127.0.0.1:4222"}, "nats://REDACTED@127.0.0.1:4222"},
		{"deliver", []string{"--registry", "firestore://p"}, "webhook-secret-key is required"},
		{"deliver", []string{"--webhook-secret-key", "env://SKYJOIN_TEST_KEY"}, ""},
		{"deliver", []string{"--webhook-secret-key", "bm90IGEgcmVmZXJlbmNl"}, "must be a reference"},
		{"deliver", []string{"--webhook-deny-private=false", "--webhook-secret-key", "env://K"}, "webhook-deny-private=false is gone"},
		{"deliver", []string{"--webhook-deny-private", "--webhook-secret-key", "env://K"}, ""},
		{"up", nil, ""},
		{"up", []string{"--broker", "nats://embedded?listen=127.0.0.1:4222"}, ""}, // up warns, refuses registrations
	} {
		t.Run(tt.cmd+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			cfg := newConfig(tt.cmd)
			fs, stages, _ := stageFlagSet(findStageCommand(tt.cmd), cfg, io.Discard)
			if err := platform.ParseFlags(fs, tt.args); err != nil {
				t.Fatal(err)
			}
			err := validateStages(cfg, stages)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("validate: %v, want %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "pw-0123456789"):
				t.Fatalf("the error shows the broker's password: %v", err)
			}
		})
	}
}
