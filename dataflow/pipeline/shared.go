package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
	"github.com/skyjoin/skyjoin/internal/weather/openweathermap"
)

// What a worker process holds once, whatever number of DoFn instances Beam
// makes in it (Setup runs once per instance, and a Dataflow worker runs many
// in parallel): the weather service, so that its cache, coalescing, batched
// misses and quota share are the process's; the PII policy; the BigQuery
// writer and its connection. Each is made on first use for its
// configuration and kept for the life of the process; a failed making is
// not kept, so that the next Setup tries again.
var (
	sharedMu   sync.Mutex
	sharedVals = map[string]any{}
)

type onceVal[T any] struct {
	once sync.Once
	v    T
	err  error
}

// perProcess returns the process's value for key, made by mk on first use.
func perProcess[T any](key string, mk func() (T, error)) (T, error) {
	sharedMu.Lock()
	o, ok := sharedVals[key].(*onceVal[T])
	if !ok {
		o = &onceVal[T]{}
		sharedVals[key] = o
	}
	sharedMu.Unlock()
	o.once.Do(func() { o.v, o.err = mk() })
	if o.err != nil {
		sharedMu.Lock()
		if sharedVals[key] == o {
			delete(sharedVals, key)
		}
		sharedMu.Unlock()
	}
	return o.v, o.err
}

func keyOf(kind string, v any) string {
	b, _ := json.Marshal(v)
	return kind + ":" + string(b)
}

var resolver secret.Resolver

// sharedWeather is a process's weather service, and what it last reported
// to the Beam counters.
type sharedWeather struct {
	svc *weather.Service

	mu   sync.Mutex
	last weather.Stats
}

// report adds the service's provider calls and cache hits since the last
// report to the Beam counters: every call is counted once, by whichever
// bundle reports it.
func (w *sharedWeather) report(ctx context.Context) {
	w.mu.Lock()
	s := w.svc.Stats()
	calls, hits := s.Calls-w.last.Calls, s.Hits-w.last.Hits
	w.last = s
	w.mu.Unlock()
	mWeatherCalls.Inc(ctx, calls)
	mCacheHits.Inc(ctx, hits)
}

// weatherFor returns the process's weather service for cfg, with the
// worker's share of the quota (Config.QuotaShare).
func weatherFor(ctx context.Context, cfg Config) (*sharedWeather, error) {
	key := keyOf("weather", []any{cfg.WeatherProvider, cfg.WeatherURL, cfg.WeatherAPIKey, cfg.WeatherQuota, cfg.MaxWorkers})
	return perProcess(key, func() (*sharedWeather, error) {
		apiKey, err := resolver.Resolve(ctx, cfg.WeatherAPIKey)
		if err != nil {
			return nil, fmt.Errorf("skyjoin: weather_api_key: %w", err)
		}
		share, err := cfg.QuotaShare()
		if err != nil {
			return nil, fmt.Errorf("skyjoin: weather_quota: %w", err)
		}
		quota, _ := weather.ParseQuota(share)
		var p weather.Provider
		switch cfg.WeatherProvider {
		case ProviderOpenWeatherMap:
			c, err := openweathermap.New(openweathermap.Config{BaseURL: cfg.WeatherURL, APIKey: apiKey})
			if err != nil {
				return nil, fmt.Errorf("skyjoin: weather: %w", err)
			}
			p = c
		default:
			// Retries are the Service's (through the quota and the
			// breaker), not the client's.
			c, err := openmeteo.New(openmeteo.Config{BaseURL: cfg.WeatherURL, APIKey: apiKey, Retries: -1})
			if err != nil {
				return nil, fmt.Errorf("skyjoin: weather: %w", err)
			}
			p = c
		}
		logger.Info("skyjoin: weather service for this worker process", "provider", p.Name(), "quota_share", share)
		return &sharedWeather{svc: weather.NewService(p, weather.ServiceConfig{Quota: quota, StaleMaxAge: 30 * time.Minute})}, nil
	})
}

// policyFor returns the process's PII policy for cfg.
func policyFor(ctx context.Context, cfg Config) (*pii.Policy, error) {
	return perProcess(keyOf("pii", []string{cfg.PIIPolicy, cfg.PIIKey}), func() (*pii.Policy, error) {
		spec, err := pii.ParseSpec(cfg.PIIPolicy)
		if err != nil {
			return nil, fmt.Errorf("skyjoin: pii_policy: %w", err)
		}
		key, err := resolver.Resolve(ctx, cfg.PIIKey)
		if err != nil {
			return nil, fmt.Errorf("skyjoin: pii_key: %w", err)
		}
		return pii.New(spec, []byte(key))
	})
}

// writerFor returns the process's BigQuery writer for cfg.
func writerFor(ctx context.Context, cfg Config) (*bigquery.Writer, error) {
	return perProcess(keyOf("bigquery", []string{cfg.BQTable, cfg.BQEndpoint}), func() (*bigquery.Writer, error) {
		bc, err := cfg.bigquery()
		if err != nil {
			return nil, fmt.Errorf("skyjoin: bq_table: %w", err)
		}
		if cfg.BQEndpoint != "" {
			bc.WriteOptions = []option.ClientOption{
				option.WithEndpoint(cfg.BQEndpoint),
				option.WithoutAuthentication(),
				option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
			}
		}
		// The writer keeps its connection for the life of the process.
		return bigquery.NewWriter(context.WithoutCancel(ctx), bc, logger)
	})
}
