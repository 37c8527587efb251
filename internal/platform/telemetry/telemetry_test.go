package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/skyjoin/skyjoin/internal/platform"
)

func TestConfigValidate(t *testing.T) {
	good := Config{Exporter: ExporterPrometheus, SampleRatio: 0.1, ExportInterval: time.Minute}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	err := Config{Exporter: "statsd", SampleRatio: 2}.Validate()
	if err == nil || !strings.Contains(err.Error(), "statsd") || !strings.Contains(err.Error(), "trace-sample-ratio") {
		t.Errorf("Validate = %v", err)
	}
	if err := (Config{Exporter: ExporterGCP, ExportInterval: time.Second}).Validate(); err == nil {
		t.Error("gcp export every second accepted")
	}
}

func TestPrometheusExporterServesMetrics(t *testing.T) {
	ctx := context.Background()
	p, err := New(ctx, Config{Exporter: ExporterPrometheus, SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(ctx)
	c, err := p.Meter("test").Int64Counter("skyjoin.test.things", metric.WithUnit("{thing}"))
	if err != nil {
		t.Fatal(err)
	}
	c.Add(ctx, 3)
	h, err := p.Meter("test").Float64Histogram("skyjoin.test.duration", metric.WithUnit("s"))
	if err != nil {
		t.Fatal(err)
	}
	h.Record(ctx, 0.5)
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{"skyjoin_test_things_total 3", "skyjoin_test_duration_seconds_sum 0.5", "go_goroutines", `target_info{`, `service_name="skyjoin"`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, rec.Body.String())
		}
	}
	// Without a span processor nothing would receive spans: none are made.
	_, span := p.Tracer("test").Start(ctx, "x")
	if span.SpanContext().IsValid() {
		t.Error("prometheus mode made a span")
	}
}

func TestNoneAndReaders(t *testing.T) {
	ctx := context.Background()
	p, err := New(ctx, Config{Exporter: ExporterNone})
	if err != nil {
		t.Fatal(err)
	}
	if p.MetricsHandler() != nil || p.Project() != "" {
		t.Error("none: a metrics handler or a project")
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// A reader and a span processor given as options see everything.
	r := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	p, err = New(ctx, Config{Exporter: ExporterNone}, WithMetricReader(r), WithSpanProcessor(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(ctx)
	c, _ := p.Meter("test").Int64Counter("skyjoin.test.n")
	c.Add(ctx, 1)
	var rm metricdata.ResourceMetrics
	if err := r.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	if len(rm.ScopeMetrics) != 1 || rm.ScopeMetrics[0].Metrics[0].Name != "skyjoin.test.n" {
		t.Errorf("collected %+v", rm.ScopeMetrics)
	}
	_, span := p.Tracer("test").Start(ctx, "x")
	span.End()
	if len(spans.Ended()) != 1 || !spans.Ended()[0].SpanContext().IsSampled() {
		t.Error("span not recorded")
	}
}

func TestGCPNeedsAProject(t *testing.T) {
	t.Setenv("GOOGLE_CLOUD_PROJECT", "")
	t.Setenv("GCP_PROJECT", "")
	offGCE := func(o *options) { o.onGCE = func(context.Context) bool { return false } }
	_, err := New(context.Background(), Config{Exporter: ExporterGCP, SampleRatio: 0.1, ExportInterval: time.Minute}, offGCE)
	if err == nil || !strings.Contains(err.Error(), "--telemetry-project") {
		t.Fatalf("New = %v", err)
	}
	onGCE := func(o *options) {
		o.onGCE = func(context.Context) bool { return true }
		o.metadataProj = func(context.Context) (string, error) { return "from-metadata", nil }
	}
	proj, err := detectProject(context.Background(), func() options { var o options; onGCE(&o); return o }())
	if err != nil || proj != "from-metadata" {
		t.Errorf("detectProject = %q, %v", proj, err)
	}
}

// TestGCPExporters exports a metric and a span to a real project. It runs
// only when SKYJOIN_GCP_PROJECT is set (see docs/gcp.md).
func TestGCPExporters(t *testing.T) {
	project := os.Getenv("SKYJOIN_GCP_PROJECT")
	if project == "" {
		t.Skip("SKYJOIN_GCP_PROJECT is not set")
	}
	ctx := context.Background()
	p, err := New(ctx, Config{Exporter: ExporterGCP, Project: project, SampleRatio: 1, ExportInterval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := p.Meter("test").Int64Counter("skyjoin.test.exports")
	c.Add(ctx, 1)
	_, span := p.Tracer("test").Start(ctx, "skyjoin test span")
	span.End()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
}

func decodeLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogHandlerAddsTraceFields(t *testing.T) {
	var buf bytes.Buffer
	base, err := platform.NewLogger(&buf, platform.LogConfig{Level: "info", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(NewLogHandler(base.Handler(), "my-proj"))
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	log.InfoContext(ctx, "traced", "k", 1)
	log.Info("untraced")
	log.With("a", "b").WithGroup("g").InfoContext(ctx, "grouped", "k", 2)
	log.WithGroup("g").With("c", "d").WarnContext(ctx, "grouped again")

	lines := decodeLines(t, buf.Bytes())
	if len(lines) != 4 {
		t.Fatalf("%d lines", len(lines))
	}
	const wantTrace = "projects/my-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
	for _, i := range []int{0, 2, 3} {
		m := lines[i]
		if m[LogKeyTrace] != wantTrace || m[LogKeySpanID] != "00f067aa0ba902b7" || m[LogKeyTraceSampled] != true {
			t.Errorf("line %d: %v", i, m)
		}
	}
	if _, ok := lines[1][LogKeyTrace]; ok || lines[1]["message"] != "untraced" {
		t.Errorf("untraced line: %v", lines[1])
	}
	// Groups keep the record's attributes, and the logger's, where they were.
	if g, _ := lines[2]["g"].(map[string]any); g["k"] != 2.0 || lines[2]["a"] != "b" {
		t.Errorf("grouped line: %v", lines[2])
	}
	if g, _ := lines[3]["g"].(map[string]any); g["c"] != "d" || lines[3]["severity"] != "WARNING" {
		t.Errorf("grouped line: %v", lines[3])
	}
}

func TestProviderLogger(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, nil))
	p, err := New(context.Background(), Config{Exporter: ExporterNone})
	if err != nil {
		t.Fatal(err)
	}
	if p.Logger(base) != base {
		t.Error("no project, but the logger was wrapped")
	}
	p, err = New(context.Background(), Config{Exporter: ExporterNone, Project: "p"}, WithSpanProcessor(tracetest.NewSpanRecorder()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := p.Tracer("t").Start(context.Background(), "s")
	p.Logger(base).InfoContext(ctx, "x")
	span.End()
	if !strings.Contains(buf.String(), `"logging.googleapis.com/trace":"projects/p/traces/`+span.SpanContext().TraceID().String()) {
		t.Errorf("log: %s", buf.String())
	}
}
