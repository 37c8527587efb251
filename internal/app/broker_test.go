package app

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/test/testbin"
)

// TestBrokerMemoryLimit: `skyjoin broker --memory-limit` sets the Go
// heap's soft limit to the budget less a tenth in reserve (the broker has
// no store), and refuses a budget it cannot read or too small to leave the
// heap 64 MiB, before it opens anything.
func TestBrokerMemoryLimit(t *testing.T) {
	keepMemoryLimit(t)
	for _, tc := range []struct{ limit, want string }{
		{"many", "memory-limit"},
		{"32MiB", "too small"},
	} {
		dir := t.TempDir()
		err := runBroker(context.Background(), []string{"--listen", "127.0.0.1:4222", "--data-dir", dir, "--memory-limit", tc.limit}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--memory-limit %s: %v; want an error saying %q", tc.limit, err, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "jetstream")); err == nil {
			t.Errorf("--memory-limit %s: the broker opened its files before refusing the flag", tc.limit)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready.json")
	done := make(chan error, 1)
	go func() {
		done <- runBroker(ctx, []string{"--listen", testbin.FreeAddr(t), "--data-dir", dir, "--ready-file", ready, "--memory-limit", "1GiB"}, io.Discard, io.Discard)
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the broker stopped before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the broker was not ready within 30 s")
		}
	}
	got := debug.SetMemoryLimit(-1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := int64(1<<30 - (1<<30)/10); got != want {
		t.Errorf("the Go heap's soft limit is %d, want %d (1 GiB less a tenth)", got, want)
	}
}

// keepMemoryLimit restores the Go heap's soft limit after t, and unsets
// GOMEMLIMIT, which would take precedence over --memory-limit, for t.
func keepMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
}
