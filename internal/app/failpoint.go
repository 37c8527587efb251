package app

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// failpointEnv names a crash to inject, for the kill -9 tests of the
// system tests (test/crash): SKYJOIN_FAILPOINT=enrich-after-store:N makes
// the process kill itself with SIGKILL right after its Nth store write has
// committed, before the records are published and the messages acked: the
// window in which a crash must not hide a stored record from downstream
// consumers. Unset in production; an unknown value stops the start.
const failpointEnv = "SKYJOIN_FAILPOINT"

// failpointStore wraps the store of a process whose environment asks for a
// failpoint.
func failpointStore() (func(storeBackend) storeBackend, error) {
	v := os.Getenv(failpointEnv)
	if v == "" {
		return nil, nil
	}
	name, n, _ := strings.Cut(v, ":")
	after, err := strconv.Atoi(n)
	if name != "enrich-after-store" || err != nil || after < 1 {
		return nil, fmt.Errorf("%s=%q: want enrich-after-store:N (N >= 1)", failpointEnv, v)
	}
	return func(s storeBackend) storeBackend { return &killAfterWrite{storeBackend: s, after: int64(after)} }, nil
}

type killAfterWrite struct {
	storeBackend
	after  int64
	writes atomic.Int64
}

func (k *killAfterWrite) Write(ctx context.Context, recs []event.Record) error {
	err := k.storeBackend.Write(ctx, recs)
	k.killAfter(err)
	return err
}

// WriteLines keeps the store's store.LineWriter, so that the worker under
// the failpoint takes the path it takes without it.
func (k *killAfterWrite) WriteLines(ctx context.Context, recs []event.Record) ([][]byte, error) {
	lw, ok := k.storeBackend.(store.LineWriter)
	if !ok {
		return nil, k.Write(ctx, recs)
	}
	lines, err := lw.WriteLines(ctx, recs)
	k.killAfter(err)
	return lines, err
}

// killAfter kills the process after the configured number of successful
// writes.
func (k *killAfterWrite) killAfter(err error) {
	if err == nil && k.writes.Add(1) == k.after {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not caught: the process is gone
	}
}
