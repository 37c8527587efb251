// Package enrich is the streaming worker: it pulls batches of messages from
// the broker, decodes and validates their events, joins the weather, writes
// the enriched records to the store, publishes the stored records to the
// records topic and only then acks the messages.
// Events that cannot be processed go to the dead-letter topic with their
// reason, and the message that carried them is acked, so that one bad event
// never blocks the stream.
package enrich

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/retry"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// Config configures the worker.
type Config struct {
	Subscription string // durable subscription name
	MaxMessages  int    // messages per fetch
	// MaxEvents bounds the events of a batch, as the messages' count
	// attributes say: the worker fetches fewer messages when they are
	// large (a batch of 64 messages of 1,000 events held 64k events, and
	// their JSON, decoded events and records, in memory at once). 0: no
	// bound but MaxMessages.
	MaxEvents    int
	FetchWait    time.Duration // longest wait for the first message of a batch
	Linger       time.Duration // wait for more messages after a small fetch
	AckWait      time.Duration // redelivery after a crash
	RetryDelay   time.Duration // first delay before a failed message is delivered again; doubles per attempt
	MaxRetry     time.Duration // longest such delay
	MaxAttempts  int           // deliveries of a poison message before it is dead-lettered
	MaxClockSkew time.Duration
	// OnWeatherFailure says what to do with events whose weather could not be
	// had after the weather service's retries: WeatherFailureStore (the
	// default; stored with status unavailable and the reason, for `skyjoin
	// backfill`) or WeatherFailureRetry (the batch is neither stored nor
	// acked: the broker delivers it again). A spent weather quota always holds
	// the batch (backpressure), whatever this says.
	OnWeatherFailure string
	// RequireLocation dead-letters an event without coordinates (stage
	// validate) instead of storing it with status no_location. Set from the
	// process's one --require-location flag, as ingest's is.
	RequireLocation bool
}

// OnWeatherFailure values.
const (
	WeatherFailureStore = "store"
	WeatherFailureRetry = "retry"
)

// ErrWeatherHeld marks a batch that Process did not store because weather
// could not be had and it must come back later (OnWeatherFailure retry, or
// a spent quota): an outage of the weather provider, not a poison message.
var ErrWeatherHeld = errors.New("batch held for weather")

// DefaultBatch is --enrich-batch: broker messages per worker batch. Single
// events (one a message) fill a batch of 512 where 64 made eight times the
// store writes, each with its fixed cost: single-event ingest took 13 %
// more requests a second (docs/benchmarks.md, twenty-seventh round).
// Larger messages are bounded by DefaultBatchEvents instead.
const DefaultBatch = 512

// DefaultBatchEvents is --enrich-batch-events: events per worker batch, as
// far as whole messages allow. Against 8,192, batches of 4,096 events kept
// the saturated pipeline's throughput and CPU an event and took 80 MB less
// of peak RSS (docs/benchmarks.md, twenty-seventh round).
const DefaultBatchEvents = 4096

