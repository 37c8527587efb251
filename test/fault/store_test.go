package fault

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

// fill writes a file into dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			return name
		}
	}
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
	filler := fill(t, small)
	c0 := testbin.Counters(t, admin)
	t.Logf("store's disk full with %d events accepted, %d stored", accepted.Load(), c0.Stored)
	time.Sleep(full)
	c1 := testbin.Counters(t, admin)
	if c1.Failed == c0.Failed {
		t.Errorf("no batch failed in %s with the store's disk full (stored %d -> %d)", full, c0.Stored, c1.Stored)
	}
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
