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
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// Dispatcher holds the registrations, matches stored records against their
// filters and delivers them. It is safe for concurrent use. Several
// Dispatchers (in several processes) on one registry share the
// registrations and the failure lists; each delivers the records handed to
// its own Deliver.
type Dispatcher struct {
	cfg Config
	db  store
	log *slog.Logger
	// strict delivers to public addresses only; private also to private,
	// loopback and link-local ones (allow_private); neither to cloud
	// metadata addresses.
	strict, private *http.Client
	now             func() time.Time

	mu      sync.RWMutex // guards hooks, retired, deleted and closed; Deliver holds it for reading
	hooks   map[string]*hook
	retired []*hook         // replaced by a changed registration; Close waits for their senders too
	deleted map[string]bool // ids deleted through this Dispatcher: a late echo must not revive them
	closed  bool
	// resealed are the registrations this Dispatcher sealed again with the
	// primary key, with the key they had; it does so once per id.
	resealed map[string]string
	// resealing are the registrations being sealed again, until the watch
	// brings back the document written.
	resealing map[string]*resealing
	// reseals are the goroutines storing registrations sealed again.
	reseals sync.WaitGroup

	intake     chan intake // stored batches waiting for route
	intakeDone chan struct{}

	// The watch of the registrations: stopWatch ends it, watchDone is
	// closed once it has.
	stopWatch context.CancelFunc
	watchDone chan struct{}

	// Failures wait in fpending for persistLoop, so that a sender or
	// Deliver never waits for the registry.
	fmu      sync.Mutex
	fpending []*Failure
	fsignal  chan struct{}
	fquit    chan struct{}
	fdone    chan struct{}

	// expireStop ends expireLoop, which closes expireDone.
	expireStop context.CancelFunc
	expireDone chan struct{}

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

	// ctx is the context of its POSTs: cancelled on delete, or when
	// Close's deadline passes.
	ctx    context.Context
	cancel context.CancelFunc
	// stop is closed on delete: the sender drops what it holds and exits.
	stop     chan struct{}
	stopOnce sync.Once
	deleted  atomic.Bool
	done     chan struct{} // closed when the sender has exited

	replayMu sync.Mutex // one replay at a time in this process

	stats struct {
		matched, filterErrors, deliveredBatches, deliveredRecords, retries, failed, queueFull, expired atomic.Int64
	}
}

// intake is one Deliver call waiting for route.
type intake struct {
	recs []event.Record
	c    *call
}

// call tracks the records of one Deliver call: done runs once every
// record is settled for every webhook it matched.
type call struct {
	pending atomic.Int64 // records not settled, 1 while routed, 1 while in Deliver
	done    func()
}

// settle marks n records of the call settled.
func (c *call) settle(n int) {
	if c.pending.Add(-int64(n)) == 0 {
		c.done()
	}
}

// settle marks every record of batch settled.
func settle(batch []encoded) {
	for _, e := range batch {
		e.call.settle(1)
	}
}

