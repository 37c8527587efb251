// Package telemetry sets up OpenTelemetry for a skyjoin process: a
// MeterProvider and a TracerProvider chosen by configuration (Prometheus
// /metrics locally, OTLP to Google Cloud's Telemetry API on Google Cloud,
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
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
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/oauth"

	gcpdetector "go.opentelemetry.io/contrib/detectors/gcp"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/iam"
)

// Exporters, the values of --telemetry.
const (
	ExporterPrometheus = "prometheus" // metrics on /metrics; no trace export
	ExporterGCP        = "gcp"        // OTLP to Google Cloud's Telemetry API: Cloud Monitoring and Cloud Trace
	ExporterNone       = "none"       // nothing recorded
)

// ServiceName is the service.name resource attribute of every skyjoin process.
const ServiceName = "skyjoin"

// DefaultOTLPEndpoint is Google Cloud's Telemetry API (OTLP over gRPC),
// which takes traces into Cloud Trace and metrics into Cloud Monitoring.
const DefaultOTLPEndpoint = "telemetry.googleapis.com:443"

// otlpScope is the OAuth scope of the Telemetry API's calls: it covers
// trace.append and monitoring.write.
const otlpScope = "https://www.googleapis.com/auth/cloud-platform"

// Config configures telemetry.
type Config struct {
	Exporter       string        // prometheus, gcp or none
	Project        string        // Google Cloud project of the GCP exporters and of log/trace correlation
	SampleRatio    float64       // fraction of new traces sampled (a sampled parent is always followed)
	ExportInterval time.Duration // how often metrics are pushed (gcp)
	OTLPEndpoint   string        // host:port of the OTLP gRPC endpoint (gcp); default DefaultOTLPEndpoint
	// Location is the cloud.region resource attribute off Cloud Run (gcp):
	// Cloud Monitoring's location label of every time series. On Cloud
	// Run the metadata server's region wins.
	Location string
}

// DefaultLocation is the default of --telemetry-location.
const DefaultLocation = "global"

// RegisterFlags adds the telemetry flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Exporter, "telemetry", ExporterPrometheus, "metrics and traces: prometheus (GET /metrics, no trace export), gcp (OTLP to Google Cloud's Telemetry API: Cloud Monitoring and Cloud Trace) or none")
	fs.StringVar(&c.OTLPEndpoint, "telemetry-otlp-endpoint", DefaultOTLPEndpoint, "host:port of the OTLP gRPC endpoint of --telemetry=gcp (TLS, Google credentials)")
	fs.StringVar(&c.Project, "telemetry-project", "", "Google Cloud project for --telemetry=gcp and for log/trace correlation (default with gcp: the metadata server's project)")
	fs.Float64Var(&c.SampleRatio, "trace-sample-ratio", 0.1, "fraction of new traces sampled and exported with --telemetry=gcp (0 to 1; a sampled parent is always followed)")
	fs.StringVar(&c.Location, "telemetry-location", DefaultLocation, "cloud.region of the metrics and traces of --telemetry=gcp off Cloud Run (Cloud Monitoring's location label); on Cloud Run the instance's region")
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
	if c.Exporter == ExporterGCP && c.OTLPEndpoint != "" {
		if _, port, ok := strings.Cut(c.OTLPEndpoint, ":"); !ok || port == "" || strings.Contains(c.OTLPEndpoint, "/") {
			p.Addf("telemetry-otlp-endpoint must be host:port, got %q", c.OTLPEndpoint)
		}
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
	// detector finds the Cloud Run attributes (region, project, instance)
	// from the metadata server; the OpenTelemetry GCP detector by default.
	detector resource.Detector
	// otlpInsecure dials the OTLP endpoint without TLS nor credentials:
	// tests' in-process receivers.
	otlpInsecure bool
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

// Grants are the IAM grants of a process that exports (Exporter gcp): it
// writes metrics and spans to the Telemetry API (telemetry.metrics.write,
// telemetry.traces.write). The other exporters need none.
func (c Config) Grants() []iam.Grant {
	if c.Exporter != ExporterGCP {
		return nil
	}
	return []iam.Grant{
		{Role: "roles/telemetry.metricsWriter", On: iam.Project},
		{Role: "roles/telemetry.tracesWriter", On: iam.Project},
	}
}

// New sets up telemetry from cfg. Call Shutdown to flush and stop it.
func New(ctx context.Context, cfg Config, opts ...Option) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{onGCE: metadata.OnGCEWithContext, metadataProj: metadata.ProjectIDWithContext, detector: gcpdetector.NewDetector()}
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
	res := newResource(ctx, cfg, o)
	ok := false
	defer func() {
		if !ok {
			p.Shutdown(context.WithoutCancel(ctx))
		}
	}()

	if p.project != "" {
		// The Telemetry API routes data by this resource attribute.
		res = resource.NewSchemaless(append(res.Attributes(), attribute.String("gcp.project_id", p.project))...)
	}

	// Metrics.
	var traceExporter sdktrace.SpanExporter
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
		conn, err := otlpConn(ctx, cfg, p.project, o)
		if err != nil {
			return nil, err
		}
		// The exporters below share conn and do not close it.
		p.shutdowns = append(p.shutdowns, func(context.Context) error { return conn.Close() })
		exp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithGRPCConn(conn))
		if err != nil {
			return nil, fmt.Errorf("telemetry: create the OTLP metric exporter: %w", err)
		}
		readers = append(readers, sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(cfg.ExportInterval)))
		texp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithGRPCConn(conn))
		if err != nil {
			return nil, fmt.Errorf("telemetry: create the OTLP trace exporter: %w", err)
		}
		traceExporter = texp
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
	if traceExporter != nil {
		tps = append(tps, sdktrace.WithBatcher(traceExporter))
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

// otlpConn dials the OTLP endpoint of cfg: TLS with Google credentials
// (Application Default Credentials: the service account on Cloud Run), the
// project as the quota and billing project.
func otlpConn(ctx context.Context, cfg Config, project string, o options) (*grpc.ClientConn, error) {
	endpoint := cfg.OTLPEndpoint
	if endpoint == "" {
		endpoint = DefaultOTLPEndpoint
	}
	var opts []grpc.DialOption
	if o.otlpInsecure {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		ts, err := google.DefaultTokenSource(ctx, otlpScope)
		if err != nil {
			return nil, fmt.Errorf("telemetry: Google credentials for %s: %w", endpoint, err)
		}
		opts = append(opts,
			grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(nil, "")),
			grpc.WithPerRPCCredentials(quotaProject{oauth.TokenSource{TokenSource: oauth2.ReuseTokenSource(nil, ts)}, project}))
	}
	conn, err := grpc.NewClient(endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP endpoint %s: %w", endpoint, err)
	}
	return conn, nil
}

