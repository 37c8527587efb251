// Package jetstream is the NATS JetStream backend of package broker: an
// embedded, in-process server with file storage under the data dir (the
// default of `skyjoin up`), or an external server.
//
// Each topic is one stream, SKYJOIN_<TOPIC>, on subject skyjoin.<topic>. Two
// topics are logs (Limits retention): the dead-letter topic keeps messages
// for DeadLetterMaxAge so that they can be browsed and replayed, and the
// records topic keeps them for RecordsMaxAge, at most RecordsMaxBytes (the
// oldest go first), so that each of its subscriptions reads every message
// at its own pace. Every other topic (events) is a work queue: a message is
// removed once acked, so the topic accepts a single subscription name
// (several Subscriptions of that name share it).
//
// A subscription is a durable pull consumer named after it; on a log topic
// a new one starts with the messages published after it was created
// (DeliverNew), as a new Pub/Sub subscription does. An ephemeral
// subscription (broker.SubscribeOptions.Ephemeral, log topics only) is a
// consumer of its own with a generated name, DeliverNew, its state in
// memory, deleted by Close (and by the Broker's Close) and by the server
// once no Fetch reached it for EphemeralInactiveThreshold.
package jetstream

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skyjoin/skyjoin/internal/broker"
)

var (
	_ broker.Broker         = (*Broker)(nil)
	_ broker.Backlogger     = (*Broker)(nil)
	_ broker.Browser        = (*Broker)(nil)
	_ broker.ByteBacklogger = (*Broker)(nil)
)

const (
	// maxPendingPublishes bounds the async publishes awaiting a PubAck per
	// broker; a publisher beyond it waits for a free slot (the stall wait).
	maxPendingPublishes = 4096
	// defaultStallWait is how long one message waits for a free publish
	// slot when the context has no deadline.
	defaultStallWait = 5 * time.Second
	// pubAckTimeout bounds the wait for one PubAck, so that a stuck server
	// cannot leak pending publishes when callers pass no deadline.
	pubAckTimeout = 30 * time.Second
	// apiTimeout bounds JetStream API calls made without a deadline.
	apiTimeout = 10 * time.Second
	// dedupWindow is how long a Message.ID is remembered for dedup.
	dedupWindow = 2 * time.Minute
	// startTimeout bounds the embedded server's start.
	startTimeout = 30 * time.Second
	// drainTimeout bounds Close's drain of the connection.
	drainTimeout = 10 * time.Second
)

// EphemeralInactiveThreshold is how long the server keeps an ephemeral
// subscription's consumer that no Fetch reached: after a crash it lingers
// this long; a live process that does not fetch for this long loses it
// (Fetch then fails with broker.ErrSubscriptionGone).
const EphemeralInactiveThreshold = 5 * time.Minute

// Broker is a JetStream broker.Broker. It is safe for concurrent use.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server // nil for an external server
	nc     *nats.Conn
	js     jetstream.JetStream
	lock   *flock.Flock // nil for an external server
	closed atomic.Bool

	connClosed chan struct{} // closed by the connection's ClosedHandler

	mu         sync.Mutex
	streams    map[string]jetstream.Stream // by topic
	ephemerals map[*Subscription]struct{}  // open ephemeral subscriptions

	closeOnce sync.Once
	closeErr  error
}

// Open starts the embedded server (taking an exclusive lock on its store)
// or connects to the external one.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("jetstream: open: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.withDefaults()
	b := &Broker{
		cfg:        cfg,
		log:        log.With(slog.String("component", "broker"), slog.String("backend", "jetstream")),
		connClosed: make(chan struct{}),
		streams:    make(map[string]jetstream.Stream),
		ephemerals: make(map[*Subscription]struct{}),
	}
	if err := b.open(ctx); err != nil {
		b.shutdown()
		return nil, fmt.Errorf("jetstream: open: %w", err)
	}
	return b, nil
}

