package enrich

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/event"
)

// Phase is a step of a worker batch.
type Phase uint8

// Phases of a batch, in order.
const (
	PhaseDecode     Phase = iota // decode and validate the messages' events
	PhaseWeather                 // join the weather
	PhaseStore                   // write the records to the store
	PhaseRecords                 // publish the stored records to the records topic
	PhaseDeadLetter              // publish dead letters
	PhaseAck                     // ack the messages
	numPhases
)

var phaseNames = [numPhases]string{"decode", "weather", "store", "records", "deadletter", "ack"}

func (p Phase) String() string {
	if p < numPhases {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", p)
}

// Observer is told about the worker's batches. Worker.Observer is nil by
// default, which costs nothing.
type Observer interface {
	// BatchStart is called when a batch is fetched; the context it returns
	// (carrying the batch's span, if any) is used to process the batch and
	// passed to BatchDone.
	BatchStart(ctx context.Context, msgs []*broker.Message) context.Context
	// BatchDone is called once per batch; err is the first attempt's error
	// (nil when the whole batch went through at once).
	BatchDone(ctx context.Context, msgs int, err error, d time.Duration)
	// PhaseStart is called when a phase of a batch starts; the context it
	// returns is used for the phase and passed to PhaseDone.
	PhaseStart(ctx context.Context, p Phase) context.Context
	// PhaseDone is called when a phase ends, with the number of items it
	// handled (messages, weather requests, records, dead letters) and its error.
	PhaseDone(ctx context.Context, p Phase, n int, err error, d time.Duration)
	// Stored is called with the records of each successful store write.
	Stored(ctx context.Context, recs []event.Record, storedAt time.Time)
	// DeadLettered is called for events (or whole messages) dead-lettered by
	// stage (decode, validate, store, enrich).
	DeadLettered(ctx context.Context, stage string, n int)
	// Settled is called when messages are acked (processed) or nacked (to
	// be delivered again).
	Settled(ctx context.Context, acked bool, n int)
}

// Instrumentation scope of the worker's meter and tracer.
const scope = "github.com/skyjoin/skyjoin/internal/enrich"

// Telemetry is the OpenTelemetry Observer of the worker: metrics, a span per
// batch linked to the spans that published its messages (a batch has many
// parents), and a child span per phase.
//
// Metrics:
//
//	skyjoin.enrich.batch.duration  histogram  s          outcome (ok, held, retried)  time to process a fetched batch
//	skyjoin.enrich.batch.messages  histogram  {message}                         broker messages per batch
//	skyjoin.enrich.batch.events    histogram  {event}                           records per store write
//	skyjoin.enrich.phase.duration  histogram  s          phase                  decode, weather, store, deadletter, ack
//	skyjoin.enrich.events          counter    {event}    status                 records stored by enrichment status
//	skyjoin.enrich.messages        counter    {message}  outcome (acked, nacked)
//	skyjoin.store.records          counter    {record}                          records written to the store
//	skyjoin.store.write.duration   histogram  s          outcome (ok, error)    store write latency
//	skyjoin.deadletter.events      counter    {event}    stage                  events sent to the dead-letter topic
//	skyjoin.pipeline.latency       histogram  s          from (occurred_at, ingested_at)  end-to-end: stored time minus from
type Telemetry struct {
	tracer trace.Tracer

	batchDur, phaseDur, writeDur, latency metric.Float64Histogram
	batchMsgs, batchEvents                metric.Int64Histogram
	events, messages, records, dead       metric.Int64Counter

	// Attribute sets, precomputed so that recording allocates nothing.
	batchOK, batchRetried         attrs
	batchHeld                     attrs
	writeOK, writeErr             attrs
	acked, nacked                 attrs
	fromOccurred, fromIngested    attrs
	phase                         [numPhases]attrs
	enriched, stale, unavail, oth attrs
	stages                        map[string]attrs
}

// attrs are an attribute set as ready-made options (a variadic argument
// built at each call would be allocated).
type attrs struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

var _ Observer = (*Telemetry)(nil)

func attr(k, v string) attrs {
	o := metric.WithAttributeSet(attribute.NewSet(attribute.String(k, v)))
	return attrs{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
}

// NewTelemetry creates the worker's instruments on mp and its spans on tp.
func NewTelemetry(mp metric.MeterProvider, tp trace.TracerProvider) (*Telemetry, error) {
	m := mp.Meter(scope)
	t := &Telemetry{tracer: tp.Tracer(scope)}
	latency := metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
	sizes := metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)
	var errs [10]error
	t.batchDur, errs[0] = m.Float64Histogram("skyjoin.enrich.batch.duration", metric.WithUnit("s"), latency,
		metric.WithDescription("Time to process a fetched batch, from fetch to ack, by outcome: ok, held (no weather: delivered again later) or retried (the first attempt failed)."))
	t.batchMsgs, errs[1] = m.Int64Histogram("skyjoin.enrich.batch.messages", metric.WithUnit("{message}"), sizes,
		metric.WithDescription("Broker messages per worker batch."))
	t.batchEvents, errs[2] = m.Int64Histogram("skyjoin.enrich.batch.events", metric.WithUnit("{event}"), sizes,
		metric.WithDescription("Records per store write of the worker."))
	t.phaseDur, errs[3] = m.Float64Histogram("skyjoin.enrich.phase.duration", metric.WithUnit("s"), latency,
		metric.WithDescription("Time of each phase of a worker batch: decode, weather, store, deadletter, ack."))
	t.events, errs[4] = m.Int64Counter("skyjoin.enrich.events", metric.WithUnit("{event}"),
		metric.WithDescription("Records stored by the worker, by enrichment status: enriched, stale, unavailable."))
	t.messages, errs[5] = m.Int64Counter("skyjoin.enrich.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Broker messages settled by the worker: acked (processed) or nacked (delivered again later)."))
	t.records, errs[6] = m.Int64Counter("skyjoin.store.records", metric.WithUnit("{record}"),
		metric.WithDescription("Records written to the store (a redelivered record is written again and ignored by the store)."))
	t.writeDur, errs[7] = m.Float64Histogram("skyjoin.store.write.duration", metric.WithUnit("s"), latency,
		metric.WithDescription("Latency of the worker's store writes, by outcome: ok or error."))
	t.dead, errs[8] = m.Int64Counter("skyjoin.deadletter.events", metric.WithUnit("{event}"),
		metric.WithDescription("Events (or undecodable messages) sent to the dead-letter topic, by the stage that gave up."))
	t.latency, errs[9] = m.Float64Histogram("skyjoin.pipeline.latency", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
		metric.WithDescription("End-to-end latency: when a record was stored minus its occurred_at or its ingested_at."))
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("enrich: create metric: %w", err)
		}
	}
	t.batchOK, t.batchRetried, t.batchHeld = attr("outcome", "ok"), attr("outcome", "retried"), attr("outcome", "held")
	t.writeOK, t.writeErr = attr("outcome", "ok"), attr("outcome", "error")
	t.acked, t.nacked = attr("outcome", "acked"), attr("outcome", "nacked")
	t.fromOccurred, t.fromIngested = attr("from", "occurred_at"), attr("from", "ingested_at")
	for p := range numPhases {
		t.phase[p] = attr("phase", p.String())
	}
	t.enriched, t.stale = attr("status", event.StatusEnriched), attr("status", event.StatusStale)
	t.unavail, t.oth = attr("status", event.StatusUnavailable), attr("status", "other")
	t.stages = map[string]attrs{}
	for _, s := range []string{"decode", "validate", "store", "enrich"} {
		t.stages[s] = attr("stage", s)
	}
	return t, nil
}

