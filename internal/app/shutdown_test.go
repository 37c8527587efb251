package app

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// stuckCloseStore is a store whose Close hangs for a minute (or until
// release is closed): a BigQuery writer or a Pub/Sub publisher that cannot
// reach Google.
type stuckCloseStore struct {
	storeBackend
	release chan struct{}
}

func (s *stuckCloseStore) Close() error {
	select {
	case <-s.release:
	case <-time.After(time.Minute):
	}
	return s.storeBackend.Close()
}

// TestShutdownAbandonsAStuckCloser: the closing of the shared parts shares
// the shutdown deadline with the stages. A store whose Close would hang
// for a minute is abandoned, with a warning naming it, when the deadline
// passes, and the process returns within the shutdown timeout (plus a
// generous margin) rather than holding the exit past Cloud Run's SIGKILL.
func TestShutdownAbandonsAStuckCloser(t *testing.T) {
	release := make(chan struct{})
	closed := make(chan struct{})
	var logs syncBuf
	hooks := upHooks{
		wrapStore: func(s storeBackend) storeBackend { return &stuckCloseStore{storeBackend: s, release: release} },
		log:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		closed:    func() { close(closed) },
	}
	_, stop := startInProcess(t, hooks, "--shutdown-timeout", "2s")
	// Registered after startInProcess's data dir: runs before it is
	// removed. The abandoned closers finish, in order, once released.
	t.Cleanup(func() {
		close(release)
		select {
		case <-closed:
		case <-time.After(time.Minute):
			t.Error("the abandoned closers did not finish once released")
		}
	})

	start := time.Now()
	stop() // cancels, waits at most 30 s
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the process took %s to return after cancel with --shutdown-timeout 2s; the stuck closer held it", d.Round(time.Millisecond))
	}
	if out := logs.String(); !strings.Contains(out, "shutdown deadline passed") || !strings.Contains(out, "store") {
		t.Errorf("no warning naming the abandoned store:\n%s", out)
	}
}

// TestCloseStack: the closers run last pushed first; those that take a
// context get the shutdown's; once its deadline passes, close returns with
// a warning naming the closer in hand and those not yet run, which then
// run in the background, in order, and closed is called after them.
func TestCloseStack(t *testing.T) {
	var (
		mu      sync.Mutex
		order   []string
		release = make(chan struct{})
	)
	record := func(name string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	want, _ := ctx.Deadline()

	var c closeStack
	c.pushContext("telemetry", closeTelemetry(func(tctx context.Context) error {
		if d, ok := tctx.Deadline(); !ok || d.After(want) {
			t.Errorf("the telemetry flush's deadline %v (set %v), want at most the shutdown's %v", d, ok, want)
		}
		record("telemetry")
		return nil
	}))
	c.push("broker", func() error { record("broker"); return nil })
	c.push("store", func() error {
		select {
		case <-release:
		case <-time.After(time.Minute):
		}
		record("store")
		return nil
	})
	c.pushContext("registry", func(rctx context.Context) error {
		if d, ok := rctx.Deadline(); !ok || !d.Equal(want) {
			t.Errorf("a closer that takes a context got deadline %v (set %v), want the shutdown's %v", d, ok, want)
		}
		record("registry")
		return errors.New("registry: boom")
	})

	var logs syncBuf
	closed := make(chan struct{})
	start := time.Now()
	err := c.close(ctx, slog.New(slog.NewTextHandler(&logs, nil)), func() { close(closed) })
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("close returned after %s, with a shutdown deadline of 1s", d)
	}
	if err == nil || !strings.Contains(err.Error(), "close registry: registry: boom") {
		t.Errorf("close: %v, want the registry's error", err)
	}
	if out := logs.String(); !strings.Contains(out, "shutdown deadline passed") || !strings.Contains(out, "parts=\"[store broker telemetry]\"") {
		t.Errorf("the warning does not name the abandoned parts:\n%s", out)
	}
	select {
	case <-closed:
		t.Fatal("closed was called while the store's Close was still running")
	default:
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("the abandoned closers did not finish once the store's Close returned")
	}
	mu.Lock()
	defer mu.Unlock()
	if w := []string{"registry", "store", "broker", "telemetry"}; !slices.Equal(order, w) {
		t.Errorf("closed in order %v, want %v", order, w)
	}
}

// hangingWriteStore is a store whose writes hang until their context is
// done (a store that stopped answering), so that the enrich stage takes
// all the time a shutdown gives it.
type hangingWriteStore struct {
	storeBackend
	once    sync.Once
	writing chan struct{} // closed at the first write
}

func (s *hangingWriteStore) Write(ctx context.Context, recs []event.Record) error {
	s.once.Do(func() { close(s.writing) })
	<-ctx.Done()
	return ctx.Err()
}

func (s *hangingWriteStore) WriteLines(ctx context.Context, recs []event.Record) ([][]byte, error) {
	return nil, s.Write(ctx, recs)
}

// TestShutdownKeepsTimeToClose: a stage that takes all the shutdown gives
// it (a store write that hangs until it is stopped) leaves the closing of
// the shared parts their reserve: they are closed, not abandoned at once
// because the stages used up the deadline.
func TestShutdownKeepsTimeToClose(t *testing.T) {
	var logs syncBuf
	st := &hangingWriteStore{writing: make(chan struct{})}
	hooks := upHooks{
		wrapStore: func(s storeBackend) storeBackend { st.storeBackend = s; return st },
		log:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	base, stop := startInProcess(t, hooks, "--shutdown-timeout", "4s")
	postEvents(t, base, 0, 1)
	select {
	case <-st.writing:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker never wrote")
	}
	stop()
	out := logs.String()
	if !strings.Contains(out, "did not finish before the shutdown deadline") {
		t.Fatalf("the enrich stage was not held to the deadline, so this test proves nothing:\n%s", out)
	}
	if strings.Contains(out, "shutdown deadline passed before these parts closed") {
		t.Errorf("the parts were abandoned, not closed, after a stage took its whole share:\n%s", out)
	}
}
