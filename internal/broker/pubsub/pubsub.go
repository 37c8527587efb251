// Package pubsub is the Google Cloud Pub/Sub backend of package broker, on
// cloud.google.com/go/pubsub/v2. It honours PUBSUB_EMULATOR_HOST (the
// client library connects to the emulator without credentials), and topic
// and subscription creation works there too.
//
// Names: topic T is the Pub/Sub topic PREFIX-T; subscription N of topic T is
// PREFIX-T-N. With Config.Create, missing topics and subscriptions are
// created (never updated: change an existing one with Terraform or gcloud).
// When the dead-letter topic is created, so is its browse subscription
// PREFIX-deadletter-browse, which keeps dead letters (DeadLetterRetention)
// for Browse and Delete: Pub/Sub only keeps messages for subscriptions that
// exist when they are published.
//
// Publish batches with the client's PublishSettings and returns once every
// message has its server id; codes Unavailable, DeadlineExceeded and
// ResourceExhausted are wrapped in broker.ErrUnavailable. Attributes travel
// as Pub/Sub attributes; the W3C trace context of the publisher's context is
// added (broker.WithTrace). Message.ID on publish is not used: Pub/Sub has no
// publish-side deduplication (JetStream has), so a retried Publish can store
// duplicates; downstream dedups by event id.
//
// A Subscription adapts StreamingPull (Subscriber.Receive) to the pull shape
// of broker.Subscription: Receive runs in a goroutine whose callback hands
// each message to Fetch over a channel and then blocks until the message is
// acked or nacked, so the client's flow control (ReceiveSettings
// MaxOutstandingMessages/Bytes, from SubscribeOptions.MaxOutstanding) bounds
// the messages held, fetched or not. While held, the client extends their
// leases (up to MaxExtension).
//
// Semantics that differ from JetStream:
//
//   - Ack: without exactly-once delivery (the default) Pub/Sub acks are best
//     effort: Ack hands the ack to the client, which sends it within about
//     100 ms, and returns nil without the service's confirmation; an acked
//     message may, rarely, be delivered again. With Config.ExactlyOnce the
//     subscription is created with exactly-once delivery, Ack waits for the
//     service's result (AckWithResult) and an acked message is not delivered
//     again. Closing the broker flushes pending acks. Ack waits at most
//     ackConfirmWait for a result (the client library's own retries of an
//     exactly-once ack end within it) and then fails, so a result the
//     library never completes cannot hold the worker forever; the message
//     is then delivered again, and the idempotent store returns what it
//     holds.
//   - AckWait is enforced by the adapter: a fetched message neither acked
//     nor nacked within SubscribeOptions.AckWait is nacked, so it is
//     delivered again, as with JetStream; a late Ack of it is an error. The
//     service's ack deadline (AckWait clamped to 10 s-600 s, on the
//     subscription and on each stream) matters when the process dies, and
//     for messages in flight on a stream while it closes: they come back
//     after it, not at once.
//   - Nack(delay): Pub/Sub has no per-message redelivery delay. The adapter
//     holds the message (its lease still extended, counting against flow
//     control) for delay and then nacks it; if the process stops first it
//     is nacked at once. The subscription's retry policy (MinBackoff,
//     MaxBackoff) adds the service's own delay to every redelivery.
//   - Deliveries: with a dead-letter policy (MaxDeliveryAttempts) it is the
//     service's delivery attempt. Otherwise Pub/Sub does not count, and the
//     adapter counts deliveries per subscription and message id in this
//     process: 1 on first delivery, rising on redelivery to this process,
//     restarting at 1 after a restart or when redelivered to another
//     process. It is a lower bound, so the worker dead-letters later, never
//     earlier.
//   - Dead letters: the worker routes poison messages to the dead-letter
//     topic itself, as with JetStream. Browse lists the browse subscription
//     by pulling every message (up to BrowseLimit), sorting by publish time
//     and releasing the leases (modack 0); Delete pulls until it finds the
//     id and acks it. Both are O(messages) (a replay of n dead letters is
//     O(n²) reads) and meant for dead letters, not for busy topics; a
//     concurrent Browse can hide messages from another. With a dead-letter
//     policy (MaxDeliveryAttempts), Pub/Sub also forwards messages itself,
//     without the worker's reason attributes.
//   - Backlog: not implemented (no broker.Backlogger). Pub/Sub's backlog is
//     known only from Cloud Monitoring (num_undelivered_messages), minutes
//     late; ingest does no backlog-based admission control on Pub/Sub.
//   - Several subscription names per topic are fine (each gets every
//     message); JetStream work queues take one.
//   - Ephemeral subscriptions (broker.SubscribeOptions.Ephemeral) are
//     subscriptions of their own, PREFIX-T-N-<random>, created whatever
//     Config.Create says (so the process needs pubsub.subscriptions.create),
//     with an expiration policy of a day without a pull (Pub/Sub's minimum:
//     what is left behind by a process that died goes after a day), a
//     retention of an hour, no retry or dead-letter policy, and deleted by
//     Close (and by the Broker's Close). Receive failing with NotFound on
//     one makes Fetch return broker.ErrSubscriptionGone.
//   - The dead-letter policy (MaxDeliveryAttempts) applies to subscriptions
//     of the events topic only: records are not events, and must not land
//     among the dead letters to replay.
package pubsub

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skyjoin/skyjoin/internal/broker"
)