// maxLinks bounds the links of a batch span (the SDK's default limit).
const maxLinks = 128

// BatchStart starts the batch's span, a new trace linked to the span that
// published each message (from its traceparent attribute).
func (t *Telemetry) BatchStart(ctx context.Context, msgs []*broker.Message) context.Context {
	t.batchMsgs.Record(ctx, int64(len(msgs)))
	var links []trace.Link
	for _, m := range msgs {
		if len(links) == maxLinks {
			break
		}
		if m.Attributes[broker.AttrTraceParent] == "" {
			continue
		}
		sc := trace.SpanContextFromContext(broker.ContextWithTrace(context.Background(), m.Attributes))
		if sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	ctx, _ = t.tracer.Start(ctx, "enrich batch", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...), trace.WithAttributes(attribute.Int("messaging.batch.message_count", len(msgs))))
	return ctx
}

// BatchDone records the batch and ends its span.
func (t *Telemetry) BatchDone(ctx context.Context, msgs int, err error, d time.Duration) {
	a := t.batchOK
	switch {
	case errors.Is(err, ErrWeatherHeld):
		a = t.batchHeld
	case err != nil:
		a = t.batchRetried
	}
	t.batchDur.Record(ctx, d.Seconds(), a.rec...)
	span := trace.SpanFromContext(ctx)
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// PhaseStart starts the phase's span.
func (t *Telemetry) PhaseStart(ctx context.Context, p Phase) context.Context {
	ctx, _ = t.tracer.Start(ctx, "enrich "+p.String())
	return ctx
}

// PhaseDone records the phase and ends its span.
func (t *Telemetry) PhaseDone(ctx context.Context, p Phase, n int, err error, d time.Duration) {
	if p < numPhases {
		t.phaseDur.Record(ctx, d.Seconds(), t.phase[p].rec...)
	}
	if p == PhaseStore {
		a := t.writeOK
		if err != nil {
			a = t.writeErr
		}
		t.writeDur.Record(ctx, d.Seconds(), a.rec...)
	}
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("skyjoin.items", n))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// Stored counts the records by status and records their end-to-end latency.
func (t *Telemetry) Stored(ctx context.Context, recs []event.Record, storedAt time.Time) {
	var enriched, stale, unavail, other int64
	// Per-record measurements carry no trace: an exemplar of the batch's
	// trace would not be the record's, and skipping them keeps the loop cheap.
	bg := context.Background()
	for i := range recs {
		r := &recs[i]
		switch r.Enrichment.Status {
		case event.StatusEnriched:
			enriched++
		case event.StatusStale:
			stale++
		case event.StatusUnavailable:
			unavail++
		default:
			other++
		}
		t.latency.Record(bg, max(storedAt.Sub(r.OccurredAt), 0).Seconds(), t.fromOccurred.rec...)
		if !r.IngestedAt.IsZero() {
			t.latency.Record(bg, max(storedAt.Sub(r.IngestedAt), 0).Seconds(), t.fromIngested.rec...)
		}
	}
	for _, c := range [...]struct {
		n int64
		a *attrs
	}{{enriched, &t.enriched}, {stale, &t.stale}, {unavail, &t.unavail}, {other, &t.oth}} {
		if c.n > 0 {
			t.events.Add(ctx, c.n, c.a.add...)
		}
	}
	t.records.Add(ctx, int64(len(recs)))
	t.batchEvents.Record(ctx, int64(len(recs)))
}

// DeadLettered counts dead letters by stage.
func (t *Telemetry) DeadLettered(ctx context.Context, stage string, n int) {
	a, ok := t.stages[stage]
	if !ok {
		a = attr("stage", stage)
	}
	t.dead.Add(ctx, int64(n), a.add...)
}

// Settled counts acked and nacked messages.
func (t *Telemetry) Settled(ctx context.Context, acked bool, n int) {
	a := t.nacked
	if acked {
		a = t.acked
	}
	t.messages.Add(ctx, int64(n), a.add...)
}
