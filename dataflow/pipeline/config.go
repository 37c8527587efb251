// Package pipeline is skyjoin's streaming job as an Apache Beam pipeline:
// Pub/Sub events messages -> the enrichment core of the Go worker
// (enrich.Core: decode, validate, weather join, PII policy) -> records to
// BigQuery through the Storage Write API writer of internal/store/bigquery,
// dead letters to the dead-letter topic, in the envelope the Go worker
// writes. See docs/dataflow.md.
package pipeline

import (
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// Weather providers, as skyjoin's --weather-provider names them.
const (
	ProviderOpenMeteo      = "open-meteo"
	ProviderOpenWeatherMap = "openweathermap"
)

// DefaultQuota is Open-Meteo's free tier, for the whole job.
const DefaultQuota = "600/1m,5000/1h,10000/24h"

// Config is skyjoin's own part of the pipeline's options. Its flags use
// Beam's underscore style; the Flex Template's metadata.json lists each
// one as a parameter (a test checks that).
type Config struct {
	Subscription    string // projects/P/subscriptions/S
	DeadLetterTopic string // projects/P/topics/T
	BQTable         string // PROJECT.DATASET.TABLE
	// RecordsTopic, if set, gets the stored records (projects/P/topics/T).
	RecordsTopic    string
	WeatherProvider string
	WeatherURL      string
	WeatherAPIKey   string // a secret reference: sm://..., env://VAR or the key itself
	// WeatherQuota is the provider's quota for the whole job; each worker
	// process takes its share (QuotaShare).
	WeatherQuota string
	// MaxWorkers divides WeatherQuota among the worker processes; the
	// binary sets it from Dataflow's --max_num_workers when it is given.
	MaxWorkers      int
	PIIPolicy       string
	PIIKey          string // a secret reference
	MaxClockSkew    time.Duration
	RequireLocation bool
	// BQEndpoint and the other endpoints below point the clients at local
	// stand-ins (host:port, plaintext, no credentials): tests and
	// emulators only.
	BQEndpoint string
}

// RegisterFlags adds skyjoin's pipeline flags to fs (the process's
// flag.CommandLine in the binary, beside Beam's own).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Subscription, "subscription", "", "Pub/Sub subscription of the events topic, projects/PROJECT/subscriptions/NAME")
	fs.StringVar(&c.DeadLetterTopic, "deadletter_topic", "", "Pub/Sub dead-letter topic the Go worker uses, projects/PROJECT/topics/NAME")
	fs.StringVar(&c.RecordsTopic, "records_topic", "", "Pub/Sub records topic, projects/PROJECT/topics/NAME: the stored records go there for skyjoin serve's live streams and skyjoin deliver's webhooks (default: none)")
	fs.StringVar(&c.BQTable, "bq_table", "", "BigQuery table of the records, PROJECT.DATASET.TABLE or PROJECT:DATASET.TABLE (made by skyjoin migrate)")
	fs.StringVar(&c.WeatherProvider, "weather_provider", ProviderOpenMeteo, "weather provider: open-meteo or openweathermap")
	fs.StringVar(&c.WeatherURL, "weather_url", "", "base URL of the weather provider's API (default: the provider's public API)")
	fs.StringVar(&c.WeatherAPIKey, "weather_api_key", "", "the provider's API key as a SECRET reference: sm://projects/P/secrets/S/versions/V, env://VAR or the key itself (never logged); required for openweathermap")
	fs.StringVar(&c.WeatherQuota, "weather_quota", DefaultQuota, "the provider's quota for the whole job in locations, LIMIT/PERIOD,...; each worker takes LIMIT / max workers; none for no limit")
	fs.IntVar(&c.MaxWorkers, "weather_quota_workers", 0, "the number of workers that share weather_quota (default: --max_num_workers, else 1)")
	fs.StringVar(&c.PIIPolicy, "pii_policy", "default", "what happens to personal data before it is stored, as skyjoin's --pii-policy (see docs/data.md)")
	fs.StringVar(&c.PIIKey, "pii_key", "", "key of the PII policy's HMAC hashes as a SECRET reference (sm://..., env://VAR); required when the policy hashes")
	fs.DurationVar(&c.MaxClockSkew, "max_clock_skew", event.DefaultMaxClockSkew, "how far in the future occurred_at may be")
	fs.BoolVar(&c.RequireLocation, "require_location", false, "dead-letter events without coordinates instead of storing them with status no_location")
	fs.StringVar(&c.BQEndpoint, "bq_endpoint", "", "host:port of a local BigQuery Storage Write API stand-in (plaintext, no credentials); tests only")
}