var (
	_ broker.Broker  = (*Broker)(nil)
	_ broker.Browser = (*Broker)(nil)
)

const (
	// closeTimeout bounds the wait for a Subscription's Receive to stop
	// (it flushes pending acks and nacks).
	closeTimeout = 30 * time.Second
	// browseSubscription names the dead-letter topic's browse subscription.
	browseSubscription = "browse"
	// browseAckDeadline is the lease Browse and Delete hold while reading.
	browseAckDeadline = 60 * time.Second
	// ephemeralTTL is the expiration policy of ephemeral subscriptions:
	// deleted after this long without a pull (the service's minimum).
	ephemeralTTL = 24 * time.Hour
	// ephemeralRetention is how long an ephemeral subscription keeps
	// unacked messages: it is read by a live process or by nobody.
	ephemeralRetention = time.Hour
)

// Broker is a Pub/Sub broker.Broker. It is safe for concurrent use.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	client *ps.Client
	closed atomic.Bool

	counts *deliveryCounts
	// ackConfirmWait bounds the wait for an exactly-once ack's result
	// (defaultAckConfirmWait; tests shorten it).
	ackConfirmWait time.Duration

	mu         sync.Mutex
	topics     map[string]bool // topics known to exist (or not created by us)
	subs       map[string]bool // subscription ids known to exist
	publishers map[string]*ps.Publisher
	open       map[*Subscription]struct{}

	closeOnce sync.Once
	closeErr  error
}

// Open connects to Pub/Sub (or the emulator named by PUBSUB_EMULATOR_HOST).
// opts are passed to the client, e.g. option.WithEndpoint for pstest.
// Credentials come from the environment (Application Default Credentials).
func Open(ctx context.Context, cfg Config, log *slog.Logger, opts ...option.ClientOption) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pubsub: open: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.withDefaults()
	client, err := ps.NewClient(ctx, cfg.Project, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub: open: client for project %s: %w", cfg.Project, classify(err))
	}
	b := &Broker{
		cfg:            cfg,
		log:            log.With(slog.String("component", "broker"), slog.String("backend", "pubsub")),
		client:         client,
		counts:         newDeliveryCounts(),
		ackConfirmWait: defaultAckConfirmWait,
		topics:         make(map[string]bool),
		subs:           make(map[string]bool),
		publishers:     make(map[string]*ps.Publisher),
		open:           make(map[*Subscription]struct{}),
	}
	b.log.Info("pubsub: broker open", slog.String("project", cfg.Project), slog.String("prefix", cfg.Prefix),
		slog.Bool("create", cfg.Create), slog.Bool("exactly_once", cfg.ExactlyOnce))
	return b, nil
}

