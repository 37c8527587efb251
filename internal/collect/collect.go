// Package collect polls a randomuser-compatible Web API and publishes one
// event.TypeUserObserved event per user it sees.
package collect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// Publisher takes the events of one poll. It returns nil only once the
// events are durably stored (the broker has them).
type Publisher interface {
	PublishEvents(ctx context.Context, events []event.Event) error
}

// Config configures a Collector.
type Config struct {
	URL       string        // base URL of a randomuser-compatible API; polled at {URL}/api/?results=N
	BatchSize int           // users per poll, 1..5000
	Interval  time.Duration // time between the starts of two polls
	MaxEvents int64         // stop after publishing this many events; 0 = no limit
	Nat       string        // optional nationality filter, e.g. "us,gb,de"
	Timeout   time.Duration // per HTTP request
	Retries   int           // retries of a poll after a 5xx, 429 or network error, and of a failed publish
}

// Defaults.
const (
	DefaultURL       = "https://randomuser.me"
	DefaultBatchSize = 100
	DefaultInterval  = 10 * time.Second
	DefaultTimeout   = 30 * time.Second
	DefaultRetries   = 5
	MaxBatchSize     = 5000
)

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{URL: DefaultURL, BatchSize: DefaultBatchSize, Interval: DefaultInterval, Timeout: DefaultTimeout, Retries: DefaultRetries}
}

// RegisterFlags adds the collector's flags to fs, with the defaults of
// DefaultConfig (platform.ParseFlags adds the SKYJOIN_* fallbacks).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.URL, "collect-url", "", "base URL of a randomuser-compatible API to poll ({url}/api/?results=N), e.g. "+d.URL+" (empty: no collector)")
	fs.IntVar(&c.BatchSize, "collect-batch", d.BatchSize, "users per poll (1-5000)")
	fs.DurationVar(&c.Interval, "collect-interval", d.Interval, "time between polls")
	fs.Int64Var(&c.MaxEvents, "collect-max-events", 0, "stop after this many events (0: no limit)")
	fs.StringVar(&c.Nat, "collect-nat", "", "nationalities to ask for, comma-separated (empty: all)")
	fs.DurationVar(&c.Timeout, "collect-timeout", d.Timeout, "timeout of one HTTP request")
	fs.IntVar(&c.Retries, "collect-retries", d.Retries, "retries of a failed poll or publish")
}

var natPattern = regexp.MustCompile(`^[A-Za-z]{2}(,[A-Za-z]{2})*$`)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.URL); c.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("collect URL %q: want http(s)://host[/path]", platform.RedactURL(c.URL)))
	} else if u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("collect URL %q: want a base URL without query or fragment", platform.RedactURL(c.URL)))
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("collect batch size %d: want 1 to %d", c.BatchSize, MaxBatchSize))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("collect interval %s: want > 0", c.Interval))
	}
	if c.MaxEvents < 0 {
		errs = append(errs, fmt.Errorf("collect max events %d: want >= 0 (0: no limit)", c.MaxEvents))
	}
	if c.Nat != "" && !natPattern.MatchString(c.Nat) {
		errs = append(errs, fmt.Errorf("collect nationalities %q: want two-letter codes separated by commas", c.Nat))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("collect timeout %s: want > 0", c.Timeout))
	}
	if c.Retries < 0 {
		errs = append(errs, fmt.Errorf("collect retries %d: want >= 0", c.Retries))
	}
	return errors.Join(errs...)
}

// Options are the collector's dependencies; the zero value is usable.
type Options struct {
	HTTPClient   *http.Client     // default: a client with Config.Timeout
	Now          func() time.Time // default time.Now
	Logger       *slog.Logger     // default: discard
	RetryBackoff time.Duration    // ceiling of the first retry delay, doubled up to 30s (full jitter); default 500ms
}

// Stats are a Collector's counters.
type Stats struct {
	Polls         int64 // polls that got users
	Users         int64 // users received
	Events        int64 // events published
	Skipped       int64 // users skipped (bad coordinates, no id, invalid event)
	FetchErrors   int64 // failed HTTP attempts
	PublishErrors int64 // failed publish attempts
}

