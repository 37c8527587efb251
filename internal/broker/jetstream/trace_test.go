package jetstream

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/skyjoin/skyjoin/internal/broker"
)

// TestTraceContext: the publisher's W3C trace context travels in headers.
func TestTraceContext(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	pctx := trace.ContextWithSpanContext(ctx, sc)
	if err := b.Publish(pctx, broker.TopicEvents, &broker.Message{Data: []byte("traced"), Attributes: map[string]string{"kind": "test"}}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	msgs, err := sub.Fetch(ctx, 1, 5*time.Second)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Fetch: %d messages, %v", len(msgs), err)
	}
	m := msgs[0]
	if m.Attributes["kind"] != "test" || m.Attributes[broker.AttrTraceParent] == "" {
		t.Fatalf("attributes %v, want kind and traceparent", m.Attributes)
	}
	got := trace.SpanContextFromContext(broker.ContextWithTrace(ctx, m.Attributes))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() {
		t.Errorf("extracted span context %v, want trace %s span %s", got, sc.TraceID(), sc.SpanID())
	}
}
