package webhook

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// dones counts the calls of Deliver's done callbacks.
type dones struct {
	n  atomic.Int32
	ch chan struct{}
}

func newDones() *dones { return &dones{ch: make(chan struct{}, 64)} }

func (c *dones) fn() func() {
	return func() {
		c.n.Add(1)
		c.ch <- struct{}{}
	}
}

// wait waits for one more done call.
func (c *dones) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-c.ch:
	case <-time.After(15 * time.Second):
		t.Fatalf("done not called: %s", what)
	}
}

// blocked makes rcv hold every request until the test ends or unblock is
// called; started receives once per request.
func blocked(t *testing.T, rcv *receiver) (started chan struct{}, unblock func()) {
	block := make(chan struct{})
	started = make(chan struct{}, 16)
	rcv.mu.Lock()
	rcv.block, rcv.started = block, started
	rcv.mu.Unlock()
	var once atomic.Bool
	unblock = func() {
		if once.CompareAndSwap(false, true) {
			close(block)
		}
	}
	t.Cleanup(unblock) // before the receiver's server closes
	return started, unblock
}

func TestDoneWhenNothingMatches(t *testing.T) {
	e := newEnv(t, Config{})
	d := newDones()
	e.d.Deliver([]event.Record{rec("a", "Spain", 20)}, d.fn())
	d.wait(t, "no webhook at all")
	e.d.Deliver(nil, d.fn())
	d.wait(t, "no records")

	rcv := newReceiver(t, secret)
	e.register(map[string]any{"url": rcv.srv.URL, "filter": `location.country == "Atlantis"`, "max_wait_ms": 0})
	e.d.Deliver([]event.Record{rec("b", "Spain", 20), rec("c", "Spain", -999)}, d.fn())
	d.wait(t, "a webhook whose filter matches nothing")
	if got := rcv.received(); len(got) != 0 {
		t.Fatalf("receiver got %v", got)
	}
	e.close()
	if n := d.n.Load(); n != 3 {
		t.Fatalf("done called %d times for 3 calls", n)
	}
}

// TestDoneAfterEveryWebhook: records of two calls share one POST to a slow
// webhook and match a quick one too; neither call is done until the slow
// one answered 2xx.
func TestDoneAfterEveryWebhook(t *testing.T) {
	e := newEnv(t, Config{})
	slow, quick := newReceiver(t, secret), newReceiver(t, secret)
	started, unblock := blocked(t, slow)
	e.register(map[string]any{"url": slow.srv.URL, "batch_size": 4, "max_wait_ms": 60_000})
	q := e.register(map[string]any{"url": quick.srv.URL, "max_wait_ms": 0})

	d1, d2 := newDones(), newDones()
	e.d.Deliver([]event.Record{rec("c1-a", "Spain", 20), rec("c1-b", "Spain", 20)}, d1.fn())
	e.d.Deliver([]event.Record{rec("c2-a", "Spain", 20), rec("c2-b", "Spain", 20)}, d2.fn())
	<-started // the slow webhook holds one POST of the 4 records
	eventually(t, "the quick webhook's deliveries", func() bool { return e.get(q.ID).Stats.DeliveredRecords == 4 })
	if n1, n2 := d1.n.Load(), d2.n.Load(); n1 != 0 || n2 != 0 {
		t.Fatalf("done called (%d, %d) while a webhook's POST was still waiting for its answer", n1, n2)
	}
	unblock()
	d1.wait(t, "first call, after both webhooks answered")
	d2.wait(t, "second call, after both webhooks answered")
	_, _, deliveries := slow.snapshot()
	if len(deliveries) != 1 {
		t.Fatalf("slow webhook got %d deliveries, want the 4 records of both calls in one", len(deliveries))
	}
	for _, ids := range deliveries {
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"c1-a", "c1-b", "c2-a", "c2-b"}) {
			t.Fatalf("slow webhook's delivery holds %v", ids)
		}
	}
	e.close()
	if n1, n2 := d1.n.Load(), d2.n.Load(); n1 != 1 || n2 != 1 {
		t.Fatalf("done called %d and %d times, want once each", n1, n2)
	}
}