// Close closes every open Subscription (flushing their acks), flushes and
// stops the publishers and closes the client. It is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.mu.Lock()
		subs := openSubs(b.open)
		pubs := maps.Clone(b.publishers)
		b.mu.Unlock()

		var errs []error
		var wg sync.WaitGroup
		var emu sync.Mutex
		for _, s := range subs {
			wg.Go(func() {
				if err := s.Close(); err != nil {
					emu.Lock()
					errs = append(errs, err)
					emu.Unlock()
				}
			})
		}
		for _, p := range pubs {
			wg.Go(p.Stop) // sends what is batched
		}
		wg.Wait()
		if err := b.client.Close(); err != nil {
			errs = append(errs, fmt.Errorf("client: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			b.closeErr = fmt.Errorf("pubsub: close: %w", err)
		}
		b.log.Info("pubsub: broker closed")
	})
	return b.closeErr
}

func openSubs(m map[*Subscription]struct{}) []*Subscription {
	out := make([]*Subscription, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	return out
}

// errIfClosed returns broker.ErrClosed once Close was called.
func (b *Broker) errIfClosed() error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	return nil
}

// fail wraps err for the operation op, marking it ErrClosed or ErrUnavailable
// where that applies.
func (b *Broker) fail(op string, err error) error {
	if (b.closed.Load() || errors.Is(err, ps.ErrPublisherStopped)) && !errors.Is(err, broker.ErrClosed) {
		return fmt.Errorf("pubsub: %s: %w: %w", op, broker.ErrClosed, err)
	}
	return fmt.Errorf("pubsub: %s: %w", op, classify(err))
}

