package webhook

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// Dispatcher holds the registrations, matches stored records against their
// filters and delivers them. It is safe for concurrent use.
type Dispatcher struct {
	cfg    Config
	db     sqlStore
	log    *slog.Logger
	client *http.Client
	now    func() time.Time

	mu     sync.RWMutex // guards hooks and closed; Deliver holds it for reading
	hooks  map[string]*hook
	closed bool

	intake     chan []event.Record // stored batches waiting for route
	intakeDone chan struct{}

	// Failures wait in fpending for persistLoop, so that a sender or
	// Deliver never waits for the database.
	fmu      sync.Mutex
	fpending []*Failure
	fsignal  chan struct{}
	fquit    chan struct{}
	fdone    chan struct{}

	// hard is cancelled when Close's deadline passes: senders stop
	// retrying and what is left becomes failures.
	hard     context.Context
	hardStop context.CancelFunc

	closeOnce sync.Once
	closeErr  error

	encodeErrors  atomic.Int64
	afterClose    atomic.Int64
	persistErrors atomic.Int64
}

// hook is a live registration: its compiled filter, queue and sender.
type hook struct {
	reg    *registration
	filter *filter

	mu     sync.Mutex // guards closed and sends on queue
	closed bool
	queue  chan []encoded // batches of matched records
	stop   chan struct{}  // closed on delete: the sender exits at once
	done   chan struct{}  // closed when the sender has exited

	replayMu sync.Mutex // one replay at a time

	stats struct {
		matched, filterErrors, deliveredBatches, deliveredRecords, retries, failed, queueFull atomic.Int64
	}
}

// New returns a Dispatcher keeping its registrations and failures in db. It
// creates its tables if need be, loads the registrations and starts their
// senders. Close it before closing db.
func New(ctx context.Context, db DB, cfg Config, log *slog.Logger) (*Dispatcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, errorf("new dispatcher", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		cfg:        cfg,
		db:         sqlStore{db},
		log:        log,
		client:     newClient(cfg.RequestTimeout, cfg.DenyPrivate),
		now:        now,
		hooks:      map[string]*hook{},
		intake:     make(chan []event.Record, cfg.QueueSize),
		intakeDone: make(chan struct{}),
		fsignal:    make(chan struct{}, 1),
		fquit:      make(chan struct{}),
		fdone:      make(chan struct{}),
	}
	d.hard, d.hardStop = context.WithCancel(context.Background())
	if err := d.db.migrate(ctx); err != nil {
		return nil, err
	}
	regs, err := d.db.loadWebhooks(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range regs {
		f, err := compileFilter(r.Filter)
		if err != nil {
			// Stored by an older build with other declarations: keep the
			// row, deliver nothing, say so.
			log.Error("webhook filter no longer compiles; the webhook is inactive",
				"webhook_id", r.ID, "error", err.Error())
			continue
		}
		d.start(r, f)
	}
	go d.routeLoop()
	go d.persistLoop()
	log.Info("webhooks loaded", "count", len(d.hooks))
	return d, nil
}

func (d *Dispatcher) start(r *registration, f *filter) *hook {
	h := &hook{
		reg:    r,
		filter: f,
		queue:  make(chan []encoded, d.cfg.QueueSize),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	d.hooks[r.ID] = h
	go d.send(h)
	return h
}

// Deliver hands stored records to the webhooks whose filter they match. It
// does not wait for the filters or the deliveries: it is meant for the enrich
// worker's OnStored hook. recs must not be modified afterwards. Should the
// intake queue be full, the filters run on the caller's goroutine rather than
// records being lost.
func (d *Dispatcher) Deliver(recs []event.Record) {
	if len(recs) == 0 {
		return
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		d.afterClose.Add(int64(len(recs)))
		d.log.Warn("webhook dispatcher closed; records not offered to webhooks", "records", len(recs))
		return
	}
	if len(d.hooks) == 0 {
		return
	}
	select {
	case d.intake <- recs:
	default:
		d.route(recs, d.hookList())
	}
}

// hookList returns the live hooks; d.mu must be held.
func (d *Dispatcher) hookList() []*hook {
	hs := make([]*hook, 0, len(d.hooks))
	for _, h := range d.hooks {
		hs = append(hs, h)
	}
	return hs
}

func (d *Dispatcher) routeLoop() {
	defer close(d.intakeDone)
	for recs := range d.intake {
		d.mu.RLock()
		hs := d.hookList()
		d.mu.RUnlock()
		d.route(recs, hs)
	}
}

// route encodes each record once and queues the matches of every hook.
func (d *Dispatcher) route(recs []event.Record, hs []*hook) {
	if len(hs) == 0 {
		return
	}
	encs := make([]encoded, 0, len(recs))
	for i := range recs {
		e, err := encodeRecord(&recs[i])
		if err != nil {
			d.encodeErrors.Add(1)
			d.log.Error("webhook: record not offered to webhooks", "event_id", recs[i].EventID, "error", err.Error())
			continue
		}
		encs = append(encs, e)
	}
	for _, h := range hs {
		var matched []encoded
		for _, e := range encs {
			ok, err := h.filter.match(e.vars)
			if err != nil {
				h.stats.filterErrors.Add(1)
				continue
			}
			if ok {
				matched = append(matched, e)
			}
		}
		if len(matched) == 0 {
			continue
		}
		h.stats.matched.Add(int64(len(matched)))
		d.enqueue(h, matched)
	}
}

func (d *Dispatcher) enqueue(h *hook, matched []encoded) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return // deleted: nobody wants its records
	}
	select {
	case h.queue <- matched:
	default:
		h.stats.queueFull.Add(1)
		d.fail(h, newFailure(h.reg.ID, newID("dlv_"), matched, ReasonQueueFull, 0, d.now()))
	}
}

