package fault

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/test/testbin"
)

// smallFS mounts a tmpfs of size bytes on a new directory, or skips the test
// when this machine does not allow it (not root, no mount privilege).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a size-limited tmpfs (the store's disk that fills up)")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file into dir until the file system is full, and keeps
// it full until stop is called: space the store frees (in one run 11.6 MB
// came free a moment after the fill, and the store wrote every event into
// it) is taken again every 20 ms, so that the store's writes meet a full
// disk however its own files shrink.
func fill(t *testing.T, dir string) (name string, stop func()) {
	t.Helper()
	name = filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	buf := make([]byte, 1<<20)
	topUp := func() error {
		for n := len(buf); ; {
			if _, err := f.Write(buf[:n]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					return err
				}
				if n == 1 {
					return nil
				}
				n /= 2 // what is left may be less than the buffer
			}
		}
	}
	if err := topUp(); err != nil {
		f.Close()
		t.Fatalf("fill %s: %v", dir, err)
	}
	quit, done := make(chan struct{}), make(chan error, 1)
	go func() {
		defer f.Close()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				done <- nil
				return
			case <-tick.C:
				if err := topUp(); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	stop = sync.OnceFunc(func() {
		close(quit)
		if err := <-done; err != nil {
			t.Errorf("keep %s full: %v", dir, err)
		}
	})
	t.Cleanup(stop) // before the unmount, if the test ends early
	return name, stop
}

// TestStoreDiskFull puts the store (DuckDB) on a small tmpfs of its own and
// fills that file system mid-stream: the store's writes fail with ENOSPC.
// Nothing accepted is lost or dead-lettered (an outage, not poison); the
// worker holds on and, once space is freed, carries on by itself; the store's
// file opens again after a kill -9, with every record in it. Needs root
// to mount the tmpfs; skipped otherwise.
func TestStoreDiskFull(t *testing.T) {
	total, full := 20_000, 5*time.Second
	if testing.Short() {
		total, full = 5_000, 3*time.Second
	}
	small := smallFS(t, "128m")
	// Registered after smallFS's cleanup, so skyjoin is killed before the
	// unmount.
	upArgs := []string{"up", "--demo", "--collect=false", "--addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--store", "duckdb://" + filepath.Join(small, "skyjoin.duckdb"),
		"--log-level", "warn", "--stats-every", "0"}
	up, base := testbin.Start(t, binary, testbin.APIURL, upArgs...)
	admin := up.Ready(testbin.AdminURL)

	accepted, unavailable, done := stream(base, total, time.Now().Add(3*time.Minute))
	for accepted.Load() < int64(total/3) || testbin.Counters(t, admin).Stored == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	filler, stopFilling := fill(t, small)
	c0 := testbin.Counters(t, admin)
	t.Logf("store's disk full with %d events accepted, %d stored", accepted.Load(), c0.Stored)
	time.Sleep(full)
	c1 := testbin.Counters(t, admin)
	if c1.Failed == c0.Failed {
		t.Errorf("no batch failed in %s with the store's disk full (stored %d -> %d)", full, c0.Stored, c1.Stored)
	}
	stopFilling()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	t.Logf("space freed after %s: %d stored meanwhile, %d failed batches, %d answers 503 so far",
		full, c1.Stored-c0.Stored, c1.Failed-c0.Failed, unavailable.Load())
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the stream did not finish: %d accepted", accepted.Load())
	}
	waitAllStored(t, base, total)
	c2 := testbin.Counters(t, admin)
	if c2.Dead != 0 {
		t.Errorf("%d events dead-lettered: a full disk is an outage, not poison", c2.Dead)
	}
	t.Logf("%d events accepted, all stored exactly once, none dead-lettered; %d failed batches in all", total, c2.Failed)

	// The store that ran out of space opens again, whole: kill -9, restart.
	up.Kill(t)
	_, base = testbin.Start(t, binary, testbin.APIURL, upArgs...)
	waitAllStored(t, base, total)
	t.Logf("after kill -9 and a restart on the same files: all %d still stored exactly once", total)
}
