package pubsub

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// Defaults applied to zero fields of Config.
const (
	DefaultPrefix                 = "skyjoin"
	DefaultPublishDelay           = 10 * time.Millisecond
	DefaultPublishCount           = 100
	DefaultPublishBytes           = 1_000_000
	DefaultPublishTimeout         = 60 * time.Second
	DefaultMaxOutstandingMessages = 10_000 // as broker.SubscribeOptions documents
	DefaultMaxOutstandingBytes    = 256 << 20
	DefaultNumGoroutines          = 2
	DefaultMaxExtension           = 60 * time.Minute
	DefaultDeadLetterRetention    = 7 * 24 * time.Hour
	DefaultBrowseLimit            = 10_000
)

// Limits of the Pub/Sub service.
const (
	// MaxMessageSize bounds a message: data plus attribute names and values.
	MaxMessageSize    = 10_000_000
	maxPublishCount   = 1000       // messages per Publish request
	maxPublishBytes   = 10_000_000 // bytes per Publish request
	maxAttributes     = 100
	maxAttrKeyBytes   = 256
	maxAttrValueBytes = 1024
	minAckDeadline    = 10 * time.Second
	// minAckDeadlineExactlyOnce is the shortest lease the client library
	// keeps on a message of an exactly-once subscription.
	minAckDeadlineExactlyOnce = 60 * time.Second
	maxAckDeadline            = 600 * time.Second
	// defaultAckConfirmWait bounds Ack's wait for the service's result on
	// an exactly-once subscription: the client library retries such an
	// ack for up to 600 s, each Acknowledge call for up to 60 s.
	defaultAckConfirmWait = 11 * time.Minute
	maxBackoff            = 600 * time.Second
	minRetention          = 10 * time.Minute
	maxRetention          = 7 * 24 * time.Hour
	minDeliveryAttempts   = 5
	maxDeliveryAttempts   = 100
	maxStreams            = 100
	minMaxExtension       = 10 * time.Second
	maxResourceNameBytes  = 255
)

// Config configures the Pub/Sub backend. Zero values take the defaults
// above; for the retry and dead-letter policies zero means "no policy".
type Config struct {
	// Project is the Google Cloud project of the topics and subscriptions.
	Project string
	// Prefix starts every topic and subscription name: topic "events" is
	// PREFIX-events, its subscription "enrich" PREFIX-events-enrich, the
	// dead-letter topic PREFIX-deadletter.
	Prefix string
	// Create makes the broker create missing topics and subscriptions
	// (needs roles/pubsub.editor). Off, they must exist (Terraform).
	Create bool

	// Publish batching: a batch is sent after PublishDelay, or once it holds
	// PublishCount messages or PublishBytes bytes, whichever comes first.
	PublishDelay time.Duration
	PublishCount int
	PublishBytes int
	// PublishTimeout bounds the client's attempts to publish one batch.
	PublishTimeout time.Duration

	// MaxOutstandingMessages bounds the messages a Subscription holds,
	// received and not yet acked or nacked, when SubscribeOptions.
	// MaxOutstanding is zero. MaxOutstandingBytes bounds their data.
	MaxOutstandingMessages int
	MaxOutstandingBytes    int
	// NumGoroutines is the number of StreamingPull streams per Subscription
	// (each carries about 10 MB/s); flow control is split among them.
	NumGoroutines int
	// MaxExtension is how long the client keeps extending the lease of a
	// received message that is neither acked nor nacked.
	MaxExtension time.Duration

	// ExactlyOnce creates subscriptions with exactly-once delivery: Ack then
	// returns the service's confirmation, and an acked message is not
	// delivered again. Off, acks are best effort (see the package doc).
	ExactlyOnce bool
	// MinBackoff and MaxBackoff set the retry policy of created
	// subscriptions: how long the service waits before redelivering a
	// nacked or expired message. Zero both: redeliver at once.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxDeliveryAttempts, when not zero (5-100), gives created
	// subscriptions of the events topic (not of records, whose messages
	// are not events to replay) a dead-letter policy forwarding to the
	// dead-letter topic after that many attempts, and makes
	// Message.Deliveries the service's own count. The worker dead-letters earlier itself (with a reason).
	MaxDeliveryAttempts int
	// DeadLetterRetention is how long the dead-letter topic's browse
	// subscription keeps messages (10m-7d).
	DeadLetterRetention time.Duration
	// BrowseLimit bounds the messages one Browse or Delete reads.
	BrowseLimit int
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	defDur(&c.PublishDelay, DefaultPublishDelay)
	def(&c.PublishCount, DefaultPublishCount)
	def(&c.PublishBytes, DefaultPublishBytes)
	defDur(&c.PublishTimeout, DefaultPublishTimeout)
	def(&c.MaxOutstandingMessages, DefaultMaxOutstandingMessages)
	def(&c.MaxOutstandingBytes, DefaultMaxOutstandingBytes)
	def(&c.NumGoroutines, DefaultNumGoroutines)
	defDur(&c.MaxExtension, DefaultMaxExtension)
	defDur(&c.DeadLetterRetention, DefaultDeadLetterRetention)
	def(&c.BrowseLimit, DefaultBrowseLimit)
	return c
}

