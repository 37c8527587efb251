package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
)

// observed records what an Observer is told.
type observed struct {
	mu      sync.Mutex
	started int
	done    []string
}

func (o *observed) RequestStart(r *http.Request) context.Context {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started++
	return r.Context()
}

func (o *observed) RequestDone(ctx context.Context, out Outcome, events int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done = append(o.done, fmt.Sprintf("%s:%d", out, events))
}

func TestObserverOutcomes(t *testing.T) {
	obs := &observed{}
	pub := &recorder{}
	refuse := false
	h := New(Config{MaxEvents: 2, MaxBodyBytes: 5 << 20, MaxClockSkew: time.Hour, PublishTimeout: time.Second, MaxErrors: 10}, pub, platform.Discard)
	h.now = func() time.Time { return testNow }
	h.Observer = obs
	h.Admit = func() error {
		if refuse {
			return fmt.Errorf("behind")
		}
		return nil
	}
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post(t, srv.URL, "application/json", "["+ev("a")+","+ev("b")+"]")
	post(t, srv.URL, "application/json", `{"event_id":""}`)
	post(t, srv.URL, "text/csv", "x")
	post(t, srv.URL, "application/json", "["+ev("a")+","+ev("b")+","+ev("c")+"]") // too many
	pub.err = fmt.Errorf("down")
	post(t, srv.URL, "application/json", ev("c"))
	pub.err = nil
	refuse = true
	post(t, srv.URL, "application/json", ev("d"))

	want := []string{"accepted:2", "invalid:1", "invalid:0", "invalid:0", "refused:1", "refused:0"}
	if obs.started != len(want) || strings.Join(obs.done, " ") != strings.Join(want, " ") {
		t.Errorf("started %d, done %v; want %v", obs.started, obs.done, want)
	}
	// Without a span in the context, no trace attributes are added.
	if _, ok := pub.msgs[0].Attributes[broker.AttrTraceParent]; ok {
		t.Errorf("traceparent without a span: %v", pub.msgs[0].Attributes)
	}
}

// TestRequestSpanTravelsInTheMessage checks that the request's span is the
// remote parent found in the published message's attributes, and that a
// client's traceparent header is continued.
func TestRequestSpanTravelsInTheMessage(t *testing.T) {
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(ctx, telemetry.Config{Exporter: telemetry.ExporterNone}, telemetry.WithSpanProcessor(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	pub := &recorder{}
	h := New(Config{MaxEvents: 10, MaxBodyBytes: 5 << 20, MaxClockSkew: time.Hour, PublishTimeout: time.Second, MaxErrors: 10}, pub, platform.Discard)
	h.now = func() time.Time { return testNow }
	if h.Observer, err = NewTelemetry(tel.MeterProvider(), tel.TracerProvider()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)

	const client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req := httptest.NewRequest("POST", "/v1/events", strings.NewReader(ev("a")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", client)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != 202 || len(pub.msgs) != 1 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	ended := spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans", len(ended))
	}
	span := ended[0]
	got := trace.SpanContextFromContext(broker.ContextWithTrace(ctx, pub.msgs[0].Attributes))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("message carries %s/%s, span is %s/%s", got.TraceID(), got.SpanID(), span.SpanContext().TraceID(), span.SpanContext().SpanID())
	}
	if span.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || span.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("the client's trace is not continued: trace %s parent %s", span.SpanContext().TraceID(), span.Parent().SpanID())
	}
}

// nopProcessor is a span processor that drops spans: the cost of making
// them, without an exporter's.
type nopProcessor struct{}

func (nopProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (nopProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (nopProcessor) Shutdown(context.Context) error                  { return nil }
func (nopProcessor) ForceFlush(context.Context) error                { return nil }

// BenchmarkObserver measures the cost of telemetry on ingest's hot path:
// none (nil Observer), metrics only (the default, --telemetry=prometheus),
// and metrics plus a sampled span per request.
func BenchmarkObserver(b *testing.B) {
	for _, n := range []int{1, 100} {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = ev(fmt.Sprint(i))
		}
		body := "[" + strings.Join(parts, ",") + "]"
		for _, mode := range []string{"none", "metrics", "metrics+traces"} {
			benchObserver(b, fmt.Sprintf("events=%d/%s", n, mode), mode, body)
		}
	}
}

func benchObserver(b *testing.B, name, mode, body string) {
	b.Run(name, func(b *testing.B) {
		h := New(Config{MaxEvents: 1000, MaxBodyBytes: 5 << 20, MaxClockSkew: time.Hour, PublishTimeout: time.Second, MaxErrors: 10}, &discard{}, platform.Discard)
		h.now = func() time.Time { return testNow }
		if mode != "none" {
			var opts []telemetry.Option
			if mode == "metrics+traces" {
				opts = append(opts, telemetry.WithSpanProcessor(nopProcessor{}))
			}
			tel, err := telemetry.New(context.Background(), telemetry.Config{Exporter: telemetry.ExporterPrometheus, SampleRatio: 1}, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			if h.Observer, err = NewTelemetry(tel.MeterProvider(), tel.TracerProvider()); err != nil {
				b.Fatal(err)
			}
		}
		mux := http.NewServeMux()
		h.Register(mux)
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest("POST", "/v1/events", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, req)
			if w.Code != 202 {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}
