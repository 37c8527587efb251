package app

import (
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
	"github.com/skyjoin/skyjoin/internal/weather/openweathermap"
)

// Weather providers, for --weather-provider.
const (
	providerOpenMeteo      = "open-meteo"
	providerOpenWeatherMap = "openweathermap"
)

// defaultQuota is Open-Meteo's free tier.
const defaultQuota = "600/1m,5000/1h,10000/24h"

// weatherConfig configures the weather service of `up` and `backfill`. The
// Open-Meteo base URL and key are the commands' own --weather-url and
// --weather-api-key.
type weatherConfig struct {
	Provider     string
	OWMURL       string
	OWMKey       string
	MaxLocations int
	Quota        string
	QuotaMaxWait time.Duration
	CacheEntries int
	CacheBytes   int64
	Grid         float64
	PastTTL      time.Duration
	StaleMaxAge  time.Duration
	SWR          bool
	Timeout      time.Duration
	FetchTimeout time.Duration
	Retries      int
	Backoff      time.Duration
	MaxBackoff   time.Duration
	Concurrency  int
	BreakerFails int
	BreakerOpen  time.Duration
}

// RegisterFlags adds the weather flags to fs.
func (c *weatherConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Provider, "weather-provider", providerOpenMeteo, "weather provider: open-meteo (current and past hours) or openweathermap (current conditions only; needs --openweathermap-api-key)")
	fs.StringVar(&c.OWMURL, "openweathermap-url", openweathermap.DefaultBaseURL, "base URL of the OpenWeatherMap API")
	fs.StringVar(&c.OWMKey, "openweathermap-api-key", "", "OpenWeatherMap API key (appid; never logged)")
	fs.IntVar(&c.MaxLocations, "weather-max-locations", 100, "locations per Open-Meteo request (1-1000)")
	fs.StringVar(&c.Quota, "weather-quota", defaultQuota, "provider quota in locations, as LIMIT/PERIOD,... (Open-Meteo's free tier by default; OpenWeatherMap's free plan: 60/1m); none for no limit")
	fs.DurationVar(&c.QuotaMaxWait, "weather-quota-max-wait", 30*time.Second, "longest wait for the quota; past it the worker holds the batch for redelivery (backpressure)")
	fs.IntVar(&c.CacheEntries, "weather-cache-entries", 100_000, "most answers kept in the weather cache")
	fs.Int64Var(&c.CacheBytes, "weather-cache-bytes", 64<<20, "most memory (bytes, approximate) of the weather cache")
	fs.Float64Var(&c.Grid, "weather-grid", 0.01, "degrees event coordinates are rounded to before asking the provider")
	fs.DurationVar(&c.PastTTL, "weather-past-ttl", 24*time.Hour, "how long answers for past hours are cached (current conditions: their 15-minute slot)")
	fs.DurationVar(&c.StaleMaxAge, "weather-stale-max-age", 30*time.Minute, "oldest earlier-slot answer that may be served, marked stale, when the provider fails (0: never)")
	fs.BoolVar(&c.SWR, "weather-stale-while-revalidate", false, "serve a stale answer at once while the current slot's is fetched, instead of waiting for it")
	fs.DurationVar(&c.Timeout, "weather-timeout", 10*time.Second, "timeout of one provider request")
	fs.DurationVar(&c.FetchTimeout, "weather-fetch-timeout", 2*time.Minute, "longest a fetch may take, quota waits and retries included")
	fs.IntVar(&c.Retries, "weather-retries", 3, "retries of a provider request after a 5xx, 429, timeout or network error (never other 4xx); 0 for none")
	fs.DurationVar(&c.Backoff, "weather-backoff", 500*time.Millisecond, "first retry delay, doubled each retry, with jitter (a longer Retry-After wins)")
	fs.DurationVar(&c.MaxBackoff, "weather-max-backoff", 30*time.Second, "longest retry delay")
	fs.IntVar(&c.Concurrency, "weather-concurrency", 4, "provider requests in flight")
	fs.IntVar(&c.BreakerFails, "weather-breaker-failures", 5, "consecutive failed requests that open the circuit breaker (0: no breaker)")
	fs.DurationVar(&c.BreakerOpen, "weather-breaker-open-for", 30*time.Second, "how long the circuit stays open before a probe request (doubles after a failed probe, up to 10x)")
}