var (
	// projectRE accepts project ids (my-project-123), domain-scoped ones
	// (example.com:my-project) and the ids emulators accept.
	projectRE = regexp.MustCompile(`^[a-z][a-z0-9.:-]{0,98}[a-z0-9]$`)
	// prefixRE: a resource name starts with a letter and holds letters,
	// digits and -_.~+%; the longest topic/subscription part is added later.
	prefixRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._~+%-]{0,99}$`)
)

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch {
	case c.Project == "":
		add("project is required")
	case !projectRE.MatchString(c.Project):
		add("project %q is not a valid project id", c.Project)
	}
	if c.Prefix != "" {
		if !prefixRE.MatchString(c.Prefix) {
			add("prefix %q: want a letter then up to 99 of [A-Za-z0-9._~+%%-]", c.Prefix)
		} else if strings.HasPrefix(strings.ToLower(c.Prefix), "goog") {
			add("prefix %q must not start with \"goog\"", c.Prefix)
		}
	}
	nonNegDur := func(name string, d time.Duration) {
		if d < 0 {
			add("%s %v must not be negative", name, d)
		}
	}
	between := func(name string, v, lo, hi int) {
		if v != 0 && (v < lo || v > hi) {
			add("%s %d must be between %d and %d", name, v, lo, hi)
		}
	}
	nonNegDur("publish delay", c.PublishDelay)
	nonNegDur("publish timeout", c.PublishTimeout)
	between("publish count", c.PublishCount, 1, maxPublishCount)
	between("publish bytes", c.PublishBytes, 1, maxPublishBytes)
	if c.MaxOutstandingMessages < 0 {
		add("max outstanding messages %d must not be negative", c.MaxOutstandingMessages)
	}
	if c.MaxOutstandingBytes < 0 {
		add("max outstanding bytes %d must not be negative", c.MaxOutstandingBytes)
	}
	between("goroutines", c.NumGoroutines, 1, maxStreams)
	if c.MaxExtension < 0 || (c.MaxExtension > 0 && c.MaxExtension < minMaxExtension) {
		add("max extension %v must be at least %v", c.MaxExtension, minMaxExtension)
	}
	nonNegDur("min backoff", c.MinBackoff)
	nonNegDur("max backoff", c.MaxBackoff)
	if c.MinBackoff > maxBackoff || c.MaxBackoff > maxBackoff {
		add("min and max backoff must be at most %v", maxBackoff)
	}
	if c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		add("min backoff %v must not exceed max backoff %v", c.MinBackoff, c.MaxBackoff)
	}
	between("max delivery attempts", c.MaxDeliveryAttempts, minDeliveryAttempts, maxDeliveryAttempts)
	if c.DeadLetterRetention < 0 || (c.DeadLetterRetention > 0 && (c.DeadLetterRetention < minRetention || c.DeadLetterRetention > maxRetention)) {
		add("dead-letter retention %v must be between %v and %v", c.DeadLetterRetention, minRetention, maxRetention)
	}
	if c.BrowseLimit < 0 {
		add("browse limit %d must not be negative", c.BrowseLimit)
	}
	if len(errs) > 0 {
		return fmt.Errorf("pubsub config: %w", errors.Join(errs...))
	}
	return nil
}

// URL parameters ParseURL knows, in the order the docs list them.
var urlParams = []string{
	"create", "prefix",
	"publish_delay", "publish_count", "publish_bytes", "publish_timeout",
	"max_outstanding_messages", "max_outstanding_bytes", "goroutines", "max_extension",
	"exactly_once", "min_backoff", "max_backoff", "max_delivery_attempts",
	"deadletter_retention", "browse_limit",
}

// ParseURL parses a broker URL of the form
//
//	pubsub://PROJECT[?param=value&...]
//
// into a Config (not yet validated: Open does that). Parameters, each given
// at most once; durations in Go syntax (10ms, 2m); booleans true or false:
//
//	create=true                   create missing topics and subscriptions (default false)
//	prefix=skyjoin                name prefix of topics and subscriptions
//	publish_delay=10ms            publish batching: delay threshold
//	publish_count=100             publish batching: messages per batch (max 1000)
//	publish_bytes=1000000         publish batching: bytes per batch (max 10000000)
//	publish_timeout=60s           give up publishing a batch after this
//	max_outstanding_messages=N    flow control when the subscriber sets none (default 10000)
//	max_outstanding_bytes=N       flow control: bytes held per subscription (default 256 MiB)
//	goroutines=2                  StreamingPull streams per subscription
//	max_extension=60m             lease extension limit of a received message
//	exactly_once=false            create subscriptions with exactly-once delivery
//	min_backoff=0s, max_backoff=0s   retry policy of created subscriptions
//	max_delivery_attempts=0       dead-letter policy of created events subscriptions (5-100; 0 none)
//	deadletter_retention=168h     retention of the dead-letter browse subscription
//	browse_limit=10000            messages one Browse or Delete reads at most
//
// An unknown or repeated parameter is an error. Every problem is reported.
func ParseURL(raw string) (Config, error) {
	var cfg Config
	u, err := url.Parse(raw)
	if err != nil {
		return cfg, errors.New("pubsub url: not a valid URL") // the error would quote it, credentials too
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if u.Scheme != "pubsub" {
		add("scheme %q: want pubsub://PROJECT", u.Scheme)
	}
	if u.User != nil {
		add("user info is not supported (credentials come from the environment)")
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		add("path %q is not supported: want pubsub://PROJECT", u.Path+u.Opaque)
	}
	if u.Fragment != "" {
		add("fragment is not supported")
	}
	cfg.Project = u.Host
	if cfg.Project == "" {
		add("no project: want pubsub://PROJECT")
	}
	params, perrs := platform.URLParams(u.RawQuery, urlParams)
	errs = append(errs, perrs...)
	for _, prm := range params {
		k, v := prm.Name, prm.Value
		dur := func(p *time.Duration) {
			d, err := time.ParseDuration(v)
			if err != nil {
				add("parameter %s=%q: want a duration such as 10ms or 2m", k, v)
				return
			}
			*p = d
		}
		integer := func(p *int) {
			n, err := strconv.Atoi(v)
			if err != nil {
				add("parameter %s=%q: want an integer", k, v)
				return
			}
			*p = n
		}
		boolean := func(p *bool) {
			b, err := strconv.ParseBool(v)
			if err != nil {
				add("parameter %s=%q: want true or false", k, v)
				return
			}
			*p = b
		}
		switch k {
		case "create":
			boolean(&cfg.Create)
		case "prefix":
			if v == "" {
				add("parameter prefix is empty")
			}
			cfg.Prefix = v
		case "publish_delay":
			dur(&cfg.PublishDelay)
		case "publish_count":
			integer(&cfg.PublishCount)
		case "publish_bytes":
			integer(&cfg.PublishBytes)
		case "publish_timeout":
			dur(&cfg.PublishTimeout)
		case "max_outstanding_messages":
			integer(&cfg.MaxOutstandingMessages)
		case "max_outstanding_bytes":
			integer(&cfg.MaxOutstandingBytes)
		case "goroutines":
			integer(&cfg.NumGoroutines)
		case "max_extension":
			dur(&cfg.MaxExtension)
		case "exactly_once":
			boolean(&cfg.ExactlyOnce)
		case "min_backoff":
			dur(&cfg.MinBackoff)
		case "max_backoff":
			dur(&cfg.MaxBackoff)
		case "max_delivery_attempts":
			integer(&cfg.MaxDeliveryAttempts)
		case "deadletter_retention":
			dur(&cfg.DeadLetterRetention)
		case "browse_limit":
			integer(&cfg.BrowseLimit)
		}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("pubsub url %q: %w", u.Redacted(), errors.Join(errs...))
	}
	return cfg, nil
}