// RegisterFlags adds the worker's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Subscription, "enrich-subscription", "enrich", "durable broker subscription of the enrich worker")
	fs.IntVar(&c.MaxMessages, "enrich-batch", DefaultBatch, "broker messages per worker batch (each may hold up to ingest-max-events events)")
	fs.IntVar(&c.MaxEvents, "enrich-batch-events", DefaultBatchEvents, "events per worker batch, as far as whole messages allow (at least one message a batch; 0: enrich-batch alone)")
	fs.DurationVar(&c.Linger, "enrich-linger", 20*time.Millisecond, "after a fetch of less than half a batch (by enrich-batch-events), wait this long for more messages, so that one store write serves them (each write costs about 4 ms of CPU whatever its size); 0: never")
	fs.DurationVar(&c.FetchWait, "enrich-fetch-wait", 250*time.Millisecond, "longest wait for the first message of a batch")
	fs.DurationVar(&c.AckWait, "enrich-ack-wait", 30*time.Second, "how long a fetched message stays invisible before the broker delivers it again")
	fs.DurationVar(&c.RetryDelay, "enrich-retry-delay", time.Second, "first delay before a message that failed is delivered again (doubles with each attempt)")
	fs.DurationVar(&c.MaxRetry, "enrich-max-retry-delay", time.Minute, "longest delay before a failed message is delivered again")
	fs.IntVar(&c.MaxAttempts, "enrich-max-attempts", 5, "deliveries of a poison message (one that fails while others succeed) before it is dead-lettered")
	fs.DurationVar(&c.MaxClockSkew, "enrich-max-clock-skew", event.DefaultMaxClockSkew, "how far in the future occurred_at may be")
	fs.StringVar(&c.OnWeatherFailure, "enrich-on-weather-failure", WeatherFailureStore,
		"when weather cannot be had: store (the record is stored with enrichment status unavailable; see skyjoin backfill) or retry (the batch is redelivered later)")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var p platform.Problems
	if c.Subscription == "" {
		p.Addf("enrich-subscription must not be empty")
	}
	if c.MaxMessages < 1 {
		p.Addf("enrich-batch must be at least 1, got %d", c.MaxMessages)
	}
	if c.MaxEvents < 0 {
		p.Addf("enrich-batch-events must not be negative, got %d", c.MaxEvents)
	}
	if c.FetchWait <= 0 {
		p.Addf("enrich-fetch-wait must be positive, got %s", c.FetchWait)
	}
	if c.AckWait < time.Second {
		p.Addf("enrich-ack-wait must be at least 1s, got %s", c.AckWait)
	}
	if c.RetryDelay < 0 {
		p.Addf("enrich-retry-delay must not be negative, got %s", c.RetryDelay)
	}
	switch c.OnWeatherFailure {
	case "", WeatherFailureStore, WeatherFailureRetry:
	default:
		p.Addf("enrich-on-weather-failure must be %s or %s, got %q", WeatherFailureStore, WeatherFailureRetry, c.OnWeatherFailure)
	}
	if c.MaxRetry < c.RetryDelay {
		p.Addf("enrich-max-retry-delay (%s) must be at least enrich-retry-delay (%s)", c.MaxRetry, c.RetryDelay)
	}
	if c.MaxAttempts < 1 {
		p.Addf("enrich-max-attempts must be at least 1, got %d", c.MaxAttempts)
	}
	return p.Err()
}

// Writer is the store side the worker needs.
type Writer interface {
	Write(ctx context.Context, recs []event.Record) error
}

// Stats are the worker's counters since it started.
type Stats struct {
	Messages     int64 // broker messages processed and acked
	Stored       int64 // records written (including duplicates the store ignored)
	DeadLettered int64 // events sent to the dead-letter topic
	Unavailable  int64 // records stored without weather
	Stale        int64 // records stored with stale weather
	WeatherHeld  int64 // batches held for redelivery because weather could not be had
	Failed       int64 // batches that failed and were nacked
}

// Worker is the enrich stage.
type Worker struct {
	cfg    Config
	sub    broker.Subscription
	pub    broker.Publisher
	joiner weather.Joiner
	store  Writer
	log    *slog.Logger
	now    func() time.Time
	stats  *counters // shared with the worker's push handler
	// push: the worker handles Pub/Sub push requests (PushHandler), one
	// message each.
	push bool
	// OnStored, if set, is called with each batch of records once stored.
	OnStored func([]event.Record)
	// Observer, if set, is told about every batch (metrics and traces; see
	// Telemetry).
	Observer Observer
	// PII, if set, is applied to every record after the weather join (which
	// needs the exact place) and before the store write, so that the store,
	// the records topic and everything downstream see only what it keeps.
	// Dead letters keep the event as sent, to be replayed.
	PII *pii.Policy
}

