package broker

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Attribute names of the W3C Trace Context (https://www.w3.org/TR/trace-context/)
// that messages carry, so that one trace spans ingest, the broker and the
// worker. Backends set them on publish from the publisher's context; the
// consumer calls ContextWithTrace on the fetched message's attributes.
const (
	AttrTraceParent = "traceparent"
	AttrTraceState  = "tracestate"
)

// traceContext is the W3C propagator, used whatever global propagator the
// process configured, so that every backend writes the same attributes.
var traceContext propagation.TraceContext

// TraceAttributes returns the trace context of ctx's span as message
// attributes (traceparent and, when set, tracestate), or nil when ctx carries
// no valid span context.
func TraceAttributes(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	if len(c) == 0 {
		return nil
	}
	return c
}

// WithTrace returns attrs with the trace context of ctx added, replacing any
// trace context attrs already had. attrs itself is never modified: when ctx
// carries no span, attrs is returned as it is; otherwise a copy.
func WithTrace(ctx context.Context, attrs map[string]string) map[string]string {
	tc := TraceAttributes(ctx)
	if tc == nil {
		return attrs
	}
	out := make(map[string]string, len(attrs)+len(tc))
	for k, v := range attrs {
		if k == AttrTraceParent || k == AttrTraceState {
			continue
		}
		out[k] = v
	}
	for k, v := range tc {
		out[k] = v
	}
	return out
}

// ContextWithTrace returns ctx carrying, as its remote parent, the span
// context found in a received message's attributes; ctx unchanged when they
// hold none (or an invalid one).
func ContextWithTrace(ctx context.Context, attrs map[string]string) context.Context {
	if attrs[AttrTraceParent] == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier(attrs))
}
