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
	if err == nil && k.writes.Add(1) == k.after {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not caught: the process is gone
	}
	return err
}
