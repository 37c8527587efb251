// Package webhook is skyjoin's reverse ETL on event triggers: users register
// a target URL, a CEL filter over the enriched record and a secret; every
// stored record that matches a registration's filter is POSTed to its URL in
// batches, signed with HMAC-SHA256, retried with exponential backoff and
// full jitter, and, once the retries are spent, kept in a failure list that can
// be replayed.
//
// Routes (Go 1.22 ServeMux patterns), all answering JSON:
//
//	POST   /v1/webhooks                          register; 201 with the registration
//	GET    /v1/webhooks                          list registrations
//	GET    /v1/webhooks/{id}                     one registration and its counters
//	DELETE /v1/webhooks/{id}                     remove it and its failures
//	GET    /v1/webhooks/{id}/failures            batches that could not be delivered
//	POST   /v1/webhooks/{id}/failures/replay     deliver them again (all, or by id)
//
// Registrations and failures live in the shared registry handed to New
// (package registry: a JetStream key-value bucket, or Firestore), in the
// collections webhooks and webhook_failures, so they survive a restart and
// every process sees them: each Dispatcher watches the registrations and
// starts or stops its senders within a second or two of a change made
// through any process, and the failure list is read from the registry. The
// secret is stored there, because signing needs it, sealed with AES-256-GCM
// (seal.go), and is never sent back by the API. (Versions before the
// registry kept both in DuckDB tables.)
//
// A target must be a public address unless the webhook was registered with
// allow_private, which takes the admin scope: the guard (ssrf.go) refuses
// at registration what the URL alone tells, and judges every address it
// dials.
//
// Delivery never slows the pipeline: Dispatcher.Deliver only hands the
// stored records to a queue; one goroutine evaluates the filters and each
// registration has its own bounded queue of batches and its own sender. A
// batch that finds its queue full goes to the failure list with the reason
// "queue full", so nothing is dropped silently. Deliver's done callback
// says when every record of the call is settled (delivered, in the failure
// list, or matched by no webhook), so that a broker consumer acks only
// then. See docs/webhooks.md.
package webhook

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
	secretref "github.com/skyjoin/skyjoin/internal/platform/secret"
)

// Defaults of Config.
const (
	DefaultMaxAttempts      = 5
	DefaultRetryDelay       = 500 * time.Millisecond
	DefaultMaxRetryDelay    = 30 * time.Second
	DefaultRequestTimeout   = 10 * time.Second
	DefaultQueueSize        = 64
	DefaultBatchSize        = 100
	DefaultMaxWait          = time.Second
	MaxBatchSize            = 1000
	MaxMaxWait              = time.Minute
	DefaultFailureListLimit = 100
	// DefaultFailureMaxAge is how long a failed batch stays in its
	// webhook's failure list after its last attempt: as long as dead
	// letters (the JetStream broker's deadletter_max_age).
	DefaultFailureMaxAge = 14 * 24 * time.Hour
	MaxFailureListLimit  = 1000
)

