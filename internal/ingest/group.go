package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
)

// Group commit. The broker's cost is per message, so small requests that
// arrive while publishes are in flight are published together, as one
// NDJSON message of their events, once a publish slot frees up; each of them
// is answered 202 only when that message is acknowledged (or 503 when it is
// not). A request that finds a free slot and nobody waiting is published at
// once, as it was sent: grouping adds no latency to an idle ingest, and
// batches more the busier it is. The worker decodes, validates and
// dead-letters every event of a message on its own, whatever the message
// holds, so the per-event guarantees do not change.

// grouper publishes the events of concurrent requests together.
type grouper struct {
	pub       Publisher
	timeout   time.Duration
	inflight  int // publishes in flight; at most maxFlight
	maxFlight int
	maxBytes  int // of a group's message
	maxEvents int // of a group's message

	mu    sync.Mutex
	queue []*group // waiting for a publish slot, oldest first

	bufs sync.Pool // *[]byte: bodies of groups published, for new groups
}

// group is the events of the requests that wait together.
type group struct {
	buf        []byte // NDJSON
	count      int    // events
	ingestedAt time.Time
	attrs      map[string]string // trace context of the first request, if any
	done       chan struct{}     // closed when the publish is settled
	err        error             // the publish's outcome; read after done
}

// request is what one request publishes.
type request struct {
	body       []byte // as sent
	mediaType  string
	decoded    []event.Decoded
	ingestedAt time.Time
	size       int // bytes of its events as NDJSON, about
}

// publishAlone publishes one request as it was sent, as its own message.
func (g *grouper) publishAlone(ctx context.Context, r *request) error {
	msg := envelope.NewEvents(r.body, r.mediaType, len(r.decoded), r.ingestedAt, envelope.SourceIngest)
	if trace.SpanContextFromContext(ctx).IsValid() {
		// The worker links its batch span to this request's span.
		traceContext.Inject(ctx, propagation.MapCarrier(msg.Attributes))
	}
	pctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return g.pub.Publish(pctx, broker.TopicEvents, msg)
}

// publish publishes r's events, alone or with those of other requests, and
// returns once the broker has acknowledged them (nil) or not (an error).
func (g *grouper) publish(ctx context.Context, r *request) error {
	if g.maxFlight <= 0 || r.size > g.maxBytes || len(r.decoded) > g.maxEvents {
		return g.publishAlone(ctx, r)
	}
	g.mu.Lock()
	if g.inflight < g.maxFlight && len(g.queue) == 0 {
		g.inflight++
		g.mu.Unlock()
		err := g.publishAlone(ctx, r)
		g.release()
		return err
	}
	var grp *group
	if n := len(g.queue); n > 0 {
		last := g.queue[n-1]
		if last.count+len(r.decoded) <= g.maxEvents && len(last.buf)+r.size <= g.maxBytes {
			grp = last
		}
	}
	if grp == nil {
		grp = &group{buf: g.newBuf(), ingestedAt: r.ingestedAt, done: make(chan struct{})}
		if trace.SpanContextFromContext(ctx).IsValid() {
			grp.attrs = map[string]string{}
			traceContext.Inject(ctx, propagation.MapCarrier(grp.attrs))
		}
		g.queue = append(g.queue, grp)
	}
	grp.buf = appendNDJSON(grp.buf, r.decoded)
	grp.count += len(r.decoded)
	g.mu.Unlock()
	// The publish is bounded by the publish timeout: no need to watch ctx
	// (and the group's events are no longer this request's to withdraw).
	<-grp.done
	return grp.err
}

// release frees a publish slot: if groups wait, the slot passes to a
// goroutine that publishes them, so that the request that held it is
// answered now.
func (g *grouper) release() {
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.inflight--
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	go g.drain()
}

// drain publishes waiting groups, one at a time, while it holds a slot.
func (g *grouper) drain() {
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.inflight--
			g.mu.Unlock()
			return
		}
		grp := g.queue[0]
		g.queue[0] = nil
		g.queue = g.queue[1:]
		g.mu.Unlock()
		grp.err = g.publishGroup(grp)
		buf := grp.buf
		grp.buf = nil
		close(grp.done)
		if grp.err == nil {
			// The broker has the message: its body is free. Not after an
			// error, when a client library may still be sending it.
			g.bufs.Put(&buf)
		}
	}
}

// newBuf returns an empty buffer for a group's body, one that served an
// earlier group if there is one.
func (g *grouper) newBuf() []byte {
	if b, ok := g.bufs.Get().(*[]byte); ok && cap(*b) <= 2*g.maxBytes {
		return (*b)[:0]
	}
	return make([]byte, 0, min(g.maxBytes, 64<<10))
}

func (g *grouper) publishGroup(grp *group) error {
	msg := envelope.NewEvents(grp.buf, event.ContentTypeNDJSON, grp.count, grp.ingestedAt, envelope.SourceIngest)
	for k, v := range grp.attrs {
		if _, set := msg.Attributes[k]; !set {
			msg.Attributes[k] = v
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	if err := g.pub.Publish(ctx, broker.TopicEvents, msg); err != nil {
		return fmt.Errorf("publish %d events of grouped requests: %w", grp.count, err)
	}
	return nil
}

// appendNDJSON appends the events' JSON as sent, one a line; an event whose
// JSON spans lines is compacted onto one.
func appendNDJSON(buf []byte, decoded []event.Decoded) []byte {
	for i := range decoded {
		raw := decoded[i].Raw
		if bytes.IndexByte(raw, '\n') >= 0 {
			var c bytes.Buffer
			if err := json.Compact(&c, raw); err == nil {
				raw = c.Bytes()
			}
			// A raw event that does not compact did not decode either, and
			// a request with such an event is refused before it gets here.
		}
		buf = append(buf, raw...)
		buf = append(buf, '\n')
	}
	return buf
}

// ndjsonSize is about the bytes of decoded as NDJSON.
func ndjsonSize(decoded []event.Decoded) int {
	n := 0
	for i := range decoded {
		n += len(decoded[i].Raw) + 1
	}
	return n
}