// send is a hook's sender: it gathers matched records into batches of up
// to BatchSize, waiting at most MaxWait for a batch to fill, and delivers
// them one at a time.
func (d *Dispatcher) send(h *hook) {
	defer close(h.done)
	size, wait := h.reg.BatchSize, time.Duration(h.reg.MaxWaitMS)*time.Millisecond
	var buf []encoded
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var timerC <-chan time.Time
	deliver := func(all bool) {
		for len(buf) >= size || (all && len(buf) > 0) {
			n := min(len(buf), size)
			d.deliverBatch(h, buf[:n])
			buf = buf[n:]
			select {
			case <-h.stop:
				return
			default:
			}
		}
		if len(buf) == 0 {
			buf = nil
			timer.Stop()
			timerC = nil
		}
	}
	for {
		select {
		case <-h.stop:
			timer.Stop()
			return
		case m, ok := <-h.queue:
			if !ok {
				deliver(true)
				return
			}
			if len(buf) == 0 && wait > 0 {
				timer.Reset(wait)
				timerC = timer.C
			}
			buf = append(buf, m...)
			deliver(wait == 0)
		case <-timerC:
			timerC = nil
			deliver(true)
		}
	}
}

// deliverBatch posts one batch with retries; a batch that cannot be
// delivered goes to the failure list.
func (d *Dispatcher) deliverBatch(h *hook, batch []encoded) {
	id := newID("dlv_")
	recs := recordsJSON(batch)
	attempts, err := d.post(d.hard, h, id, recs, d.cfg.MaxAttempts)
	if err == nil {
		h.stats.deliveredBatches.Add(1)
		h.stats.deliveredRecords.Add(int64(len(batch)))
		return
	}
	reason := err.Error()
	if attempts == 0 {
		reason = ReasonShutdown
	}
	f := newFailure(h.reg.ID, id, batch, reason, attempts, d.now())
	f.records = recs
	d.fail(h, f)
}

func newFailure(webhookID, id string, batch []encoded, reason string, attempts int, at time.Time) *Failure {
	ids := make([]string, len(batch))
	for i, e := range batch {
		ids[i] = e.id
	}
	return &Failure{ID: id, WebhookID: webhookID, Reason: reason, Attempts: attempts, FailedAt: at,
		Count: len(batch), EventIDs: ids, records: recordsJSON(batch)}
}

// recordsJSON is the JSON array of a batch's records.
func recordsJSON(batch []encoded) []byte {
	n := 2
	for _, e := range batch {
		n += len(e.json) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, e := range batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.json...)
	}
	return append(b, ']')
}

// payload is the body of a delivery:
// {"webhook_id": ..., "delivery_id": ..., "records": [...]}.
func payload(webhookID, deliveryID string, records []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(records) + 96)
	b.WriteString(`{"webhook_id":`)
	b.WriteString(strconv.Quote(webhookID))
	b.WriteString(`,"delivery_id":`)
	b.WriteString(strconv.Quote(deliveryID))
	b.WriteString(`,"records":`)
	b.Write(records)
	b.WriteString("}")
	return b.Bytes()
}

// retryable marks a failed attempt worth another one, with the target's
// Retry-After, if any.
type retryable struct {
	err        error
	retryAfter time.Duration
}

func (e *retryable) Error() string             { return e.err.Error() }
func (e *retryable) Unwrap() error             { return e.err }
func (e *retryable) RetryAfter() time.Duration { return e.retryAfter }

var _ retry.Hinter = (*retryable)(nil)