// Config configures the Dispatcher. Every field is a flag of `skyjoin up`
// (see RegisterFlags) with a SKYJOIN_* environment fallback.
type Config struct {
	// MaxAttempts bounds the delivery attempts of one batch (the first
	// one included) before it goes to the failure list.
	MaxAttempts int
	// RetryDelay is the ceiling of the backoff before the second attempt;
	// it doubles per attempt up to MaxRetryDelay, and each delay is drawn
	// at random between zero and the ceiling (full jitter, retry.Backoff).
	// A longer Retry-After header of a retryable answer (429, 503, ...) is
	// honoured up to MaxRetryDelay.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// RequestTimeout bounds each POST to a target.
	RequestTimeout time.Duration
	// QueueSize is how many batches of matched records may wait for each
	// registration's sender; past it they go to the failure list.
	QueueSize int
	// FailureMaxAge is how long a failed batch stays in the failure list
	// after its last attempt (failed_at); each process deletes older ones
	// at start and every FailureMaxAge/10, at most hourly. 0 keeps them
	// until replayed, erased, or their webhook deleted.
	FailureMaxAge time.Duration
	// AllowPrivate lets every webhook of this process reach private,
	// loopback and link-local addresses, as a webhook registered with
	// allow_private may (local development, tests). Off by default: a
	// target must be public (see ssrf.go). Cloud metadata addresses are
	// refused either way.
	AllowPrivate bool
	// denyPrivate is the flag of earlier versions, whose guard was off by
	// default: true changes nothing now, false is refused.
	denyPrivate denyPrivateFlag

	// SecretKey seals the webhooks' signing secrets in the registry
	// (AES-256-GCM): a secret reference, env://VAR or sm://..., to 32
	// bytes in base64 or hex. Every process on one registry needs the same
	// key. Unset, the key in KeyFile is used.
	SecretKey secretref.Value
	// OldSecretKeys are keys being retired: they open the secrets they
	// sealed, which are sealed again with SecretKey once loaded.
	OldSecretKeys SecretList
	// NextSecretKey opens secrets sealed with it and seals none: give it to
	// every process before it becomes SecretKey anywhere.
	NextSecretKey secretref.Value
	// KeyFile is the key file of a process whose registry is its own (the
	// embedded broker's bucket under its data dir): the key is generated
	// there (0600) when SecretKey is unset, and, when SecretKey is set, a
	// key file left there opens what it sealed, as an old key would. Not a
	// flag: the process sets it. With neither, the Dispatcher has no key:
	// Create fails with ErrNoKey, and batches for registrations whose
	// secret it cannot open go to the failure list.
	KeyFile string

	// Tests inject these: the keyring instead of the keys above, and the
	// guard's resolver and dialer (nil: the system's).
	keys     *Keyring
	resolver Resolver
	dial     DialFunc
}

// RegisterFlags adds the dispatcher's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxAttempts, "webhook-max-attempts", DefaultMaxAttempts, "delivery attempts of a webhook batch before it goes to the failure list")
	fs.DurationVar(&c.RetryDelay, "webhook-retry-delay", DefaultRetryDelay, "backoff before the second delivery attempt of a webhook batch (doubles per attempt, with jitter)")
	fs.DurationVar(&c.MaxRetryDelay, "webhook-max-retry-delay", DefaultMaxRetryDelay, "longest backoff between delivery attempts of a webhook batch")
	fs.DurationVar(&c.RequestTimeout, "webhook-timeout", DefaultRequestTimeout, "timeout of each webhook POST")
	fs.IntVar(&c.QueueSize, "webhook-queue", DefaultQueueSize, "batches that may wait for each webhook's sender; past it they go to the failure list")
	fs.DurationVar(&c.FailureMaxAge, "webhook-failure-max-age", DefaultFailureMaxAge, "how long a failed batch stays in its webhook's failure list after its last attempt; older ones are deleted (0: kept until replayed or the webhook deleted)")
	fs.BoolVar(&c.AllowPrivate, "webhook-allow-private", false, "let every webhook reach loopback, private and link-local addresses (local development; cloud metadata addresses stay refused); without it only a webhook registered with allow_private, by an admin, may")
	fs.Var(&c.denyPrivate, "webhook-deny-private", "deprecated: the private-address guard is on by default (see --webhook-allow-private)")
	fs.Var(&c.SecretKey, "webhook-secret-key", "key that seals webhook secrets in the registry, as a `SECRET` reference: env://VAR or sm://projects/P/secrets/S/versions/V, 32 bytes in base64 or hex (default: a key generated in the data dir, when the registry is this process's own)")
	fs.Var(&c.OldSecretKeys, "webhook-secret-old-keys", "comma-separated `SECRET` references of retired keys: they open what they sealed, which is sealed again with --webhook-secret-key")
	fs.Var(&c.NextSecretKey, "webhook-secret-next-key", "`SECRET` reference of the key that is to become --webhook-secret-key: it opens secrets, seals none (give it to every process first when rotating)")
}

