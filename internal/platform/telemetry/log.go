package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Cloud Logging's structured-log fields that tie an entry to a trace
// (https://cloud.google.com/logging/docs/structured-logging).
const (
	LogKeyTrace        = "logging.googleapis.com/trace"         // projects/PROJECT/traces/TRACE_ID
	LogKeySpanID       = "logging.googleapis.com/spanId"        // 16 hex digits
	LogKeyTraceSampled = "logging.googleapis.com/trace_sampled" // bool
)

// NewLogHandler wraps h so that every record logged with a context that
// carries a valid span (the slog ...Context methods) gets Cloud Logging's
// trace, spanId and trace_sampled fields, at the top level of the entry even
// when the logger has groups. Records without a span pass through unchanged.
func NewLogHandler(h slog.Handler, project string) slog.Handler {
	return &logHandler{inner: h, root: h, tracePrefix: "projects/" + project + "/traces/"}
}

type logHandler struct {
	inner slog.Handler // h with every WithAttrs and WithGroup applied
	// root is h with the WithAttrs applied before the first WithGroup; ops
	// are the calls made since, replayed on root plus the trace fields when
	// the logger has groups (the trace fields must stay top-level).
	root        slog.Handler
	ops         []func(slog.Handler) slog.Handler
	tracePrefix string
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.inner.Handle(ctx, r)
	}
	attrs := [3]slog.Attr{
		slog.String(LogKeyTrace, h.tracePrefix+sc.TraceID().String()),
		slog.String(LogKeySpanID, sc.SpanID().String()),
		slog.Bool(LogKeyTraceSampled, sc.IsSampled()),
	}
	if len(h.ops) == 0 {
		r.AddAttrs(attrs[:]...)
		return h.inner.Handle(ctx, r)
	}
	hh := h.root.WithAttrs(attrs[:])
	for _, op := range h.ops {
		hh = op(hh)
	}
	return hh.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	c := *h
	c.inner = h.inner.WithAttrs(as)
	if len(h.ops) == 0 {
		c.root = c.inner
	} else {
		c.ops = append(h.ops[:len(h.ops):len(h.ops)], func(x slog.Handler) slog.Handler { return x.WithAttrs(as) })
	}
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.inner = h.inner.WithGroup(name)
	c.ops = append(h.ops[:len(h.ops):len(h.ops)], func(x slog.Handler) slog.Handler { return x.WithGroup(name) })
	return &c
}
