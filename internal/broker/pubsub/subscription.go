package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// restartBackoff is the wait between attempts to restart a Receive that
// failed: full jitter under a ceiling from 1 s doubling up to 30 s.
var restartBackoff = retry.Backoff{Initial: time.Second, Max: 30 * time.Second}

// Subscription adapts StreamingPull to broker.Subscription. Several
// Subscriptions of the same name share its messages; an ephemeral one has a
// Pub/Sub subscription of its own. It is safe for concurrent use.
type Subscription struct {
	b         *Broker
	topic     string
	name      string
	id        string // the Pub/Sub subscription id
	ephemeral bool   // id is this Subscription's own: Close deletes it
	sub       *ps.Subscriber
	ackWait   time.Duration

	// ch carries received messages from the Receive callbacks to Fetch. It
	// is unbuffered: a callback waits on it, holding its flow-control slot.
	ch      chan *delivery
	closing chan struct{} // closed by Close
	cancel  context.CancelFunc
	done    chan struct{} // closed when the Receive goroutine returned

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	errMu   sync.Mutex
	recvErr error // the last Receive failure, reported once by Fetch
	gone    error // set once an ephemeral subscription was found deleted; reported by every Fetch
}

var _ broker.Subscription = (*Subscription)(nil)

func newSubscription(b *Broker, topic, name, id string, ephemeral bool, ackWait time.Duration, maxOut int) *Subscription {
	s := &Subscription{
		b:         b,
		topic:     topic,
		name:      name,
		id:        id,
		ephemeral: ephemeral,
		sub:       b.client.Subscriber(b.subscriptionPathOf(id)),
		ackWait:   ackWait,
		ch:        make(chan *delivery),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	n := b.cfg.NumGoroutines
	rs := &s.sub.ReceiveSettings
	rs.NumGoroutines = n
	rs.MaxExtension = b.cfg.MaxExtension
	// The stream's ack deadline (and the longest single lease extension)
	// is AckWait within the service's bounds, as the subscription's: the
	// client's default, 60 s, would make messages held by a process that
	// died, or in flight on a stream being closed, come back only after a
	// minute whatever AckWait says.
	rs.MaxDurationPerAckExtension = serviceAckDeadline(ackWait, b.cfg.ExactlyOnce)
	rs.MaxOutstandingMessages = ceilDiv(maxOut, n)
	rs.MaxOutstandingBytes = ceilDiv(b.cfg.MaxOutstandingBytes, n)
	// Per-stream flow control keeps the service from sending a stream more
	// than it may hold (recommended with more than one stream); the limits
	// above are split among the streams.
	rs.EnablePerStreamFlowControl = n > 1
	return s
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func (s *Subscription) op(verb string) string {
	return fmt.Sprintf("%s %s/%s", verb, s.topic, s.name)
}

func (s *Subscription) errIfClosed() error {
	if s.closed.Load() {
		return broker.ErrClosed
	}
	return s.b.errIfClosed()
}

// start runs Receive in a goroutine until Close, restarting it with backoff
// when it fails (the failure shows on the next Fetch that gets nothing).
func (s *Subscription) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		failures := 0
		for {
			began := time.Now()
			err := s.sub.Receive(ctx, s.receive)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("streaming pull ended")
			}
			if s.ephemeral && status.Code(err) == codes.NotFound {
				// Deleted behind our back (expired, or by an operator):
				// recreating it would hide the gap.
				s.errMu.Lock()
				s.gone = fmt.Errorf("%w: subscription %s was deleted (%v)", broker.ErrSubscriptionGone, s.id, err)
				s.errMu.Unlock()
				s.b.log.Warn("pubsub: ephemeral subscription deleted", slog.String("subscription", s.id), slog.Any("error", err))
				return
			}
			s.errMu.Lock()
			s.recvErr = err
			s.errMu.Unlock()
			if time.Since(began) > restartBackoff.Max {
				failures = 0 // it ran for a while: start the backoff again
			}
			failures++
			wait := restartBackoff.Delay(failures)
			s.b.log.Warn("pubsub: receive failed; restarting", slog.String("subscription", s.id),
				slog.Any("error", err), slog.Duration("retry_in", wait))
			if retry.Sleep(ctx, wait) != nil {
				return
			}
		}
	}()
}

