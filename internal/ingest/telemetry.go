package ingest

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Outcome is how ingest answered a request.
type Outcome uint8

// Outcomes of a request.
const (
	OutcomeAccepted Outcome = iota // 202: the broker has every event
	OutcomeInvalid                 // 4xx: the request or an event is bad; nothing accepted
	OutcomeRefused                 // 503: admission control or the broker refused; nothing accepted
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"accepted", "invalid", "refused"}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", o)
}

// Observer is told about every POST /v1/events. Handler.Observer is nil by
// default, which costs nothing.
type Observer interface {
	// RequestStart is called when a request arrives. The context it returns
	// (carrying the request's span, if any) is used for the rest of the
	// request, publishing included, and passed to RequestDone.
	RequestStart(r *http.Request) context.Context
	// RequestDone is called once per request with its outcome, its number
	// of events (0 when not known, as when refused before reading the body)
	// and how long ingest took.
	RequestDone(ctx context.Context, o Outcome, events int, d time.Duration)
}

// Instrumentation scope of ingest's meter and tracer.
const scope = "github.com/skyjoin/skyjoin/internal/ingest"

// Telemetry is the OpenTelemetry Observer of ingest: metrics and a span per
// request (continuing the client's W3C traceparent header, if any). Its
// span context travels to the worker in the message's attributes.
//
// Metrics:
//
//	skyjoin.ingest.events            counter    {event}  outcome   events by outcome
//	skyjoin.ingest.request.duration  histogram  s        outcome   time to answer POST /v1/events
//	skyjoin.ingest.request.events    histogram  {event}            events per accepted request
type Telemetry struct {
	tracer   trace.Tracer
	events   metric.Int64Counter
	duration metric.Float64Histogram
	size     metric.Int64Histogram
	// Precomputed per outcome, so recording allocates nothing.
	outcome [numOutcomes]attrs
}

// attrs are an attribute set as ready-made options (a variadic argument
// built at each call would be allocated).
type attrs struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func newAttrs(kv ...attribute.KeyValue) attrs {
	o := metric.WithAttributeSet(attribute.NewSet(kv...))
	return attrs{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
}

var _ Observer = (*Telemetry)(nil)

// NewTelemetry creates ingest's instruments on mp and its spans on tp.
func NewTelemetry(mp metric.MeterProvider, tp trace.TracerProvider) (*Telemetry, error) {
	m := mp.Meter(scope)
	t := &Telemetry{tracer: tp.Tracer(scope)}
	var err error
	if t.events, err = m.Int64Counter("skyjoin.ingest.events", metric.WithUnit("{event}"),
		metric.WithDescription("Events received by POST /v1/events, by outcome: accepted, invalid (refused with 4xx) or refused (503).")); err != nil {
		return nil, fmt.Errorf("ingest: create metric: %w", err)
	}
	if t.duration, err = m.Float64Histogram("skyjoin.ingest.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to answer POST /v1/events, publishing included, by outcome."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, fmt.Errorf("ingest: create metric: %w", err)
	}
	if t.size, err = m.Int64Histogram("skyjoin.ingest.request.events", metric.WithUnit("{event}"),
		metric.WithDescription("Events per accepted POST /v1/events request."),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)); err != nil {
		return nil, fmt.Errorf("ingest: create metric: %w", err)
	}
	for o := range numOutcomes {
		t.outcome[o] = newAttrs(attribute.String("outcome", o.String()))
	}
	return t, nil
}

var traceContext propagation.TraceContext

// RequestStart starts the request's span, a child of the client's span when
// the request carries a traceparent header.
func (t *Telemetry) RequestStart(r *http.Request) context.Context {
	ctx := r.Context()
	if r.Header.Get("Traceparent") != "" {
		ctx = traceContext.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	ctx, _ = t.tracer.Start(ctx, "ingest POST /v1/events", trace.WithSpanKind(trace.SpanKindServer))
	return ctx
}

// RequestDone records the request and ends its span.
func (t *Telemetry) RequestDone(ctx context.Context, o Outcome, events int, d time.Duration) {
	if o >= numOutcomes {
		o = OutcomeInvalid
	}
	a := t.outcome[o]
	if events > 0 {
		t.events.Add(ctx, int64(events), a.add...)
	}
	t.duration.Record(ctx, d.Seconds(), a.rec...)
	if o == OutcomeAccepted {
		t.size.Record(ctx, int64(events))
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("skyjoin.outcome", o.String()), attribute.Int("skyjoin.events", events))
		if o == OutcomeRefused {
			span.SetStatus(codes.Error, "refused")
		}
		span.End()
	}
}