func (b *Broker) open(ctx context.Context) error {
	connOpts := []nats.Option{
		nats.Name("skyjoin"),
		nats.ClosedHandler(func(*nats.Conn) { close(b.connClosed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			b.log.Warn("jetstream: connection error", slog.String("subject", subj), slog.Any("error", err))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("jetstream: disconnected", slog.Any("error", err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("jetstream: reconnected", slog.String("server", nc.ConnectedUrlRedacted()))
		}),
	}

	url := b.cfg.URL
	if b.cfg.embedded() {
		if err := b.startServer(); err != nil {
			return err
		}
		connOpts = append(connOpts, nats.InProcessServer(b.srv))
		url = b.srv.ClientURL()
	} else {
		connOpts = append(connOpts, nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	}

	nc, err := nats.Connect(url, connOpts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redactedURL(b.cfg.URL), err)
	}
	b.nc = nc
	if mp := nc.MaxPayload(); mp < int64(b.cfg.MaxMsgSize) {
		b.log.Warn("jetstream: server max_payload is below the configured max message size",
			slog.Int64("max_payload", mp), slog.Int("max_msg_size", b.cfg.MaxMsgSize))
	}

	b.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPendingPublishes),
		jetstream.WithPublishAsyncTimeout(pubAckTimeout),
		jetstream.WithDefaultTimeout(apiTimeout),
	)
	if err != nil {
		return fmt.Errorf("jetstream context: %w", err)
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream account info on %s: %w", redactedURL(b.cfg.URL), classify(err))
	}
	b.log.Info("jetstream: broker open", slog.String("url", redactedURL(b.cfg.URL)),
		slog.String("data_dir", b.cfg.DataDir), slog.String("listen", b.cfg.Listen))
	return nil
}

// startServer locks the store and starts the embedded server.
func (b *Broker) startServer() error {
	if err := os.MkdirAll(b.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	lockPath := filepath.Join(b.cfg.DataDir, "jetstream.lock")
	lk := flock.New(lockPath)
	ok, err := lk.TryLock()
	if err != nil {
		return fmt.Errorf("lock %s: %w", lockPath, err)
	}
	if !ok {
		return fmt.Errorf("data dir %s is in use by another skyjoin process (lock %s is held)", b.cfg.DataDir, lockPath)
	}
	b.lock = lk

	opts := &server.Options{
		ServerName:   "skyjoin",
		JetStream:    true,
		StoreDir:     b.cfg.DataDir, // the server stores under StoreDir/jetstream
		SyncInterval: b.cfg.SyncInterval,
		MaxPayload:   int32(b.cfg.MaxMsgSize),
		NoSigs:       true,
		DontListen:   b.cfg.Listen == "",
	}
	if b.cfg.Listen != "" {
		host, port, _ := net.SplitHostPort(b.cfg.Listen) // checked by Validate
		opts.Host = host
		opts.Port, _ = strconv.Atoi(port)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			b.log.Warn("jetstream: embedded server listens beyond loopback without authentication",
				slog.String("listen", b.cfg.Listen))
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("embedded server: %w", err)
	}
	srv.SetLoggerV2(serverLogger{b.log}, false, false, false)
	b.srv = srv
	srv.Start()
	if !srv.ReadyForConnections(startTimeout) {
		return fmt.Errorf("embedded server not ready after %v", startTimeout)
	}
	if !srv.JetStreamEnabled() {
		return errors.New("embedded server started without JetStream")
	}
	return nil
}

// Close drains and closes the connection, shuts the embedded server down and
// releases the store lock. It is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed.Store(true)
		eph := make([]*Subscription, 0, len(b.ephemerals))
		for s := range b.ephemerals {
			eph = append(eph, s)
		}
		b.mu.Unlock()
		// Delete the ephemeral consumers now rather than leave them to the
		// server's inactivity threshold (an external server keeps running).
		for _, s := range eph {
			s.deleteConsumer()
		}
		b.closeErr = b.shutdown()
		b.log.Info("jetstream: broker closed")
	})
	return b.closeErr
}

