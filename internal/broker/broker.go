// Package broker declares the small interfaces skyjoin's stages use to move
// messages, so that the embedded NATS JetStream backend and the Google Cloud
// Pub/Sub backend are interchangeable. Every backend passes the conformance
// suite in package brokertest.
//
// Guarantees every backend gives:
//   - Publish returns nil only after the broker has durably stored every
//     message it was given (for JetStream: the stream's PubAck; for Pub/Sub:
//     the server's message id).
//   - Delivery is at least once: a message fetched and not acked before its
//     ack deadline, or nacked, is delivered again, with Deliveries increased.
//   - Ack returns nil only after the broker has recorded the acks, so that an
//     acked message is not delivered again after a crash of the client.
//
// Topics come in two kinds. The events topic is a work queue: its
// subscription name is shared by every worker, and each message goes to one
// of them. The records topic fans out: every subscription name gets every
// message published after the subscription was created (webhook delivery
// shares one durable name across its instances), and ephemeral
// subscriptions (SubscribeOptions.Ephemeral) give each process of the live
// stream its own copy of what is published while it runs.
package broker

import (
	"context"
	"errors"
	"time"
)

// Topic names used by the pipeline.
const (
	TopicEvents     = "events"     // ingest and collect -> enrich
	TopicDeadLetter = "deadletter" // messages the worker could not process
	// TopicRecords carries the records the store committed, one message per
	// store write, to every downstream consumer (live stream, webhooks). It
	// is not a work queue: each subscription name gets every message, and
	// the broker keeps messages for a bounded time (JetStream: RecordsMaxAge
	// and RecordsMaxBytes; Pub/Sub: each subscription's retention).
	TopicRecords = "records"
)

// Message is a message to publish or one received from a subscription.
type Message struct {
	// ID is assigned by the broker on delivery (a JetStream stream sequence,
	// a Pub/Sub message id). On publish, a non-empty ID asks the broker to
	// drop duplicates of the same ID where it can (JetStream Nats-Msg-Id).
	ID         string
	Data       []byte
	Attributes map[string]string
	// Deliveries is the delivery attempt, 1 on the first delivery. After a
	// broker crash it may restart at 1 (JetStream); treat it as a lower bound.
	Deliveries int
	// PublishedAt is when the broker stored the message, where known.
	PublishedAt time.Time

	// Handle is the backend's private delivery state.
	Handle any
}

// Publisher publishes messages to a topic.
type Publisher interface {
	// Publish stores msgs on topic and returns nil once the broker has durably
	// taken every one of them. On error some may have been stored: callers
	// retry, and downstream stages are idempotent. Once it has returned
	// nil, it holds no reference to the messages' Data (ingest reuses the
	// buffer); after an error it may still be sending them.
	Publish(ctx context.Context, topic string, msgs ...*Message) error
}

// Subscriber opens subscriptions.
type Subscriber interface {
	// Subscribe opens (creating if needed) the named durable subscription on
	// a topic. Several Subscriptions of the same name share its messages. A
	// subscription name that is new receives the messages published after it
	// was created. With opts.Ephemeral the subscription is this call's alone
	// (see SubscribeOptions.Ephemeral).
	Subscribe(ctx context.Context, topic, name string, opts SubscribeOptions) (Subscription, error)
}

// SubscribeOptions tune a subscription.
type SubscribeOptions struct {
	// AckWait is how long a fetched message stays invisible before it is
	// delivered again. Zero means 30 s.
	AckWait time.Duration
	// MaxOutstanding bounds the messages fetched and not yet acked or
	// nacked (flow control). Zero means 10,000.
	MaxOutstanding int
	// Ephemeral asks for a subscription of this process alone, for fan-out
	// (each serve instance's live stream): it receives every message
	// published to the topic after Subscribe returned, and none published
	// before; no other Subscription shares it, whatever its name (the name
	// only labels it); Close removes it; and the broker removes it by itself
	// when its process dies (JetStream: an ephemeral consumer removed after
	// a few minutes without a Fetch; Pub/Sub: a subscription with a unique
	// id that expires after a day without a pull). A broker that removed it
	// makes Fetch fail with ErrSubscriptionGone: messages were missed, and
	// the caller subscribes again. Not for work-queue topics (events).
	Ephemeral bool
}

// Subscription is a durable pull subscription.
type Subscription interface {
	// Fetch returns up to max messages, waiting at most maxWait for the first
	// one. It returns an empty slice and nil when none arrived in time.
	Fetch(ctx context.Context, max int, maxWait time.Duration) ([]*Message, error)
	// Ack acknowledges messages and returns once the broker has recorded it.
	Ack(ctx context.Context, msgs ...*Message) error
	// Nack asks for the messages to be delivered again after delay.
	Nack(ctx context.Context, delay time.Duration, msgs ...*Message) error
	// Close releases the subscription (not the durable state).
	Close() error
}

// Broker is a backend: a publisher and a subscriber.
type Broker interface {
	Publisher
	Subscriber
	Close() error
}

// Backlogger is implemented by brokers that know how many messages wait on
// a subscription; ingest uses it for admission control.
type Backlogger interface {
	Backlog(ctx context.Context, topic, subscription string) (int64, error)
}

// ByteBacklogger is implemented by brokers that know how many bytes of
// messages wait on a topic (for a work queue: everything not yet acked).
// Bytes bound the backlog better than messages do, since one message may
// carry one event or a thousand.
type ByteBacklogger interface {
	BacklogBytes(ctx context.Context, topic string) (int64, error)
}

// Browser is implemented by brokers whose topic can be read without
// consuming it (the dead-letter topic), for listing and replay.
type Browser interface {
	// Browse calls fn for each message stored on topic, oldest first, until
	// fn returns false or the messages run out.
	Browse(ctx context.Context, topic string, fn func(*Message) bool) error
	// Delete removes one browsed message by ID. An ID that cannot be one
	// of the topic's is an error wrapping ErrInvalidID; one that is not
	// there (any more) is not an error.
	Delete(ctx context.Context, topic, id string) error
}

// ErrInvalidID is wrapped by Delete for an ID that cannot name a message
// (not a JetStream sequence number, empty): a caller's mistake, not an
// outage.
var ErrInvalidID = errors.New("invalid message id")

// ErrUnavailable wraps errors that mean the broker cannot take data now
// (down, full, timing out); ingest answers them with 503 and Retry-After.
var ErrUnavailable = errors.New("broker unavailable")

// ErrClosed is returned by operations on a closed broker or subscription.
var ErrClosed = errors.New("broker closed")

// ErrSubscriptionGone is wrapped by Fetch on an ephemeral subscription that
// the broker removed (its process did not fetch for too long, or the broker
// lost it): messages published since may be missed. Close it and subscribe
// again.
var ErrSubscriptionGone = errors.New("subscription gone")
