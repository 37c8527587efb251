package pipeline

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func testConfig() Config {
	return Config{BQTable: "test-project.skyjoin.events", WeatherProvider: ProviderOpenMeteo,
		WeatherURL: "http://127.0.0.1:1", WeatherQuota: "600/1m", MaxWorkers: 3, PIIPolicy: "keep", MaxClockSkew: time.Minute}
}

// TestWeatherServiceIsPerProcess: every enrich DoFn instance of a process
// (Beam calls Setup once per instance, many per worker, concurrently) uses
// the same weather service, hence one cache and one quota share; another
// configuration gets its own.
func TestWeatherServiceIsPerProcess(t *testing.T) {
	cfg := testConfig()
	fns := make([]*enrichFn, 8)
	var wg sync.WaitGroup
	for i := range fns {
		fns[i] = &enrichFn{Cfg: cfg}
		wg.Go(func() {
			if err := fns[i].Setup(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, fn := range fns[1:] {
		if fn.w != fns[0].w || fn.w == nil {
			t.Fatalf("two DoFn instances of one process hold different weather services")
		}
	}
	other := cfg
	other.WeatherQuota = "60/1m"
	fn := &enrichFn{Cfg: other}
	if err := fn.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if fn.w == fns[0].w {
		t.Errorf("another weather configuration shares the service")
	}
}

// TestSetupFailureIsNotKept: a Setup that fails (here, a secret that cannot
// be read) fails the DoFn, and the next Setup tries again.
func TestSetupFailureIsNotKept(t *testing.T) {
	cfg := testConfig()
	cfg.WeatherAPIKey = "env://SKYJOIN_TEST_SETUP_KEY"
	if err := (&enrichFn{Cfg: cfg}).Setup(t.Context()); err == nil || !strings.Contains(err.Error(), "weather_api_key") {
		t.Fatalf("Setup with an unset secret: %v", err)
	}
	t.Setenv("SKYJOIN_TEST_SETUP_KEY", "k")
	if err := (&enrichFn{Cfg: cfg}).Setup(t.Context()); err != nil {
		t.Fatalf("Setup once the secret is there: %v", err)
	}
}

func TestQuotaShare(t *testing.T) {
	for _, tt := range []struct {
		quota   string
		workers int
		want    string
	}{
		{"600/1m,5000/1h,10000/24h", 4, "150/1m0s,1250/1h0m0s,2500/24h0m0s"},
		{"600/1m", 0, "600/1m0s"},
		{"600/1m", 1, "600/1m0s"},
		{"10/1m", 40, "1/1m0s"},
		{"none", 4, "none"},
	} {
		got, err := Config{WeatherQuota: tt.quota, MaxWorkers: tt.workers}.QuotaShare()
		if err != nil || got != tt.want {
			t.Errorf("QuotaShare(%q, %d workers) = %q, %v; want %q", tt.quota, tt.workers, got, err, tt.want)
		}
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	cfg := Config{
		Subscription: "events", DeadLetterTopic: "projects/p/topics/x", BQTable: "p.d",
		WeatherProvider: "met-office", WeatherAPIKey: "sm://nope", WeatherQuota: "lots", MaxWorkers: -1,
		PIIPolicy: "default", MaxClockSkew: 0,
	}
	err := cfg.Validate(false)
	if err == nil {
		t.Fatal("Validate accepted a bad configuration")
	}
	for _, name := range []string{"subscription", "deadletter_topic", "bq_table", "weather_provider", "weather_api_key",
		"weather_quota:", "weather_quota_workers", "pii_key is required", "max_clock_skew"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("the error does not name %s:\n%v", name, err)
		}
	}
	legacy := testConfig()
	legacy.BQTable = "test-project:skyjoin.events"
	if bc, err := legacy.bigquery(); err != nil || bc.Project != "test-project" || bc.Dataset != "skyjoin" || bc.Table != "events" {
		t.Errorf("bq_table in legacy notation: %+v, %v", bc, err)
	}
	for _, bad := range []string{"skyjoin.events", "p:d:t.x", "test-project:skyjoin", "a.b.c.d"} {
		c := testConfig()
		c.BQTable = bad
		if err := c.Validate(true); err == nil || !strings.Contains(err.Error(), "bq_table") {
			t.Errorf("bq_table %q: %v", bad, err)
		}
	}
	if err := testConfig().Validate(true); err != nil {
		t.Errorf("a local configuration without Pub/Sub: %v", err)
	}
	if err := testConfig().Validate(false); err == nil || !strings.Contains(err.Error(), "subscription") {
		t.Errorf("a Dataflow configuration without a subscription: %v", err)
	}
}
