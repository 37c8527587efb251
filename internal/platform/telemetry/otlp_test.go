package telemetry

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricsv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// otlpReceiver is an in-process OTLP/gRPC receiver: the trace and metric
// collector services, keeping what they are sent.
type otlpReceiver struct {
	tracev1.UnimplementedTraceServiceServer

	mu      sync.Mutex
	spans   []string // span names
	metrics []string // metric names
	project []string // the gcp.project_id resource attribute of every request
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

	ctx := context.Background()
	cfg := Config{Exporter: ExporterGCP, Project: "my-project", SampleRatio: 1, ExportInterval: time.Minute, OTLPEndpoint: lis.Addr().String()}
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