var (
	topicRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// topicID is the Pub/Sub topic id of a topic, e.g. skyjoin-events.
func (b *Broker) topicID(topic string) string { return b.cfg.Prefix + "-" + topic }

// topicPath is the full resource name of a topic.
func (b *Broker) topicPath(topic string) string {
	return "projects/" + b.cfg.Project + "/topics/" + b.topicID(topic)
}

// subscriptionID is the Pub/Sub subscription id of subscription name on
// topic, e.g. skyjoin-events-enrich.
func (b *Broker) subscriptionID(topic, name string) string {
	return b.cfg.Prefix + "-" + topic + "-" + name
}

// subscriptionPath is the full resource name of subscription name on topic.
func (b *Broker) subscriptionPath(topic, name string) string {
	return b.subscriptionPathOf(b.subscriptionID(topic, name))
}

// subscriptionPathOf is the full resource name of a subscription id.
func (b *Broker) subscriptionPathOf(id string) string {
	return "projects/" + b.cfg.Project + "/subscriptions/" + id
}

// ensureTopic checks the topic name and, with Create, creates the topic
// (and, for the dead-letter topic, its browse subscription) once.
func (b *Broker) ensureTopic(ctx context.Context, topic string) error {
	if !topicRE.MatchString(topic) {
		return fmt.Errorf("invalid topic %q: want 1-64 of [a-z0-9_-]", topic)
	}
	b.mu.Lock()
	known := b.topics[topic]
	b.mu.Unlock()
	if known || !b.cfg.Create {
		return nil
	}
	_, err := b.client.TopicAdminClient.CreateTopic(ctx, &pb.Topic{
		Name:   b.topicPath(topic),
		Labels: map[string]string{"app": "skyjoin"},
	})
	if err != nil && !alreadyExists(err) {
		return fmt.Errorf("create topic %s: %w", b.topicID(topic), err)
	}
	if err == nil {
		b.log.Info("pubsub: created topic", slog.String("topic", b.topicID(topic)))
	}
	if topic == broker.TopicDeadLetter {
		// Without a subscription, Pub/Sub would drop dead letters.
		if err := b.ensureSubscription(ctx, topic, browseSubscription, browseAckDeadline); err != nil {
			return err
		}
	}
	b.mu.Lock()
	b.topics[topic] = true
	b.mu.Unlock()
	return nil
}

// ensureSubscription creates, with Create, the subscription name on topic
// (whose topic exists) once.
func (b *Broker) ensureSubscription(ctx context.Context, topic, name string, ackWait time.Duration) error {
	id := b.subscriptionID(topic, name)
	b.mu.Lock()
	known := b.subs[id]
	b.mu.Unlock()
	if known || !b.cfg.Create {
		return nil
	}
	sub := b.newSubscriptionProto(topic, id, ackWait)
	sub.ExpirationPolicy = &pb.ExpirationPolicy{} // never expires (the default is 31 days idle)
	switch topic {
	case broker.TopicDeadLetter:
		sub.MessageRetentionDuration = durationpb.New(b.cfg.DeadLetterRetention)
		sub.EnableExactlyOnceDelivery = false
	default:
		if b.cfg.MinBackoff > 0 || b.cfg.MaxBackoff > 0 {
			maxB := b.cfg.MaxBackoff
			if maxB == 0 {
				maxB = maxBackoff
			}
			sub.RetryPolicy = &pb.RetryPolicy{
				MinimumBackoff: durationpb.New(b.cfg.MinBackoff),
				MaximumBackoff: durationpb.New(maxB),
			}
		}
		if b.cfg.MaxDeliveryAttempts > 0 && topic == broker.TopicEvents {
			if err := b.ensureTopic(ctx, broker.TopicDeadLetter); err != nil {
				return err
			}
			sub.DeadLetterPolicy = &pb.DeadLetterPolicy{
				DeadLetterTopic:     b.topicPath(broker.TopicDeadLetter),
				MaxDeliveryAttempts: int32(b.cfg.MaxDeliveryAttempts),
			}
		}
	}
	_, err := b.client.SubscriptionAdminClient.CreateSubscription(ctx, sub)
	if err != nil && !alreadyExists(err) {
		return fmt.Errorf("create subscription %s: %w", id, err)
	}
	if err == nil {
		b.log.Info("pubsub: created subscription", slog.String("subscription", id), slog.String("topic", b.topicID(topic)))
	}
	b.mu.Lock()
	b.subs[id] = true
	b.mu.Unlock()
	return nil
}

// newSubscriptionProto is what every subscription the broker creates has.
func (b *Broker) newSubscriptionProto(topic, id string, ackWait time.Duration) *pb.Subscription {
	return &pb.Subscription{
		Name:                      b.subscriptionPathOf(id),
		Topic:                     b.topicPath(topic),
		AckDeadlineSeconds:        int32(serviceAckDeadline(ackWait, b.cfg.ExactlyOnce) / time.Second),
		EnableExactlyOnceDelivery: b.cfg.ExactlyOnce,
		Labels:                    map[string]string{"app": "skyjoin"},
	}
}

// createEphemeral creates a subscription of its own on topic, whatever
// Config.Create says, and returns its id: PREFIX-TOPIC-NAME-<random>.
func (b *Broker) createEphemeral(ctx context.Context, topic, name string, ackWait time.Duration) (string, error) {
	id := b.subscriptionID(topic, name) + "-" + strings.ToLower(rand.Text())
	sub := b.newSubscriptionProto(topic, id, ackWait)
	sub.ExpirationPolicy = &pb.ExpirationPolicy{Ttl: durationpb.New(ephemeralTTL)}
	sub.MessageRetentionDuration = durationpb.New(ephemeralRetention)
	sub.Labels["ephemeral"] = "true"
	if _, err := b.client.SubscriptionAdminClient.CreateSubscription(ctx, sub); err != nil {
		return "", fmt.Errorf("create ephemeral subscription %s (needs pubsub.subscriptions.create): %w", id, err)
	}
	b.log.Debug("pubsub: created ephemeral subscription", slog.String("subscription", id), slog.String("topic", b.topicID(topic)))
	return id, nil
}

// deleteEphemeral deletes an ephemeral subscription. A failure is logged:
// its expiration policy removes it a day after the last pull anyway.
func (b *Broker) deleteEphemeral(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := b.client.SubscriptionAdminClient.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{
		Subscription: b.subscriptionPathOf(id),
	})
	if err != nil && status.Code(err) != codes.NotFound {
		b.log.Warn("pubsub: delete ephemeral subscription; it expires a day after its last pull",
			slog.String("subscription", id), slog.Any("error", err))
	}
}