// Collector polls the API and publishes events.
type Collector struct {
	cfg     Config
	pub     Publisher
	hc      *http.Client
	now     func() time.Time
	log     *slog.Logger
	backoff time.Duration

	mu   sync.Mutex
	last time.Time // time of the last poll

	polls, users, events, skipped, fetchErrs, pubErrs atomic.Int64
}

// New returns a Collector.
func New(cfg Config, pub Publisher, opts Options) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	if pub == nil {
		return nil, errors.New("collect: nil Publisher")
	}
	c := &Collector{cfg: cfg, pub: pub, hc: opts.HTTPClient, now: opts.Now, log: opts.Logger, backoff: opts.RetryBackoff}
	c.cfg.URL = strings.TrimRight(cfg.URL, "/")
	if c.hc == nil {
		c.hc = &http.Client{Timeout: cfg.Timeout}
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.backoff <= 0 {
		c.backoff = 500 * time.Millisecond
	}
	return c, nil
}

// Stats returns the counters.
func (c *Collector) Stats() Stats {
	return Stats{Polls: c.polls.Load(), Users: c.users.Load(), Events: c.events.Load(), Skipped: c.skipped.Load(),
		FetchErrors: c.fetchErrs.Load(), PublishErrors: c.pubErrs.Load()}
}

// ErrFatal marks an error that polling again will not cure (a 4xx answer
// other than 408 and 429, or a publish that failed every retry).
var ErrFatal = errors.New("fatal")

// Run polls every Interval until ctx is done (it then returns nil) or
// MaxEvents events are published. A poll whose retries all failed is
// logged and the next poll goes ahead; a fatal error stops Run.
func (c *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := c.Poll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrFatal) {
				return err
			}
			c.log.WarnContext(ctx, "poll failed; trying again at the next interval", "error", err.Error(), "url", platform.RedactURL(c.cfg.URL))
		}
		if c.cfg.MaxEvents > 0 && c.events.Load() >= c.cfg.MaxEvents {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll fetches one batch of users and publishes their events; it returns how
// many it published.
func (c *Collector) Poll(ctx context.Context) (int, error) {
	n := c.cfg.BatchSize
	if c.cfg.MaxEvents > 0 {
		left := c.cfg.MaxEvents - c.events.Load()
		if left <= 0 {
			return 0, nil
		}
		n = int(min(int64(n), left))
	}
	body, err := c.fetch(ctx, n)
	if err != nil {
		return 0, err
	}
	at := c.pollTime()
	events, problems, err := Decode(body, at)
	if err != nil {
		c.fetchErrs.Add(1)
		return 0, fmt.Errorf("collect: poll %s: %w", platform.RedactURL(c.cfg.URL), err)
	}
	c.polls.Add(1)
	c.users.Add(int64(len(events) + len(problems)))
	for _, p := range problems {
		c.log.WarnContext(ctx, "skipped a user", "error", p.Error())
	}
	// Check each event as ingest would; an event it would refuse is skipped.
	kept := events[:0]
	for i := range events {
		if errs := events[i].Validate(i, at, event.DefaultMaxClockSkew); len(errs) > 0 {
			problems = append(problems, fmt.Errorf("user %s: %s", events[i].User.ID, event.JoinErrors(errs)))
			c.log.WarnContext(ctx, "skipped a user", "user", events[i].User.ID, "error", event.JoinErrors(errs))
			continue
		}
		kept = append(kept, events[i])
	}
	events = kept
	c.skipped.Add(int64(len(problems)))
	if len(events) > n {
		events = events[:n]
	}
	if len(events) == 0 {
		return 0, nil
	}
	if err := c.publish(ctx, events); err != nil {
		return 0, err
	}
	c.events.Add(int64(len(events)))
	return len(events), nil
}

// pollTime returns the time of a poll: now, truncated to the millisecond
// (the resolution of event ids), and later than any earlier poll's, so that
// event ids of two polls never collide.
func (c *Collector) pollTime() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.now().UTC().Truncate(time.Millisecond)
	if !at.After(c.last) {
		at = c.last.Add(time.Millisecond)
	}
	c.last = at
	return at
}

// Backoff bounds of the collector's retries.
const (
	maxRetryDelay = 30 * time.Second // ceiling of the backoff
	maxRetryAfter = time.Minute      // longest wait a Retry-After may ask for
)