func (b *Broker) shutdown() error {
	var errs []error
	if b.nc != nil {
		// Drain lets in-flight acks and replies through; a connection that
		// cannot drain (reconnecting to a server that is gone) is closed.
		if err := b.nc.Drain(); err == nil {
			select {
			case <-b.connClosed:
			case <-time.After(drainTimeout):
				errs = append(errs, fmt.Errorf("drain: not done after %v", drainTimeout))
			}
		} else {
			b.log.Debug("jetstream: close without drain", slog.Any("error", err))
		}
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	if b.lock != nil {
		if err := b.lock.Unlock(); err != nil {
			errs = append(errs, fmt.Errorf("unlock store: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jetstream: close: %w", err)
	}
	return nil
}

// JetStream is the broker's JetStream API on its connection (in-process
// for the embedded server), for other users of the same server: the
// registry keeps its key-value bucket there. It is closed with the broker.
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

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
	if b.closed.Load() && !errors.Is(err, broker.ErrClosed) {
		return fmt.Errorf("jetstream: %s: %w: %w", op, broker.ErrClosed, err)
	}
	return fmt.Errorf("jetstream: %s: %w", op, classify(err))
}

var topicRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// streamName is the stream of a topic, e.g. SKYJOIN_EVENTS.
func streamName(topic string) string { return "SKYJOIN_" + strings.ToUpper(topic) }

// subject is the subject of a topic, e.g. skyjoin.events.
func subject(topic string) string { return "skyjoin." + topic }

// stream returns the topic's stream, creating or updating it on first use.
func (b *Broker) stream(ctx context.Context, topic string) (jetstream.Stream, error) {
	if !topicRE.MatchString(topic) {
		return nil, fmt.Errorf("invalid topic %q: want 1-64 of [a-z0-9_-]", topic)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.streams[topic]; ok {
		return s, nil
	}
	cfg := jetstream.StreamConfig{
		Name:        streamName(topic),
		Description: "skyjoin topic " + topic,
		Subjects:    []string{subject(topic)},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		MaxMsgSize:  int32(b.cfg.MaxMsgSize),
		Duplicates:  dedupWindow,
		AllowDirect: true,
	}
	switch topic { // isLog
	case broker.TopicDeadLetter:
		cfg.Retention = jetstream.LimitsPolicy
		cfg.MaxAge = b.cfg.DeadLetterMaxAge
		cfg.Discard = jetstream.DiscardOld
		cfg.Duplicates = min(dedupWindow, cfg.MaxAge)
	case broker.TopicRecords:
		cfg.Retention = jetstream.LimitsPolicy
		cfg.MaxAge = b.cfg.RecordsMaxAge
		cfg.MaxBytes = b.cfg.RecordsMaxBytes
		cfg.Discard = jetstream.DiscardOld // a reader that falls behind loses the oldest, the writer never waits
		cfg.Duplicates = min(dedupWindow, cfg.MaxAge)
	default:
		cfg.Retention = jetstream.WorkQueuePolicy
		cfg.Discard = jetstream.DiscardNew // never drop stored work silently
	}
	s, err := b.js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	b.streams[topic] = s
	return s, nil
}

// Publish stores msgs on topic. It publishes every message asynchronously and
// returns nil once every one has its PubAck.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	op := "publish to " + topic
	if err := b.errIfClosed(); err != nil {
		return b.fail(op, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	// A connection that is down answers at once: the client would only
	// buffer the messages until it is back, and the caller (ingest) is
	// better told now, so that it can answer 503 and its client retry.
	if !b.nc.IsConnected() {
		return b.fail(op, fmt.Errorf("not connected to the broker (%v): %w", b.nc.Status(), nats.ErrConnectionReconnecting))
	}
	if _, err := b.stream(ctx, topic); err != nil {
		return b.fail(op, err)
	}
	subj := subject(topic)
	stallWait := defaultStallWait
	if dl, ok := ctx.Deadline(); ok {
		stallWait = max(time.Until(dl), time.Millisecond)
	}

	// Check every message before sending any.
	nms := make([]*nats.Msg, len(msgs))
	trace := broker.TraceAttributes(ctx) // W3C trace context of the publisher, if any
	for i, m := range msgs {
		nm, err := b.toNATS(subj, m)
		if err != nil {
			return fmt.Errorf("jetstream: %s: message %d: %w", op, i, err)
		}
		for k, v := range trace {
			nm.Header.Set(k, v)
		}
		nms[i] = nm
	}

	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var sendErr error
	for i, nm := range nms {
		if err := ctx.Err(); err != nil {
			sendErr = err
			break
		}
		opts := []jetstream.PublishOpt{jetstream.WithStallWait(stallWait)}
		if id := msgs[i].ID; id != "" {
			opts = append(opts, jetstream.WithMsgID(id))
		}
		f, err := b.js.PublishMsgAsync(nm, opts...)
		if err != nil {
			sendErr = fmt.Errorf("message %d of %d: %w", i, len(msgs), err)
			break
		}
		futures = append(futures, f)
	}

	var errs []error
	if sendErr != nil {
		errs = append(errs, sendErr)
	}
	acked := 0
wait:
	for _, f := range futures {
		select {
		case <-f.Ok():
			acked++
		case err := <-f.Err():
			errs = append(errs, err)
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			break wait
		}
	}
	if len(errs) > 0 {
		err := errs[0]
		if len(errs) > 1 {
			err = fmt.Errorf("%w (and %d more errors)", errs[0], len(errs)-1)
		}
		return b.fail(fmt.Sprintf("%s: %d of %d messages acked", op, acked, len(msgs)), err)
	}
	return nil
}

// toNATS builds the NATS message of m: attributes become headers.
func (b *Broker) toNATS(subj string, m *broker.Message) (*nats.Msg, error) {
	if m == nil {
		return nil, errors.New("nil message")
	}
	nm := &nats.Msg{Subject: subj, Data: m.Data, Header: make(nats.Header, len(m.Attributes)+1)}
	size := len(m.Data) + len(m.ID)
	for k, v := range m.Attributes {
		if err := checkAttribute(k, v); err != nil {
			return nil, err
		}
		nm.Header.Set(k, v)
		size += len(k) + len(v) + 4
	}
	if size > b.cfg.MaxMsgSize {
		return nil, fmt.Errorf("message of %d bytes exceeds the maximum of %d", size, b.cfg.MaxMsgSize)
	}
	return nm, nil
}

// checkAttribute rejects attributes that cannot travel as NATS headers.
func checkAttribute(k, v string) error {
	if k == "" {
		return errors.New("empty attribute name")
	}
	if hasReservedPrefix(k) {
		return fmt.Errorf("attribute %q: the Nats- prefix is reserved", k)
	}
	if strings.ContainsAny(k, " \t\r\n:") {
		return fmt.Errorf("attribute %q: name must not contain whitespace or ':'", k)
	}
	if strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("attribute %q: value must not contain line breaks", k)
	}
	return nil
}

func hasReservedPrefix(k string) bool {
	return len(k) >= 5 && strings.EqualFold(k[:5], "Nats-")
}

// attributes turns headers back into attributes, dropping NATS' own.
func attributes(h nats.Header) map[string]string {
	var attrs map[string]string
	for k, vs := range h {
		if hasReservedPrefix(k) || len(vs) == 0 {
			continue
		}
		if attrs == nil {
			attrs = make(map[string]string, len(h))
		}
		attrs[k] = vs[0]
	}
	return attrs
}

// Subscribe opens the durable pull consumer name on topic, creating it or
// updating its AckWait and MaxAckPending; with opts.Ephemeral, a consumer
// of its own (see the package documentation).
func (b *Broker) Subscribe(ctx context.Context, topic, name string, opts broker.SubscribeOptions) (broker.Subscription, error) {
	op := fmt.Sprintf("subscribe to %s as %s", topic, name)
	if err := b.errIfClosed(); err != nil {
		return nil, b.fail(op, err)
	}
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("jetstream: %s: invalid subscription name: want 1-64 of [A-Za-z0-9_-]", op)
	}
	if opts.AckWait < 0 || opts.MaxOutstanding < 0 {
		return nil, fmt.Errorf("jetstream: %s: negative AckWait or MaxOutstanding", op)
	}
	if opts.Ephemeral && !isLog(topic) {
		return nil, fmt.Errorf("jetstream: %s: ephemeral subscriptions are for fan-out topics (%s, %s), not a work queue",
			op, broker.TopicRecords, broker.TopicDeadLetter)
	}
	s, err := b.stream(ctx, topic)
	if err != nil {
		return nil, b.fail(op, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "skyjoin subscription " + name,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cmp(opts.AckWait, 30*time.Second),
		MaxDeliver:    -1, // the application dead-letters poison messages itself
		MaxAckPending: cmp(opts.MaxOutstanding, 10_000),
		FilterSubject: subject(topic),
	}
	if topic == broker.TopicRecords {
		// A new subscription starts now, as on Pub/Sub, rather than with up
		// to RecordsMaxAge of history.
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if opts.Ephemeral {
		return b.subscribeEphemeral(ctx, s, op, topic, name, cc)
	}
	c, err := s.CreateOrUpdateConsumer(ctx, cc)
	if err != nil {
		if !isLog(topic) {
			err = fmt.Errorf("%w (a work-queue topic takes one subscription name)", err)
		}
		return nil, b.fail(op, err)
	}
	b.log.Debug("jetstream: subscribed", slog.String("topic", topic), slog.String("subscription", name))
	return &Subscription{b: b, c: c, topic: topic, name: name}, nil
}

// subscribeEphemeral creates an ephemeral consumer from cc.
func (b *Broker) subscribeEphemeral(ctx context.Context, s jetstream.Stream, op, topic, name string, cc jetstream.ConsumerConfig) (broker.Subscription, error) {
	cc.Durable = ""
	cc.Name = name + "-" + rand.Text() // unique; the name shows whose it is
	cc.Description = "skyjoin ephemeral subscription " + name
	cc.DeliverPolicy = jetstream.DeliverNewPolicy
	cc.InactiveThreshold = EphemeralInactiveThreshold
	cc.MemoryStorage = true // its state need not outlive the process
	c, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		return nil, b.fail(op, err)
	}
	sub := &Subscription{b: b, c: c, topic: topic, name: name, stream: s, ephemeral: cc.Name}
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		sub.deleteConsumer()
		return nil, b.fail(op, broker.ErrClosed)
	}
	b.ephemerals[sub] = struct{}{}
	b.mu.Unlock()
	b.log.Debug("jetstream: subscribed", slog.String("topic", topic), slog.String("subscription", name),
		slog.String("consumer", cc.Name))
	return sub, nil
}

// forget removes a closed ephemeral subscription.
func (b *Broker) forget(s *Subscription) {
	b.mu.Lock()
	delete(b.ephemerals, s)
	b.mu.Unlock()
}

// isLog reports whether topic is kept as a log (Limits retention) rather
// than a work queue.
func isLog(topic string) bool {
	return topic == broker.TopicDeadLetter || topic == broker.TopicRecords
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// cmp returns v, or def when v is zero.
func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Backlog returns the messages waiting on a subscription: not yet delivered
// plus delivered and not yet acked. For a subscription that does not exist
// yet, it is every message stored on the topic.
func (b *Broker) Backlog(ctx context.Context, topic, subscription string) (int64, error) {
	op := fmt.Sprintf("backlog of %s/%s", topic, subscription)
	if err := b.errIfClosed(); err != nil {
		return 0, b.fail(op, err)
	}
	s, err := b.stream(ctx, topic)
	if err != nil {
		return 0, b.fail(op, err)
	}
	c, err := s.Consumer(ctx, subscription)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		si, err := s.Info(ctx)
		if err != nil {
			return 0, b.fail(op, err)
		}
		return int64(si.State.Msgs), nil
	}
	if err != nil {
		return 0, b.fail(op, err)
	}
	ci := c.CachedInfo()
	return int64(ci.NumPending) + int64(ci.NumAckPending), nil
}

// BacklogBytes returns the bytes stored on a topic's stream: for a work-queue
// topic, the messages not yet acked.
func (b *Broker) BacklogBytes(ctx context.Context, topic string) (int64, error) {
	op := "backlog bytes of " + topic
	if err := b.errIfClosed(); err != nil {
		return 0, b.fail(op, err)
	}
	s, err := b.stream(ctx, topic)
	if err != nil {
		return 0, b.fail(op, err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		return 0, b.fail(op, err)
	}
	return int64(si.State.Bytes), nil
}

// Browse calls fn for each message stored on topic, oldest first, without
// consuming it.
func (b *Broker) Browse(ctx context.Context, topic string, fn func(*broker.Message) bool) error {
	op := "browse " + topic
	if err := b.errIfClosed(); err != nil {
		return b.fail(op, err)
	}
	s, err := b.stream(ctx, topic)
	if err != nil {
		return b.fail(op, err)
	}
	subj := subject(topic)
	for seq := uint64(1); ; {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return b.fail(fmt.Sprintf("%s: message %d", op, seq), err)
		}
		m := &broker.Message{
			ID:          strconv.FormatUint(raw.Sequence, 10),
			Data:        raw.Data,
			Attributes:  attributes(raw.Header),
			PublishedAt: raw.Time,
		}
		if !fn(m) {
			return nil
		}
		seq = raw.Sequence + 1
	}
}

// Delete removes one stored message of topic by ID (its stream sequence)
// and overwrites it in the stream's files.
// Deleting a message that is not there is not an error.
func (b *Broker) Delete(ctx context.Context, topic, id string) error {
	op := fmt.Sprintf("delete %s from %s", id, topic)
	if err := b.errIfClosed(); err != nil {
		return b.fail(op, err)
	}
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil || seq == 0 {
		return fmt.Errorf("jetstream: %s: %w: want a stream sequence number", op, broker.ErrInvalidID)
	}
	s, err := b.stream(ctx, topic)
	if err != nil {
		return b.fail(op, err)
	}
	// Overwritten on disk, not only marked deleted: dead letters hold
	// events as sent, and an erasure deletes them (docs/data.md).
	if err := s.SecureDeleteMsg(ctx, seq); err != nil {
		// The server has no "not found" code for deletes: look.
		if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return nil
		}
		return b.fail(op, err)
	}
	return nil
}
