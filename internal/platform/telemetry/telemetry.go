// Package telemetry sets up OpenTelemetry for a skyjoin process: a
// MeterProvider and a TracerProvider chosen by configuration (Prometheus
// /metrics locally, Google Cloud Monitoring and Cloud Trace on Google Cloud,
// or nothing), and a slog handler that correlates logs with traces the way
// Cloud Logging reads them.
//
// Nothing here is stage-specific: each stage declares its own instruments
// on the Meter and Tracer it is given (see ingest.NewTelemetry and
// enrich.NewTelemetry), so that unit tests of a stage need no telemetry at
// all.
package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	mexporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/metric"
	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"cloud.google.com/go/compute/metadata"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// Exporters, the values of --telemetry.
const (
	ExporterPrometheus = "prometheus" // metrics on /metrics; no trace export
	ExporterGCP        = "gcp"        // Cloud Monitoring and Cloud Trace
	ExporterNone       = "none"       // nothing recorded
)

// ServiceName is the service.name resource attribute of every skyjoin process.
const ServiceName = "skyjoin"

// Config configures telemetry.
type Config struct {
	Exporter       string        // prometheus, gcp or none
	Project        string        // Google Cloud project of the GCP exporters and of log/trace correlation
	SampleRatio    float64       // fraction of new traces sampled (a sampled parent is always followed)
	ExportInterval time.Duration // how often metrics are pushed (gcp)
}

// RegisterFlags adds the telemetry flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Exporter, "telemetry", ExporterPrometheus, "metrics and traces: prometheus (GET /metrics, no trace export), gcp (Cloud Monitoring and Cloud Trace) or none")
	fs.StringVar(&c.Project, "telemetry-project", "", "Google Cloud project for --telemetry=gcp and for log/trace correlation (default with gcp: the metadata server's project)")
	fs.Float64Var(&c.SampleRatio, "trace-sample-ratio", 0.1, "fraction of new traces sampled and exported with --telemetry=gcp (0 to 1; a sampled parent is always followed)")
	fs.DurationVar(&c.ExportInterval, "telemetry-export-interval", time.Minute, "how often metrics are pushed to Cloud Monitoring with --telemetry=gcp (at least 10s)")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var p platform.Problems
	switch c.Exporter {
	case ExporterPrometheus, ExporterGCP, ExporterNone:
	default:
		p.Addf("telemetry must be prometheus, gcp or none, got %q", c.Exporter)
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		p.Addf("trace-sample-ratio must be between 0 and 1, got %g", c.SampleRatio)
	}
	if c.Exporter == ExporterGCP && c.ExportInterval < 10*time.Second {
		p.Addf("telemetry-export-interval must be at least 10s (Cloud Monitoring's limit), got %s", c.ExportInterval)
	}
	return p.Err()
}

// Option adjusts New, for tests and special deployments.
type Option func(*options)

type options struct {
	spanProcessors []sdktrace.SpanProcessor
	readers        []sdkmetric.Reader
	onGCE          func(context.Context) bool
	metadataProj   func(context.Context) (string, error)
}

// WithSpanProcessor adds a span processor (tracetest.NewSpanRecorder() in
// tests). It turns on an SDK TracerProvider whatever the exporter, sampling
// every trace unless the exporter samples on its own.
func WithSpanProcessor(sp sdktrace.SpanProcessor) Option {
	return func(o *options) { o.spanProcessors = append(o.spanProcessors, sp) }
}

// WithMetricReader adds a metric reader (sdkmetric.NewManualReader() in
// tests). It turns on an SDK MeterProvider whatever the exporter.
func WithMetricReader(r sdkmetric.Reader) Option {
	return func(o *options) { o.readers = append(o.readers, r) }
}

// Provider holds a process's meter and tracer providers.
type Provider struct {
	cfg       Config
	project   string
	mp        metric.MeterProvider
	tp        trace.TracerProvider
	metrics   http.Handler
	shutdowns []func(context.Context) error
}