// publisher returns the topic's publisher, made on first use.
func (b *Broker) publisher(topic string) (*ps.Publisher, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if p, ok := b.publishers[topic]; ok {
		return p, nil
	}
	p := b.client.Publisher(b.topicPath(topic))
	p.PublishSettings.DelayThreshold = b.cfg.PublishDelay
	p.PublishSettings.CountThreshold = b.cfg.PublishCount
	p.PublishSettings.ByteThreshold = b.cfg.PublishBytes
	p.PublishSettings.Timeout = b.cfg.PublishTimeout
	b.publishers[topic] = p
	return p, nil
}

// Publish stores msgs on topic: it checks every message, hands all to the
// batching publisher and returns nil once every one has its server id.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	op := "publish to " + topic
	if err := b.errIfClosed(); err != nil {
		return b.fail(op, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	pms := make([]*ps.Message, len(msgs))
	for i, m := range msgs {
		pm, err := toPubSub(ctx, m)
		if err != nil {
			return fmt.Errorf("pubsub: %s: message %d: %w", op, i, err)
		}
		pms[i] = pm
	}
	if err := b.ensureTopic(ctx, topic); err != nil {
		return b.fail(op, err)
	}
	p, err := b.publisher(topic)
	if err != nil {
		return b.fail(op, err)
	}
	results := make([]*ps.PublishResult, len(pms))
	for i, pm := range pms {
		results[i] = p.Publish(ctx, pm)
	}
	var errs []error
	stored := 0
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		stored++
	}
	if len(errs) > 0 {
		err := errs[0]
		if len(errs) > 1 {
			err = fmt.Errorf("%w (and %d more errors)", errs[0], len(errs)-1)
		}
		return b.fail(fmt.Sprintf("%s: %d of %d messages stored", op, stored, len(msgs)), err)
	}
	return nil
}

// toPubSub builds the Pub/Sub message of m, checking the service's limits
// so that a bad message fails alone and at once.
func toPubSub(ctx context.Context, m *broker.Message) (*ps.Message, error) {
	if m == nil {
		return nil, errors.New("nil message")
	}
	attrs := broker.WithTrace(ctx, m.Attributes)
	if len(m.Data) == 0 && len(attrs) == 0 {
		return nil, errors.New("a message needs data or at least one attribute")
	}
	if len(attrs) > maxAttributes {
		return nil, fmt.Errorf("%d attributes exceed the maximum of %d", len(attrs), maxAttributes)
	}
	size := len(m.Data)
	for k, v := range attrs {
		switch {
		case k == "":
			return nil, errors.New("empty attribute name")
		case len(k) > maxAttrKeyBytes:
			return nil, fmt.Errorf("attribute name %.40q...: longer than %d bytes", k, maxAttrKeyBytes)
		case strings.HasPrefix(strings.ToLower(k), "goog"):
			return nil, fmt.Errorf("attribute %q: the goog prefix is reserved", k)
		case len(v) > maxAttrValueBytes:
			return nil, fmt.Errorf("attribute %q: value longer than %d bytes", k, maxAttrValueBytes)
		}
		size += len(k) + len(v)
	}
	if size > MaxMessageSize {
		return nil, fmt.Errorf("message of %d bytes exceeds the maximum of %d", size, MaxMessageSize)
	}
	return &ps.Message{Data: m.Data, Attributes: attrs}, nil
}

