// Package serve is the read side of skyjoin's HTTP API: listing, fetching
// and aggregating enriched records from a store, the live stream of newly
// stored records, the OpenAPI document, and the liveness and readiness
// probes.
//
// Routes (Go 1.22 ServeMux patterns; GET also answers HEAD):
//
//	GET /v1/events                 list records (filters, order, cursor pagination)
//	GET /v1/events/{event_id...}   one record by event id
//	GET /v1/users/{id}/latest      a user's latest record (by occurred_at)
//	GET /v1/stats                  aggregates by country, city or time bucket
//	GET /v1/stream                 Server-Sent Events of newly stored records
//	GET /openapi.json              the OpenAPI 3.1 document of the whole API
//	GET /healthz                   liveness: 200 while the process runs
//	GET /readyz                    readiness: runs Options.Checks; 503 while draining
//
// The filters of /v1/events, /v1/stats and /v1/stream are the same
// (store.Query): user_id, country, city, event_type, condition (the
// weather's WMO condition text, e.g. "Clear sky", case-insensitive),
// min_temp and max_temp (weather.temperature_c, inclusive), since and
// until (occurred_at). Every error answer is a platform.ErrorBody; a 400
// names each bad parameter.
package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/skyjoin/skyjoin/internal/live"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store"
)

// Defaults of Options.
const (
	DefaultQueryTimeout = 10 * time.Second
	DefaultReadyTimeout = 2 * time.Second
)

// Check is a named readiness check, e.g. a broker or store ping. Check
// returns nil when the dependency is usable.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Options configures a Handler. The zero value is usable.
type Options struct {
	// Logger receives store errors and failing readiness checks;
	// nil means slog.Default().
	Logger *slog.Logger
	// QueryTimeout bounds each store read; zero means DefaultQueryTimeout.
	QueryTimeout time.Duration
	// ReadyTimeout bounds each readiness check; zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Checks run, concurrently, on every GET /readyz.
	Checks []Check
	// Hub is the source of GET /v1/stream; nil answers 501 there.
	Hub *live.Hub
	// Heartbeat is the interval of the stream's comment lines; zero means
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// StreamWriteTimeout bounds each write to a stream client; zero means
	// DefaultStreamWriteTimeout.
	StreamWriteTimeout time.Duration
	// MaxStatsRange bounds the window of GET /v1/stats, from since to until
	// (or now): since is then required, and a longer window is a 400. Zero
	// means no bound (the --stats-max-range flag defaults to
	// DefaultMaxStatsRange).
	MaxStatsRange time.Duration
	// StreamMaxLifetime ends a live stream this long after it began
	// (`event: dropped`; the client reconnects with Last-Event-ID). Zero
	// means no bound (the --stream-max-lifetime flag defaults to
	// DefaultStreamMaxLifetime).
	StreamMaxLifetime time.Duration
	// StreamResumeWindow bounds what a resume of the live stream replays
	// from the store: the records among the newest StreamResumeWindow
	// stored (whatever the filters); an older resume point starts at the
	// window's start, after an `event: gap`. Zero means no bound (the
	// --stream-resume-window flag defaults to DefaultStreamResumeWindow).
	StreamResumeWindow int
}

// DefaultMaxStatsRange is the --stats-max-range default: 31 days.
const DefaultMaxStatsRange = 31 * 24 * time.Hour

// Defaults of the live stream's bounds (flags --stream-max-lifetime and
// --stream-resume-window).
const (
	DefaultStreamMaxLifetime  = time.Hour
	DefaultStreamResumeWindow = 10_000
)

// RegisterFlags adds the serving flags to fs (environment fallbacks via
// platform.ParseFlags: SKYJOIN_QUERY_TIMEOUT, SKYJOIN_READY_TIMEOUT).
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.QueryTimeout, "query-timeout", DefaultQueryTimeout, "timeout of each store read of the REST API")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", DefaultReadyTimeout, "timeout of each readiness check of /readyz")
	fs.DurationVar(&o.MaxStatsRange, "stats-max-range", DefaultMaxStatsRange, "widest window of GET /v1/stats, from since to until or now (since is then required; 0: no bound)")
	fs.DurationVar(&o.StreamMaxLifetime, "stream-max-lifetime", DefaultStreamMaxLifetime, "a live stream (GET /v1/stream) ends this long after it began; its client reconnects with Last-Event-ID (0: no bound)")
	fs.IntVar(&o.StreamResumeWindow, "stream-resume-window", DefaultStreamResumeWindow, "a live stream's resume (Last-Event-ID) replays from the newest this many stored records at most; an older resume starts there (0: no bound)")
}

