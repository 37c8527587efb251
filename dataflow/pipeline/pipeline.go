package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
)

func init() {
	register.DoFn4x1[context.Context, *pb.PubsubMessage, func(Stored), func(*pb.PubsubMessage), error](&enrichFn{})
	register.DoFn4x1[context.Context, Stored, func(*pb.PubsubMessage), func(*pb.PubsubMessage), error](&writeFn{})
	register.Emitter1[Stored]()
	register.Emitter1[*pb.PubsubMessage]()
}

// Stored is one enriched record on its way to BigQuery, with where its
// event came from, so that a record BigQuery refuses is dead-lettered as
// the Go worker does (stage store).
type Stored struct {
	Record []byte // event.Record as JSON (event.Marshal)
	// The original message's id and attributes, the event's index in it
	// and its JSON as sent.
	MsgID string
	Attrs map[string]string
	Index int
	Raw   []byte
}

// maxBuffer bounds the messages an enrich DoFn holds before it runs the
// core (and the records a write DoFn holds before it writes): a bundle is
// processed in slices of at most this many, each in one weather lookup or
// one BigQuery write.
const maxBuffer = 500

// Build adds the pipeline to s: msgs (Pub/Sub messages with their
// attributes, as pubsubio.Read gives them) are enriched and the records
// written to BigQuery. It returns the dead letters (decode, validate and
// store) as Pub/Sub messages for the dead-letter topic, and the stored
// records as records messages (the envelope's) for the records topic, which
// skyjoin's live streams and webhook delivery read.
func Build(s beam.Scope, msgs beam.PCollection, cfg Config) (dead, records beam.PCollection) {
	s = s.Scope("skyjoin")
	recs, bad := beam.ParDo2(s, &enrichFn{Cfg: cfg}, msgs)
	refused, stored := beam.ParDo2(s, &writeFn{Cfg: cfg}, recs)
	return beam.Flatten(s, bad, refused), stored
}

// subscription is what dead letters name as the subscription that gave
// up.
func (c Config) subscription() string {
	if c.Subscription == "" {
		return "dataflow"
	}
	return c.Subscription
}

// toBroker is a Pub/Sub message as skyjoin's broker package has it. On
// Dataflow, Pub/Sub's own message id is there when the runner gives it;
// otherwise the envelope's message_id stands for it. A delivery count is
// not known on Dataflow: 1.
func toBroker(m *pb.PubsubMessage) *broker.Message {
	id := m.GetMessageId()
	if id == "" {
		id = m.GetAttributes()[envelope.AttrMessageID]
	}
	bm := &broker.Message{ID: id, Data: m.GetData(), Attributes: m.GetAttributes(), Deliveries: 1}
	if t := m.GetPublishTime(); t != nil {
		bm.PublishedAt = t.AsTime()
	}
	return bm
}

// toPubSub is a broker message (a dead letter) as a Pub/Sub message.
func toPubSub(m *broker.Message) *pb.PubsubMessage {
	return &pb.PubsubMessage{Data: m.Data, Attributes: m.Attributes}
}

// metrics are the pipeline's Beam metrics (namespace skyjoin).
var (
	mMessages      = beam.NewCounter("skyjoin", "messages")
	mEvents        = beam.NewCounter("skyjoin", "events")
	mDead          = beam.NewCounter("skyjoin", "dead_letters")
	mUnavailable   = beam.NewCounter("skyjoin", "records_without_weather")
	mLookups       = beam.NewCounter("skyjoin", "weather_lookups")
	mWeatherCalls  = beam.NewCounter("skyjoin", "weather_calls")
	mCacheHits     = beam.NewCounter("skyjoin", "weather_cache_hits")
	mWritten       = beam.NewCounter("skyjoin", "records_written")
	mBatchEvents   = beam.NewDistribution("skyjoin", "batch_events")
	mJoinMillis    = beam.NewDistribution("skyjoin", "weather_join_ms")
	mWriteMillis   = beam.NewDistribution("skyjoin", "bigquery_write_ms")
	mDeadByStage   = map[string]beam.Counter{}
	mDeadByStageMu sync.Mutex
)

func deadCounter(stage string) beam.Counter {
	mDeadByStageMu.Lock()
	defer mDeadByStageMu.Unlock()
	c, ok := mDeadByStage[stage]
	if !ok {
		c = beam.NewCounter("skyjoin", "dead_letters_"+stage)
		mDeadByStage[stage] = c
	}
	return c
}

// enrichFn runs the enrichment core on the messages of a bundle: records
// to the first output, dead letters to the second. The weather service
// (cache, coalescing, batched misses, quota) is the process's (see
// shared), not the DoFn instance's.
type enrichFn struct {
	Cfg Config

	w    *sharedWeather
	core *enrich.Core
	buf  []*broker.Message
}

func (fn *enrichFn) Setup(ctx context.Context) error {
	w, err := weatherFor(ctx, fn.Cfg)
	if err != nil {
		return err
	}
	policy, err := policyFor(ctx, fn.Cfg)
	if err != nil {
		return err
	}
	fn.w, fn.core = w, fn.Cfg.core(w.svc, policy)
	return nil
}

// StartBundle drops what a failed bundle may have left: Beam processes
// that bundle again.
func (fn *enrichFn) StartBundle(_ context.Context, _ func(Stored), _ func(*pb.PubsubMessage)) {
	fn.buf = nil
}

func (fn *enrichFn) ProcessElement(ctx context.Context, m *pb.PubsubMessage, emit func(Stored), dead func(*pb.PubsubMessage)) error {
	fn.buf = append(fn.buf, toBroker(m))
	if len(fn.buf) >= maxBuffer {
		return fn.flush(ctx, emit, dead)
	}
	return nil
}