// Subscribe opens the subscription name on topic (creating both with
// Create) and starts receiving from it.
func (b *Broker) Subscribe(ctx context.Context, topic, name string, opts broker.SubscribeOptions) (broker.Subscription, error) {
	op := fmt.Sprintf("subscribe to %s as %s", topic, name)
	if err := b.errIfClosed(); err != nil {
		return nil, b.fail(op, err)
	}
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("pubsub: %s: invalid subscription name: want 1-64 of [A-Za-z0-9_-]", op)
	}
	if opts.AckWait < 0 || opts.MaxOutstanding < 0 {
		return nil, fmt.Errorf("pubsub: %s: negative AckWait or MaxOutstanding", op)
	}
	if topic == broker.TopicDeadLetter && name == browseSubscription {
		return nil, fmt.Errorf("pubsub: %s: the name %q is reserved for Browse", op, browseSubscription)
	}
	ackWait := orDefault(opts.AckWait, 30*time.Second)
	maxOut := orDefault(opts.MaxOutstanding, b.cfg.MaxOutstandingMessages)
	if err := b.ensureTopic(ctx, topic); err != nil {
		return nil, b.fail(op, err)
	}
	id := b.subscriptionID(topic, name)
	if opts.Ephemeral {
		var err error
		if id, err = b.createEphemeral(ctx, topic, name, ackWait); err != nil {
			return nil, b.fail(op, err)
		}
	} else if err := b.ensureSubscription(ctx, topic, name, ackWait); err != nil {
		return nil, b.fail(op, err)
	}
	s := newSubscription(b, topic, name, id, opts.Ephemeral, ackWait, maxOut)
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		if opts.Ephemeral {
			b.deleteEphemeral(id)
		}
		return nil, b.fail(op, broker.ErrClosed)
	}
	b.open[s] = struct{}{}
	s.start() // under the lock, so that Close sees it started
	b.mu.Unlock()
	b.log.Debug("pubsub: subscribed", slog.String("subscription", id))
	return s, nil
}

// forget removes a closed Subscription.
func (b *Broker) forget(s *Subscription) {
	b.mu.Lock()
	delete(b.open, s)
	b.mu.Unlock()
}

// serviceAckDeadline is AckWait within the ack deadlines Pub/Sub accepts,
// in whole seconds. With exactly-once delivery the floor is 60 s, not 10 s:
// the client library never extends a lease of an exactly-once subscription
// by less than a minute (minDurationPerLeaseExtensionExactlyOnce in
// cloud.google.com/go/pubsub/v2), so a shorter subscription deadline
// would only be overridden on the stream and hold after a crash.
func serviceAckDeadline(ackWait time.Duration, exactlyOnce bool) time.Duration {
	floor := minAckDeadline
	if exactlyOnce {
		floor = minAckDeadlineExactlyOnce
	}
	return min(max(ackWait, floor), maxAckDeadline).Truncate(time.Second)
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// deliveryCounts counts deliveries per subscription and message id in this
// process, for subscriptions without a dead-letter policy.
type deliveryCounts struct {
	mu sync.Mutex
	m  map[string]int
}

// maxCounted bounds the entries kept; past it the counts restart (they are
// a lower bound anyway).
const maxCounted = 100_000

func newDeliveryCounts() *deliveryCounts { return &deliveryCounts{m: make(map[string]int)} }

func (c *deliveryCounts) inc(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCounted {
		clear(c.m)
	}
	c.m[key]++
	return c.m[key]
}

func (c *deliveryCounts) forget(key string) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}