// New returns a Dispatcher keeping its registrations and failures in reg.
// It loads the registrations, starts their senders and watches reg, so
// that registrations made or deleted through other processes start or
// stop here too. Close it before closing reg.
func New(ctx context.Context, reg registry.Registry, cfg Config, log *slog.Logger) (*Dispatcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, errorf("new dispatcher", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys, err := cfg.keyring()
	if err != nil {
		return nil, errorf("new dispatcher", err)
	}
	d := &Dispatcher{
		cfg:        cfg,
		db:         store{reg: reg, keys: keys},
		log:        log,
		strict:     newClient(cfg.RequestTimeout, newGuard(cfg.AllowPrivate, cfg.resolver, cfg.dial)),
		private:    newClient(cfg.RequestTimeout, newGuard(true, cfg.resolver, cfg.dial)),
		now:        now,
		hooks:      map[string]*hook{},
		deleted:    map[string]bool{},
		resealed:   map[string]string{},
		resealing:  map[string]*resealing{},
		intake:     make(chan intake, cfg.QueueSize),
		intakeDone: make(chan struct{}),
		watchDone:  make(chan struct{}),
		fsignal:    make(chan struct{}, 1),
		fquit:      make(chan struct{}),
		fdone:      make(chan struct{}),
		expireDone: make(chan struct{}),
	}
	d.hard, d.hardStop = context.WithCancel(context.Background())
	// The watch outlives ctx, which bounds the first load only.
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	unbind := context.AfterFunc(ctx, stop)
	docs, changes, err := reg.Watch(wctx, collWebhooks)
	if !unbind() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		stop()
		d.hardStop()
		return nil, errorf("load webhooks", err)
	}
	d.stopWatch = stop
	d.sync(docs)
	go d.watchLoop(wctx, changes)
	go d.routeLoop()
	go d.persistLoop()
	ectx, estop := context.WithCancel(context.Background())
	d.expireStop = estop
	go d.expireLoop(ectx)
	if keys == nil {
		log.Warn("no webhook secret key (--webhook-secret-key): webhooks cannot be registered through this process, and batches of registrations whose secret it cannot open go to the failure list")
	}
	log.Info("webhooks loaded", "count", len(d.hooks), "secret_key_id", keys.Primary())
	return d, nil
}

// watchLoop applies the changes of the registrations made through any
// process. Should the watch break, it watches again and syncs with the
// registrations it then finds.
func (d *Dispatcher) watchLoop(ctx context.Context, changes <-chan registry.Change) {
	defer close(d.watchDone)
	registry.Follow(ctx, d.db.reg, collWebhooks, changes, d.backoffPolicy().Delay, d.apply, d.sync,
		func(err error) { d.log.Error("webhook: watch the registrations", "error", err.Error()) })
}

// sync makes the live hooks those of docs, the registrations as stored.
func (d *Dispatcher) sync(docs []registry.Doc) {
	seen := make(map[string]bool, len(docs))
	for _, doc := range docs {
		seen[doc.ID] = true
		d.apply(registry.Change{Doc: doc})
	}
	d.mu.RLock()
	var gone []string
	for id := range d.hooks {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	d.mu.RUnlock()
	for _, id := range gone {
		d.apply(registry.Change{Doc: registry.Doc{ID: id}, Deleted: true})
	}
}

// apply makes one change of a registration live: a new one starts, a
// deleted one stops, a changed one is replaced (the old sender delivers
// what it holds). The echo of a change made here changes nothing.
func (d *Dispatcher) apply(c registry.Change) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	old := d.hooks[c.ID]
	if d.revived(c) {
		return
	}
	if c.Deleted {
		if old != nil {
			delete(d.hooks, c.ID)
			old.kill()
			d.log.Info("webhook deleted elsewhere; stopped", "webhook_id", c.ID)
		}
		return
	}
	if d.deleted[c.ID] || old != nil && bytes.Equal(old.reg.raw, c.Data) {
		return
	}
	r, err := decodeRegistration(c.Doc, d.db.keys)
	if err != nil {
		d.log.Error("webhook registration unreadable; the webhook is inactive", "webhook_id", c.ID, "error", err.Error())
		return
	}
	switch {
	case r.secretErr != nil:
		d.log.Error("webhook secret does not open here: nothing is sent to the webhook by this process; its batches go to the failure list, to replay through a process that has the key",
			"webhook_id", r.ID, "error", r.secretErr.Error())
	case d.db.keys != nil && r.sealedWith != d.db.keys.Primary():
		d.reseal(r)
	}
	if old != nil && old.reg.same(r) {
		// Sealed again (here or elsewhere): nothing that delivery uses
		// changed.
		old.reg.raw = r.raw
		return
	}
	f, err := compileFilter(r.Filter)
	if err != nil {
		// Stored by a build with other declarations: keep the document,
		// deliver nothing, say so.
		d.log.Error("webhook filter no longer compiles; the webhook is inactive", "webhook_id", r.ID, "error", err.Error())
		return
	}
	if old != nil {
		old.retire()
		d.retired = append(d.retired, old)
	}
	d.start(r, f)
	d.log.Info("webhook live", "webhook_id", r.ID, "target", origin(r.URL), "filter", r.Filter, "replaced", old != nil)
}