// Validate reports every problem of o at once.
func (o *Options) Validate() error {
	var p platform.Problems
	if o.QueryTimeout < 0 {
		p.Addf("query-timeout: must not be negative, got %s", o.QueryTimeout)
	}
	if o.Heartbeat < 0 {
		p.Addf("heartbeat: must not be negative, got %s", o.Heartbeat)
	}
	if o.StreamWriteTimeout < 0 {
		p.Addf("stream write timeout: must not be negative, got %s", o.StreamWriteTimeout)
	}
	if o.MaxStatsRange < 0 {
		p.Addf("stats-max-range: must not be negative, got %s", o.MaxStatsRange)
	}
	if o.StreamMaxLifetime < 0 {
		p.Addf("stream-max-lifetime: must not be negative, got %s", o.StreamMaxLifetime)
	}
	if o.StreamResumeWindow < 0 {
		p.Addf("stream-resume-window: must not be negative, got %d", o.StreamResumeWindow)
	}
	if o.ReadyTimeout < 0 {
		p.Addf("ready-timeout: must not be negative, got %s", o.ReadyTimeout)
	}
	for i, c := range o.Checks {
		if c.Name == "" {
			p.Addf("checks[%d]: name must not be empty", i)
		}
		if c.Check == nil {
			p.Addf("checks[%d] (%s): check func must not be nil", i, c.Name)
		}
	}
	return p.Err()
}

