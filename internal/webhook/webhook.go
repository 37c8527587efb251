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
// secret is stored there, because signing needs it, and is never sent back
// by the API. (Versions before the registry kept both in DuckDB tables.)
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
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
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
	MaxFailureListLimit     = 1000
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
	// DenyPrivate refuses targets on loopback, private, link-local (cloud
	// metadata), CGNAT, multicast and unspecified addresses, both when a
	// webhook is registered with an IP literal and when a connection is
	// dialled (so a DNS name that resolves to such an address is refused
	// too). Off by default so that local receivers work; turn it on in
	// production, where the URLs come from users.
	DenyPrivate bool
}

// RegisterFlags adds the dispatcher's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxAttempts, "webhook-max-attempts", DefaultMaxAttempts, "delivery attempts of a webhook batch before it goes to the failure list")
	fs.DurationVar(&c.RetryDelay, "webhook-retry-delay", DefaultRetryDelay, "backoff before the second delivery attempt of a webhook batch (doubles per attempt, with jitter)")
	fs.DurationVar(&c.MaxRetryDelay, "webhook-max-retry-delay", DefaultMaxRetryDelay, "longest backoff between delivery attempts of a webhook batch")
	fs.DurationVar(&c.RequestTimeout, "webhook-timeout", DefaultRequestTimeout, "timeout of each webhook POST")
	fs.IntVar(&c.QueueSize, "webhook-queue", DefaultQueueSize, "batches that may wait for each webhook's sender; past it they go to the failure list")
	fs.BoolVar(&c.DenyPrivate, "webhook-deny-private", false, "refuse webhook targets on loopback, private, link-local and other non-public addresses (turn on in production)")
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
	return p.Err()
}

// Webhook is a registration as the API shows it. The secret is never part
// of it.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Filter    string    `json:"filter"`
	BatchSize int       `json:"batch_size"`
	MaxWaitMS int64     `json:"max_wait_ms"`
	CreatedAt time.Time `json:"created_at"`
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
	Retries          int64 `json:"retries"`        // attempts after a first one that failed
	FailedBatches    int64 `json:"failed_batches"` // batches that went to the failure list
	QueueFull        int64 `json:"queue_full"`     // of which because the queue was full
	Queued           int64 `json:"queued"`         // batches waiting now
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

// ErrClosed is returned by operations on a closed Dispatcher.
var ErrClosed = errors.New("webhook dispatcher closed")

// errorf wraps err with the operation.
func errorf(op string, err error) error { return fmt.Errorf("webhook: %s: %w", op, err) }