// resealing is a registration being sealed again.
type resealing struct {
	doc     []byte // the document written (nil until encoded)
	deleted bool   // the watch brought a deletion meanwhile
}

// reseal stores r sealed with the primary key, in the background, if its
// secret is plaintext (stored by an earlier version) or sealed with a
// retiring key, and this Dispatcher did not do so before; d.mu must be
// held. The document is written only if it is still the one r was read
// from.
func (d *Dispatcher) reseal(r *registration) {
	from := r.sealedWith
	switch {
	case from == "":
		from = "plaintext"
	case !d.db.keys.retires(from):
		return // a key about to become primary, or the primary of a process that has not rotated yet
	}
	if prev, ok := d.resealed[r.ID]; ok {
		if prev != from {
			d.log.Warn("webhook secret sealed again by another process with a key this one retires; leaving it: give every process the same --webhook-secret-key",
				"webhook_id", r.ID, "secret_key_id", from)
		}
		return
	}
	d.resealed[r.ID] = from
	st := &resealing{}
	d.resealing[r.ID] = st
	read := r.raw // r.raw changes under d.mu once r is live
	d.reseals.Go(func() {
		doc, err := encodeRegistration(r, d.db.keys)
		wrote := false
		if err == nil {
			d.mu.Lock()
			st.doc = doc
			d.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			wrote, err = d.db.resealWebhook(ctx, r.ID, read, doc)
			cancel()
		}
		if !wrote {
			d.mu.Lock()
			if d.resealing[r.ID] == st {
				delete(d.resealing, r.ID)
			}
			d.mu.Unlock()
		}
		switch {
		case err != nil:
			d.log.Error("webhook secret not sealed again; it stays as it is", "webhook_id", r.ID, "from", from, "error", err.Error())
		case wrote:
			d.log.Info("webhook secret sealed again with the current key", "webhook_id", r.ID, "from", from, "secret_key_id", d.db.keys.Primary())
		}
	})
}

// revived reports whether c is the document a reseal wrote after the
// registration was deleted (between its read and its write): the
// deletion is made again. d.mu must be held.
func (d *Dispatcher) revived(c registry.Change) bool {
	st := d.resealing[c.ID]
	switch {
	case st == nil:
		return false
	case c.Deleted:
		st.deleted = true
		return false
	case st.doc == nil || !bytes.Equal(st.doc, c.Data):
		return false
	}
	delete(d.resealing, c.ID)
	if !st.deleted {
		return false
	}
	d.log.Warn("webhook deleted while its secret was sealed again; deleting it again", "webhook_id", c.ID)
	d.deleted[c.ID] = true
	d.reseals.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.db.deleteWebhook(ctx, c.ID); err != nil {
			d.log.Error("webhook: delete again", "webhook_id", c.ID, "error", err.Error())
		}
	})
	return true
}

// start makes r live; d.mu must be held.
func (d *Dispatcher) start(r *registration, f *filter) *hook {
	h := &hook{
		reg:    r,
		filter: f,
		queue:  make(chan []encoded, d.cfg.QueueSize),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	h.ctx, h.cancel = context.WithCancel(d.hard)
	d.hooks[r.ID] = h
	go d.send(h)
	return h
}

// retire takes no more records; the sender delivers what it holds and
// exits.
func (h *hook) retire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.queue)
	}
}

// kill stops the hook of a deleted registration at once: what it holds is
// dropped (settled: nobody wants it any more).
func (h *hook) kill() {
	h.deleted.Store(true)
	h.mu.Lock()
	h.closed = true // the queue stays open for the sender to drain
	h.mu.Unlock()
	h.stopOnce.Do(func() { close(h.stop) })
	h.cancel()
}

