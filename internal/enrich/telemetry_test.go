package enrich

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
)

// toQueue publishes ingest's messages onto the worker's queue, the way a
// broker would: attributes travel as they are.
type toQueue struct{ q *queue }

func (p toQueue) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	p.q.mu.Lock()
	defer p.q.mu.Unlock()
	for _, m := range msgs {
		attrs := make(map[string]string, len(m.Attributes))
		for k, v := range m.Attributes {
			attrs[k] = v
		}
		p.q.pending = append(p.q.pending, &broker.Message{ID: "m" + string(rune('a'+len(p.q.pending))),
			Data: m.Data, Attributes: attrs, Deliveries: 1})
	}
	return nil
}

// TestTelemetryThroughThePipeline drives the real ingest handler and the
// worker with telemetry on, then reads GET /metrics and the recorded spans.
func TestTelemetryThroughThePipeline(t *testing.T) {
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(ctx, telemetry.Config{Exporter: telemetry.ExporterPrometheus, SampleRatio: 1},
		telemetry.WithSpanProcessor(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)

	q := &queue{}
	ing := ingest.New(ingest.Config{MaxEvents: 100, MaxBodyBytes: 1 << 20, MaxClockSkew: 10 * 365 * 24 * time.Hour, // the events are dated Nov 2026
		PublishTimeout: time.Second, MaxErrors: 10}, toQueue{q}, platform.Discard)
	refuse := false
	ing.Admit = func() error {
		if refuse {
			return io.ErrShortBuffer
		}
		return nil
	}
	if ing.Observer, err = ingest.NewTelemetry(tel.MeterProvider(), tel.TracerProvider()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	ing.Register(mux)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(body string, want int) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/v1/events", event.ContentTypeJSON, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %d, want %d", body, resp.StatusCode, want)
		}
	}
	post("["+ev("e1", 52.5)+","+ev("e2", 48.1)+"]", 202)
	post(ev("e3", -10), 202)
	post(`{"event_id":"bad"}`, 400)
	refuse = true
	post(ev("e4", 1), 503)
	refuse = false

	// A message from another producer that cannot be decoded: dead-lettered.
	q.pending = append(q.pending, msg("junk", "text/csv", "a,b"))

	store := &memStore{}
	w := newWorker(q, &joiner{failSouthOf: 0}, store)
	if w.Observer, err = NewTelemetry(tel.MeterProvider(), tel.TracerProvider()); err != nil {
		t.Fatal(err)
	}
	msgs, _ := q.Fetch(ctx, 10, 0)
	if len(msgs) != 3 {
		t.Fatalf("%d messages on the queue, want 3", len(msgs))
	}
	if pause := w.handle(ctx, msgs); pause != 0 || len(store.recs) != 3 || len(q.dead) != 1 || len(q.acked) != 3 {
		t.Fatalf("pause %s, %d stored, %d dead, %d acked", pause, len(store.recs), len(q.dead), len(q.acked))
	}

	// Metrics.
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`skyjoin_ingest_events_total{outcome="accepted"} 3`,
		`skyjoin_ingest_events_total{outcome="invalid"} 1`,
		`skyjoin_ingest_request_duration_seconds_count{outcome="refused"} 1`,
		`skyjoin_ingest_request_duration_seconds_count{outcome="accepted"} 2`,
		`skyjoin_ingest_request_events_count 2`,
		`skyjoin_ingest_request_events_sum 3`,
		`skyjoin_enrich_batch_duration_seconds_count{outcome="ok"} 1`,
		`skyjoin_enrich_batch_messages_sum 3`,
		`skyjoin_enrich_batch_events_sum 3`,
		`skyjoin_enrich_phase_duration_seconds_count{phase="decode"} 1`,
		`skyjoin_enrich_phase_duration_seconds_count{phase="weather"} 1`,
		`skyjoin_enrich_phase_duration_seconds_count{phase="store"} 1`,
		`skyjoin_enrich_phase_duration_seconds_count{phase="deadletter"} 1`,
		`skyjoin_enrich_phase_duration_seconds_count{phase="ack"} 1`,
		`skyjoin_enrich_events_total{status="enriched"} 2`,
		`skyjoin_enrich_events_total{status="unavailable"} 1`,
		`skyjoin_enrich_messages_total{outcome="acked"} 3`,
		`skyjoin_store_records_total 3`,
		`skyjoin_store_write_duration_seconds_count{outcome="ok"} 1`,
		`skyjoin_deadletter_events_total{stage="decode"} 1`,
		// occurred 11:50, stored at the worker's clock, 12:00: 600 s each.
		`skyjoin_pipeline_latency_seconds_sum{from="occurred_at"} 1800`,
		`skyjoin_pipeline_latency_seconds_count{from="ingested_at"} 3`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grep(text, "skyjoin_"))
	}

	// Traces: each accepted request's span travelled in its message's
	// attributes, and the batch span links to them.
	var ingestSpans []sdktrace.ReadOnlySpan
	var batch sdktrace.ReadOnlySpan
	children := map[string]trace.SpanID{}
	for _, s := range spans.Ended() {
		switch {
		case s.Name() == "ingest POST /v1/events":
			ingestSpans = append(ingestSpans, s)
		case s.Name() == "enrich batch":
			batch = s
		case strings.HasPrefix(s.Name(), "enrich "):
			children[s.Name()] = s.Parent().SpanID()
		}
	}
	if len(ingestSpans) != 4 || batch == nil {
		t.Fatalf("%d ingest spans, batch span %v", len(ingestSpans), batch)
	}
	for _, m := range msgs[:2] {
		sc := trace.SpanContextFromContext(broker.ContextWithTrace(ctx, m.Attributes))
		if !sc.IsValid() {
			t.Fatalf("message %s carries no trace context: %v", m.ID, m.Attributes)
		}
		found := false
		for _, s := range ingestSpans {
			found = found || s.SpanContext().Equal(sc.WithRemote(false))
		}
		if !found {
			t.Errorf("message %s: trace context %s is no ingest span's", m.ID, sc.SpanID())
		}
		linked := false
		for _, l := range batch.Links() {
			linked = linked || (l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID())
		}
		if !linked {
			t.Errorf("batch span does not link to the ingest span %s of message %s", sc.SpanID(), m.ID)
		}
	}
	if len(batch.Links()) != 2 {
		t.Errorf("batch span has %d links, want 2 (the junk message has no trace)", len(batch.Links()))
	}
	for _, name := range []string{"enrich decode", "enrich weather", "enrich store", "enrich deadletter", "enrich ack"} {
		if children[name] != batch.SpanContext().SpanID() {
			t.Errorf("span %q is not a child of the batch span", name)
		}
	}
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) && !regexp.MustCompile(`_bucket\{`).MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestNilObserverIsFree checks the worker runs without telemetry (the other
// tests do too); and that an Observer sees a failed batch as retried.
func TestObserverSeesRetriedBatch(t *testing.T) {
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(ctx, telemetry.Config{Exporter: telemetry.ExporterPrometheus, SampleRatio: 1},
		telemetry.WithSpanProcessor(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	q := &queue{pending: []*broker.Message{msg("1", event.ContentTypeJSON, ev("a", 10))}}
	w := newWorker(q, &joiner{}, &memStore{err: io.ErrUnexpectedEOF})
	if w.Observer, err = NewTelemetry(tel.MeterProvider(), tel.TracerProvider()); err != nil {
		t.Fatal(err)
	}
	msgs, _ := q.Fetch(ctx, 10, 0)
	w.handle(ctx, msgs)
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`skyjoin_enrich_batch_duration_seconds_count{outcome="retried"} 1`,
		`skyjoin_store_write_duration_seconds_count{outcome="error"} 1`,
		`skyjoin_enrich_messages_total{outcome="nacked"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	ended := spans.Ended()
	if last := ended[len(ended)-1]; last.Name() != "enrich batch" || last.Status().Code.String() != "Error" {
		t.Errorf("last span %s, status %v", last.Name(), last.Status())
	}
}

// BenchmarkProcessObserver measures the cost of telemetry on the worker's
// hot path (500 events a batch; two latency measurements per event).
func BenchmarkProcessObserver(b *testing.B) {
	parts := make([]string, 500)
	for i := range parts {
		parts[i] = ev(fmt.Sprint(i), float64(i%90))
	}
	body := strings.Join(parts, "\n")
	for _, mode := range []string{"none", "metrics"} {
		b.Run(mode, func(b *testing.B) {
			q := &queue{}
			w := newWorker(q, &joiner{failSouthOf: -1000}, discardStore{})
			if mode == "metrics" {
				tel, err := telemetry.New(context.Background(), telemetry.Config{Exporter: telemetry.ExporterPrometheus})
				if err != nil {
					b.Fatal(err)
				}
				defer tel.Shutdown(context.Background())
				if w.Observer, err = NewTelemetry(tel.MeterProvider(), tel.TracerProvider()); err != nil {
					b.Fatal(err)
				}
			}
			m := []*broker.Message{msg("1", event.ContentTypeNDJSON, body)}
			b.ReportAllocs()
			for b.Loop() {
				w.handle(context.Background(), m)
			}
			b.ReportMetric(float64(500*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