// New sets up telemetry from cfg. Call Shutdown to flush and stop it.
func New(ctx context.Context, cfg Config, opts ...Option) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{onGCE: metadata.OnGCEWithContext, metadataProj: metadata.ProjectIDWithContext}
	for _, opt := range opts {
		opt(&o)
	}
	p := &Provider{cfg: cfg, project: cfg.Project}
	if cfg.Exporter == ExporterGCP && p.project == "" {
		proj, err := detectProject(ctx, o)
		if err != nil {
			return nil, err
		}
		p.project = proj
	}
	res := newResource()
	ok := false
	defer func() {
		if !ok {
			p.Shutdown(context.WithoutCancel(ctx))
		}
	}()

	// Metrics.
	readers := o.readers
	switch cfg.Exporter {
	case ExporterPrometheus:
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
		if err != nil {
			return nil, fmt.Errorf("telemetry: create prometheus exporter: %w", err)
		}
		readers = append(readers, exp)
		p.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: errLogger{}})
	case ExporterGCP:
		exp, err := mexporter.New(mexporter.WithProjectID(p.project))
		if err != nil {
			return nil, fmt.Errorf("telemetry: create cloud monitoring exporter for project %s: %w", p.project, err)
		}
		readers = append(readers, sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(cfg.ExportInterval)))
	}
	if len(readers) == 0 {
		p.mp = metricnoop.NewMeterProvider()
	} else {
		mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
		for _, r := range readers {
			mopts = append(mopts, sdkmetric.WithReader(r))
		}
		mp := sdkmetric.NewMeterProvider(mopts...)
		p.mp = mp
		p.shutdowns = append(p.shutdowns, mp.Shutdown)
	}

	// Traces.
	var tps []sdktrace.TracerProviderOption
	sampler := sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))
	if cfg.Exporter == ExporterGCP {
		exp, err := texporter.New(texporter.WithProjectID(p.project))
		if err != nil {
			return nil, fmt.Errorf("telemetry: create cloud trace exporter for project %s: %w", p.project, err)
		}
		tps = append(tps, sdktrace.WithBatcher(exp))
	} else if len(o.spanProcessors) > 0 {
		sampler = sdktrace.AlwaysSample()
	}
	for _, sp := range o.spanProcessors {
		tps = append(tps, sdktrace.WithSpanProcessor(sp))
	}
	if len(tps) == 0 {
		// Nothing would receive the spans: do not make them.
		p.tp = tracenoop.NewTracerProvider()
	} else {
		tp := sdktrace.NewTracerProvider(append(tps, sdktrace.WithResource(res), sdktrace.WithSampler(sampler))...)
		p.tp = tp
		p.shutdowns = append(p.shutdowns, tp.Shutdown)
	}
	ok = true
	return p, nil
}

func detectProject(ctx context.Context, o options) (string, error) {
	for _, env := range []string{"GOOGLE_CLOUD_PROJECT", "GCP_PROJECT"} {
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
	}
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if !o.onGCE(mctx) {
		return "", errors.New("telemetry: --telemetry=gcp needs a project: set --telemetry-project (or GOOGLE_CLOUD_PROJECT), or run on Google Cloud")
	}
	proj, err := o.metadataProj(mctx)
	if err != nil {
		return "", fmt.Errorf("telemetry: read the project from the metadata server: %w", err)
	}
	return proj, nil
}

func newResource() *resource.Resource {
	version := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	var id [8]byte
	rand.Read(id[:])
	host, _ := os.Hostname()
	instance := hex.EncodeToString(id[:])
	if host != "" && host != "localhost" {
		instance = host + "-" + instance
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", ServiceName),
		attribute.String("service.namespace", ServiceName),
		attribute.String("service.version", version),
		// Unique per process, so that instances never write the same time series.
		attribute.String("service.instance.id", instance),
	}
	if rev := os.Getenv("K_REVISION"); rev != "" { // Cloud Run
		attrs = append(attrs, attribute.String("faas.version", rev))
	}
	return resource.NewSchemaless(attrs...)
}

// MeterProvider is the provider stages take their Meter from.
func (p *Provider) MeterProvider() metric.MeterProvider { return p.mp }

// TracerProvider is the provider stages take their Tracer from.
func (p *Provider) TracerProvider() trace.TracerProvider { return p.tp }

// Meter returns a meter of the given instrumentation scope.
func (p *Provider) Meter(name string) metric.Meter { return p.mp.Meter(name) }

// Tracer returns a tracer of the given instrumentation scope.
func (p *Provider) Tracer(name string) trace.Tracer { return p.tp.Tracer(name) }

// Exporter is the configured exporter: prometheus, gcp or none.
func (p *Provider) Exporter() string { return p.cfg.Exporter }

// Project is the Google Cloud project telemetry reports to, or "".
func (p *Provider) Project() string { return p.project }

// MetricsHandler serves the Prometheus text format; nil unless the exporter
// is prometheus.
func (p *Provider) MetricsHandler() http.Handler { return p.metrics }

// Logger returns l with trace correlation (see NewLogHandler) when a
// project is known; l itself otherwise.
func (p *Provider) Logger(l *slog.Logger) *slog.Logger {
	if p.project == "" {
		return l
	}
	return slog.New(NewLogHandler(l.Handler(), p.project))
}

// Shutdown flushes and stops the providers; the Provider must not be used
// after it.
func (p *Provider) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(p.shutdowns) - 1; i >= 0; i-- {
		if err := p.shutdowns[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	p.shutdowns = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry: shut down: %w", err)
	}
	return nil
}

// Propagator is the W3C Trace Context propagator skyjoin uses on HTTP
// requests and broker messages.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// errLogger sends promhttp's errors to slog.
type errLogger struct{}

func (errLogger) Println(v ...any) {
	slog.Warn("telemetry: serve /metrics", "error", strings.TrimSpace(fmt.Sprintln(v...)))
}