// Secrets returns the secret references of c, to resolve before New.
func (c Config) Secrets() []secretref.Value {
	return append([]secretref.Value{c.SecretKey, c.NextSecretKey}, c.OldSecretKeys.vals...)
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = max(DefaultMaxRetryDelay, c.RetryDelay)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	return c
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var p platform.Problems
	if c.MaxAttempts < 1 {
		p.Addf("webhook-max-attempts must be at least 1, got %d", c.MaxAttempts)
	}
	if c.FailureMaxAge < 0 {
		p.Addf("webhook-failure-max-age must not be negative (0 keeps failures), got %s", c.FailureMaxAge)
	}
	if c.RetryDelay < 0 {
		p.Addf("webhook-retry-delay must not be negative, got %s", c.RetryDelay)
	}
	if c.MaxRetryDelay < c.RetryDelay {
		p.Addf("webhook-max-retry-delay (%s) must be at least webhook-retry-delay (%s)", c.MaxRetryDelay, c.RetryDelay)
	}
	if c.RequestTimeout <= 0 {
		p.Addf("webhook-timeout must be positive, got %s", c.RequestTimeout)
	}
	if c.QueueSize < 1 {
		p.Addf("webhook-queue must be at least 1, got %d", c.QueueSize)
	}
	if c.denyPrivate.set && !c.denyPrivate.v {
		p.Addf("webhook-deny-private=false is gone: the private-address guard is always on; use --webhook-allow-private (local development) or a webhook's allow_private")
	}
	if c.SecretKey.Ref().Kind() == secretref.KindLiteral {
		p.Addf("webhook-secret-key must be a reference, env://VAR or sm://..., not the key itself (a flag's value shows in the process list)")
	}
	if c.NextSecretKey.Ref().Kind() == secretref.KindLiteral {
		p.Addf("webhook-secret-next-key must be a reference, env://VAR or sm://..., not the key itself")
	}
	for _, v := range c.OldSecretKeys.vals {
		if v.Ref().Kind() == secretref.KindLiteral {
			p.Addf("webhook-secret-old-keys must be references, env://VAR or sm://..., not keys themselves")
			break
		}
	}
	return p.Err()
}

// keyring builds the keyring of the configured keys; their references
// must be resolved (Secrets).
func (c Config) keyring() (*Keyring, error) {
	if c.keys != nil {
		return c.keys, nil
	}
	parse := func(name string, v secretref.Value) ([]byte, error) {
		if !v.Resolved() {
			return nil, fmt.Errorf("%s %s: not resolved", name, v.Ref())
		}
		k, err := ParseKey(v.Reveal())
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", name, v.Ref(), err)
		}
		return k, nil
	}
	var primary []byte
	var retiring, next [][]byte
	var err error
	switch {
	case c.SecretKey.IsSet():
		if primary, err = parse("webhook-secret-key", c.SecretKey); err != nil {
			return nil, err
		}
		if c.KeyFile != "" {
			k, err := LoadKeyFile(c.KeyFile, false)
			switch {
			case err == nil:
				retiring = append(retiring, k)
			case !errors.Is(err, fs.ErrNotExist):
				return nil, err
			}
		}
	case c.KeyFile != "":
		if primary, err = LoadKeyFile(c.KeyFile, true); err != nil {
			return nil, err
		}
	default:
		return nil, nil // no key: see ErrNoKey
	}
	if c.NextSecretKey.IsSet() {
		k, err := parse("webhook-secret-next-key", c.NextSecretKey)
		if err != nil {
			return nil, err
		}
		next = append(next, k)
	}
	for _, v := range c.OldSecretKeys.vals {
		k, err := parse("webhook-secret-old-keys", v)
		if err != nil {
			return nil, err
		}
		retiring = append(retiring, k)
	}
	return NewKeyring(primary, retiring, next)
}