// Validate reports every problem at once.
func (c weatherConfig) Validate() error {
	var p platform.Problems
	switch c.Provider {
	case providerOpenMeteo:
		if c.MaxLocations < 1 || c.MaxLocations > 1000 {
			p.Addf("weather-max-locations must be 1-1000, got %d", c.MaxLocations)
		}
	case providerOpenWeatherMap:
		if c.OWMKey == "" {
			p.Addf("openweathermap-api-key (or %s) is required with --weather-provider %s", platform.EnvName("openweathermap-api-key"), providerOpenWeatherMap)
		}
		if err := (openweathermap.Config{BaseURL: c.OWMURL, APIKey: "x"}).Validate(); err != nil {
			p.Addf("%v", err)
		}
	default:
		p.Addf("weather-provider must be %s or %s, got %q", providerOpenMeteo, providerOpenWeatherMap, c.Provider)
	}
	if _, err := parseQuota(c.Quota); err != nil {
		p.Addf("weather-quota: %v", err)
	}
	if c.Retries < 0 {
		p.Addf("weather-retries must not be negative, got %d", c.Retries)
	}
	if c.BreakerFails < 0 {
		p.Addf("weather-breaker-failures must not be negative, got %d", c.BreakerFails)
	}
	if c.Timeout <= 0 {
		p.Addf("weather-timeout must be positive, got %s", c.Timeout)
	}
	if c.FetchTimeout < c.Timeout {
		p.Addf("weather-fetch-timeout (%s) must be at least weather-timeout (%s)", c.FetchTimeout, c.Timeout)
	}
	if c.CacheEntries < 1 {
		p.Addf("weather-cache-entries must be at least 1, got %d", c.CacheEntries)
	}
	if c.CacheBytes < 1<<10 {
		p.Addf("weather-cache-bytes must be at least 1024, got %d", c.CacheBytes)
	}
	if c.MaxBackoff < c.Backoff {
		p.Addf("weather-max-backoff (%s) must be at least weather-backoff (%s)", c.MaxBackoff, c.Backoff)
	}
	if c.Concurrency < 1 {
		p.Addf("weather-concurrency must be at least 1, got %d", c.Concurrency)
	}
	if c.Grid <= 0 || c.Grid > 1 {
		p.Addf("weather-grid must be in (0, 1], got %g", c.Grid)
	}
	if c.SWR && c.StaleMaxAge <= 0 {
		p.Addf("weather-stale-while-revalidate needs a weather-stale-max-age > 0")
	}
	if err := c.serviceConfig(nil).Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			p.Addf("%s", line)
		}
	}
	return p.Err()
}

// parseQuota reads LIMIT/PERIOD,... ("none" or "": no quota).
func parseQuota(s string) ([]weather.Window, error) { return weather.ParseQuota(s) }

func (c weatherConfig) serviceConfig(log *slog.Logger) weather.ServiceConfig {
	quota, _ := parseQuota(c.Quota)
	retries := c.Retries
	if retries == 0 {
		retries = -1
	}
	fails := c.BreakerFails
	if fails == 0 {
		fails = -1
	}
	return weather.ServiceConfig{
		GridDegrees: c.Grid, MaxEntries: c.CacheEntries, MaxBytes: c.CacheBytes, Concurrency: c.Concurrency,
		PastTTL: c.PastTTL, StaleMaxAge: c.StaleMaxAge, StaleWhileRevalidate: c.SWR,
		CallTimeout: c.Timeout, FetchTimeout: c.FetchTimeout, Retries: retries, BackoffBase: c.Backoff, BackoffMax: c.MaxBackoff,
		Quota: quota, QuotaMaxWait: c.QuotaMaxWait,
		Breaker: weather.BreakerConfig{Failures: fails, OpenFor: c.BreakerOpen, MaxOpenFor: 10 * c.BreakerOpen},
	}
}

// newWeather builds the weather service: the provider chosen by
// cfg.Provider (Open-Meteo at baseURL with apiKey, or OpenWeatherMap) behind
// the cache, quota, retries and breaker. Close it when done.
func newWeather(cfg weatherConfig, baseURL, apiKey string, log *slog.Logger) (*weather.Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var p weather.Provider
	switch cfg.Provider {
	case providerOpenWeatherMap:
		c, err := openweathermap.New(openweathermap.Config{BaseURL: cfg.OWMURL, APIKey: cfg.OWMKey, Timeout: cfg.Timeout})
		if err != nil {
			return nil, fmt.Errorf("weather: %w", err)
		}
		p = c
	default:
		// Retries are the Service's (they go through the quota and the
		// breaker), not the client's.
		c, err := openmeteo.New(openmeteo.Config{BaseURL: baseURL, APIKey: apiKey, MaxLocations: cfg.MaxLocations,
			Timeout: cfg.Timeout, Retries: -1})
		if err != nil {
			return nil, fmt.Errorf("weather: %w", err)
		}
		p = c
	}
	sc := cfg.serviceConfig(log)
	if log != nil {
		log.Info("weather service", "provider", p.Name(), "quota", cfg.Quota, "cache_entries", cfg.CacheEntries,
			"stale_max_age", cfg.StaleMaxAge.String(), "stale_while_revalidate", cfg.SWR, "retries", cfg.Retries,
			"breaker_failures", cfg.BreakerFails)
	}
	return weather.NewService(p, sc), nil
}
