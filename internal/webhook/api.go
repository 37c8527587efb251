package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// Limits of a registration.
const (
	MaxURLLength    = 2048
	MinSecretLength = 16
	MaxSecretLength = 512
	maxBodyBytes    = 64 << 10
)

// Input is the body of POST /v1/webhooks.
type Input struct {
	URL    string `json:"url"`
	Filter string `json:"filter"`
	Secret string `json:"secret"`
	// BatchSize is the most records per POST (1 to MaxBatchSize; default
	// DefaultBatchSize).
	BatchSize *int `json:"batch_size,omitempty"`
	// MaxWaitMS is how long matched records may wait for a batch to fill
	// (0 to one minute; default one second; 0 sends at once).
	MaxWaitMS *int64 `json:"max_wait_ms,omitempty"`
	// AllowPrivate lets deliveries reach private, loopback and link-local
	// addresses (never cloud metadata ones). It takes the admin scope.
	AllowPrivate bool `json:"allow_private,omitempty"`
}

// ErrForbidden is returned for a registration the caller may not make:
// allow_private without the admin scope.
var ErrForbidden = errors.New("forbidden")

// mayAllowPrivate reports whether the caller of ctx may register a webhook
// with allow_private: one with the admin scope. A process without auth
// (no principal, or the anonymous one) listens on loopback only, unless
// its operator chose --insecure-no-auth: whoever reaches it is trusted.
func mayAllowPrivate(ctx context.Context) bool {
	p, ok := auth.FromContext(ctx)
	return !ok || p.Kind == "none" || p.Has(api.ScopeAdmin)
}

// FieldError is one problem of an Input.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every problem of an Input.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Field + ": " + p.Message
	}
	return "invalid webhook: " + strings.Join(parts, "; ")
}

