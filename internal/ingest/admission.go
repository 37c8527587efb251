package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// BacklogGate is admission control: it polls the broker's backlog of
// messages not yet processed by the worker, and refuses new requests (503
// with Retry-After) while it is above a limit, so that an ingest faster than
// the worker cannot grow the backlog without bound. Polling keeps the cost
// off the request path.
type BacklogGate struct {
	backlog  func(ctx context.Context) (int64, error)
	max      int64
	every    time.Duration
	log      *slog.Logger
	current  atomic.Int64
	refused  atomic.Int64
	bytes    func(ctx context.Context) (int64, error)
	maxBytes int64
	curBytes atomic.Int64
}

// NewBacklogGate returns a gate that admits while backlog() <= max.
func NewBacklogGate(backlog func(ctx context.Context) (int64, error), max int64, every time.Duration, log *slog.Logger) *BacklogGate {
	return &BacklogGate{backlog: backlog, max: max, every: every, log: log}
}

// LimitBytes makes the gate also refuse while bytes() > max. A message may
// carry one event or a thousand, so bytes bound the backlog, and the time it
// takes to drain, better than messages.
func (g *BacklogGate) LimitBytes(bytes func(ctx context.Context) (int64, error), max int64) {
	g.bytes, g.maxBytes = bytes, max
}

// Run polls the backlog until ctx is done.
func (g *BacklogGate) Run(ctx context.Context) {
	t := time.NewTicker(g.every)
	defer t.Stop()
	failing := false
	for {
		n, err := g.backlog(ctx)
		if err == nil && g.bytes != nil {
			var nb int64
			if nb, err = g.bytes(ctx); err == nil {
				g.curBytes.Store(nb)
			}
		}
		switch {
		case err != nil && ctx.Err() == nil:
			// The broker may be down: publishing will tell the client. Keep
			// the last known value rather than guess.
			if !failing {
				g.log.Warn("ingest: cannot read the broker backlog", "error", err.Error())
			}
			failing = true
		case err == nil:
			failing = false
			g.current.Store(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Admit returns an error while the backlog is above the limit.
func (g *BacklogGate) Admit() error {
	if n := g.current.Load(); g.max > 0 && n > g.max {
		g.refused.Add(1)
		return fmt.Errorf("the pipeline is behind (%d messages waiting, limit %d): retry later", n, g.max)
	}
	if n := g.curBytes.Load(); g.maxBytes > 0 && n > g.maxBytes {
		g.refused.Add(1)
		return fmt.Errorf("the pipeline is behind (%d MiB waiting, limit %d MiB): retry later", n>>20, g.maxBytes>>20)
	}
	return nil
}

// BacklogBytes is the last backlog size in bytes read (0 without a byte limit).
func (g *BacklogGate) BacklogBytes() int64 { return g.curBytes.Load() }

// Backlog is the last backlog read.
func (g *BacklogGate) Backlog() int64 { return g.current.Load() }

// Refused counts the requests refused so far.
func (g *BacklogGate) Refused() int64 { return g.refused.Load() }
