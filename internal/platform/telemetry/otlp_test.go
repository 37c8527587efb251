package telemetry

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricsv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"

	"github.com/skyjoin/skyjoin/internal/auth/authtest"
)

// otlpReceiver is an in-process OTLP/gRPC receiver: the trace and metric
// collector services, keeping what they are sent.
type otlpReceiver struct {
	tracev1.UnimplementedTraceServiceServer

	mu      sync.Mutex
	spans   []string // span names
	metrics []string // metric names
	project []string // the gcp.project_id resource attribute of every request
	// resources are the resource attributes of every metrics request.
	resources []map[string]string
}

func (r *otlpReceiver) Export(_ context.Context, req *tracev1.ExportTraceServiceRequest) (*tracev1.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		r.project = append(r.project, attr(rs.Resource.GetAttributes(), "gcp.project_id"))
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				r.spans = append(r.spans, sp.Name)
			}
		}
	}
	return &tracev1.ExportTraceServiceResponse{}, nil
}

type metricsServer struct {
	metricsv1.UnimplementedMetricsServiceServer
	r *otlpReceiver
}

func (m metricsServer) Export(_ context.Context, req *metricsv1.ExportMetricsServiceRequest) (*metricsv1.ExportMetricsServiceResponse, error) {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		m.r.project = append(m.r.project, attr(rm.Resource.GetAttributes(), "gcp.project_id"))
		res := map[string]string{}
		for _, kv := range rm.Resource.GetAttributes() {
			res[kv.Key] = kv.Value.GetStringValue()
		}
		m.r.resources = append(m.r.resources, res)
		for _, sm := range rm.ScopeMetrics {
			for _, mt := range sm.Metrics {
				m.r.metrics = append(m.r.metrics, mt.Name)
			}
		}
	}
	return &metricsv1.ExportMetricsServiceResponse{}, nil
}

