package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// flakyStore fails every Write while failing is set: a store outage.
type flakyStore struct {
	storeBackend
	failing  atomic.Bool
	refusals atomic.Int64
}

func (s *flakyStore) Write(ctx context.Context, recs []event.Record) error {
	if s.failing.Load() {
		s.refusals.Add(1)
		return errors.New("injected: disk full")
	}
	return s.storeBackend.Write(ctx, recs)
}

// startInProcess runs `up` in this process with the given hooks and
// returns the API base URL and a stop function that waits for a clean
// shutdown.
func startInProcess(t *testing.T, hooks upHooks, args ...string) (string, func()) {
	t.Helper()
	return startInProcessOut(t, hooks, io.Discard, args...)
}

func postEvents(t *testing.T, base string, from, n int) {
	t.Helper()
	evs := make([]event.Event, n)
	now := time.Now().UTC()
	for i := range evs {
		lat, lon := float64((from+i)%80), float64((from+i)%170)
		evs[i] = event.Event{EventID: fmt.Sprintf("f-%d", from+i), EventType: "t", OccurredAt: now,
			User: event.User{ID: "u"}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
	}
	body, _ := json.Marshal(evs)
	resp, err := http.Post(base+"/v1/events", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post: %d", resp.StatusCode)
	}
}

func storedCount(t *testing.T, base string) (n int, dead int) {
	t.Helper()
	d := debugOf(t, base, "")
	return int(d.Stored), int(d.Dead)
}

// debugOf is the in-process up's answer to GET /debug/pipeline?query.
func debugOf(t *testing.T, base, query string) pipelineDebug {
	t.Helper()
	resp, err := http.Get(adminURL(t, base) + "/debug/pipeline" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d pipelineDebug
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestStoreOutageRecovers: while every store write fails, events are
// accepted (the broker has them), nothing is dead-lettered, and once the
// store works again the worker stores everything by itself.
func TestStoreOutageRecovers(t *testing.T) {
	fs := &flakyStore{}
	base, stop := startInProcess(t, upHooks{wrapStore: func(s storeBackend) storeBackend {
		fs.storeBackend = s
		return fs
	}}, "--enrich-retry-delay", "50ms", "--enrich-max-retry-delay", "200ms", "--enrich-max-attempts", "2")
	defer stop()

	postEvents(t, base, 0, 100)
	waitFor(t, func() bool { n, _ := storedCount(t, base); return n >= 100 })

	fs.failing.Store(true)
	for i := 1; i <= 5; i++ {
		postEvents(t, base, i*100, 100)
	}
	waitFor(t, func() bool { return fs.refusals.Load() >= 5 }) // the outage lasts several attempts
	fs.failing.Store(false)

	waitFor(t, func() bool { n, _ := storedCount(t, base); return n >= 600 })
	n, dead := storedCount(t, base)
	if n != 600 || dead != 0 {
		t.Fatalf("stored %d, dead-lettered %d; want 600 and 0", n, dead)
	}
	t.Logf("%d store writes refused during the outage; all 600 events stored after it, none dead-lettered", fs.refusals.Load())
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within a minute")
}

// failedStore is a store that fails for good when the test says so, as
// the DuckDB store does after a fatal error.
type failedStore struct {
	storeBackend
	failed chan struct{}
}

func (f *failedStore) Failed() <-chan struct{} { return f.failed }
func (f *failedStore) Failure() error {
	return errors.New("FATAL Error: database has been invalidated (test)")
}

// TestStoreFailedForGoodStopsTheProcess: a store that has failed for good
// stops the process, which returns an error naming the failure, so that
// its supervisor restarts it and the store recovers from its files.
func TestStoreFailedForGoodStopsTheProcess(t *testing.T) {
	fs := &failedStore{failed: make(chan struct{})}
	cfg := newConfig("up")
	flags, stages, _ := stageFlagSet(findStageCommand("up"), cfg, io.Discard)
	if err := platform.ParseFlags(flags, []string{"--demo", "--collect=false", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--stats-every", "0", "--weather-quota", "none", "--log-level", "error"}); err != nil {
		t.Fatal(err)
	}
	cfg.applyDemoDefaults(flags)
	if err := validateStages(cfg, stages); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	cfg.hooks = upHooks{ready: func(a string) { ready <- a }, wrapStore: func(s storeBackend) storeBackend {
		fs.storeBackend = s
		return fs
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runProcess(ctx, cfg, stages, io.Discard, testLogger()) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("up exited before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("up did not start in 60 s")
	}
	close(fs.failed)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "store: FATAL Error: database has been invalidated") {
			t.Fatalf("up returned %v; want the store's failure", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("up did not stop within 60 s of the store's failure")
	}
}