// Active is the number of webhooks live in this Dispatcher now. A consumer
// may skip decoding records while it is 0: Deliver would settle them at
// once anyway.
func (d *Dispatcher) Active() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.hooks)
}

// Deliver hands stored records to the webhooks whose filter they match. It
// does not wait for the filters or the deliveries: it is meant for the
// enrich worker's OnStored hook, or a consumer of stored records. recs
// must not be modified afterwards; records of several calls may share one
// POST.
//
// done, if not nil, is called exactly once, on any goroutine (perhaps
// before Deliver returns), once every record of recs is settled: delivered
// with a 2xx to every webhook whose filter it matches, or stored in the
// failure list (queue full, retries spent, shutdown), or matched by no
// webhook (also when there is none, or the webhook was deleted meanwhile).
// A caller may ack the broker message of recs in done. done is never
// called for records that were not settled: after Close, or when a failure
// could not be stored in the registry before Close's deadline; their
// message stays unacknowledged and the broker delivers it again.
//
// Should the intake queue be full, the filters run on the caller's
// goroutine rather than records being lost.
func (d *Dispatcher) Deliver(recs []event.Record, done func()) {
	if done == nil {
		done = func() {}
	}
	if len(recs) == 0 {
		done()
		return
	}
	// One token for routing, one for this call: done never runs while
	// offer holds d.mu.
	in := intake{recs: recs, c: &call{done: done}}
	in.c.pending.Store(2)
	if d.offer(in) {
		in.c.settle(1)
	}
}

// offer hands in to routeLoop, or routes it on the caller's goroutine when
// the intake is full; it reports false once d is closed.
func (d *Dispatcher) offer(in intake) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		d.afterClose.Add(int64(len(in.recs)))
		d.log.Warn("webhook dispatcher closed; records not offered to webhooks", "records", len(in.recs))
		return false
	}
	if len(d.hooks) == 0 {
		in.c.pending.Add(-1) // routed: nothing to match
		return true
	}
	select {
	case d.intake <- in:
	default:
		d.route(in, d.hookList())
	}
	return true
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
	for in := range d.intake {
		d.mu.RLock()
		hs := d.hookList()
		d.mu.RUnlock()
		d.route(in, hs)
	}
}

// route encodes each record once and queues the matches of every hook.
func (d *Dispatcher) route(in intake, hs []*hook) {
	defer in.c.settle(1) // routed: done may run once the matches settle
	if len(hs) == 0 {
		return
	}
	encs := make([]encoded, 0, len(in.recs))
	for i := range in.recs {
		e, err := encodeRecord(&in.recs[i])
		if err != nil {
			// It can match nothing: settled.
			d.encodeErrors.Add(1)
			d.log.Error("webhook: record not offered to webhooks", "event_id", in.recs[i].EventID, "error", err.Error())
			continue
		}
		e.call = in.c
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
		in.c.pending.Add(int64(len(matched)))
		d.enqueue(h, matched)
	}
}

func (d *Dispatcher) enqueue(h *hook, matched []encoded) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		settle(matched) // deleted or replaced meanwhile: nobody wants them here
		return
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
	defer h.cancel()
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
	defer func() {
		if h.deleted.Load() { // drop what is left: settled, nobody wants it
			settle(buf)
			for {
				select {
				case m, ok := <-h.queue:
					if !ok {
						return
					}
					settle(m)
				default:
					return // closed to enqueues: nothing more comes
				}
			}
		}
	}()
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
// delivered goes to the failure list. buf is not kept.
func (d *Dispatcher) deliverBatch(h *hook, buf []encoded) {
	batch := slices.Clone(buf) // buf's array is reused; a failure keeps batch
	id := newID("dlv_")
	attempts, err := d.post(h.ctx, h, id, recordsJSON(batch), d.cfg.MaxAttempts)
	switch {
	case err == nil:
		h.stats.deliveredBatches.Add(1)
		h.stats.deliveredRecords.Add(int64(len(batch)))
		settle(batch)
		return
	case h.deleted.Load():
		settle(batch) // deleted meanwhile: nobody wants it
		return
	}
	reason := err.Error()
	if attempts == 0 && h.reg.secretErr == nil {
		reason = ReasonShutdown
	}
	d.fail(h, newFailure(h.reg.ID, id, batch, reason, attempts, d.now()))
}

