package readyfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteWaitRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready.json")
	type info struct {
		URL      string `json:"url"`
		AdminURL string `json:"admin_url"`
	}
	if err := Write(path, info{URL: "http://127.0.0.1:1", AdminURL: "http://127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	// The process has exited since it wrote the file: the file wins.
	exited := make(chan struct{})
	close(exited)
	var got info
	if err := Wait(context.Background(), path, exited, &got); err != nil || got.URL != "http://127.0.0.1:1" || got.AdminURL != "http://127.0.0.1:2" {
		t.Fatalf("Wait: %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("Write left %d files, want the ready file alone", len(entries))
	}
	Remove(path)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Remove: %v", err)
	}
	if err := Write("", info{}); err != nil {
		t.Errorf("Write to no path: %v", err)
	}
}

func TestWaitWithoutFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready.json")
	exited := make(chan struct{})
	close(exited)
	var v map[string]any
	if err := Wait(context.Background(), path, exited, &v); !errors.Is(err, ErrExited) {
		t.Errorf("Wait after the exit: %v, want ErrExited", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Wait(ctx, path, nil, &v); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with its context done: %v, want context.Canceled", err)
	}
	os.WriteFile(path, []byte("{not json"), 0o644)
	if err := Wait(context.Background(), path, nil, &v); err == nil || !strings.Contains(err.Error(), "{not json") {
		t.Errorf("Wait on a file that does not decode: %v, want an error with its text", err)
	}
}
