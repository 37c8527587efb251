package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNoPlantedSecretInRecordsAPIOrLogs plants credentials where error
// text comes from: a weather provider that quotes our API key (and the
// request URL holding it) in its error answers, a webhook target whose URL
// carries its own token and that echoes its request in its error answers,
// and a webhook signing secret. `skyjoin up` runs through its real entry
// point, on loopback; then the stored records, every API answer, the
// webhook deliveries, the logs (debug), the banner and the data dir's files
// are searched for them. Positive controls: the same places hold what
// surrounds them (the event ids, the provider's status, the target's
// answer).
func TestNoPlantedSecretInRecordsAPIOrLogs(t *testing.T) {
	const (
		weatherKey  = "wx-planted-key-0123456789"
		hookToken   = "hook-planted-token-0123456789"
		hookSecret  = "whsec-planted-secret-0123456789"
		eventPrefix = "planted-evt-"
	)
	t.Setenv("SKYJOIN_TEST_PLANTED_WEATHER_KEY", weatherKey)

	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":true,"reason":"API key %s is not valid for %s"}`, r.URL.Query().Get("apikey"), r.URL.String())
	}))
	defer provider.Close()
	var deliveries syncBuf
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		deliveries.Write(b)
		http.Error(w, "refused "+r.URL.String()+" token="+r.URL.Query().Get("token"), http.StatusBadRequest)
	}))
	defer target.Close()

	dir := t.TempDir()
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	var stdout, stderr syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Main(ctx, []string{"up", "--addr", "127.0.0.1:0", "--data-dir", dir, "--ready-file", readyFile,
			"--collect=false", "--weather-url", provider.URL, "--weather-api-key", "env://SKYJOIN_TEST_PLANTED_WEATHER_KEY",
			"--weather-quota", "none", "--stats-every", "0", "--log-level", "debug", "--log-format", "json",
			"--webhook-max-attempts", "1"}, &stdout, &stderr)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("up did not stop")
			}
		}
	}
	defer stop()
	var base string
	for deadline := time.Now().Add(60 * time.Second); base == ""; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("up exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("up did not start")
		}
		var info struct {
			URL string `json:"url"`
		}
		if b, err := os.ReadFile(readyFile); err == nil && json.Unmarshal(b, &info) == nil {
			base = info.URL
		}
	}

	var answers []string // every API answer
	do := func(method, path, body string) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answers = append(answers, path+": "+string(b))
		return b
	}
	get := func(path string) []byte { return do(http.MethodGet, path, "") }
	post := func(path, body string) []byte { return do(http.MethodPost, path, body) }

	hook := post("/v1/webhooks", `{"url":"`+target.URL+`/in?token=`+hookToken+`","secret":"`+hookSecret+`","max_wait_ms":0,"allow_private":true}`)
	var wh struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(hook, &wh); err != nil || wh.ID == "" {
		t.Fatalf("register: %s", hook)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	var evs []string
	for i := range 3 {
		evs = append(evs, fmt.Sprintf(`{"event_id":"%s%d","event_type":"user.observed","occurred_at":"%s","user":{"id":"u%d"},"location":{"latitude":40.4,"longitude":-3.7}}`, eventPrefix, i, now, i))
	}
	post("/v1/events", "["+strings.Join(evs, ",")+"]")

	var records string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		records = string(get("/v1/events?limit=10"))
		if strings.Count(records, eventPrefix) == 3 && strings.Contains(records, `"status":"unavailable"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records not stored: %s\n%s", records, stderr.String())
		}
	}
	get("/v1/events/" + eventPrefix + "0")
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(string(get("/v1/webhooks/"+wh.ID+"/failures")), `"count":1`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no failure: %s", stderr.String())
		}
	}
	post("/v1/webhooks/"+wh.ID+"/failures/replay", "")
	get("/v1/webhooks/" + wh.ID + "/failures")
	get("/debug/pipeline")
	stop()

	// Positive controls: the places searched hold what surrounds the
	// secrets.
	if !strings.Contains(records, "401") || !strings.Contains(records, "not valid") {
		t.Errorf("the records do not say why the weather failed: %s", records)
	}
	if !strings.Contains(strings.Join(answers, "\n"), "400 Bad Request") || !strings.Contains(deliveries.String(), eventPrefix) {
		t.Errorf("no failure of the webhook in the answers, or no delivery: %s", strings.Join(answers, "\n"))
	}
	if !strings.Contains(stderr.String(), wh.ID) {
		t.Error("the logs do not name the webhook")
	}
	places := map[string]string{
		"stored records":     records,
		"webhook deliveries": deliveries.String(),
		"logs":               stderr.String(),
		"banner":             stdout.String(),
		"answers (not /v1/webhooks, which shows the target URL as registered)": strings.Join(answers[1:], "\n"),
	}
	for where, text := range places {
		for _, s := range []string{weatherKey, hookSecret, hookToken} {
			if strings.Contains(text, s) {
				t.Errorf("%s hold %q", where, s)
			}
		}
	}
	if strings.Contains(answers[0], hookSecret) {
		t.Error("the registration's answer holds the secret")
	}
	// At rest: the DuckDB file and its WAL, the broker's store.
	var found []string
	controls := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if bytes.Contains(b, []byte(eventPrefix)) {
			controls++
		}
		for _, s := range []string{weatherKey, hookSecret} {
			if bytes.Contains(b, []byte(s)) {
				found = append(found, s+" in "+path)
			}
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("in the data dir: %v", found)
	}
	if controls == 0 {
		t.Error("positive control: no file of the data dir holds an event id")
	}
}
