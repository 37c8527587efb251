package broker

import (
	"context"
	"maps"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0xa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		SpanID:     trace.SpanID{0xb, 1, 2, 3, 4, 5, 6, 7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	if got := TraceAttributes(context.Background()); got != nil {
		t.Errorf("TraceAttributes without a span: %v, want nil", got)
	}
	attrs := map[string]string{"kind": "event", AttrTraceParent: "00-stale-stale-01"}
	orig := maps.Clone(attrs)
	if got := WithTrace(context.Background(), attrs); !maps.Equal(got, orig) {
		t.Errorf("WithTrace without a span changed attributes: %v", got)
	}
	out := WithTrace(ctx, attrs)
	if !maps.Equal(attrs, orig) {
		t.Errorf("WithTrace modified its argument: %v", attrs)
	}
	want := "00-0a0102030405060708090a0b0c0d0e0f-0b01020304050607-01"
	if out[AttrTraceParent] != want || out["kind"] != "event" {
		t.Fatalf("WithTrace = %v, want kind and traceparent %s", out, want)
	}

	got := trace.SpanContextFromContext(ContextWithTrace(context.Background(), out))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsSampled() || !got.IsRemote() {
		t.Errorf("ContextWithTrace: %+v, want the published span as remote parent", got)
	}
	if c := ContextWithTrace(context.Background(), map[string]string{"kind": "x"}); trace.SpanContextFromContext(c).IsValid() {
		t.Errorf("ContextWithTrace without traceparent gave a span context")
	}
	if c := ContextWithTrace(context.Background(), nil); trace.SpanContextFromContext(c).IsValid() {
		t.Errorf("ContextWithTrace(nil) gave a span context")
	}
}
