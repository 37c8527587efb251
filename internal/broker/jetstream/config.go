package jetstream

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// EmbeddedURL selects the in-process NATS server.
const EmbeddedURL = "nats://embedded"

// Defaults applied to zero fields of Config.
const (
	DefaultSyncInterval     = time.Second
	DefaultMaxMsgSize       = 8 << 20 // 8 MiB: ingest sends request bodies of up to 5 MiB as one message
	DefaultDeadLetterMaxAge = 14 * 24 * time.Hour

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
	if len(errs) > 0 {
		return fmt.Errorf("jetstream config: %w", errors.Join(errs...))
	}
	return nil
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
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	return u.Redacted()
}
