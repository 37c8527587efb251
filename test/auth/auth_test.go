// Package auth tests authentication across real processes: the API keys
// in the registry on a shared broker, verified by every process; a key
// made through one process works in the others, a key revoked through one
// is refused by all within 5 s; secrets stay out of logs and pprof.
package auth

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

type key struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// keys runs `skyjoin keys ARGS --json`, with SKYJOIN_KEY=adminKey if set.
func keys(t *testing.T, adminKey string, args ...string) key {
	t.Helper()
	cmd := exec.Command(binary, append(append([]string{"keys"}, args...), "--json")...)
	cmd.Env = append(os.Environ(), "SKYJOIN_KEY="+adminKey)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("skyjoin keys %v: %v\n%s", args, err, errOut.String())
	}
	var k key
	if err := json.Unmarshal(out.Bytes(), &k); err != nil {
		t.Fatalf("skyjoin keys %v: %v: %s", args, err, out.String())
	}
	return k
}

func do(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const event = `{"event_id":"auth-1","event_type":"t","occurred_at":"2026-01-02T03:04:05Z","user":{"id":"u"},"location":{"latitude":1,"longitude":2}}`

func TestKeysAcrossProcesses(t *testing.T) {
	_, brokerURL := testbin.Start(t, binary, testbin.BrokerURL, "broker", "--listen", testbin.FreeAddr(t), "--data-dir", t.TempDir())
	// The first admin key, straight into the registry on the broker.
	admin := keys(t, "", "create", "--scope", "admin", "--broker", brokerURL)

	const weatherKey = "literal-weather-key-0123456789"
	ing, ingest := testbin.StartAPI(t, binary, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0", "--auth=on")
	del, deliver := testbin.Options{Env: []string{testbin.WebhookKeyEnv}}.StartAPI(t, binary,
		append([]string{"deliver", "--broker", brokerURL, "--addr", "127.0.0.1:0", "--auth=on"}, testbin.WebhookKeyArgs...)...)
	enr, serve := testbin.StartAPI(t, binary, "enrich", "--demo", "--broker", brokerURL, "--addr", "127.0.0.1:0", "--auth=on",
		"--data-dir", t.TempDir(), "--weather-api-key", weatherKey, "--stats-every", "0")

	// A key made through ingest works in every process.
	k := keys(t, admin.Token, "create", "--url", ingest, "--scope", "ingest,read")
	if status, body := do(t, "POST", ingest+"/v1/events", k.Token, event); status != http.StatusAccepted {
		t.Fatalf("ingest with the new key: %d %s", status, body)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		status, _ := do(t, "GET", serve+"/v1/events?limit=1", k.Token, "")
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve does not take the new key within 5 s: %d", status)
		}
	}
	if status, body := do(t, "GET", deliver+"/v1/webhooks", k.Token, ""); status != http.StatusForbidden || !strings.Contains(body, `"webhooks"`) {
		t.Fatalf("deliver with a key without the webhooks scope: %d %s", status, body)
	}

	// Revoked through deliver: refused by ingest and serve within 5 s.
	keys(t, admin.Token, "revoke", "--url", deliver, k.ID)
	revoked := time.Now()
	for _, c := range []struct{ method, url, body string }{{"POST", ingest + "/v1/events", event}, {"GET", serve + "/v1/events?limit=1", ""}} {
		for {
			status, _ := do(t, c.method, c.url, k.Token, c.body)
			if status == http.StatusUnauthorized {
				t.Logf("%s %s refuses the revoked key %s after the revocation", c.method, c.url, time.Since(revoked).Round(time.Millisecond))
				break
			}
			if time.Since(revoked) > 5*time.Second {
				t.Fatalf("%s %s still takes the key 5 s after its revocation: %d", c.method, c.url, status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Debug and metrics: on the admin listener only, with the admin scope.
	adminURL := enr.Ready(testbin.AdminURL)
	if status, _ := do(t, "GET", serve+"/metrics", admin.Token, ""); status != http.StatusNotFound {
		t.Errorf("/metrics on the public port: %d, want 404", status)
	}
	if status, _ := do(t, "GET", adminURL+"/metrics", "", ""); status != http.StatusUnauthorized {
		t.Errorf("/metrics without a key, auth on: %d, want 401", status)
	}
	status, cmdline := do(t, "GET", adminURL+"/debug/pprof/cmdline", admin.Token, "")
	if status != http.StatusOK || strings.Contains(cmdline, weatherKey) || !strings.Contains(cmdline, "REDACTED") {
		t.Errorf("pprof cmdline: %d %q", status, cmdline)
	}

	// No secret in any process's logs.
	for _, p := range []*testbin.Proc{ing, del, enr} {
		logs := p.Logs()
		for _, secret := range []string{admin.Token, k.Token, weatherKey} {
			if strings.Contains(logs, secret) || strings.Contains(logs, secret[len(secret)-20:]) {
				t.Errorf("a secret is in the logs of a process:\n%s", logs)
			}
		}
	}
}