func newFailure(webhookID, id string, batch []encoded, reason string, attempts int, at time.Time) *Failure {
	return &Failure{ID: id, WebhookID: webhookID, Reason: reason, Attempts: attempts, FailedAt: at,
		Count: len(batch), EventIDs: eventIDs(batch), batch: batch}
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
	if err := h.reg.secretErr; err != nil {
		return 0, fmt.Errorf("not sent: the webhook's secret does not open in this process: %w", err)
	}
	body := payload(h.reg.ID, deliveryID, records)
	attempts := 0
	err := retry.Call(ctx, retry.Policy{
		Backoff:     d.backoffPolicy(),
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

// client is the HTTP client of h's deliveries.
func (d *Dispatcher) client(h *hook) *http.Client {
	if h.reg.AllowPrivate {
		return d.private
	}
	return d.strict
}

// attempt makes one signed POST. A network error, 408, 429 and 5xx are
// retryable; other answers and a target the guard refused are not. The
// error never holds the target URL, whose query or path may carry a
// credential of the receiver's.
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
	resp, err := d.client(h).Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // Post "URL": ...
		}
		if _, ok := errors.AsType[*RefusedError](err); ok {
			return fmt.Errorf("post: %w", err)
		}
		return &retryable{err: fmt.Errorf("post: %w", platform.RedactError(err))}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("target answered %s: %s", printable([]byte(resp.Status)), targetSnippet(h.reg.URL, snippet))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode >= 500:
		wait, _ := retry.ParseRetryAfter(resp.Header.Get("Retry-After"), ts)
		return &retryable{err: err, retryAfter: wait}
	}
	return err
}

// targetSnippet is the start of a target's error answer, for the failure
// list: one line of text, without the credentials of the target's URL
// (its query values, user information) should the answer echo them.
func targetSnippet(target string, b []byte) string {
	var creds []string
	if u, err := url.Parse(target); err == nil {
		for _, vs := range u.Query() {
			creds = append(creds, vs...)
		}
		if p, ok := u.User.Password(); ok {
			creds = append(creds, p)
		}
	}
	return platform.RedactText(platform.Scrub(strings.TrimSpace(printable(b)), creds...))
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
			settle(f.batch) // deleted meanwhile: nobody wants it
			continue
		}
		if err := d.storeFailure(f); err != nil {
			d.persistErrors.Add(1)
			d.log.Error("webhook batch not stored in the failure list; the broker will deliver its records again",
				"webhook_id", f.WebhookID, "delivery_id", f.ID, "records", f.Count, "reason", f.Reason, "error", err.Error())
			continue
		}
		settle(f.batch)
		d.log.Warn("webhook batch not delivered; kept in the failure list", "webhook_id", f.WebhookID,
			"delivery_id", f.ID, "records", f.Count, "attempts", f.Attempts, "reason", f.Reason)
	}
}

