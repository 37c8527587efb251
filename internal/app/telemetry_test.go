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

	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
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
	if err := instrumentPipeline(tel, mux, nil, nil, stats, gate, "enrich"); err != nil {
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