// receive is the Receive callback: it hands m to Fetch and waits until m is
// acked or nacked, so that flow control counts it until then. When Receive
// stops (Close), m is nacked unless it was acked.
func (s *Subscription) receive(ctx context.Context, m *ps.Message) {
	d := &delivery{s: s, m: m, settled: make(chan struct{})}
	select {
	case s.ch <- d:
	case <-ctx.Done():
		m.Nack()
		return
	}
	select {
	case <-d.settled:
	case <-ctx.Done():
		d.nackNow()
	}
}

// takeErr returns and clears the last Receive failure, or returns the
// subscription's loss.
func (s *Subscription) takeErr() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.gone != nil {
		return s.gone
	}
	err := s.recvErr
	s.recvErr = nil
	return err
}

// Fetch returns up to max messages, waiting at most maxWait for the first
// one: it takes what is ready at once, and only when nothing is ready waits
// for one message and then takes what else is ready.
func (s *Subscription) Fetch(ctx context.Context, max int, maxWait time.Duration) ([]*broker.Message, error) {
	op := s.op("fetch from")
	if err := s.errIfClosed(); err != nil {
		return nil, s.b.fail(op, err)
	}
	if max <= 0 {
		return nil, fmt.Errorf("pubsub: %s: max %d must be positive", op, max)
	}
	out := make([]*broker.Message, 0, min(max, 1024))
	out = s.drain(out, max)
	if len(out) == 0 {
		s.errMu.Lock()
		gone := s.gone
		s.errMu.Unlock()
		if gone != nil {
			return nil, s.b.fail(op, gone)
		}
	}
	if len(out) > 0 || maxWait <= 0 {
		return out, nil
	}
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case d := <-s.ch:
		out = append(out, s.handOut(d))
		return s.drain(out, max), nil
	case <-t.C:
	case <-ctx.Done():
		return nil, s.b.fail(op, ctx.Err())
	case <-s.closing:
		return nil, s.b.fail(op, broker.ErrClosed)
	}
	if err := s.takeErr(); err != nil {
		return nil, s.b.fail(op, err)
	}
	return out, nil
}

// drain appends the messages ready now, up to max in all.
func (s *Subscription) drain(out []*broker.Message, max int) []*broker.Message {
	for len(out) < max {
		select {
		case d := <-s.ch:
			out = append(out, s.handOut(d))
		default:
			return out
		}
	}
	return out
}

// handOut starts d's AckWait and makes its broker.Message.
func (s *Subscription) handOut(d *delivery) *broker.Message {
	m := d.m
	var n int
	if m.DeliveryAttempt != nil && *m.DeliveryAttempt > 0 {
		n = *m.DeliveryAttempt // the subscription has a dead-letter policy
	} else {
		n = s.b.counts.inc(s.countKey(m.ID))
	}
	d.start(s.ackWait)
	return &broker.Message{
		ID:          m.ID,
		Data:        m.Data,
		Attributes:  m.Attributes,
		Deliveries:  n,
		PublishedAt: m.PublishTime,
		Handle:      d,
	}
}

func (s *Subscription) countKey(id string) string { return s.id + "\x00" + id }

func handle(m *broker.Message) (*delivery, error) {
	if m == nil {
		return nil, errors.New("nil message")
	}
	d, ok := m.Handle.(*delivery)
	if !ok {
		return nil, fmt.Errorf("message %s was not fetched from Pub/Sub", m.ID)
	}
	return d, nil
}

// Ack acknowledges msgs. On a subscription with exactly-once delivery it
// returns once the service confirmed every ack; otherwise Pub/Sub acks are
// best effort: the client sends them shortly (and on Close), and Ack returns
// without a confirmation. Acking a message twice is not an error; acking one
// whose AckWait passed (it was nacked) is.
func (s *Subscription) Ack(ctx context.Context, msgs ...*broker.Message) error {
	op := s.op("ack on")
	if err := s.errIfClosed(); err != nil {
		return s.b.fail(op, err)
	}
	var errs []error
	results := make([]*ps.AckResult, len(msgs))
	for i, m := range msgs {
		d, err := handle(m)
		if err == nil {
			results[i], err = d.ack()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("message %d: %w", i, err))
		}
	}
	wctx, cancel := context.WithTimeoutCause(ctx, s.b.ackConfirmWait, errAckUnconfirmed)
	defer cancel()
	for i, r := range results {
		if r == nil {
			continue
		}
		st, err := r.Get(wctx)
		if err != nil && ctx.Err() == nil && context.Cause(wctx) == errAckUnconfirmed {
			err = fmt.Errorf("%w within %v", errAckUnconfirmed, s.b.ackConfirmWait)
		}
		if err == nil && st != ps.AcknowledgeStatusSuccess {
			err = fmt.Errorf("ack status %s", ackStatus(st))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("message %d (%s): %w", i, msgs[i].ID, err))
		}
	}
	if len(errs) > 0 {
		err := errs[0]
		if len(errs) > 1 {
			err = fmt.Errorf("%w (and %d more errors)", errs[0], len(errs)-1)
		}
		return s.b.fail(fmt.Sprintf("%s: %d messages", op, len(msgs)), err)
	}
	return nil
}