func attr(kvs []*commonv1.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

// TestGCPExportsOTLP: with --telemetry=gcp, spans and metrics go over
// OTLP/gRPC to the configured endpoint (Google's Telemetry API in
// production; here an in-process receiver), with the project as a resource
// attribute, and Shutdown flushes them.
func TestGCPExportsOTLP(t *testing.T) {
	rcv, addr := startReceiver(t)
	ctx := context.Background()
	cfg := Config{Exporter: ExporterGCP, Project: "my-project", SampleRatio: 1, ExportInterval: time.Minute, OTLPEndpoint: addr}
	p, err := New(ctx, cfg, func(o *options) { o.otlpInsecure = true })
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer("test").Start(ctx, "skyjoin.test.span")
	span.End()
	c, err := p.Meter("test").Int64Counter("skyjoin.test.things", metric.WithUnit("{thing}"))
	if err != nil {
		t.Fatal(err)
	}
	c.Add(ctx, 2)
	if p.MetricsHandler() != nil {
		t.Error("gcp serves /metrics")
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if !slices.Contains(rcv.spans, "skyjoin.test.span") {
		t.Errorf("spans received: %q", rcv.spans)
	}
	if !slices.Contains(rcv.metrics, "skyjoin.test.things") {
		t.Errorf("metrics received: %q", rcv.metrics)
	}
	for _, proj := range rcv.project {
		if proj != "my-project" {
			t.Errorf("gcp.project_id = %q, want my-project", proj)
		}
	}
}

func TestOTLPEndpointValidate(t *testing.T) {
	for _, ep := range []string{"https://telemetry.googleapis.com", "telemetry.googleapis.com"} {
		if err := (Config{Exporter: ExporterGCP, ExportInterval: time.Minute, OTLPEndpoint: ep}).Validate(); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
}

// startReceiver starts an in-process OTLP receiver and returns it and its
// address.
func startReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &otlpReceiver{}
	srv := grpc.NewServer()
	tracev1.RegisterTraceServiceServer(srv, rcv)
	metricsv1.RegisterMetricsServiceServer(srv, metricsServer{r: rcv})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return rcv, lis.Addr().String()
}

// exportOneMetric sets up --telemetry=gcp against addr, records a metric,
// shuts down (which flushes) and returns the resources received.
func exportOneMetric(t *testing.T, rcv *otlpReceiver, addr string, cfg Config) []map[string]string {
	t.Helper()
	ctx := context.Background()
	cfg.Exporter, cfg.SampleRatio, cfg.ExportInterval, cfg.OTLPEndpoint = ExporterGCP, 1, time.Minute, addr
	p, err := New(ctx, cfg, func(o *options) { o.otlpInsecure = true })
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Meter("test").Int64Counter("skyjoin.test.things")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(ctx, 1)
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.resources) == 0 {
		t.Fatal("no metrics received")
	}
	return rcv.resources
}

// TestGCPResourceOnCloudRun: on Cloud Run the resource of exported metrics
// carries the instance's region (Cloud Monitoring's required location),
// project and instance id from the metadata server, and the Cloud Run
// attributes from the environment.
func TestGCPResourceOnCloudRun(t *testing.T) {
	authtest.CloudRunMetadata(t, "my-project", "123456", "europe-west1", "inst-0042")
	t.Setenv("K_SERVICE", "skyjoin-ingest")
	t.Setenv("K_REVISION", "skyjoin-ingest-00007-abc")
	t.Setenv("K_CONFIGURATION", "skyjoin-ingest")
	rcv, addr := startReceiver(t)
	want := map[string]string{
		"cloud.provider":      "gcp",
		"cloud.platform":      "gcp_cloud_run",
		"cloud.region":        "europe-west1",
		"cloud.account.id":    "my-project",
		"gcp.project_id":      "my-project",
		"service.name":        "skyjoin-ingest",
		"service.namespace":   "skyjoin",
		"service.version":     "skyjoin-ingest-00007-abc",
		"service.instance.id": "inst-0042",
		"faas.name":           "skyjoin-ingest",
		"faas.version":        "skyjoin-ingest-00007-abc",
		"faas.instance":       "inst-0042",
	}
	for _, res := range exportOneMetric(t, rcv, addr, Config{Project: "my-project", Location: "us-central1"}) {
		for k, v := range want {
			if res[k] != v {
				t.Errorf("resource %s = %q, want %q", k, res[k], v)
			}
		}
	}
}

// TestGCPResourceLocation: off Cloud Run, --telemetry-location is the
// cloud.region of exported metrics, "global" by default, and no metadata
// server is asked.
func TestGCPResourceLocation(t *testing.T) {
	t.Setenv("K_SERVICE", "")
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1") // would fail if asked
	for _, tc := range []struct{ flag, want string }{{"", "global"}, {"us-central1", "us-central1"}} {
		rcv, addr := startReceiver(t)
		for _, res := range exportOneMetric(t, rcv, addr, Config{Project: "p", Location: tc.flag}) {
			if res["cloud.region"] != tc.want || res["service.name"] != ServiceName {
				t.Errorf("--telemetry-location=%q: cloud.region %q, service.name %q", tc.flag, res["cloud.region"], res["service.name"])
			}
			if res["cloud.platform"] != "" {
				t.Errorf("cloud.platform = %q off Cloud Run", res["cloud.platform"])
			}
		}
	}
}

// TestGCPResourceMetadataDown: on Cloud Run with a metadata server that
// fails, telemetry still starts, within the timeout, with
// --telemetry-location as the region.
func TestGCPResourceMetadataDown(t *testing.T) {
	md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(md.Close)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(md.URL, "http://"))
	t.Setenv("K_SERVICE", "skyjoin-ingest")
	t.Setenv("K_CONFIGURATION", "skyjoin-ingest")
	rcv, addr := startReceiver(t)
	start := time.Now()
	for _, res := range exportOneMetric(t, rcv, addr, Config{Project: "p", Location: "asia-east1"}) {
		if res["cloud.region"] != "asia-east1" || res["service.name"] != "skyjoin-ingest" {
			t.Errorf("cloud.region %q, service.name %q", res["cloud.region"], res["service.name"])
		}
	}
	if d := time.Since(start); d > metadataTimeout+2*time.Second {
		t.Errorf("start took %s", d)
	}
}