// New returns a worker reading sub, publishing dead letters with pub.
func New(cfg Config, sub broker.Subscription, pub broker.Publisher, j weather.Joiner, w Writer, log *slog.Logger) *Worker {
	return &Worker{cfg: cfg, sub: sub, pub: pub, joiner: j, store: w, log: log, now: time.Now, stats: &counters{}}
}

// counters are the worker's counters, and when it last stored a batch.
type counters struct {
	messages, stored, dead, unavailable, stale, held, failed atomic.Int64
	lastOK                                                   atomic.Int64 // unix nanoseconds
}

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Messages:     w.stats.messages.Load(),
		Stored:       w.stats.stored.Load(),
		DeadLettered: w.stats.dead.Load(),
		Unavailable:  w.stats.unavailable.Load(),
		Stale:        w.stats.stale.Load(),
		WeatherHeld:  w.stats.held.Load(),
		Failed:       w.stats.failed.Load(),
	}
}

// Run processes batches until ctx is done, then returns after finishing the
// batch in hand. hard bounds that last batch: when hard is done, the batch in
// hand is abandoned (not acked), and the broker delivers it again later.
func (w *Worker) Run(ctx, hard context.Context) error {
	// A failed fetch is retried until the broker is back, with a backoff
	// from 100 ms to 5 s (full jitter) that starts again after a success.
	fetchRetry := retry.Policy{
		Backoff:   retry.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second},
		Retryable: func(err error) bool { return !errors.Is(err, broker.ErrClosed) },
		OnRetry: func(_ context.Context, _ int, err error, wait time.Duration) {
			w.log.Warn("enrich: fetch failed; retrying", "error", err.Error(), "backoff", wait.String())
		},
	}
	// The first fetch takes one message, to learn how large they are.
	fetch := w.cfg.MaxMessages
	if w.cfg.MaxEvents > 0 {
		fetch = 1
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		var msgs []*broker.Message
		err := retry.Call(ctx, fetchRetry, func(ctx context.Context) (err error) {
			msgs, err = w.sub.Fetch(ctx, fetch, w.cfg.FetchWait)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("enrich: fetch: %w", err)
		}
		if len(msgs) == 0 {
			continue
		}
		if sum, _ := counts(msgs); w.cfg.Linger > 0 && len(msgs) < fetch && sum < w.cfg.MaxEvents/2 {
			// A small batch: wait a little for more, so that the store
			// write and the records publish serve more events.
			if retry.Sleep(ctx, w.cfg.Linger) == nil {
				more, err := w.sub.Fetch(ctx, fetch-len(msgs), 0)
				if err == nil {
					msgs = append(msgs, more...)
				}
			}
		}
		fetch = w.nextFetch(msgs)
		// The batch in hand is finished even if ctx is cancelled meanwhile,
		// within the ack wait (after which the broker delivers it again
		// anyway) and until hard is done.
		bctx, cancel := context.WithTimeout(hard, w.cfg.AckWait)
		outage := w.handle(bctx, msgs)
		cancel()
		if outage > 0 && retry.Sleep(ctx, outage) != nil {
			return nil
		}
	}
}

// counts reads the count attribute of each message (0 where it is
// missing or not a number), and returns their sum and the largest.
func counts(msgs []*broker.Message) (sum, largest int) {
	for _, m := range msgs {
		if n, err := strconv.Atoi(m.Attributes[envelope.AttrCount]); err == nil && n > 0 {
			sum += n
			largest = max(largest, n)
		}
	}
	return sum, largest
}

// nextFetch is how many messages the next fetch asks for: as many of the
// largest message of msgs as MaxEvents holds, from 1 to MaxMessages.
func (w *Worker) nextFetch(msgs []*broker.Message) int {
	if w.cfg.MaxEvents <= 0 {
		return w.cfg.MaxMessages
	}
	_, largest := counts(msgs)
	return min(max(w.cfg.MaxEvents/max(largest, 1), 1), w.cfg.MaxMessages)
}