func (fn *enrichFn) FinishBundle(ctx context.Context, emit func(Stored), dead func(*pb.PubsubMessage)) error {
	return fn.flush(ctx, emit, dead)
}

// flush runs the core on the buffered messages, in one weather lookup. An
// error fails the bundle: Beam processes it again (on Dataflow, until it
// succeeds), which is how a spent quota or a weather outage the core holds
// for becomes backpressure.
func (fn *enrichFn) flush(ctx context.Context, emit func(Stored), dead func(*pb.PubsubMessage)) error {
	if len(fn.buf) == 0 {
		return nil
	}
	msgs := fn.buf
	fn.buf = nil
	b := fn.core.Decode(msgs)
	start := time.Now()
	err := fn.core.Join(ctx, &b)
	mJoinMillis.Update(ctx, time.Since(start).Milliseconds())
	fn.w.report(ctx)
	if err != nil {
		return fmt.Errorf("skyjoin: enrich %d messages: %w", len(msgs), err)
	}
	mMessages.Inc(ctx, int64(len(msgs)))
	mLookups.Inc(ctx, int64(b.Lookups))
	mBatchEvents.Update(ctx, int64(len(b.Records)))
	mUnavailable.Inc(ctx, int64(b.Unavailable))
	for i := range b.Records {
		js, err := event.Marshal(&b.Records[i])
		if err != nil {
			return fmt.Errorf("skyjoin: encode record %s: %w", b.Records[i].EventID, err)
		}
		o := b.Origins[i]
		emit(Stored{Record: js, MsgID: o.Msg.ID, Attrs: o.Msg.Attributes, Index: o.Index, Raw: o.Raw})
	}
	mEvents.Inc(ctx, int64(len(b.Records)))
	emitDead(ctx, b.Dead, fn.Cfg.subscription(), b.Now, dead)
	return nil
}

func emitDead(ctx context.Context, ds []enrich.DeadLetter, subscription string, now time.Time, dead func(*pb.PubsubMessage)) {
	for _, d := range ds {
		dead(toPubSub(d.Message(subscription, now)))
		deadCounter(d.Stage).Inc(ctx, 1)
	}
	mDead.Inc(ctx, int64(len(ds)))
}

// writeFn writes records to BigQuery through the Storage Write API writer
// of internal/store/bigquery (the process's, see shared), in batches of the
// bundle, the last in FinishBundle: a bundle is done only once BigQuery has
// acknowledged its records. Records BigQuery refuses one by one are
// dead-lettered (stage store); any other failure fails the bundle, which
// Beam retries (at least once: the view dedups by event_id). Once written,
// the records go to the second output as records messages.
type writeFn struct {
	Cfg Config

	w    *bigquery.Writer
	recs []event.Record
	from []Stored
}

func (fn *writeFn) Setup(ctx context.Context) error {
	w, err := writerFor(ctx, fn.Cfg)
	fn.w = w
	return err
}

// StartBundle drops what a failed bundle may have left.
func (fn *writeFn) StartBundle(_ context.Context, _, _ func(*pb.PubsubMessage)) {
	fn.recs, fn.from = nil, nil
}

func (fn *writeFn) ProcessElement(ctx context.Context, s Stored, dead, stored func(*pb.PubsubMessage)) error {
	var r event.Record
	if err := event.Unmarshal(s.Record, &r); err != nil {
		return fmt.Errorf("skyjoin: decode record: %w", err)
	}
	fn.recs = append(fn.recs, r)
	fn.from = append(fn.from, s)
	if len(fn.recs) >= maxBuffer {
		return fn.flush(ctx, dead, stored)
	}
	return nil
}

func (fn *writeFn) FinishBundle(ctx context.Context, dead, stored func(*pb.PubsubMessage)) error {
	return fn.flush(ctx, dead, stored)
}

func (fn *writeFn) flush(ctx context.Context, dead, stored func(*pb.PubsubMessage)) error {
	if len(fn.recs) == 0 {
		return nil
	}
	recs, from := fn.recs, fn.from
	fn.recs, fn.from = nil, nil
	start := time.Now()
	err := fn.w.Write(ctx, recs)
	mWriteMillis.Update(ctx, time.Since(start).Milliseconds())
	kept := recs
	if rejected, ok := errors.AsType[store.RejectedRows](err); ok {
		reasons := rejected.Reasons()
		var ds []enrich.DeadLetter
		kept = make([]event.Record, 0, len(recs))
		for i := range recs {
			reason, bad := reasons[i]
			if !bad {
				kept = append(kept, recs[i])
				continue
			}
			s := from[i]
			orig := &broker.Message{ID: s.MsgID, Attributes: s.Attrs, Deliveries: 1}
			ds = append(ds, enrich.DeadLetter{Msg: orig, Index: s.Index, Data: s.Raw, Stage: "store", Reason: reason})
		}
		emitDead(ctx, ds, fn.Cfg.subscription(), time.Now().UTC(), dead)
		err = nil
	}
	if err != nil {
		return fmt.Errorf("skyjoin: write %d records to BigQuery: %w", len(recs), err)
	}
	mWritten.Inc(ctx, int64(len(kept)))
	if len(kept) == 0 {
		return nil
	}
	msgs, err := envelope.NewRecordsMessages(kept, 0)
	if err != nil {
		return fmt.Errorf("skyjoin: records messages: %w", err)
	}
	for _, m := range msgs {
		stored(toPubSub(m))
	}
	return nil
}

// logger is the pipeline's slog logger (Beam workers send stderr to
// Cloud Logging).
var logger = slog.Default()