// post delivers one batch, making up to maxAttempts attempts with backoff
// (retry.Call: RetryDelay doubling up to MaxRetryDelay, full jitter, a
// Retry-After honoured up to MaxRetryDelay). It returns the number of
// attempts made (0 if ctx was done before the first) and the last error.
func (d *Dispatcher) post(ctx context.Context, h *hook, deliveryID string, records []byte, maxAttempts int) (int, error) {
	body := payload(h.reg.ID, deliveryID, records)
	attempts := 0
	err := retry.Call(ctx, retry.Policy{
		Backoff:     retry.Backoff{Initial: d.cfg.RetryDelay, Max: d.cfg.MaxRetryDelay},
		MaxAttempts: maxAttempts,
		Retryable:   func(err error) bool { _, ok := errors.AsType[*retryable](err); return ok },
		OnRetry:     func(context.Context, int, error, time.Duration) { h.stats.retries.Add(1) },
	}, func(ctx context.Context) error {
		attempts++
		return d.attempt(ctx, h, deliveryID, body)
	})
	if err == nil {
		return attempts, nil
	}
	if ce, ok := errors.AsType[*retry.ContextError](err); ok {
		if ce.Err == nil {
			return attempts, fmt.Errorf("%s: %w", ReasonShutdown, ce.CtxErr)
		}
		return attempts, fmt.Errorf("attempt %d of %d: %w; no more attempts: shutting down", attempts, maxAttempts, ce.Err)
	}
	return attempts, fmt.Errorf("attempt %d of %d: %w", attempts, maxAttempts, err)
}

// attempt makes one signed POST. A network error, 408, 429 and 5xx are
// retryable; other answers and a refused private target are not.
func (d *Dispatcher) attempt(ctx context.Context, h *hook, deliveryID string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.reg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	ts := d.now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "skyjoin-webhook/1")
	req.Header.Set(HeaderWebhookID, h.reg.ID)
	req.Header.Set(HeaderDelivery, deliveryID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(h.reg.secret, ts, body))
	resp, err := d.client.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), errPrivateTarget) {
			return fmt.Errorf("post: %w", err)
		}
		return &retryable{err: fmt.Errorf("post: %w", err)}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("target answered %s: %s", resp.Status, strings.TrimSpace(printable(snippet)))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode >= 500:
		wait, _ := retry.ParseRetryAfter(resp.Header.Get("Retry-After"), ts)
		return &retryable{err: err, retryAfter: wait}
	}
	return err
}

// printable keeps an answer's snippet on one line of text.
func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "?"))
}

// fail queues a failure for persistLoop.
func (d *Dispatcher) fail(h *hook, f *Failure) {
	h.stats.failed.Add(1)
	d.fmu.Lock()
	d.fpending = append(d.fpending, f)
	d.fmu.Unlock()
	select {
	case d.fsignal <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) persistLoop() {
	defer close(d.fdone)
	for {
		select {
		case <-d.fsignal:
			d.persistPending()
		case <-d.fquit:
			d.persistPending()
			return
		}
	}
}

func (d *Dispatcher) persistPending() {
	d.fmu.Lock()
	fs := d.fpending
	d.fpending = nil
	d.fmu.Unlock()
	for _, f := range fs {
		d.mu.RLock()
		_, live := d.hooks[f.WebhookID]
		d.mu.RUnlock()
		if !live {
			continue // deleted meanwhile
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.db.insertFailure(ctx, f)
		cancel()
		if err != nil {
			d.persistErrors.Add(1)
			d.log.Error("webhook batch lost: could not store it in the failure list", "webhook_id", f.WebhookID,
				"delivery_id", f.ID, "records", f.Count, "reason", f.Reason, "error", err.Error())
			continue
		}
		d.log.Warn("webhook batch not delivered; kept in the failure list", "webhook_id", f.WebhookID,
			"delivery_id", f.ID, "records", f.Count, "attempts", f.Attempts, "reason", f.Reason)
	}
}

// Close stops taking records, lets each sender deliver what it holds until
// ctx is done, then stops retrying and stores what was not delivered in
// the failure list. It returns once every failure is stored. Close is
// idempotent; close the database after it.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		hs := d.hookList()
		d.mu.Unlock()
		close(d.intake)
		<-d.intakeDone
		for _, h := range hs {
			h.mu.Lock()
			if !h.closed {
				h.closed = true
				close(h.queue)
			}
			h.mu.Unlock()
		}
		stop := context.AfterFunc(ctx, d.hardStop)
		for _, h := range hs {
			<-h.done
		}
		stop()
		d.hardStop()
		close(d.fquit)
		<-d.fdone
		if n := d.persistErrors.Load(); n > 0 {
			d.closeErr = errorf("close", fmt.Errorf("%d undelivered batches could not be stored in the failure list", n))
		}
		d.log.Info("webhook dispatcher closed")
	})
	return d.closeErr
}

// newID returns prefix and 20 random hex digits.
func newID(prefix string) string {
	var b [10]byte
	crand.Read(b[:]) // never fails
	return prefix + hex.EncodeToString(b[:])
}

// sortedHooks returns the live hooks by creation.
func (d *Dispatcher) sortedHooks() []*hook {
	d.mu.RLock()
	hs := d.hookList()
	d.mu.RUnlock()
	slices.SortFunc(hs, func(a, b *hook) int {
		if c := a.reg.CreatedAt.Compare(b.reg.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.reg.ID, b.reg.ID)
	})
	return hs
}