// handle processes a batch. When the batch fails, it retries each message
// alone to tell a poison message (fails while others succeed) from an outage
// (every message fails). A poison message is delivered again with backoff
// and dead-lettered after MaxAttempts deliveries; in an outage nothing is
// dead-lettered, every message is delivered again with backoff, and handle
// returns how long the worker should pause.
func (w *Worker) handle(ctx context.Context, msgs []*broker.Message) (pause time.Duration) {
	if w.Observer == nil {
		pause, _ = w.handleBatch(ctx, msgs)
		return pause
	}
	start := time.Now()
	ctx = w.Observer.BatchStart(ctx, msgs)
	pause, err := w.handleBatch(ctx, msgs)
	w.Observer.BatchDone(ctx, len(msgs), err, time.Since(start))
	return pause
}

// handleBatch is handle; it also returns the error of the batch's first
// attempt.
func (w *Worker) handleBatch(ctx context.Context, msgs []*broker.Message) (pause time.Duration, _ error) {
	err := w.process(ctx, msgs)
	if err == nil {
		w.stats.lastOK.Store(w.now().UnixNano())
		return 0, nil
	}
	w.stats.failed.Add(1)
	if ctx.Err() != nil {
		w.nack(msgs, err)
		return 0, err
	}
	if errors.Is(err, ErrWeatherHeld) {
		// Weather is out for the batch (provider down, quota spent) and the
		// worker holds such events: an outage, not poison. Deliver again
		// when the provider says it may answer, and pause until then.
		delay := max(weather.RetryAfter(err), w.retryDelay(1))
		w.nackAfter(msgs, delay, err)
		return min(delay, w.cfg.MaxRetry), err
	}
	type failure struct {
		m   *broker.Message
		err error
	}
	var failed []failure
	succeeded := 0
	if len(msgs) == 1 {
		failed = []failure{{msgs[0], err}}
	} else {
		for _, m := range msgs {
			if e := w.process(ctx, []*broker.Message{m}); e != nil {
				failed = append(failed, failure{m, e})
			} else {
				succeeded++
			}
		}
		if succeeded > 0 && len(failed) > 0 {
			// Some went through: an outage may have ended during the pass.
			// A message that failed before that is no poison: try those
			// once more before judging them.
			again := failed[:0]
			for _, f := range failed {
				if e := w.process(ctx, []*broker.Message{f.m}); e != nil {
					again = append(again, failure{f.m, e})
				} else {
					succeeded++
				}
			}
			failed = again
		}
	}
	for _, f := range failed {
		// A panic is the message's fault whatever the others did.
		_, panicked := errors.AsType[*panicError](f.err)
		poison := panicked || succeeded > 0 || w.othersSucceed()
		if poison && f.m.Deliveries >= w.cfg.MaxAttempts {
			stage := "store"
			if panicked {
				stage = "enrich"
			}
			derr := w.publishDead(ctx, []DeadLetter{{Msg: f.m, Index: -1, Data: f.m.Data, Stage: stage,
				Reason: f.err.Error()}}, w.now().UTC())
			if derr == nil {
				derr = w.sub.Ack(ctx, f.m)
			}
			if derr == nil {
				if w.Observer != nil {
					w.Observer.Settled(ctx, true, 1)
				}
				continue
			}
			f.err = derr
		}
		w.nack([]*broker.Message{f.m}, f.err)
	}
	if succeeded == 0 && len(failed) > 0 {
		return min(w.retryDelay(1), time.Second), err
	}
	return 0, err
}

// retryDelay is the redelivery delay after the given delivery: a
// retry.Backoff from RetryDelay doubling per delivery up to MaxRetry, with
// full jitter (uniform between zero and that ceiling) so that messages that
// failed together do not come back together.
func (w *Worker) retryDelay(deliveries int) time.Duration {
	return retry.Backoff{Initial: w.cfg.RetryDelay, Max: w.cfg.MaxRetry}.Delay(deliveries)
}

