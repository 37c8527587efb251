package app

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"github.com/skyjoin/skyjoin/internal/weather"
)

func TestInstrumentPipelineExposesWeatherAndBacklog(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tel, err := telemetry.New(ctx, telemetry.Config{Exporter: telemetry.ExporterPrometheus})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())

	gate := ingest.NewBacklogGate(func(context.Context) (int64, error) { return 42, nil }, 10, time.Hour, platform.Discard)
	go gate.Run(ctx)
	for gate.Backlog() != 42 { // the first poll is at once
		time.Sleep(time.Millisecond)
	}
	gate.Admit() // refused: 42 > 10
	stats := func() weather.Stats {
		return weather.Stats{Requests: 10, Hits: 7, Misses: 3, Stale: 1, Errors: 2, Calls: 4, CallErrors: 1, Points: 30,
			LatencySum: 1500 * time.Millisecond, QuotaWaits: 2, QuotaWaited: 3 * time.Second, QuotaExhausted: 1,
			BreakerRejects: 5, BreakerState: "open", Entries: 12, Bytes: 4096}
	}
	mux := http.NewServeMux()
	mem := fakeMemory{duckdb.Memory{Bytes: 100, IDIndexBytes: 300, Allocator: &duckdb.Allocator{Allocated: 150, Resident: 200}}}
	if err := instrumentPipeline(tel, mux, nil, nil, stats, gate, "enrich", func() memoryReporter { return mem }); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"skyjoin_weather_requests_total 10",
		"skyjoin_weather_cache_hits_total 7",
		"skyjoin_weather_cache_misses_total 3",
		"skyjoin_weather_stale_total 1",
		"skyjoin_weather_errors_total 2",
		"skyjoin_weather_calls_total 4",
		"skyjoin_weather_call_errors_total 1",
		"skyjoin_weather_call_locations_total 30",
		"skyjoin_weather_call_time_seconds_total 1.5",
		"skyjoin_weather_quota_waits_total 2",
		"skyjoin_weather_quota_wait_time_seconds_total 3",
		"skyjoin_weather_quota_exhausted_total 1",
		"skyjoin_weather_breaker_rejects_total 5",
		"skyjoin_weather_breaker_open_ratio 1",
		"skyjoin_weather_cache_entries 12",
		"skyjoin_weather_cache_size_bytes 4096",
		`skyjoin_broker_backlog{subscription="enrich",topic="events"} 42`,
		"skyjoin_ingest_admission_refused_total 1",
		`skyjoin_store_memory_bytes{part="buffer_manager"} 100`,
		`skyjoin_store_memory_bytes{part="allocator_allocated"} 150`,
		`skyjoin_store_memory_bytes{part="allocator_resident"} 200`,
		`skyjoin_store_memory_bytes{part="id_index"} 300`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("%s", body)
	}
}

func TestWeatherAPIKeyFlagIsASecret(t *testing.T) {
	var usage bytes.Buffer
	cfg := newConfig("up")
	fs, _, _ := stageFlagSet(findStageCommand("up"), cfg, &usage)
	t.Setenv("SKYJOIN_TEST_WEATHER_KEY", "k-from-env")
	if err := platform.ParseFlags(fs, []string{"--weather-api-key", "env://SKYJOIN_TEST_WEATHER_KEY", "--telemetry", "none"}); err != nil {
		t.Fatal(err)
	}
	if err := resolveSecrets(context.Background(), cfg.WeatherAPIKey); err != nil {
		t.Fatal(err)
	}
	if cfg.WeatherAPIKey.Reveal() != "k-from-env" || cfg.Telemetry.Exporter != "none" {
		t.Errorf("key %q telemetry %q", cfg.WeatherAPIKey.Reveal(), cfg.Telemetry.Exporter)
	}
	fs.PrintDefaults()
	if strings.Contains(usage.String(), "k-from-env") || !strings.Contains(usage.String(), "-weather-api-key") {
		t.Errorf("usage: %s", usage.String())
	}
	if err := platform.ParseFlags(newFlagSetWith(newConfig("up")), []string{"--weather-api-key", "sm://nope"}); err == nil {
		t.Error("a bad sm:// reference was accepted")
	}
}

func newFlagSetWith(cfg *config) *flag.FlagSet {
	fs, _, _ := stageFlagSet(findStageCommand("up"), cfg, io.Discard)
	return fs
}

// TestLibraryTelemetryIsOff: the Google Cloud clients instrument
// themselves through OpenTelemetry's global providers; setupTelemetry
// leaves those as no-ops, so a library's spans are not recorded and its
// metrics do not reach the process's exporter, while skyjoin's own
// instruments do.
func TestLibraryTelemetryIsOff(t *testing.T) {
	ctx := context.Background()
	p, shutdown, err := setupTelemetry(ctx, telemetry.Config{Exporter: telemetry.ExporterPrometheus, SampleRatio: 1}, platform.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)
	// What otelgrpc and the clients' own tracing do.
	_, span := otel.Tracer("cloud.google.com/go/bigquery").Start(ctx, "bigquery.jobs.query")
	if span.IsRecording() {
		t.Error("a library's span is recorded")
	}
	span.End()
	lib, _ := otel.Meter("go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc").Int64Counter("rpc.client.library_calls")
	lib.Add(ctx, 1)
	own, _ := p.Meter("skyjoin").Int64Counter("skyjoin.own.calls")
	own.Add(ctx, 1)
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body := rec.Body.String(); strings.Contains(body, "library_calls") || !strings.Contains(body, "skyjoin_own_calls") {
		t.Errorf("/metrics: want skyjoin's metric and not the library's:\n%s", body)
	}
	// Trace context still propagates across processes.
	if otel.GetTextMapPropagator() == nil || len(otel.GetTextMapPropagator().Fields()) == 0 {
		t.Error("no global propagator")
	}
}

// fakeMemory is a store's memory report.
type fakeMemory struct{ m duckdb.Memory }

func (f fakeMemory) Memory(context.Context) (duckdb.Memory, error) { return f.m, nil }