// denyPrivateFlag is a boolean flag that remembers being set.
type denyPrivateFlag struct{ set, v bool }

func (f *denyPrivateFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatBool(f.v)
}

func (f *denyPrivateFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	f.set, f.v = true, v
	return nil
}

func (f *denyPrivateFlag) IsBoolFlag() bool { return true }

// SecretList is a flag of comma-separated secret references.
type SecretList struct{ vals []secretref.Value }

// Set parses the references (flag.Value).
func (l *SecretList) Set(s string) error {
	l.vals = nil
	for ref := range strings.SplitSeq(s, ",") {
		if ref = strings.TrimSpace(ref); ref == "" {
			continue
		}
		v, err := secretref.NewValue(ref)
		if err != nil {
			return err
		}
		l.vals = append(l.vals, v)
	}
	return nil
}

// String never shows a secret: "(set)" or "".
func (l *SecretList) String() string {
	if l == nil || len(l.vals) == 0 {
		return ""
	}
	return "(set)"
}

// Webhook is a registration as the API shows it. The secret is never part
// of it.
type Webhook struct {
	ID        string `json:"id"`
	URL       string `json:"url"`
	Filter    string `json:"filter"`
	BatchSize int    `json:"batch_size"`
	MaxWaitMS int64  `json:"max_wait_ms"`
	// AllowPrivate lets deliveries reach private, loopback and link-local
	// addresses (registered by an admin).
	AllowPrivate bool      `json:"allow_private,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	// Stats are counters since the process started; absent in a 201.
	Stats *Stats `json:"stats,omitempty"`
	// Failures is the number of batches in the failure list.
	Failures *int64 `json:"failures,omitempty"`
}

// Stats are a registration's counters since the process started.
type Stats struct {
	Matched          int64 `json:"matched"`           // records whose filter was true
	FilterErrors     int64 `json:"filter_errors"`     // records whose filter failed to evaluate (counted as no match)
	DeliveredBatches int64 `json:"delivered_batches"` // batches the target answered 2xx
	DeliveredRecords int64 `json:"delivered_records"`
	Retries          int64 `json:"retries"`          // attempts after a first one that failed
	FailedBatches    int64 `json:"failed_batches"`   // batches that went to the failure list
	QueueFull        int64 `json:"queue_full"`       // of which because the queue was full
	Queued           int64 `json:"queued"`           // batches waiting now
	ExpiredFailures  int64 `json:"expired_failures"` // failed batches this process deleted after FailureMaxAge
}

// Failure is a batch that could not be delivered.
type Failure struct {
	ID        string    `json:"id"`
	WebhookID string    `json:"webhook_id"`
	Reason    string    `json:"error"`
	Attempts  int       `json:"attempts"`
	FailedAt  time.Time `json:"failed_at"`
	Count     int       `json:"count"`     // records in the batch
	EventIDs  []string  `json:"event_ids"` // their event ids
	// records is the batch as delivered, a JSON array of records, once
	// loaded from the registry.
	records []byte
	// batch is a failure not stored yet: its records, each with the
	// Deliver call it settles once stored.
	batch []encoded
}

// Reasons of failures that were never attempted.
const (
	ReasonQueueFull = "queue full"
	ReasonShutdown  = "shutdown: not delivered before the shutdown deadline"
)

// ErrNotFound is returned for an unknown webhook or failure id.
var ErrNotFound = errors.New("not found")

// ErrNoKey is returned when a webhook cannot be registered or replayed
// through this Dispatcher: it has no key to seal secrets with, or not the
// one that sealed the webhook's.
var ErrNoKey = errors.New("no webhook secret key")

// ErrClosed is returned by operations on a closed Dispatcher.
var ErrClosed = errors.New("webhook dispatcher closed")

// errorf wraps err with the operation.
func errorf(op string, err error) error { return fmt.Errorf("webhook: %s: %w", op, err) }