// storeFailure stores a failed batch, as several failures if its records
// exceed a registry document. A registry that fails is tried again with
// backoff until Close's deadline passes.
func (d *Dispatcher) storeFailure(f *Failure) error {
	parts := splitFailure(f)
	docs := make([][]byte, len(parts))
	for i, p := range parts {
		doc, err := encodeFailure(p, recordsJSON(p.batch))
		if err != nil {
			return fmt.Errorf("encode failure %s: %w", p.ID, err)
		}
		docs[i] = doc
	}
	for attempt := 1; ; attempt++ {
		err := func() error {
			for i, p := range parts {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := d.db.reg.Put(ctx, collFailures, failureKey(p.WebhookID, p.ID), docs[i])
				cancel()
				if err != nil {
					return err
				}
			}
			return nil
		}()
		if err == nil || errors.Is(err, registry.ErrTooLarge) || errors.Is(err, registry.ErrInvalid) || d.hard.Err() != nil {
			return err
		}
		d.log.Warn("webhook: storing a failure failed; trying again", "webhook_id", f.WebhookID,
			"delivery_id", f.ID, "attempt", attempt, "error", err.Error())
		retry.Sleep(d.hard, d.backoffPolicy().Delay(attempt)) // d.hard done: the next round returns
	}
}

// backoffPolicy is the backoff of deliveries, of storing failures and of
// watching the registrations again.
func (d *Dispatcher) backoffPolicy() retry.Backoff {
	return retry.Backoff{Initial: d.cfg.RetryDelay, Max: d.cfg.MaxRetryDelay}
}

// Close stops watching the registrations and taking records, lets each
// sender deliver what it holds until ctx is done, then stops retrying and
// stores what was not delivered in the failure list. It returns once every
// failure is stored. Close is idempotent; close the registry after it.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		d.expireStop()
		<-d.expireDone
		d.stopWatch()
		<-d.watchDone
		d.reseals.Wait()
		d.mu.Lock()
		d.closed = true
		hs := append(d.hookList(), d.retired...)
		d.mu.Unlock()
		close(d.intake)
		<-d.intakeDone
		for _, h := range hs {
			h.retire()
		}
		// Until ctx is done, senders retry and failures that the registry
		// refuses are stored again.
		stop := context.AfterFunc(ctx, d.hardStop)
		for _, h := range hs {
			<-h.done
		}
		close(d.fquit)
		<-d.fdone
		stop()
		d.hardStop()
		if n := d.persistErrors.Load(); n > 0 {
			d.closeErr = errorf("close", fmt.Errorf("%d undelivered batches could not be stored in the failure list (their broker messages were not acknowledged)", n))
		}
		d.log.Info("webhook dispatcher closed")
	})
	return d.closeErr
}

// now is the time of registrations and failures: UTC, microseconds.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

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

// expireLoop deletes the failures older than FailureMaxAge, at start and
// every tenth of it (at most an hour apart), until ctx is done. Every
// process on a registry does; deletes of one failure by two are harmless.
func (d *Dispatcher) expireLoop(ctx context.Context) {
	defer close(d.expireDone)
	if d.cfg.FailureMaxAge <= 0 {
		return
	}
	every := min(max(d.cfg.FailureMaxAge/10, time.Millisecond), time.Hour)
	for {
		if _, err := d.expireFailures(ctx, d.now().Add(-d.cfg.FailureMaxAge)); err != nil && ctx.Err() == nil {
			d.log.Warn("webhook: expiring failures failed; trying again later", "error", err.Error(), "retry_in", every.String())
		}
		if retry.Sleep(ctx, every) != nil {
			return
		}
	}
}

// expireFailures deletes the failures of every webhook whose last attempt
// (failed_at) is before cutoff, and returns how many it deleted.
func (d *Dispatcher) expireFailures(ctx context.Context, cutoff time.Time) (int, error) {
	keys, webhooks, err := d.db.expiredFailures(ctx, cutoff)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, k := range keys {
		if err := d.db.reg.Delete(ctx, collFailures, k); err != nil {
			return n, errorf("expire failure "+k, err)
		}
		n++
		d.mu.RLock()
		h := d.hooks[webhooks[i]]
		d.mu.RUnlock()
		if h != nil {
			h.stats.expired.Add(1)
		}
	}
	if n > 0 {
		d.log.Info("webhook failures expired", "count", n, "failed_before", cutoff.Format(time.RFC3339), "max_age", d.cfg.FailureMaxAge.String())
	}
	return n, nil
}