// errAckUnconfirmed: the client library gave no result for an exactly-once
// ack within ackConfirmWait.
var errAckUnconfirmed = errors.New("the client library did not confirm the ack; the message may be delivered again")

func ackStatus(st ps.AcknowledgeStatus) string {
	switch st {
	case ps.AcknowledgeStatusPermissionDenied:
		return "permission denied"
	case ps.AcknowledgeStatusFailedPrecondition:
		return "failed precondition"
	case ps.AcknowledgeStatusInvalidAckID:
		return "invalid ack id (the lease expired; the message will be delivered again)"
	}
	return fmt.Sprintf("other (%d)", int(st))
}

// Nack asks for msgs to be delivered again after delay. Pub/Sub has no
// per-message delay: the adapter holds each message for delay, its lease
// extended, then nacks it (at once if the subscription closes first).
// Nacking an acked message does nothing.
func (s *Subscription) Nack(ctx context.Context, delay time.Duration, msgs ...*broker.Message) error {
	op := s.op("nack on")
	if err := s.errIfClosed(); err != nil {
		return s.b.fail(op, err)
	}
	for i, m := range msgs {
		d, err := handle(m)
		if err != nil {
			return fmt.Errorf("pubsub: %s: message %d: %w", op, i, err)
		}
		d.nack(delay)
	}
	return nil
}

// Close stops receiving: messages received and not acked are nacked, and
// pending acks are sent before Close returns. A durable subscription stays;
// an ephemeral one is deleted.
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.closing)
		if s.cancel != nil {
			s.cancel()
			select {
			case <-s.done:
			case <-time.After(closeTimeout):
				s.closeErr = fmt.Errorf("pubsub: %s: streaming pull not stopped after %v", s.op("close"), closeTimeout)
			}
		}
		if s.ephemeral {
			s.b.deleteEphemeral(s.id)
		}
		s.b.forget(s)
	})
	return s.closeErr
}

// delivery is one received message between Fetch and its ack or nack.
type delivery struct {
	s       *Subscription
	m       *ps.Message
	settled chan struct{} // closed once acked or nacked: the callback returns

	mu    sync.Mutex
	state deliveryState
	timer *time.Timer // AckWait, or the delayed nack
}

type deliveryState int

const (
	pending deliveryState = iota // fetched, neither acked nor nacked
	delayed                      // nacked with a delay not yet over
	acked
	nacked // nacked, or AckWait passed
	expired
)

// start starts the AckWait of a fetched message.
func (d *delivery) start(ackWait time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timer = time.AfterFunc(ackWait, d.expire)
}

func (d *delivery) stopTimer() {
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// ack acks d unless it went back already; a nil result means it was acked
// before.
func (d *delivery) ack() (*ps.AckResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.state {
	case acked:
		return nil, nil
	case nacked:
		return nil, errors.New("message was nacked; it will be delivered again")
	case expired:
		return nil, errors.New("ack wait passed and the message was nacked; it will be delivered again")
	}
	d.stopTimer()
	d.state = acked
	r := d.m.AckWithResult()
	d.s.b.counts.forget(d.s.countKey(d.m.ID))
	close(d.settled)
	return r, nil
}

// nack nacks d now, or after delay.
func (d *delivery) nack(delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != pending && d.state != delayed {
		return
	}
	d.stopTimer()
	if delay <= 0 {
		d.settle(nacked)
		return
	}
	d.state = delayed
	d.timer = time.AfterFunc(delay, d.nackNow)
}

// nackNow nacks d unless it was settled.
func (d *delivery) nackNow() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == pending || d.state == delayed {
		d.stopTimer()
		d.settle(nacked)
	}
}

// expire nacks d when its AckWait passed without an ack or nack.
func (d *delivery) expire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == pending {
		d.timer = nil
		d.settle(expired)
	}
}

// settle nacks d; called with d.mu held.
func (d *delivery) settle(st deliveryState) {
	d.state = st
	d.m.Nack()
	close(d.settled)
}
