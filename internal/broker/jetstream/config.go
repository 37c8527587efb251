package jetstream

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// EmbeddedURL selects the in-process NATS server.
const EmbeddedURL = "nats://embedded"

// Defaults applied to zero fields of Config.
const (
	DefaultSyncInterval     = time.Second
	DefaultMaxMsgSize       = 8 << 20 // 8 MiB: ingest sends request bodies of up to 5 MiB as one message
	DefaultDeadLetterMaxAge = 14 * 24 * time.Hour
	DefaultRecordsMaxAge    = 24 * time.Hour
	DefaultRecordsMaxBytes  = 1 << 30 // 1 GiB

	// maxPayloadLimit is the NATS server's hard limit on max_payload.
	maxPayloadLimit = 64 << 20
)

// Config configures the JetStream backend. Zero durations and sizes take
// the defaults above.
type Config struct {
	// URL is EmbeddedURL for an in-process server, or nats://host:port of
	// an external server (credentials in the URL are never logged).
	URL string
	// DataDir holds the embedded server's file store, under DataDir/jetstream.
	// Required for the embedded server; unused for an external one.
	DataDir string
	// Listen, for the embedded server only, is a host:port on which it also
	// accepts TCP clients, so that other skyjoin processes can share it
	// (e.g. "127.0.0.1:4222"). Empty: in-process clients only.
	Listen string
	// SyncInterval is how often the embedded server fsyncs its store.
	SyncInterval time.Duration
	// MaxMsgSize bounds a message: its data plus its attributes.
	MaxMsgSize int
	// DeadLetterMaxAge is how long dead letters are kept.
	DeadLetterMaxAge time.Duration
	// RecordsMaxAge and RecordsMaxBytes bound the records topic, which is
	// not a work queue but a log that every subscription reads at its own
	// pace: messages older than RecordsMaxAge, and the oldest messages once
	// the stream holds more than RecordsMaxBytes, are removed whether or
	// not every subscription has read them (a consumer that falls that far
	// behind misses them). Every process that opens the same external
	// server should give the same values: each one applies its own when it
	// first uses the topic.
	RecordsMaxAge   time.Duration
	RecordsMaxBytes int64
}

// embedded reports whether c selects the in-process server.
func (c Config) embedded() bool { return c.URL == EmbeddedURL }

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = DefaultMaxMsgSize
	}
	if c.DeadLetterMaxAge == 0 {
		c.DeadLetterMaxAge = DefaultDeadLetterMaxAge
	}
	if c.RecordsMaxAge == 0 {
		c.RecordsMaxAge = DefaultRecordsMaxAge
	}
	if c.RecordsMaxBytes == 0 {
		c.RecordsMaxBytes = DefaultRecordsMaxBytes
	}
	return c
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch {
	case c.URL == "":
		add("broker url is required (%s or nats://host:port)", EmbeddedURL)
	case c.embedded():
		if c.DataDir == "" {
			add("data dir is required for %s", EmbeddedURL)
		}
		if c.Listen != "" {
			if err := checkHostPort(c.Listen); err != nil {
				add("listen %q: %w", c.Listen, err)
			}
		}
	default:
		if err := checkExternalURL(c.URL); err != nil {
			errs = append(errs, err)
		}
		if c.Listen != "" {
			add("listen is only valid with %s", EmbeddedURL)
		}
	}
	if c.SyncInterval < 0 {
		add("sync interval %v must not be negative", c.SyncInterval)
	}
	if c.MaxMsgSize < 0 || c.MaxMsgSize > maxPayloadLimit {
		add("max message size %d must be between 1 and %d bytes", c.MaxMsgSize, maxPayloadLimit)
	}
	if c.DeadLetterMaxAge < 0 {
		add("dead-letter max age %v must not be negative", c.DeadLetterMaxAge)
	} else if c.DeadLetterMaxAge > 0 && c.DeadLetterMaxAge < time.Minute {
		add("dead-letter max age %v must be at least 1m", c.DeadLetterMaxAge)
	}
	if c.RecordsMaxAge < 0 {
		add("records max age %v must not be negative", c.RecordsMaxAge)
	} else if c.RecordsMaxAge > 0 && c.RecordsMaxAge < time.Minute {
		add("records max age %v must be at least 1m", c.RecordsMaxAge)
	}
	if c.RecordsMaxBytes < 0 {
		add("records max bytes %d must not be negative", c.RecordsMaxBytes)
	} else if maxMsg := cmp(c.MaxMsgSize, DefaultMaxMsgSize); c.RecordsMaxBytes > 0 && c.RecordsMaxBytes < int64(maxMsg) {
		add("records max bytes %d must be at least the max message size (%d)", c.RecordsMaxBytes, maxMsg)
	}
	if len(errs) > 0 {
		return fmt.Errorf("jetstream config: %w", errors.Join(errs...))
	}
	return nil
}