// retryPolicy is how a poll or a publish is retried: Retries times, with a
// backoff from Options.RetryBackoff doubling up to 30 s (full jitter), and
// a longer Retry-After honoured up to a minute. Each failed attempt that
// is retried is logged with what.
func (c *Collector) retryPolicy(what string, retryable func(error) bool) retry.Policy {
	return retry.Policy{
		Backoff:     retry.Backoff{Initial: c.backoff, Max: maxRetryDelay},
		MaxAttempts: c.cfg.Retries + 1,
		Retryable:   retryable,
		MaxHint:     maxRetryAfter,
		OnRetry: func(ctx context.Context, attempt int, err error, wait time.Duration) {
			c.log.WarnContext(ctx, what+" failed; retrying", "error", err.Error(), "attempt", attempt, "retry_in", wait.String())
		},
	}
}

func (c *Collector) publish(ctx context.Context, events []event.Event) error {
	attempts := 0
	err := retry.Call(ctx, c.retryPolicy("publish", nil), func(ctx context.Context) error {
		attempts++
		err := c.pub.PublishEvents(ctx, events)
		if err != nil {
			c.pubErrs.Add(1)
		}
		return err
	})
	if err == nil {
		return nil
	}
	if ce, ok := errors.AsType[*retry.ContextError](err); ok {
		return fmt.Errorf("collect: publish %d events: %w", len(events), ce)
	}
	return fmt.Errorf("collect: publish %d events, %d attempts: %w: %w", len(events), attempts, ErrFatal, err)
}

// statusError is an HTTP error answer of the API.
type statusError struct {
	status     int
	msg        string
	retryAfter time.Duration
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.msg) }

// RetryAfter is the answer's Retry-After, which retry.Call honours.
func (e *statusError) RetryAfter() time.Duration { return e.retryAfter }

var _ retry.Hinter = (*statusError)(nil)

func (e *statusError) retryable() bool {
	return e.status >= 500 || e.status == http.StatusTooManyRequests || e.status == http.StatusRequestTimeout
}

func (c *Collector) fetch(ctx context.Context, n int) ([]byte, error) {
	q := url.Values{"results": {strconv.Itoa(n)}}
	if c.cfg.Nat != "" {
		q.Set("nat", c.cfg.Nat)
	}
	u := c.cfg.URL + "/api/?" + q.Encode()
	attempts := 0
	var body []byte
	err := retry.Call(ctx, c.retryPolicy("poll", func(err error) bool {
		se, ok := errors.AsType[*statusError](err)
		return !ok || se.retryable()
	}), func(ctx context.Context) error {
		attempts++
		var err error
		body, err = c.get(ctx, u)
		if err != nil {
			c.fetchErrs.Add(1)
		}
		return err
	})
	if err == nil {
		return body, nil
	}
	// The URL may hold credentials (user:password@): errors show it without.
	shown := platform.RedactURL(u)
	if ce, ok := errors.AsType[*retry.ContextError](err); ok {
		return nil, fmt.Errorf("collect: GET %s: %w", shown, ce)
	}
	if se, ok := errors.AsType[*statusError](err); ok && !se.retryable() {
		return nil, fmt.Errorf("collect: GET %s: %w: %w", shown, ErrFatal, err)
	}
	return nil, fmt.Errorf("collect: GET %s, %d attempts: %w", shown, attempts, err)
}

func (c *Collector) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		se := &statusError{status: resp.StatusCode, msg: errorMessage(body, resp.StatusCode)}
		se.retryAfter, _ = retry.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return nil, se
	}
	return body, nil
}

func errorMessage(body []byte, status int) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		body = []byte(e.Error)
	}
	s := platform.RedactText(platform.Snippet(body, 200))
	if s == "" {
		s = http.StatusText(status)
	}
	return s
}

// The randomuser wire format, as far as the collector reads it.
type answer struct {
	Error   string `json:"error"`
	Results []user `json:"results"`
}