var (
	subscriptionRE = regexp.MustCompile(`^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/subscriptions/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$`)
	topicRE        = regexp.MustCompile(`^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$`)
)

// Validate reports every problem at once. local is true when the job's
// input is not Pub/Sub (tests, local runs): subscription and
// deadletter_topic are then not required.
func (c Config) Validate(local bool) error {
	var p platform.Problems
	if !local || c.Subscription != "" {
		if !subscriptionRE.MatchString(c.Subscription) {
			p.Addf("subscription must be projects/PROJECT/subscriptions/NAME, got %q", c.Subscription)
		}
	}
	if !local || c.DeadLetterTopic != "" {
		if !topicRE.MatchString(c.DeadLetterTopic) {
			p.Addf("deadletter_topic must be projects/PROJECT/topics/NAME, got %q", c.DeadLetterTopic)
		}
	}
	if c.RecordsTopic != "" && !topicRE.MatchString(c.RecordsTopic) {
		p.Addf("records_topic must be projects/PROJECT/topics/NAME, got %q", c.RecordsTopic)
	}
	if _, err := c.bigquery(); err != nil {
		p.Addf("bq_table must be PROJECT.DATASET.TABLE or PROJECT:DATASET.TABLE: %v", err)
	}
	switch c.WeatherProvider {
	case ProviderOpenMeteo:
	case ProviderOpenWeatherMap:
		if c.WeatherAPIKey == "" {
			p.Addf("weather_api_key is required with weather_provider %s", ProviderOpenWeatherMap)
		}
	default:
		p.Addf("weather_provider must be %s or %s, got %q", ProviderOpenMeteo, ProviderOpenWeatherMap, c.WeatherProvider)
	}
	if _, err := secret.ParseRef(c.WeatherAPIKey); err != nil {
		p.Addf("weather_api_key: %v", err)
	}
	if _, err := weather.ParseQuota(c.WeatherQuota); err != nil {
		p.Addf("weather_quota: %v", err)
	}
	if c.MaxWorkers < 0 {
		p.Addf("weather_quota_workers must not be negative, got %d", c.MaxWorkers)
	}
	spec, err := pii.ParseSpec(c.PIIPolicy)
	if err != nil {
		p.Addf("pii_policy: %v", err)
	} else if spec.Hashes() && c.PIIKey == "" {
		p.Addf("pii_key is required: the PII policy %q hashes", c.PIIPolicy)
	}
	if _, err := secret.ParseRef(c.PIIKey); err != nil {
		p.Addf("pii_key: %v", err)
	}
	if c.MaxClockSkew <= 0 {
		p.Addf("max_clock_skew must be positive, got %s", c.MaxClockSkew)
	}
	return p.Err()
}

// bigquery is the store configuration of bq_table.
// Both of BigQuery's notations are read: PROJECT.DATASET.TABLE (standard
// SQL) and PROJECT:DATASET.TABLE (legacy SQL, as Google's Dataflow templates
// and Terraform's outputs write it).
func (c Config) bigquery() (bigquery.Config, error) {
	project, rest, colon := strings.Cut(c.BQTable, ":")
	var parts []string
	if colon {
		parts = append([]string{project}, strings.Split(rest, ".")...)
	} else {
		parts = strings.Split(c.BQTable, ".")
	}
	if len(parts) != 3 {
		return bigquery.Config{}, fmt.Errorf("got %q", c.BQTable)
	}
	cfg := bigquery.Config{Project: parts[0], Dataset: parts[1], Table: parts[2]}
	return cfg, cfg.Validate()
}

// QuotaShare is one worker process's share of WeatherQuota: each window's
// limit divided by the workers that share it (MaxWorkers, at least 1),
// rounded down and at least 1.
func (c Config) QuotaShare() (string, error) {
	q, err := weather.ParseQuota(c.WeatherQuota)
	if err != nil || q == nil {
		return "none", err
	}
	n := max(c.MaxWorkers, 1)
	parts := make([]string, len(q))
	for i, w := range q {
		parts[i] = fmt.Sprintf("%d/%s", max(w.Limit/n, 1), w.Per)
	}
	return strings.Join(parts, ","), nil
}

// core is the enrichment core with this configuration.
func (c Config) core(j weather.Joiner, policy *pii.Policy) *enrich.Core {
	return &enrich.Core{Joiner: j, MaxClockSkew: c.MaxClockSkew, RequireLocation: c.RequireLocation,
		OnWeatherFailure: enrich.WeatherFailureStore, PII: policy}
}