// TestDoneAfterFailureStored: a batch whose retries are spent settles its
// records once it is in the failure list, and not before.
func TestDoneAfterFailureStored(t *testing.T) {
	e := newEnv(t, Config{MaxAttempts: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Millisecond})
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusInternalServerError)
	w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	d := newDones()
	var stored atomic.Int32
	e.d.Deliver([]event.Record{rec("s1", "Spain", 20)}, func() {
		fs, err := e.d.db.failures(context.Background(), w.ID, nil, 0)
		if err == nil && len(fs) == 1 && slices.Equal(fs[0].EventIDs, []string{"s1"}) {
			stored.Store(1)
		}
		d.fn()()
	})
	d.wait(t, "retries spent")
	if stored.Load() != 1 {
		t.Fatal("done was called before the failure was in the registry")
	}
}

// TestDoneQueueFull: a batch that finds its webhook's queue full settles
// once stored as a failure, while the batches before it still wait.
func TestDoneQueueFull(t *testing.T) {
	e := newEnv(t, Config{QueueSize: 1})
	rcv := newReceiver(t, secret)
	started, unblock := blocked(t, rcv)
	w := e.register(map[string]any{"url": rcv.srv.URL, "batch_size": 1, "max_wait_ms": 0})
	d1, d2, d3 := newDones(), newDones(), newDones()
	e.d.Deliver([]event.Record{rec("q1", "Spain", 20)}, d1.fn())
	<-started
	e.d.Deliver([]event.Record{rec("q2", "Spain", 20)}, d2.fn())
	eventually(t, "one batch queued", func() bool { return e.get(w.ID).Stats.Queued == 1 })
	e.d.Deliver([]event.Record{rec("q3", "Spain", 20)}, d3.fn())
	d3.wait(t, "the queue-full batch, once stored")
	if fs := e.failures(w.ID); len(fs) != 1 || fs[0].Reason != ReasonQueueFull {
		t.Fatalf("failures %+v", fs)
	}
	if d1.n.Load() != 0 || d2.n.Load() != 0 {
		t.Fatal("done called for records still waiting for the webhook")
	}
	unblock()
	d1.wait(t, "q1 delivered")
	d2.wait(t, "q2 delivered")
}

// TestDoneDeletedWebhook: records held for a webhook that is deleted are
// wanted by nobody: they settle.
func TestDoneDeletedWebhook(t *testing.T) {
	e := newEnv(t, Config{})
	rcv := newReceiver(t, secret)
	started, _ := blocked(t, rcv)
	w := e.register(map[string]any{"url": rcv.srv.URL, "batch_size": 1, "max_wait_ms": 0})
	d1, d2 := newDones(), newDones()
	e.d.Deliver([]event.Record{rec("d1", "Spain", 20)}, d1.fn())
	<-started
	e.d.Deliver([]event.Record{rec("d2", "Spain", 20)}, d2.fn()) // queued behind d1
	eventually(t, "one batch queued", func() bool { return e.get(w.ID).Stats.Queued == 1 })
	if code, body := e.do("DELETE", "/v1/webhooks/"+w.ID, nil); code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	d1.wait(t, "the batch being posted when its webhook was deleted")
	d2.wait(t, "the batch queued when its webhook was deleted")
}

// TestDoneShutdown: at Close, what is not delivered by the deadline is
// stored as failures and settled before Close returns; after Close, done
// is not called.
func TestDoneShutdown(t *testing.T) {
	e := newEnv(t, Config{MaxAttempts: 5, RetryDelay: time.Hour, MaxRetryDelay: time.Hour})
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusBadGateway)
	e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	d := newDones()
	e.d.Deliver([]event.Record{rec("z1", "Spain", 20)}, d.fn())
	eventually(t, "the first attempt", func() bool { a, _, _ := rcv.snapshot(); return a == 1 })
	if d.n.Load() != 0 {
		t.Fatal("done called while the batch waits for a retry")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := d.n.Load(); n != 1 {
		t.Fatalf("done called %d times by the time Close returned, want 1 (the batch is in the failure list)", n)
	}
	late := newDones()
	e.d.Deliver([]event.Record{rec("late", "Spain", 20)}, late.fn())
	e.d.Deliver(nil, late.fn())
	if n := late.n.Load(); n != 1 {
		t.Fatalf("after Close: done called %d times, want only for the empty call", n)
	}
}