// validate checks in and returns the registration it describes.
func (d *Dispatcher) validate(in Input) (*registration, *filter, error) {
	var probs []FieldError
	bad := func(field, format string, args ...any) {
		probs = append(probs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if msg := checkURL(in.URL, in.AllowPrivate || d.cfg.AllowPrivate); msg != "" {
		bad("url", "%s", msg)
	}
	f, err := compileFilter(in.Filter)
	if err != nil {
		bad("filter", "compile error: %v", err)
	} else if err := f.checkCost(); err != nil {
		bad("filter", "%v", err)
	}
	switch n := len(in.Secret); {
	case n == 0:
		bad("secret", "required: the key of the HMAC-SHA256 signature of every delivery")
	case n < MinSecretLength:
		bad("secret", "must be at least %d bytes, got %d", MinSecretLength, n)
	case n > MaxSecretLength:
		bad("secret", "must be at most %d bytes, got %d", MaxSecretLength, n)
	}
	size := DefaultBatchSize
	if in.BatchSize != nil {
		size = *in.BatchSize
		if size < 1 || size > MaxBatchSize {
			bad("batch_size", "must be between 1 and %d, got %d", MaxBatchSize, size)
		}
	}
	wait := DefaultMaxWait.Milliseconds()
	if in.MaxWaitMS != nil {
		wait = *in.MaxWaitMS
		if wait < 0 || wait > MaxMaxWait.Milliseconds() {
			bad("max_wait_ms", "must be between 0 and %d, got %d", MaxMaxWait.Milliseconds(), wait)
		}
	}
	if len(probs) > 0 {
		return nil, nil, &ValidationError{Problems: probs}
	}
	filterSrc := in.Filter
	r := &registration{
		Webhook: Webhook{ID: newID("wh_"), URL: in.URL, Filter: filterSrc, BatchSize: size, MaxWaitMS: wait,
			AllowPrivate: in.AllowPrivate, CreatedAt: d.now()},
		secret: in.Secret,
	}
	return r, f, nil
}

// checkURL returns what is wrong with a target URL, or "". Unless
// allowPrivate, its host must be public as far as the URL tells (the
// static half of the private-address guard, ssrf.go).
func checkURL(raw string, allowPrivate bool) string {
	if raw == "" {
		return "required: the http(s) URL to POST matching records to"
	}
	if len(raw) > MaxURLLength {
		return fmt.Sprintf("longer than %d bytes", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold credentials
		}
		return "not a URL: " + err.Error()
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("scheme must be http or https, got %q", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "has no host"
	case u.User != nil:
		return "must not hold credentials (user:password@); authenticate with the signature"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "must not have a fragment"
	}
	return checkTarget(u.Hostname(), allowPrivate)
}

// Create validates in, stores the registration and starts delivering to it
// (other processes on the registry start within a second or two). A
// *ValidationError lists every problem of in.
//
// allow_private takes the admin scope of the caller of ctx (see
// mayAllowPrivate): without it, Create returns an error matching
// ErrForbidden.
func (d *Dispatcher) Create(ctx context.Context, in Input) (Webhook, error) {
	r, f, err := d.validate(in)
	if err != nil {
		return Webhook{}, err
	}
	if in.AllowPrivate && !mayAllowPrivate(ctx) {
		return Webhook{}, fmt.Errorf("allow_private: reaching private addresses takes the admin scope: %w", ErrForbidden)
	}
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return Webhook{}, ErrClosed
	}
	// Not under d.mu: Deliver must not wait for the registry.
	if err := d.db.createWebhook(ctx, r); err != nil {
		return Webhook{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return Webhook{}, ErrClosed // stored; it loads on the next start
	}
	if _, ok := d.hooks[r.ID]; !ok { // the watch may have been quicker
		d.start(r, f)
	}
	d.log.Info("webhook registered", "webhook_id", r.ID, "target", origin(r.URL), "filter", r.Filter, "allow_private", r.AllowPrivate)
	return r.Webhook, nil
}

// List returns the registrations live here, oldest first, with their
// counters.
func (d *Dispatcher) List(ctx context.Context) ([]Webhook, error) {
	counts, err := d.db.failureCounts(ctx, "")
	if err != nil {
		return nil, err
	}
	hs := d.sortedHooks()
	out := make([]Webhook, len(hs))
	for i, h := range hs {
		out[i] = h.view(counts[h.reg.ID])
	}
	return out, nil
}

// Get returns one registration with its counters, or ErrNotFound.
func (d *Dispatcher) Get(ctx context.Context, id string) (Webhook, error) {
	h, err := d.lookup(ctx, id)
	if err != nil {
		return Webhook{}, err
	}
	counts, err := d.db.failureCounts(ctx, id)
	if err != nil {
		return Webhook{}, err
	}
	return h.view(counts[id]), nil
}

// lookup returns the live hook of id or, for a registration made through
// another process that the watch has not brought yet, a hook that is not
// live (no sender, zero counters) read from the registry.
func (d *Dispatcher) lookup(ctx context.Context, id string) (*hook, error) {
	d.mu.RLock()
	h, ok := d.hooks[id]
	gone := d.deleted[id]
	d.mu.RUnlock()
	switch {
	case ok:
		return h, nil
	case gone:
		return nil, fmt.Errorf("webhook %q: %w", id, ErrNotFound)
	}
	r, err := d.db.getWebhook(ctx, id)
	if err != nil {
		return nil, err
	}
	return &hook{reg: r}, nil
}

func (h *hook) view(failures int64) Webhook {
	w := h.reg.Webhook
	w.Stats = &Stats{
		Matched:          h.stats.matched.Load(),
		FilterErrors:     h.stats.filterErrors.Load(),
		DeliveredBatches: h.stats.deliveredBatches.Load(),
		DeliveredRecords: h.stats.deliveredRecords.Load(),
		Retries:          h.stats.retries.Load(),
		FailedBatches:    h.stats.failed.Load(),
		QueueFull:        h.stats.queueFull.Load(),
		Queued:           int64(len(h.queue)),
		ExpiredFailures:  h.stats.expired.Load(),
	}
	w.Failures = &failures
	return w
}

// Delete removes a registration and its failure list, here and, through
// the registry, in every process; batches waiting for it are dropped.
func (d *Dispatcher) Delete(ctx context.Context, id string) error {
	if _, err := d.lookup(ctx, id); err != nil {
		return err
	}
	d.mu.Lock()
	h := d.hooks[id]
	delete(d.hooks, id)
	d.deleted[id] = true
	d.mu.Unlock()
	if h != nil {
		h.kill()
	}
	if err := d.db.deleteWebhook(ctx, id); err != nil {
		return err
	}
	d.log.Info("webhook deleted", "webhook_id", id)
	return nil
}

// Failures lists a webhook's failed batches, oldest first, as the registry
// has them: those recorded by any process.
func (d *Dispatcher) Failures(ctx context.Context, id string, limit int) ([]*Failure, error) {
	if _, err := d.lookup(ctx, id); err != nil {
		return nil, err
	}
	return d.db.failures(ctx, id, nil, limit)
}

// ReplayResult is the answer of a replay.
type ReplayResult struct {
	Replayed  int        `json:"replayed"`  // batches tried
	Delivered int        `json:"delivered"` // of which delivered and removed from the list
	Failed    []*Failure `json:"failed"`    // still in the list, with the new error
}

// Replay delivers failed batches again: those with the given ids, or all.
// Each gets one attempt (call again to retry); a delivered batch leaves the
// list, a failed one keeps its place with the attempt counted and the new
// error. Batches are sent with their original delivery id, so receivers
// can drop duplicates. Replays of one webhook wait for each other within a
// process, not across processes.
func (d *Dispatcher) Replay(ctx context.Context, id string, ids []string) (ReplayResult, error) {
	h, err := d.lookup(ctx, id)
	if err != nil {
		return ReplayResult{}, err
	}
	if err := h.reg.secretErr; err != nil {
		return ReplayResult{}, fmt.Errorf("webhook %s: replay through a process that has the key: its secret does not open here (%w): %w", id, err, ErrNoKey)
	}
	h.replayMu.Lock()
	defer h.replayMu.Unlock()
	fs, err := d.db.failures(ctx, id, ids, 0)
	if err != nil {
		return ReplayResult{}, err
	}
	if len(ids) > 0 {
		found := map[string]bool{}
		for _, f := range fs {
			found[f.ID] = true
		}
		var missing []string
		for _, fid := range ids {
			if !found[fid] {
				missing = append(missing, fid)
			}
		}
		if len(missing) > 0 {
			return ReplayResult{}, fmt.Errorf("failures %s of webhook %q: %w", strings.Join(missing, ", "), id, ErrNotFound)
		}
	}
	res := ReplayResult{Failed: []*Failure{}}
	for _, f := range fs {
		if ctx.Err() != nil {
			break
		}
		res.Replayed++
		_, perr := d.post(ctx, h, f.ID, f.records, 1)
		if perr == nil {
			if err := d.db.deleteFailure(ctx, f); err != nil {
				return res, err
			}
			h.stats.deliveredBatches.Add(1)
			h.stats.deliveredRecords.Add(int64(f.Count))
			res.Delivered++
			continue
		}
		f.Attempts++
		f.Reason = "replay: " + perr.Error()
		f.FailedAt = d.now()
		if err := d.db.putFailure(ctx, f); err != nil {
			return res, err
		}
		res.Failed = append(res.Failed, f)
	}
	return res, nil
}

// Register adds the webhook routes to mux.
func (d *Dispatcher) Register(mux platform.Router) {
	mux.HandleFunc("POST /v1/webhooks", d.handleCreate)
	mux.HandleFunc("GET /v1/webhooks", d.handleList)
	mux.HandleFunc("GET /v1/webhooks/{id}", d.handleGet)
	mux.HandleFunc("DELETE /v1/webhooks/{id}", d.handleDelete)
	mux.HandleFunc("GET /v1/webhooks/{id}/failures", d.handleFailures)
	mux.HandleFunc("POST /v1/webhooks/{id}/failures/replay", d.handleReplay)
}

// decodeBody decodes a JSON body into v strictly (platform.DecodeJSON:
// exact names, unknown fields, duplicates and invalid UTF-8 refused); the
// returned message names the problem.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) (int, string) {
	if berr := platform.DecodeJSON(w, r, maxBodyBytes, v, allowEmpty); berr != nil {
		return berr.Status, berr.Message
	}
	return 0, ""
}

func (d *Dispatcher) handleCreate(w http.ResponseWriter, r *http.Request) {
	var in Input
	if code, msg := decodeBody(w, r, &in, false); code != 0 {
		platform.WriteError(w, code, msg, nil)
		return
	}
	wh, err := d.Create(r.Context(), in)
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		platform.WriteError(w, http.StatusBadRequest, ve.Error(), map[string]any{"errors": ve.Problems})
		return
	case errors.Is(err, ErrForbidden):
		platform.WriteError(w, http.StatusForbidden, strings.TrimSuffix(err.Error(), ": "+ErrForbidden.Error()),
			map[string]any{"errors": []FieldError{{Field: "allow_private", Message: "takes the admin scope"}}})
		return
	case err != nil:
		d.serverError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/webhooks/"+wh.ID)
	platform.WriteJSON(w, http.StatusCreated, wh)
}

type listBody struct {
	Webhooks []Webhook `json:"webhooks"`
}

func (d *Dispatcher) handleList(w http.ResponseWriter, r *http.Request) {
	ws, err := d.List(r.Context())
	if err != nil {
		d.serverError(w, r, err)
		return
	}
	platform.WriteJSON(w, http.StatusOK, listBody{Webhooks: ws})
}

func (d *Dispatcher) handleGet(w http.ResponseWriter, r *http.Request) {
	wh, err := d.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		d.serverError(w, r, err)
		return
	}
	platform.WriteJSON(w, http.StatusOK, wh)
}

func (d *Dispatcher) handleDelete(w http.ResponseWriter, r *http.Request) {
	if err := d.Delete(r.Context(), r.PathValue("id")); err != nil {
		d.serverError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type failuresBody struct {
	Failures []*Failure `json:"failures"`
	Count    int        `json:"count"`
}

func (d *Dispatcher) handleFailures(w http.ResponseWriter, r *http.Request) {
	limit := DefaultFailureListLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxFailureListLimit {
			platform.WriteError(w, http.StatusBadRequest, fmt.Sprintf("limit: must be an integer between 1 and %d, got %q", MaxFailureListLimit, v), nil)
			return
		}
		limit = n
	}
	fs, err := d.Failures(r.Context(), r.PathValue("id"), limit)
	if err != nil {
		d.serverError(w, r, err)
		return
	}
	platform.WriteJSON(w, http.StatusOK, failuresBody{Failures: fs, Count: len(fs)})
}

// ReplayInput is the optional body of a replay: the failure ids to
// replay; none means all.
type ReplayInput struct {
	IDs []string `json:"ids"`
}

func (d *Dispatcher) handleReplay(w http.ResponseWriter, r *http.Request) {
	var in ReplayInput
	if code, msg := decodeBody(w, r, &in, true); code != 0 {
		platform.WriteError(w, code, msg, nil)
		return
	}
	in.IDs = append(in.IDs, r.URL.Query()["id"]...)
	res, err := d.Replay(r.Context(), r.PathValue("id"), in.IDs)
	if err != nil {
		d.serverError(w, r, err)
		return
	}
	platform.WriteJSON(w, http.StatusOK, res)
}

// serverError answers 404 for ErrNotFound, 503 once closed or without the
// key, 500 (logged) otherwise.
func (d *Dispatcher) serverError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		platform.WriteError(w, http.StatusNotFound, strings.TrimPrefix(err.Error(), "webhook: "), nil)
	case errors.Is(err, ErrClosed):
		platform.WriteUnavailable(w, 5*time.Second, "shutting down")
	case errors.Is(err, ErrNoKey):
		platform.WriteError(w, http.StatusServiceUnavailable, strings.TrimPrefix(err.Error(), "webhook: "), nil)
	default:
		d.log.LogAttrs(r.Context(), slog.LevelError, "webhook API", slog.String("path", r.URL.Path), slog.Any("error", err))
		platform.WriteError(w, http.StatusInternalServerError, "internal error", nil)
	}
}

// origin is the scheme and host of a target URL, for logs: its path and
// query may hold a credential of the receiver's.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host
}