type user struct {
	Gender string `json:"gender"`
	Name   struct {
		Title, First, Last string
	} `json:"name"`
	Location struct {
		Street struct {
			Number json.RawMessage `json:"number"`
			Name   string          `json:"name"`
		} `json:"street"`
		City        string          `json:"city"`
		State       string          `json:"state"`
		Country     string          `json:"country"`
		Postcode    json.RawMessage `json:"postcode"` // a string or a number
		Coordinates struct {
			Latitude  json.RawMessage `json:"latitude"` // a string, e.g. "-69.8246"
			Longitude json.RawMessage `json:"longitude"`
		} `json:"coordinates"`
		Timezone struct {
			Offset string `json:"offset"`
		} `json:"timezone"`
	} `json:"location"`
	Email string `json:"email"`
	Login struct {
		UUID     string `json:"uuid"`
		Username string `json:"username"`
	} `json:"login"`
	DOB struct {
		Date string `json:"date"`
	} `json:"dob"`
	Phone   string `json:"phone"`
	Cell    string `json:"cell"`
	Picture struct {
		Large string `json:"large"`
	} `json:"picture"`
	Nat string `json:"nat"`
}

// scalar returns a JSON string's value or a number's literal; "" for null
// or anything else.
func scalar(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "" || s == "null":
		return ""
	case s[0] == '"':
		var v string
		if json.Unmarshal(raw, &v) != nil {
			return ""
		}
		return strings.TrimSpace(v)
	case s[0] == '-' || (s[0] >= '0' && s[0] <= '9'):
		return s
	}
	return ""
}

func coordinate(raw json.RawMessage, name string, limit float64) (*float64, error) {
	s := scalar(raw)
	if s == "" {
		return nil, fmt.Errorf("no %s", name)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < -limit || v > limit {
		return nil, fmt.Errorf("%s %q is not a number in [-%g, %g]", name, s, limit, limit)
	}
	return &v, nil
}

var idSafe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$`)

// EventID is the id of the event of the index-th user of the poll at t: the
// same user, poll and position always give the same id.
func EventID(userID string, t time.Time, index int) string {
	if !idSafe.MatchString(userID) || len(userID) > 64 {
		h := sha256.Sum256([]byte(userID))
		userID = hex.EncodeToString(h[:16])
	}
	return "ru-" + userID + "-" + strconv.FormatInt(t.UnixMilli(), 10) + "-" + strconv.Itoa(index)
}

// Decode turns a randomuser answer received at t into events, one per user,
// in order. Users that cannot be turned into an event (no login.uuid,
// coordinates that are not numbers in range) are reported in problems and
// left out. err is set only when the body is not a randomuser answer.
func Decode(body []byte, t time.Time) (events []event.Event, problems []error, err error) {
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, nil, fmt.Errorf("decode randomuser answer: %w", err)
	}
	if a.Error != "" {
		return nil, nil, fmt.Errorf("randomuser answered an error: %s", a.Error)
	}
	t = t.UTC()
	events = make([]event.Event, 0, len(a.Results))
	for i := range a.Results {
		u := &a.Results[i]
		if u.Login.UUID == "" {
			problems = append(problems, fmt.Errorf("user %d: no login.uuid", i))
			continue
		}
		lat, err1 := coordinate(u.Location.Coordinates.Latitude, "latitude", 90)
		lon, err2 := coordinate(u.Location.Coordinates.Longitude, "longitude", 180)
		if err := errors.Join(err1, err2); err != nil {
			problems = append(problems, fmt.Errorf("user %d (%s): %w", i, u.Login.UUID, err))
			continue
		}
		street := strings.TrimSpace(scalar(u.Location.Street.Number) + " " + u.Location.Street.Name)
		events = append(events, event.Event{
			EventID:    EventID(u.Login.UUID, t, i),
			EventType:  event.TypeUserObserved,
			OccurredAt: t,
			User: event.User{
				ID: u.Login.UUID, Username: u.Login.Username,
				Name:  strings.TrimSpace(u.Name.First + " " + u.Name.Last),
				Title: u.Name.Title, FirstName: u.Name.First, LastName: u.Name.Last,
				Email: u.Email, Phone: u.Phone, Cell: u.Cell, Gender: u.Gender, Nationality: u.Nat,
				BirthDate: u.DOB.Date, PictureURL: u.Picture.Large,
			},
			Location: event.Location{
				Latitude: lat, Longitude: lon, Street: street,
				City: u.Location.City, State: u.Location.State, Country: u.Location.Country,
				Postcode: scalar(u.Location.Postcode), Timezone: u.Location.Timezone.Offset,
			},
		})
	}
	return events, problems, nil
}