// quotaProject adds the x-goog-user-project header to Google credentials.
type quotaProject struct {
	oauth.TokenSource
	project string
}

func (q quotaProject) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	md, err := q.TokenSource.GetRequestMetadata(ctx, uri...)
	if err != nil {
		return nil, err
	}
	if q.project != "" {
		md["x-goog-user-project"] = q.project
	}
	return md, nil
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

// metadataTimeout bounds the metadata server lookups of the resource: a
// slow metadata server delays the start by at most this much.
const metadataTimeout = 3 * time.Second

// newResource describes this process for Cloud Monitoring and Cloud Trace.
// The Telemetry API stores metrics under a monitored resource whose
// location label is required and read from cloud.region, so with the gcp
// exporter cloud.region is always set: on Cloud Run (K_SERVICE set) from
// the metadata server (through the OpenTelemetry GCP resource detector,
// which honours GCE_METADATA_HOST), with the Cloud Run attributes
// (cloud.provider, cloud.platform, cloud.account.id, faas.*) and
// service.name=K_SERVICE, service.version=K_REVISION,
// service.instance.id=the instance id; elsewhere from cfg.Location.
func newResource(ctx context.Context, cfg Config, o options) *resource.Resource {
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
	attrs := map[attribute.Key]attribute.Value{
		"service.name":      attribute.StringValue(ServiceName),
		"service.namespace": attribute.StringValue(ServiceName),
		"service.version":   attribute.StringValue(version),
		// Unique per process, so that instances never write the same time series.
		"service.instance.id": attribute.StringValue(instance),
	}
	service, rev := os.Getenv("K_SERVICE"), os.Getenv("K_REVISION")
	if service != "" { // Cloud Run
		attrs["service.name"] = attribute.StringValue(service)
		attrs["faas.name"] = attribute.StringValue(service)
		if rev != "" {
			attrs["service.version"] = attribute.StringValue(rev)
			attrs["faas.version"] = attribute.StringValue(rev)
		}
	}
	if cfg.Exporter == ExporterGCP {
		if service != "" && o.detector != nil {
			for _, kv := range detect(ctx, o.detector) {
				attrs[kv.Key] = kv.Value
			}
			if v, ok := attrs["faas.instance"]; ok && v.AsString() != "" {
				attrs["service.instance.id"] = v
			}
			// The detector's faas.name and faas.version are K_SERVICE and
			// K_REVISION too; service.* stay as set above.
		}
		if v, ok := attrs["cloud.region"]; !ok || v.AsString() == "" {
			loc := cfg.Location
			if loc == "" {
				loc = DefaultLocation
			}
			attrs["cloud.region"] = attribute.StringValue(loc)
		}
	}
	kvs := make([]attribute.KeyValue, 0, len(attrs))
	for k, v := range attrs {
		kvs = append(kvs, attribute.KeyValue{Key: k, Value: v})
	}
	return resource.NewSchemaless(kvs...)
}

// detect runs d for at most metadataTimeout (the GCP detector does not
// take the context's deadline) and returns what it found; a partial
// result is kept and the failure logged, so that the exporters still run
// (cloud.region then falls back to --telemetry-location).
func detect(ctx context.Context, d resource.Detector) []attribute.KeyValue {
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	type result struct {
		res *resource.Resource
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := d.Detect(ctx)
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			slog.Warn("telemetry: detect the Cloud Run resource from the metadata server", "error", r.err)
		}
		if r.res == nil {
			return nil
		}
		return r.res.Attributes()
	case <-ctx.Done():
		slog.Warn("telemetry: detect the Cloud Run resource from the metadata server", "error", ctx.Err())
		return nil
	}
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
