// Package readyfile is the file a skyjoin process writes once it is ready
// (--ready-file PATH): JSON with its bound addresses and URLs, for the
// scripts, tests and parent processes (skyjoin bench) that start one and
// must know where it listens, without reading its banner.
package readyfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	json "github.com/goccy/go-json"
)

// Write writes v as JSON to path, atomically (a temporary file renamed), so
// that a reader never sees half of it. An empty path writes nothing.
func Write(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}

// Remove removes the ready file at exit, so that a stale one never
// announces a process that is gone.
func Remove(path string) {
	if path != "" {
		os.Remove(path)
	}
}

// ErrExited is Wait's error when the process exited before it was ready.
var ErrExited = errors.New("exited before it wrote its ready file")

// pollEvery is how often Wait looks for the file.
const pollEvery = 20 * time.Millisecond

// Wait waits for the ready file at path and decodes it into v. It returns
// ErrExited once exited is closed (the process is gone; nil: never),
// ctx.Err() once ctx is done, and an error holding the file's text if the
// file does not decode. Write renames the file into place, so Wait never
// reads half of it.
func Wait(ctx context.Context, path string, exited <-chan struct{}, v any) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if err := json.Unmarshal(b, v); err != nil {
				return fmt.Errorf("ready file %s: %w\n%s", path, err, b)
			}
			return nil
		}
		select {
		case <-exited:
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
