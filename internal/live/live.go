// Package live fans newly stored records out to the live streams of one
// process (GET /v1/stream) without ever slowing the pipeline.
//
// The serve stage calls Hub.Publish with each batch of stored records it
// reads from the records topic. Each
// Subscription has a bounded buffer; Publish never blocks: a subscriber
// whose buffer is full is dropped (its channel is closed and Dropped says
// why), and the others go on receiving. A dropped consumer catches up from
// the store by Seq (the stream resumes with Last-Event-ID) and subscribes
// again.
//
// Publish delivers records in the order of its calls and, within a call, in
// slice order. The records topic may carry a batch twice (a worker
// redelivered it after a crash) or, with several workers, batches out of
// seq order: the stream skips what it sent already.
package live

import (
	"errors"
	"fmt"
	"sync"

	"github.com/skyjoin/skyjoin/internal/event"
)

// DefaultBuffer is the per-subscriber buffer NewHub uses for a
// non-positive size.
const DefaultBuffer = 1024

// Reasons a subscription ends, as Subscription.Dropped reports them.
const (
	ReasonClosed = "hub closed: the server is shutting down"
)

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("live: hub closed")

// Hub fans records out to subscribers. It is safe for concurrent use.
type Hub struct {
	buffer int

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
}

// NewHub returns a Hub whose subscribers each buffer up to bufferPerClient
// records (DefaultBuffer if bufferPerClient <= 0).
func NewHub(bufferPerClient int) *Hub {
	if bufferPerClient <= 0 {
		bufferPerClient = DefaultBuffer
	}
	return &Hub{buffer: bufferPerClient, subs: make(map[*Subscription]struct{})}
}

// Subscription receives the published records its filter accepts.
type Subscription struct {
	// C delivers records in publishing order. It is closed when the
	// subscription ends: Close, a full buffer (see Dropped), or Hub.Close.
	// The records are shared between subscribers: do not modify them.
	C <-chan *event.Record

	c      chan *event.Record
	filter func(*event.Record) bool
	hub    *Hub
	ended  bool   // guarded by hub.mu
	reason string // guarded by hub.mu; why the hub dropped it
}

// Subscribe registers a subscriber. filter selects the records it
// receives (nil: all); it runs inside Publish, on the publisher's
// goroutine, so it must be fast and must not block. Subscribe returns
// ErrClosed after Close.
func (h *Hub) Subscribe(filter func(*event.Record) bool) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	c := make(chan *event.Record, h.buffer)
	s := &Subscription{C: c, c: c, filter: filter, hub: h}
	h.subs[s] = struct{}{}
	return s, nil
}

// Publish hands records to every subscriber whose filter accepts them.
// Records with Seq 0 (not stored, e.g. dropped duplicates) are skipped.
// Publish never blocks: a subscriber without room in its buffer is
// dropped. Publish copies the records, so the caller may reuse recs.
func (h *Hub) Publish(recs []event.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.subs) == 0 {
		return
	}
	n := 0
	for i := range recs {
		if recs[i].Seq > 0 {
			n++
		}
	}
	if n == 0 {
		return
	}
	shared := make([]event.Record, 0, n)
	for i := range recs {
		if recs[i].Seq > 0 {
			shared = append(shared, recs[i])
		}
	}
subs:
	for s := range h.subs {
		for i := range shared {
			r := &shared[i]
			if s.filter != nil && !s.filter(r) {
				continue
			}
			select {
			case s.c <- r:
			default:
				h.end(s, fmt.Sprintf("client fell behind: its buffer of %d records was full", h.buffer))
				continue subs
			}
		}
	}
}

// end removes s and closes its channel, under h.mu.
func (h *Hub) end(s *Subscription, reason string) {
	if s.ended {
		return
	}
	s.ended = true
	s.reason = reason
	delete(h.subs, s)
	close(s.c)
}

// Len returns the number of current subscribers.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// DropAll ends every current subscription with reason (Dropped reports
// it), for when the hub's source may have missed records: the streams tell
// their clients, who resume from the store with Last-Event-ID. New
// subscriptions are taken as before.
func (h *Hub) DropAll(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		h.end(s, reason)
	}
}

// Close ends every subscription (Dropped reports ReasonClosed) and makes
// Publish a no-op and Subscribe fail. Close is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.subs {
		h.end(s, ReasonClosed)
	}
}

// Close ends the subscription: C is closed (records still buffered in it
// can be drained) and Dropped returns "". Close is idempotent, and a no-op
// on a subscription that already ended.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	h.end(s, "")
}

// Dropped returns why the hub ended the subscription: a full buffer, or
// ReasonClosed. It returns "" while the subscription is active and after
// the subscriber's own Close. Read it once C is closed.
func (s *Subscription) Dropped() string {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.reason
}
