package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skyjoin/skyjoin/internal/broker"
)

// Subscription is a durable pull consumer, whose messages several
// Subscriptions of the same name share, or an ephemeral consumer of its
// own. It is safe for concurrent use.
type Subscription struct {
	b      *Broker
	c      jetstream.Consumer
	topic  string
	name   string
	closed atomic.Bool

	// For an ephemeral subscription: its stream and its consumer's name.
	stream    jetstream.Stream
	ephemeral string
	closeOnce sync.Once
}

var _ broker.Subscription = (*Subscription)(nil)

func (s *Subscription) op(verb string) string {
	return fmt.Sprintf("%s %s/%s", verb, s.topic, s.name)
}

func (s *Subscription) errIfClosed() error {
	if s.closed.Load() {
		return broker.ErrClosed
	}
	return s.b.errIfClosed()
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
		return nil, fmt.Errorf("jetstream: %s: max %d must be positive", op, max)
	}
	out := make([]*broker.Message, 0, min(max, 1024))

	batch, err := s.c.FetchNoWait(max)
	if err == nil {
		out, err = collect(ctx, batch, out)
	}
	if err == nil && len(out) == 0 && maxWait > 0 {
		if dl, ok := ctx.Deadline(); ok {
			// Let the server's expiry come before the context's.
			left := time.Until(dl)
			maxWait = min(maxWait, left-min(left/10, 100*time.Millisecond))
		}
		if maxWait > 0 {
			batch, err = s.c.Fetch(1, jetstream.FetchMaxWait(maxWait))
			if err == nil {
				out, err = collect(ctx, batch, out)
			}
			if err == nil && len(out) == 1 && max > 1 {
				batch, err = s.c.FetchNoWait(max - 1)
				if err == nil {
					out, err = collect(ctx, batch, out)
				}
			}
		}
	}
	if err != nil && len(out) == 0 {
		if ctx.Err() == nil && (errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)) {
			return out, nil
		}
		if s.ephemeral != "" && s.gone(err) {
			// Not ErrUnavailable, as no responders alone would read.
			err = fmt.Errorf("%w: the server removed consumer %s (%v)", broker.ErrSubscriptionGone, s.ephemeral, err)
		}
		return nil, s.b.fail(op, err)
	}
	// Messages in hand are returned even if a later step failed; the failure
	// shows again on the next Fetch.
	return out, nil
}

// collect appends the batch's messages to out.
func collect(ctx context.Context, batch jetstream.MessageBatch, out []*broker.Message) ([]*broker.Message, error) {
	ch := batch.Messages()
	for {
		select {
		case jm, ok := <-ch:
			if !ok {
				return out, batch.Error()
			}
			m, err := toMessage(jm)
			if err != nil {
				return out, err
			}
			out = append(out, m)
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

func toMessage(jm jetstream.Msg) (*broker.Message, error) {
	md, err := jm.Metadata()
	if err != nil {
		return nil, fmt.Errorf("message metadata: %w", err)
	}
	return &broker.Message{
		ID:          strconv.FormatUint(md.Sequence.Stream, 10),
		Data:        jm.Data(),
		Attributes:  attributes(jm.Headers()),
		Deliveries:  int(md.NumDelivered),
		PublishedAt: md.Timestamp,
		Handle:      jm,
	}, nil
}

func handle(m *broker.Message) (jetstream.Msg, error) {
	if m == nil {
		return nil, errors.New("nil message")
	}
	jm, ok := m.Handle.(jetstream.Msg)
	if !ok {
		return nil, fmt.Errorf("message %s was not fetched from JetStream", m.ID)
	}
	return jm, nil
}

// Ack acknowledges msgs and returns once the server has recorded the acks:
// every ack but the last is sent without waiting, the last one waits for the
// server's reply, which comes after the acks sent before it were processed
// (for a work-queue topic: after the messages were removed from the store).
// Acking a message twice is not an error.
func (s *Subscription) Ack(ctx context.Context, msgs ...*broker.Message) error {
	op := s.op("ack on")
	if err := s.errIfClosed(); err != nil {
		return s.b.fail(op, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	jms := make([]jetstream.Msg, len(msgs))
	for i, m := range msgs {
		jm, err := handle(m)
		if err != nil {
			return fmt.Errorf("jetstream: %s: message %d: %w", op, i, err)
		}
		jms[i] = jm
	}
	last := jms[len(jms)-1]
	for i, jm := range jms[:len(jms)-1] {
		if err := jm.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return s.b.fail(fmt.Sprintf("%s: message %d", op, i), err)
		}
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	err := last.DoubleAck(ctx)
	if errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		// The client sent nothing: confirm through the same ack subject,
		// which the server answers in order after the acks before it.
		_, err = s.b.nc.RequestWithContext(ctx, last.Reply(), []byte("+ACK"))
	}
	if err != nil {
		return s.b.fail(op+": confirm", err)
	}
	return nil
}

// withTimeout bounds ctx by apiTimeout when it has no deadline.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, apiTimeout)
}

// Nack asks for msgs to be delivered again after delay.
func (s *Subscription) Nack(ctx context.Context, delay time.Duration, msgs ...*broker.Message) error {
	op := s.op("nack on")
	if err := s.errIfClosed(); err != nil {
		return s.b.fail(op, err)
	}
	for i, m := range msgs {
		jm, err := handle(m)
		if err != nil {
			return fmt.Errorf("jetstream: %s: %w", op, err)
		}
		if delay > 0 {
			err = jm.NakWithDelay(delay)
		} else {
			err = jm.Nak()
		}
		if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return s.b.fail(fmt.Sprintf("%s: message %d", op, i), err)
		}
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if err := s.b.nc.FlushWithContext(ctx); err != nil {
		return s.b.fail(op, err)
	}
	return nil
}

// gone reports whether a Fetch failure of an ephemeral subscription means
// that the server removed its consumer.
func (s *Subscription) gone(err error) bool {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return true
	}
	if !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	// A pull request to a consumer that is not there has no responder:
	// ask the server whether the consumer exists.
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	_, ierr := s.stream.Consumer(ctx, s.ephemeral)
	return errors.Is(ierr, jetstream.ErrConsumerNotFound)
}

// Close releases the subscription: a durable consumer stays, an ephemeral
// one is deleted.
func (s *Subscription) Close() error {
	s.closed.Store(true)
	if s.ephemeral != "" {
		s.closeOnce.Do(func() {
			s.b.forget(s)
			if s.b.errIfClosed() == nil {
				s.deleteConsumer()
			}
		})
	}
	return nil
}

// deleteConsumer deletes an ephemeral subscription's consumer. A failure is
// logged: the server removes the consumer after EphemeralInactiveThreshold
// anyway.
func (s *Subscription) deleteConsumer() {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	err := s.stream.DeleteConsumer(ctx, s.ephemeral)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.b.log.Warn("jetstream: delete ephemeral consumer; the server removes it when inactive",
			slog.String("consumer", s.ephemeral), slog.Any("error", err))
	}
}