func (w *Worker) nack(msgs []*broker.Message, cause error) {
	w.nackAfter(msgs, w.retryDelay(msgs[0].Deliveries), cause)
}

func (w *Worker) nackAfter(msgs []*broker.Message, delay time.Duration, cause error) {
	w.log.Warn("enrich: delivering again later", "error", cause.Error(), "messages", len(msgs),
		"deliveries", msgs[0].Deliveries, "retry_in", delay.String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.sub.Nack(ctx, delay, msgs...); err != nil {
		w.log.Warn("enrich: nack failed; the broker delivers the messages again after the ack wait", "error", err.Error())
	}
	if w.Observer != nil {
		w.Observer.Settled(ctx, false, len(msgs))
	}
}

// phaseStart tells the Observer, if any, that a phase starts.
func (w *Worker) phaseStart(ctx context.Context, p Phase) (context.Context, time.Time) {
	if w.Observer == nil {
		return ctx, time.Time{}
	}
	return w.Observer.PhaseStart(ctx, p), time.Now()
}

// phaseDone tells the Observer, if any, that a phase ended.
func (w *Worker) phaseDone(ctx context.Context, p Phase, start time.Time, n int, err error) {
	if w.Observer != nil {
		w.Observer.PhaseDone(ctx, p, n, err, time.Since(start))
	}
}

// panicError is a panic while processing a message, turned into an error.
type panicError struct{ v any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.v) }

// process is Process with panics turned into errors.
func (w *Worker) process(ctx context.Context, msgs []*broker.Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{v}
		}
	}()
	return w.Process(ctx, msgs)
}

// core is the worker's enrichment Core, as configured now.
func (w *Worker) core() *Core {
	return &Core{Joiner: w.joiner, MaxClockSkew: w.cfg.MaxClockSkew, RequireLocation: w.cfg.RequireLocation,
		OnWeatherFailure: w.cfg.OnWeatherFailure, PII: w.PII, Now: w.now}
}

// Process handles one batch: decode, validate, enrich (the Core), store,
// dead-letter, ack. It returns an error, without acking, if the batch must
// be retried.
func (w *Worker) Process(ctx context.Context, msgs []*broker.Message) error {
	core := w.core()
	pctx, start := w.phaseStart(ctx, PhaseDecode)
	b := core.Decode(msgs)
	w.phaseDone(pctx, PhaseDecode, start, len(msgs), nil)
	now, dead, recs := b.Now, b.Dead, b.Records
	if len(recs) > 0 {
		pctx, start := w.phaseStart(ctx, PhaseWeather)
		err := core.Join(pctx, &b)
		held := errors.Is(err, ErrWeatherHeld)
		if held {
			w.phaseDone(pctx, PhaseWeather, start, b.Lookups, nil)
			// Nothing of the batch is stored or acked: it comes back.
			w.stats.held.Add(1)
			return err
		}
		w.phaseDone(pctx, PhaseWeather, start, b.Lookups, err)
		if err != nil {
			return err
		}
		pctx, start = w.phaseStart(ctx, PhaseStore)
		var lines [][]byte // the stored records' JSON, from a store that gives it
		if lw, ok := w.store.(store.LineWriter); ok {
			lines, err = lw.WriteLines(pctx, recs)
		} else {
			err = w.store.Write(pctx, recs)
		}
		w.phaseDone(pctx, PhaseStore, start, len(recs), err)
		if rejected, ok := errors.AsType[store.RejectedRows](err); ok {
			// The store refused some records for what they hold and stored
			// the rest: dead-letter the refused ones with its reason.
			reasons := rejected.Reasons()
			kept := recs[:0:0]
			for i := range recs {
				reason, bad := reasons[i]
				if !bad {
					kept = append(kept, recs[i])
					continue
				}
				o := b.Origins[i]
				dead = append(dead, DeadLetter{Msg: o.Msg, Index: o.Index, Data: o.Raw, Stage: "store", Reason: reason})
			}
			recs, lines, err = kept, nil, nil
		}
		if err != nil {
			return fmt.Errorf("enrich: store %d records: %w", len(recs), err)
		}
		if w.Observer != nil {
			w.Observer.Stored(ctx, recs, w.now().UTC())
		}
		if err := w.publishRecords(ctx, recs, lines); err != nil {
			return err
		}
		w.stats.stored.Add(int64(len(recs)))
		w.stats.unavailable.Add(int64(b.Unavailable))
		w.stats.stale.Add(int64(b.Stale))
	}
	if len(dead) > 0 {
		if err := w.publishDead(ctx, dead, now); err != nil {
			return err
		}
	}
	pctx, start = w.phaseStart(ctx, PhaseAck)
	err := w.sub.Ack(pctx, msgs...)
	w.phaseDone(pctx, PhaseAck, start, len(msgs), err)
	if err != nil {
		// The records are stored; a redelivery is harmless (idempotent store).
		return fmt.Errorf("enrich: ack %d messages: %w", len(msgs), err)
	}
	if w.Observer != nil {
		w.Observer.Settled(ctx, true, len(msgs))
	}
	w.stats.messages.Add(int64(len(msgs)))
	if w.OnStored != nil && len(recs) > 0 {
		w.OnStored(recs)
	}
	return nil
}