// Handler serves the read API. Mount it with Register, or use it directly
// as an http.Handler (it then answers unknown routes with JSON 404/405).
type Handler struct {
	reader        store.Reader
	agg           store.Aggregator // nil if the reader does not aggregate
	hub           *live.Hub
	log           *slog.Logger
	timeout       time.Duration
	readyTO       time.Duration
	heartbeat     time.Duration
	streamWriteTO time.Duration
	checks        []Check
	maxStatsRange time.Duration
	maxLifetime   time.Duration // of a stream; 0: no bound
	resumeWindow  int           // of a stream's resume, in records; 0: no bound
	now           func() time.Time
	draining      atomic.Bool
	mux           *http.ServeMux

	drainMu sync.Mutex
	drainC  chan struct{} // closed while draining: ends the streams
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler reading from reader. GET /v1/stats needs a reader
// that is also a store.Aggregator (it answers 501 otherwise).
func New(reader store.Reader, opts Options) *Handler {
	h := &Handler{
		reader:        reader,
		hub:           opts.Hub,
		log:           opts.Logger,
		timeout:       opts.QueryTimeout,
		readyTO:       opts.ReadyTimeout,
		heartbeat:     opts.Heartbeat,
		streamWriteTO: opts.StreamWriteTimeout,
		checks:        append([]Check(nil), opts.Checks...),
		maxStatsRange: opts.MaxStatsRange,
		maxLifetime:   opts.StreamMaxLifetime,
		resumeWindow:  opts.StreamResumeWindow,
		now:           time.Now,
		drainC:        make(chan struct{}),
	}
	h.agg, _ = reader.(store.Aggregator)
	if h.heartbeat <= 0 {
		h.heartbeat = DefaultHeartbeat
	}
	if h.streamWriteTO <= 0 {
		h.streamWriteTO = DefaultStreamWriteTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.timeout <= 0 {
		h.timeout = DefaultQueryTimeout
	}
	if h.readyTO <= 0 {
		h.readyTO = DefaultReadyTimeout
	}
	h.mux = http.NewServeMux()
	h.Register(h.mux)
	return h
}

// routes are the Handler's routes, in Register's order.
func (h *Handler) routes() []route {
	return []route{
		{"GET /v1/events", h.list},
		// {event_id...}: event ids may contain '/', sent raw or as %2F.
		{"GET /v1/events/{event_id...}", h.get},
		{"GET /v1/users/{id}/latest", h.latest},
		{"GET /v1/stats", h.stats},
		{"GET /v1/stream", h.stream},
		{"GET /openapi.json", serveOpenAPI},
		{"GET /healthz", h.healthz},
		{"GET /readyz", h.readyz},
	}
}

type route struct {
	pattern string
	handler http.HandlerFunc
}

// Routes returns the patterns Register adds to a mux.
func Routes() []string {
	var out []string
	for _, r := range (&Handler{}).routes() {
		out = append(out, r.pattern)
	}
	return out
}

// Register adds the Handler's routes to mux. They do not clash with
// POST /v1/events (ingest).
func (h *Handler) Register(mux platform.Router) {
	for _, r := range h.routes() {
		mux.HandleFunc(r.pattern, r.handler)
	}
}

// RegisterReads adds the read API (every route but the probes) to mux:
// the serve stage's routes, next to the probes every process serves.
func (h *Handler) RegisterReads(mux platform.Router) {
	for _, r := range h.routes() {
		if r.pattern != "GET /healthz" && r.pattern != "GET /readyz" {
			mux.HandleFunc(r.pattern, r.handler)
		}
	}
}

// RegisterProbes adds only GET /healthz and GET /readyz to mux, for a
// process that serves no reads (a stage on its own, such as ingest).
func (h *Handler) RegisterProbes(mux platform.Router) {
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
}

// ServeHTTP serves the Handler's routes alone.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	JSONErrors(h.mux).ServeHTTP(w, r)
}

// SetDraining makes /readyz answer 503 (true) or run its checks again
// (false). Set it at the start of a graceful shutdown so that load
// balancers stop sending traffic before the server closes: it also ends
// the live streams (their clients reconnect elsewhere with Last-Event-ID)
// and refuses new ones, so that http.Server.Shutdown does not wait for them.
func (h *Handler) SetDraining(draining bool) {
	h.drainMu.Lock()
	defer h.drainMu.Unlock()
	h.draining.Store(draining)
	select {
	case <-h.drainC:
		if !draining {
			h.drainC = make(chan struct{})
		}
	default:
		if draining {
			close(h.drainC)
		}
	}
}

// drainSignal returns a channel closed once the Handler drains.
func (h *Handler) drainSignal() <-chan struct{} {
	h.drainMu.Lock()
	defer h.drainMu.Unlock()
	return h.drainC
}

// Draining reports whether SetDraining(true) is in effect.
func (h *Handler) Draining() bool { return h.draining.Load() }

// get answers GET /v1/events/{event_id...}.
func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("event_id")
	if id == "" {
		platform.WriteError(w, http.StatusNotFound, "event_id: missing from the path /v1/events/{event_id}", nil)
		return
	}
	if !utf8.ValidString(id) {
		writeParamErrors(w, []ParamError{{Field: "event_id", Message: "is not valid UTF-8 once percent-decoded"}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	if enc, ok := h.reader.(store.EncodedReader); ok {
		b, err := enc.GetEncoded(ctx, id)
		if err != nil {
			h.readError(w, r, ctx, fmt.Errorf("get event %q: %w", id, err), "event "+quote(id)+" not found")
			return
		}
		platform.WriteJSONBytes(w, http.StatusOK, b)
		return
	}
	rec, err := h.reader.Get(ctx, id)
	if err != nil {
		h.readError(w, r, ctx, fmt.Errorf("get event %q: %w", id, err), "event "+quote(id)+" not found")
		return
	}
	platform.WriteJSON(w, http.StatusOK, &rec)
}

// latest answers GET /v1/users/{id}/latest.
func (h *Handler) latest(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" {
		platform.WriteError(w, http.StatusNotFound, "id: missing from the path /v1/users/{id}/latest", nil)
		return
	}
	if !utf8.ValidString(id) {
		writeParamErrors(w, []ParamError{{Field: "id", Message: "is not valid UTF-8 once percent-decoded"}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	if enc, ok := h.reader.(store.EncodedReader); ok {
		b, err := enc.LatestForUserEncoded(ctx, id)
		if err != nil {
			h.readError(w, r, ctx, fmt.Errorf("latest record of user %q: %w", id, err), "no record of user "+quote(id))
			return
		}
		platform.WriteJSONBytes(w, http.StatusOK, b)
		return
	}
	rec, err := h.reader.LatestForUser(ctx, id)
	if err != nil {
		h.readError(w, r, ctx, fmt.Errorf("latest record of user %q: %w", id, err), "no record of user "+quote(id))
		return
	}
	platform.WriteJSON(w, http.StatusOK, &rec)
}

// readError answers a failed store read: 404 for store.ErrNotFound with
// notFound as the message, 400 for a bad cursor or a read the store
// refuses for its cost (store.ErrTooCostly), 504 when the read timed out,
// nothing useful when the client went away, and 500 (logged) for the rest.
func (h *Handler) readError(w http.ResponseWriter, r *http.Request, ctx context.Context, err error, notFound string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		platform.WriteError(w, http.StatusNotFound, notFound, nil)
	case errors.Is(err, store.ErrBadCursor):
		platform.WriteError(w, http.StatusBadRequest, "cursor: must be a next_cursor returned by this API for the same query", nil)
	case errors.Is(err, store.ErrTooCostly):
		platform.WriteError(w, http.StatusBadRequest, "the query would scan more than this deployment allows: narrow it with since/until, user_id or country", nil)
	case r.Context().Err() != nil:
		// The client is gone; nobody reads the answer.
		h.log.LogAttrs(r.Context(), slog.LevelDebug, "read abandoned by client", slog.String("path", r.URL.Path), slog.Any("error", err))
		platform.WriteError(w, 499, "client closed request", nil)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "read timed out", slog.String("path", r.URL.Path),
			slog.Duration("timeout", h.timeout), slog.Any("error", err))
		platform.WriteError(w, http.StatusGatewayTimeout, "the read timed out", nil)
	default:
		h.log.LogAttrs(r.Context(), slog.LevelError, "read failed", slog.String("path", r.URL.Path), slog.Any("error", err))
		platform.WriteError(w, http.StatusInternalServerError, "internal error while reading records", nil)
	}
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	platform.WriteJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

type statusBody struct {
	Status string `json:"status"`
}

// readyGrace is how long /readyz waits past ReadyTimeout for a check that
// does not heed its context.
const readyGrace = 100 * time.Millisecond

// CheckResult is one check's outcome in a /readyz answer.
type CheckResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok or failing
}

type readyBody struct {
	Status string        `json:"status"`
	Checks []CheckResult `json:"checks"`
}

// readyz answers 200 {"status":"ok","checks":[...]} when every check
// passes, else 503 with an ErrorBody whose message names the failing
// checks and whose details hold every check's result. Check errors are
// logged, not sent: the probe may be public.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.Draining() {
		platform.WriteError(w, http.StatusServiceUnavailable, "draining: shutting down", nil)
		return
	}
	// Checks run concurrently, each under ReadyTimeout. A check that
	// ignores its context is counted as failing once the timeout and a
	// grace period have passed; the answer does not wait for it.
	type outcome struct {
		i   int
		err error
	}
	outcomes := make(chan outcome, len(h.checks))
	for i, c := range h.checks {
		go func() {
			ctx, cancel := context.WithTimeout(r.Context(), h.readyTO)
			defer cancel()
			defer func() {
				if p := recover(); p != nil {
					outcomes <- outcome{i, fmt.Errorf("readiness check %s panicked: %v", c.Name, p)}
				}
			}()
			outcomes <- outcome{i, c.Check(ctx)}
		}()
	}
	errs := make([]error, len(h.checks))
	for i := range errs {
		errs[i] = fmt.Errorf("readiness check %s: no answer within %s", h.checks[i].Name, h.readyTO)
	}
	giveUp := time.NewTimer(h.readyTO + readyGrace)
	defer giveUp.Stop()
wait:
	for range h.checks {
		select {
		case o := <-outcomes:
			errs[o.i] = o.err
		case <-giveUp.C:
			break wait
		}
	}
	results := make([]CheckResult, len(h.checks))
	var failing []string
	for i, c := range h.checks {
		results[i] = CheckResult{Name: c.Name, Status: "ok"}
		if errs[i] != nil {
			results[i].Status = "failing"
			failing = append(failing, c.Name)
			h.log.LogAttrs(r.Context(), slog.LevelWarn, "readiness check failed",
				slog.String("check", c.Name), slog.Any("error", errs[i]))
		}
	}
	if len(failing) > 0 {
		platform.WriteError(w, http.StatusServiceUnavailable, "not ready: failing checks: "+strings.Join(failing, ", "),
			readyBody{Status: "unavailable", Checks: results})
		return
	}
	platform.WriteJSON(w, http.StatusOK, readyBody{Status: "ok", Checks: results})
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// JSONErrors wraps a ServeMux so that the answers it makes itself for a
// request no route matches (404, and 405 with its Allow header) carry a
// platform.ErrorBody instead of plain text. Routes' own answers pass
// through untouched.
func JSONErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(&jsonErrorWriter{ResponseWriter: w, r: r}, r)
	})
}

// jsonErrorWriter replaces a plain-text 404 or 405 by an ErrorBody.
type jsonErrorWriter struct {
	http.ResponseWriter
	r        *http.Request
	replaced bool
}

func (w *jsonErrorWriter) WriteHeader(code int) {
	if w.replaced {
		return
	}
	switch code {
	case http.StatusNotFound:
		w.replaced = true
		platform.WriteError(w.ResponseWriter, code, "no route for "+w.r.Method+" "+w.r.URL.Path, nil)
	case http.StatusMethodNotAllowed:
		w.replaced = true
		platform.WriteError(w.ResponseWriter, code, "method "+w.r.Method+" not allowed on "+w.r.URL.Path+"; allowed: "+w.Header().Get("Allow"), nil)
	default:
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *jsonErrorWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *jsonErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