// URL parameters ParseURL knows, in the order the docs list them.
var urlParams = []string{"listen", "records_max_age", "records_max_bytes", "deadletter_max_age"}

// ParseURL parses a broker URL of the form
//
//	nats://embedded[?param=value&...]          the in-process server
//	nats://[USER[:PASS]@]HOST:PORT[?param=...]  an external server
//
// into a Config (DataDir is the caller's; Open validates). Parameters, each
// at most once; durations in Go syntax (90m, 24h); sizes in bytes, or with
// a KiB, MiB, GiB or TiB suffix:
//
//	listen=127.0.0.1:4222     nats://embedded only: also accept TCP clients there
//	records_max_age=24h       records topic: drop messages older than this (at least 1m)
//	records_max_bytes=1GiB    records topic: drop the oldest beyond this size
//	deadletter_max_age=336h   how long dead letters are kept (at least 1m)
//
// An unknown or repeated parameter is an error; every problem is reported.
// Errors never show the password.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil { // the error would quote the URL, password too
		return Config{}, fmt.Errorf("nats url: not a valid URL: want %s or nats://host:port", EmbeddedURL)
	}
	if u.Scheme != "nats" || u.Fragment != "" {
		return Config{}, fmt.Errorf("nats url %q: want %s or nats://host:port, without a fragment", platform.RedactURL(u.String()), EmbeddedURL)
	}
	params, errs := platform.URLParams(u.RawQuery, urlParams)
	plain := *u
	plain.RawQuery, plain.ForceQuery = "", false
	cfg := Config{URL: plain.String()}
	for _, prm := range params {
		var err error
		switch prm.Name {
		case "listen":
			if cfg.Listen = prm.Value; prm.Value == "" {
				err = errors.New("want host:port")
			}
		case "records_max_age":
			cfg.RecordsMaxAge, err = parseAge(prm.Value)
		case "records_max_bytes":
			cfg.RecordsMaxBytes, err = platform.ParseBytes(prm.Value)
		case "deadletter_max_age":
			cfg.DeadLetterMaxAge, err = parseAge(prm.Value)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("parameter %s=%q: %w", prm.Name, prm.Value, err))
		}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("nats url %q: %w", platform.RedactURL(u.String()), errors.Join(errs...))
	}
	return cfg, nil
}

// parseAge parses a positive Go duration.
func parseAge(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errors.New("want a positive duration such as 90m or 24h")
	}
	return d, nil
}

// checkExternalURL accepts nats://[user[:pass]@]host:port and nothing else.
// Errors never quote the URL, which may hold credentials.
func checkExternalURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("broker url is not a valid URL")
	}
	if u.Scheme != "nats" {
		return fmt.Errorf("broker url scheme %q is not supported (want %s or nats://host:port)", u.Scheme, EmbeddedURL)
	}
	if u.Host == "" {
		return errors.New("broker url has no host")
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("broker url path %q is not supported", u.Path)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("broker url parameters are not supported")
	}
	if u.Port() != "" {
		if err := checkHostPort(u.Host); err != nil {
			return fmt.Errorf("broker url host: %w", err)
		}
	}
	return nil
}

func checkHostPort(hp string) error {
	_, port, err := net.SplitHostPort(hp)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q", port)
	}
	return nil
}

// redactedURL is the URL safe to log.
func redactedURL(raw string) string {
	if _, err := url.Parse(raw); err != nil {
		return "(invalid url)"
	}
	return platform.RedactURL(raw)
}