// publishRecords publishes the stored records to the records topic, for
// every downstream consumer (the live streams of every serve instance,
// webhook delivery), before the batch is acked: a crash after the store
// committed and before this publish makes the broker deliver the batch
// again, and the store then returns the records it holds (store.Writer), so
// they are published then. Records with Seq 0 are later copies of an event
// in the same batch, dropped by the store. lines, if not nil, are the
// records' JSON as the store gave it back (store.LineWriter), sent as it is
// rather than encoding the records again.
func (w *Worker) publishRecords(ctx context.Context, recs []event.Record, lines [][]byte) error {
	stored, storedLines := recs, lines
	for i := range recs {
		if recs[i].Seq == 0 {
			stored = make([]event.Record, 0, len(recs))
			storedLines = nil
			if lines != nil {
				storedLines = make([][]byte, 0, len(recs))
			}
			for j := range recs {
				if recs[j].Seq != 0 {
					stored = append(stored, recs[j])
					if lines != nil {
						storedLines = append(storedLines, lines[j])
					}
				}
			}
			break
		}
	}
	if len(stored) == 0 {
		return nil
	}
	pctx, start := w.phaseStart(ctx, PhaseRecords)
	msgs, err := envelope.NewRecordsMessagesOf(stored, storedLines, 0)
	if err == nil {
		err = w.pub.Publish(pctx, broker.TopicRecords, msgs...)
	}
	w.phaseDone(pctx, PhaseRecords, start, len(stored), err)
	if err != nil {
		return fmt.Errorf("enrich: publish %d stored records: %w", len(stored), err)
	}
	return nil
}

func (w *Worker) publishDead(ctx context.Context, dead []DeadLetter, now time.Time) error {
	out := make([]*broker.Message, len(dead))
	for i, d := range dead {
		out[i] = d.Message(w.cfg.Subscription, now)
		w.log.WarnContext(ctx, "enrich: dead-lettered", "stage", d.Stage, "reason", d.Reason,
			"message_id", d.Msg.ID, "index", d.Index)
	}
	pctx, start := w.phaseStart(ctx, PhaseDeadLetter)
	err := w.pub.Publish(pctx, broker.TopicDeadLetter, out...)
	w.phaseDone(pctx, PhaseDeadLetter, start, len(out), err)
	if err != nil {
		return fmt.Errorf("enrich: publish %d dead letters: %w", len(out), err)
	}
	if w.Observer != nil {
		for _, d := range dead {
			w.Observer.DeadLettered(ctx, d.Stage, 1)
		}
	}
	w.stats.dead.Add(int64(len(out)))
	return nil
}
