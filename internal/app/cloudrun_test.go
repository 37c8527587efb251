package app

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/auth/authtest"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// TestCloudRunDefaults: with K_SERVICE set, every stage command listens on
// 0.0.0.0:$PORT (8080 without PORT) and drains in 8 s, unless told
// otherwise; without it, loopback and 10 s.
func TestCloudRunDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, service, port string
		args                []string
		addr                string
		timeout             time.Duration
	}{
		{"local", "", "", nil, "127.0.0.1:8080", 10 * time.Second},
		{"local ignores PORT", "", "9000", nil, "127.0.0.1:8080", 10 * time.Second},
		{"cloud run", "skyjoin-ingest", "9000", nil, "0.0.0.0:9000", 8 * time.Second},
		{"cloud run without PORT", "skyjoin-ingest", "", nil, "0.0.0.0:8080", 8 * time.Second},
		{"cloud run, flags win", "skyjoin-ingest", "9000", []string{"--addr", "127.0.0.1:7000", "--shutdown-timeout", "5s"}, "127.0.0.1:7000", 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("K_SERVICE", tc.service)
			t.Setenv("PORT", tc.port)
			for _, c := range stageCommands {
				cfg := newConfig(c.name)
				fs, _, _ := stageFlagSet(c, cfg, io.Discard)
				if err := platform.ParseFlags(fs, tc.args); err != nil {
					t.Fatal(err)
				}
				if cfg.Addr != tc.addr || cfg.ShutdownTimeout != tc.timeout {
					t.Errorf("%s: addr %s, shutdown-timeout %s; want %s, %s", c.name, cfg.Addr, cfg.ShutdownTimeout, tc.addr, tc.timeout)
				}
			}
		})
	}
}

// TestCloudRunProcess runs `skyjoin up` as Cloud Run would (K_SERVICE and
// PORT set, no --addr): it listens on every interface at $PORT, logs JSON
// on stdout and nothing else there, requires a Google ID token for the
// service's URL (from a fake metadata server) and takes one, warns for
// each stage that pulls in the background (enrich, serve, deliver) that it
// needs instance-based billing, and exits cleanly on cancel within its
// shutdown timeout.
func TestCloudRunProcess(t *testing.T) {
	authtest.Metadata(t, "123456", "europe-west1")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	t.Setenv("K_SERVICE", "skyjoin-ingest")
	t.Setenv("PORT", port)
	const aud = "https://skyjoin-ingest-123456.europe-west1.run.app"
	issuer := authtest.NewIssuer(t)

	dir := t.TempDir()
	ready := filepath.Join(dir, "ready.json")
	var stdout, stderr syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runStageCommand(ctx, "up", []string{"--demo", "--collect=false", "--data-dir", dir, "--ready-file", ready,
			"--weather-quota", "none", "--stats-every", "0", "--auth-idtoken-jwks-url", issuer.URL, "--pii-key", "test-pii-key-of-at-least-32-bytes-0123456789"}, &stdout, &stderr)
	}()
	var info readyInfo
	waitFor(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("up exited: %v\n%s", err, stdout.String())
		default:
		}
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &info) == nil
	})
	if _, p, _ := net.SplitHostPort(info.Addr); p != port || info.Auth != "on" {
		t.Errorf("ready file: addr %s, auth %s; want port %s, auth on", info.Addr, info.Auth, port)
	}
	if host, _, _ := net.SplitHostPort(info.Addr); !net.ParseIP(host).IsUnspecified() {
		t.Errorf("listens on %s, want every interface", info.Addr)
	}
	base := "http://127.0.0.1:" + port
	post := func(bearer string) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", strings.NewReader(
			`{"event_id":"cr-1","event_type":"t","occurred_at":"`+time.Now().UTC().Format(time.RFC3339)+`","user":{"id":"u"}}`))
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := post(""); s != http.StatusUnauthorized {
		t.Errorf("POST /v1/events without a token: %d, want 401", s)
	}
	if s := post(issuer.Sign(t, authtest.Claims("https://other.run.app", "sa@p.iam.gserviceaccount.com", time.Now()))); s != http.StatusUnauthorized {
		t.Errorf("POST /v1/events with a token for another audience: %d, want 401", s)
	}
	if s := post(issuer.Sign(t, authtest.Claims(aud, "sa@p.iam.gserviceaccount.com", time.Now()))); s != http.StatusAccepted {
		t.Errorf("POST /v1/events with an ID token for the service's URL: %d, want 202", s)
	}
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: %v %v", resp, err)
	}

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("up did not stop")
	}
	if d := time.Since(start); d > cloudRunShutdownTimeout {
		t.Errorf("shutdown took %s, more than %s", d, cloudRunShutdownTimeout)
	}
	if stderr.String() != "" {
		t.Errorf("stderr is not empty on Cloud Run:\n%s", stderr.String())
	}
	lines := bytes.Split(bytes.TrimSpace([]byte(stdout.String())), []byte("\n"))
	var up bool
	// Each stage that pulls in the background warns that it needs
	// instance-based billing.
	pullWarned := map[string]bool{stEnrich: false, stServe: false, stDeliver: false}
	for _, line := range lines {
		var entry map[string]any
		if err := json.Unmarshal(line, &entry); err != nil || entry["severity"] == nil || entry["message"] == nil {
			t.Errorf("stdout line is not a Cloud Logging JSON entry: %s", line)
			continue
		}
		if msg, _ := entry["message"].(string); entry["severity"] == "WARNING" && strings.Contains(msg, "instance-based billing") {
			if stage, _ := entry["stage"].(string); strings.HasPrefix(msg, stage+": pulling ") {
				pullWarned[stage] = true
			}
		}
		if entry["message"] == "skyjoin is up" {
			up = true
			if a, _ := entry["auth"].(string); !strings.Contains(a, "Google ID tokens for "+aud) {
				t.Errorf("the start entry's auth: %q", a)
			}
		}
	}
	if !up {
		t.Errorf("no \"skyjoin is up\" entry on stdout:\n%s", stdout.String())
	}
	for stage, warned := range pullWarned {
		if !warned {
			t.Errorf("%s pulls in the background and did not warn that it needs instance-based billing", stage)
		}
	}
}
