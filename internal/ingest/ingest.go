// Package ingest is the HTTP front door of the pipeline: POST /v1/events
// takes one event, a JSON array of events or NDJSON, validates every event,
// and answers 202 only after the broker has durably stored all of them.
//
// The events of one request travel to the worker as one broker message (the
// request body as sent, with its media type and ingest time as attributes),
// and requests that arrive while publishes are in flight travel together as
// one NDJSON message (group commit, see group.go): the broker's cost is per
// message, not per byte, so batching at the edge is what lets the pipeline
// move more events per second than the broker moves messages. Each request
// is answered 202 only once the message holding its events is acknowledged.
// The worker validates each event again and dead-letters any that fail, so
// per-event guarantees hold whatever the message holds.
package ingest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// Config configures ingest.
type Config struct {
	MaxEvents       int           // events per request
	MaxBodyBytes    int64         // bytes per request body, as sent and decompressed
	MaxClockSkew    time.Duration // how far in the future occurred_at may be
	PublishTimeout  time.Duration // how long to wait for the broker before 503
	MaxErrors       int           // field errors listed in a 400 answer
	MaxBacklog      int64         // broker messages waiting before ingest answers 503; 0: no limit
	MaxBacklogBytes int64         // broker bytes waiting before ingest answers 503; 0: no limit
	// GroupPublishes is how many broker publishes may be in flight before
	// further requests wait and are published together (group commit);
	// 0: every request is its own message.
	GroupPublishes int
	GroupMaxBytes  int // largest message of grouped requests
	// RequireLocation refuses an event without coordinates (400) instead of
	// passing it on to be stored with status no_location. Set from the
	// process's one --require-location flag, as the worker's is.
	RequireLocation bool
	// UnknownFields is what becomes of a top-level field the event schema
	// does not have when the request does not say (its query parameter
	// unknown_fields): refused by name (the default), or moved into
	// properties.
	UnknownFields event.UnknownFields
}

// UnknownFieldsParam is the query parameter of POST /v1/events that says,
// for one request, what becomes of unknown top-level fields: refuse or
// properties.
const UnknownFieldsParam = "unknown_fields"

// RegisterFlags adds ingest's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxEvents, "ingest-max-events", 1000, "most events in one POST /v1/events request")
	fs.Int64Var(&c.MaxBodyBytes, "ingest-max-bytes", 5<<20, "largest POST /v1/events body, in bytes, as sent and once decompressed (Content-Encoding: gzip)")
	fs.DurationVar(&c.MaxClockSkew, "ingest-max-clock-skew", event.DefaultMaxClockSkew, "how far in the future occurred_at may be")
	fs.DurationVar(&c.PublishTimeout, "ingest-publish-timeout", 5*time.Second, "how long ingest waits for the broker before answering 503")
	fs.IntVar(&c.MaxErrors, "ingest-max-errors", 100, "most field errors listed in a 400 answer")
	fs.Int64Var(&c.MaxBacklog, "ingest-max-backlog", 20000, "broker messages waiting for the worker before ingest answers 503 with Retry-After (0: no limit)")
	fs.IntVar(&c.GroupPublishes, "ingest-group-publishes", 2, "broker publishes in flight before further requests wait and are published together as one message (group commit; 0: one message per request)")
	fs.IntVar(&c.GroupMaxBytes, "ingest-group-max-bytes", 1<<20, "largest broker message of grouped requests, in bytes")
	c.UnknownFields = event.UnknownRefuse
	fs.Func("ingest-unknown-fields", "what becomes of a top-level field of an event that the schema does not have, when the request does not say (?unknown_fields=): refuse (a 400 naming it) or properties (moved into properties under its own name; a name properties already has is a 400) (default refuse)",
		func(s string) error {
			u, err := event.ParseUnknownFields(s)
			if err != nil {
				return err
			}
			c.UnknownFields = u
			return nil
		})
	fs.Int64Var(&c.MaxBacklogBytes, "ingest-max-backlog-bytes", 64<<20, "bytes of events waiting for the worker before ingest answers 503 with Retry-After, where the broker knows them (0: no limit); bounds the end-to-end latency")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var p platform.Problems
	if c.MaxEvents < 1 {
		p.Addf("ingest-max-events must be at least 1, got %d", c.MaxEvents)
	}
	if c.MaxBodyBytes < 1024 {
		p.Addf("ingest-max-bytes must be at least 1024, got %d", c.MaxBodyBytes)
	}
	if c.MaxClockSkew < 0 {
		p.Addf("ingest-max-clock-skew must not be negative, got %s", c.MaxClockSkew)
	}
	if c.PublishTimeout <= 0 {
		p.Addf("ingest-publish-timeout must be positive, got %s", c.PublishTimeout)
	}
	if c.MaxBacklog < 0 {
		p.Addf("ingest-max-backlog must not be negative, got %d", c.MaxBacklog)
	}
	if c.MaxBacklogBytes < 0 {
		p.Addf("ingest-max-backlog-bytes must not be negative, got %d", c.MaxBacklogBytes)
	}
	if c.MaxErrors < 1 {
		p.Addf("ingest-max-errors must be at least 1, got %d", c.MaxErrors)
	}
	if c.GroupPublishes < 0 {
		p.Addf("ingest-group-publishes must not be negative, got %d", c.GroupPublishes)
	}
	if c.GroupPublishes > 0 && (c.GroupMaxBytes < 1024 || c.GroupMaxBytes > maxGroupBytes) {
		p.Addf("ingest-group-max-bytes must be between 1024 and %d, got %d", maxGroupBytes, c.GroupMaxBytes)
	}
	return p.Err()
}

// maxGroupBytes bounds GroupMaxBytes below the broker's smallest message
// limit (JetStream's default is 8 MiB; Pub/Sub's 10 MB).
const maxGroupBytes = 4 << 20

// Publisher is the broker side ingest needs.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...*broker.Message) error
}

var _ Publisher = broker.Publisher(nil)

// Handler serves POST /v1/events and GET /v1/schema.
type Handler struct {
	cfg   Config
	pub   Publisher
	group *grouper
	log   *slog.Logger
	now   func() time.Time
	// Admit, if set, is asked before each request is read; a non-nil error
	// answers 503 with its message (admission control on broker backlog).
	Admit func() error
	// Accepted, if set, is called with the number of events of each 202.
	Accepted func(n int)
	// Observer, if set, is told about every POST /v1/events (metrics and
	// traces; see Telemetry).
	Observer Observer
}

// New returns a Handler publishing to pub.
func New(cfg Config, pub Publisher, log *slog.Logger) *Handler {
	return &Handler{cfg: cfg, pub: pub, log: log, now: time.Now, group: &grouper{pub: pub, timeout: cfg.PublishTimeout,
		maxFlight: cfg.GroupPublishes, maxBytes: cfg.GroupMaxBytes, maxEvents: cfg.MaxEvents}}
}

// Register mounts the handler's routes on mux.
func (h *Handler) Register(mux platform.Router) {
	mux.HandleFunc("POST /v1/events", h.postEvents)
	mux.HandleFunc("GET /v1/schema", h.getSchema)
}

// Accepted is the body of a 202 answer.
type Accepted struct {
	Accepted   int       `json:"accepted"`
	IngestedAt time.Time `json:"ingested_at"`
}

// Invalid is the details of a 400 answer for invalid events.
type Invalid struct {
	Total   int                `json:"total"`   // events in the request
	Invalid int                `json:"invalid"` // events with at least one error
	Errors  []event.FieldError `json:"errors"`  // the first MaxErrors errors
}

// Retry-After for answers that ask the client to come back.
const retryAfter = time.Second

func (h *Handler) postEvents(w http.ResponseWriter, r *http.Request) {
	if h.Observer == nil {
		h.serveEvents(r.Context(), w, r)
		return
	}
	start := time.Now()
	ctx := h.Observer.RequestStart(r)
	o, n := h.serveEvents(ctx, w, r)
	h.Observer.RequestDone(ctx, o, n, time.Since(start))
}

// serveEvents answers POST /v1/events; ctx is r's context, with the
// request's span if any. It returns the outcome and the number of events
// (0 when not known).
func (h *Handler) serveEvents(ctx context.Context, w http.ResponseWriter, r *http.Request) (Outcome, int) {
	ct, berr := platform.CheckMediaType(r.Header.Get("Content-Type"), event.MediaTypes)
	if berr != nil {
		berr.Message += fmt.Sprintf(" (%s: one event or an array; %s: one event a line)", event.ContentTypeJSON, event.ContentTypeNDJSON)
		berr.Write(w)
		return OutcomeInvalid, 0
	}
	mt := event.MediaType(ct)
	unknown, ok := h.unknownFields(w, r)
	if !ok {
		return OutcomeInvalid, 0
	}
	if h.Admit != nil {
		if err := h.Admit(); err != nil {
			platform.WriteUnavailable(w, retryAfter, err.Error())
			return OutcomeRefused, 0
		}
	}
	// The body limit holds after decompression: a gzip bomb is a 413.
	body, berr := platform.ReadBody(w, r, h.cfg.MaxBodyBytes, true)
	if berr != nil {
		berr.Write(w)
		return OutcomeInvalid, 0
	}
	now := h.now().UTC()
	decoded, err := event.DecodeWith(body, mt, event.DecodeOptions{MaxEvents: h.cfg.MaxEvents, UnknownFields: unknown})
	if err != nil {
		if errors.Is(err, event.ErrTooManyEvents) {
			platform.WriteError(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("%v: send at most %d events per request", err, h.cfg.MaxEvents), nil)
			return OutcomeInvalid, 0
		}
		platform.WriteError(w, http.StatusBadRequest, err.Error(), nil)
		return OutcomeInvalid, 0
	}
	if len(decoded) == 0 {
		platform.WriteError(w, http.StatusBadRequest, "the request holds no events", nil)
		return OutcomeInvalid, 0
	}
	inv := Invalid{Total: len(decoded)}
	for i := range decoded {
		d := &decoded[i]
		errs := d.Errors
		if len(errs) == 0 {
			errs = h.Validate(&d.Event, i, now)
		}
		if len(errs) > 0 {
			inv.Invalid++
			for _, e := range errs {
				if len(inv.Errors) < h.cfg.MaxErrors {
					inv.Errors = append(inv.Errors, e)
				}
			}
		}
	}
	if inv.Invalid > 0 {
		msg := fmt.Sprintf("%d of %d events are invalid; nothing was accepted", inv.Invalid, inv.Total)
		if inv.Total == 1 {
			msg = "the event is invalid: " + event.JoinErrors(inv.Errors)
		}
		platform.WriteError(w, http.StatusBadRequest, msg, inv)
		return OutcomeInvalid, inv.Total
	}

	req := &request{body: body, mediaType: mt, decoded: decoded, ingestedAt: now, size: ndjsonSize(decoded)}
	if slices.ContainsFunc(decoded, func(d event.Decoded) bool { return d.Moved != nil }) {
		// Unknown fields were moved into properties: the message carries
		// the events as rewritten, so that the worker's strict decoder
		// reads them in properties.
		req.body, req.mediaType = appendNDJSON(make([]byte, 0, req.size), decoded), event.ContentTypeNDJSON
	}
	if err := h.group.publish(ctx, req); err != nil {
		h.log.WarnContext(ctx, "ingest: publish failed; answering 503", "error", err.Error(), "events", len(decoded))
		platform.WriteUnavailable(w, retryAfter, "the broker did not take the events; nothing was accepted, retry later")
		return OutcomeRefused, len(decoded)
	}
	if h.Accepted != nil {
		h.Accepted(len(decoded))
	}
	platform.WriteJSON(w, http.StatusAccepted, Accepted{Accepted: len(decoded), IngestedAt: now})
	return OutcomeAccepted, len(decoded)
}

// ParamError names a bad query parameter in a 400 answer's details.
type ParamError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// unknownFields is what becomes of unknown fields in r: its query
// parameter unknown_fields if given (once), else the process's default. A
// parameter POST /v1/events does not have is refused by name, as a field is.
func (h *Handler) unknownFields(w http.ResponseWriter, r *http.Request) (event.UnknownFields, bool) {
	mode := h.cfg.UnknownFields
	var perr *ParamError
	for name, vs := range r.URL.Query() {
		switch {
		case name != UnknownFieldsParam:
			perr = &ParamError{Field: name, Message: "unknown parameter: POST /v1/events takes only " + UnknownFieldsParam}
		case len(vs) != 1:
			perr = &ParamError{Field: name, Message: "is given more than once"}
		default:
			u, err := event.ParseUnknownFields(vs[0])
			if err != nil {
				perr = &ParamError{Field: name, Message: err.Error()}
			}
			mode = u
		}
		if perr != nil {
			platform.WriteError(w, http.StatusBadRequest, perr.Field+": "+perr.Message, []ParamError{*perr})
			return 0, false
		}
	}
	return mode, true
}

// Validate checks an event as POST /v1/events does: the schema, the clock
// skew and, if required, a location.
func (h *Handler) Validate(e *event.Event, index int, now time.Time) []event.FieldError {
	errs := e.Validate(index, now, h.cfg.MaxClockSkew)
	if h.cfg.RequireLocation {
		if fe := e.RequireLocation(index); fe != nil {
			errs = append(errs, *fe)
		}
	}
	return errs
}

// PublishEvents publishes valid events (NDJSON body, one event a line, as
// decoded) the way POST /v1/events does: through admission control and
// group commit, returning once the broker has acknowledged them (nil) or
// not. Other front doors of the ingest stage (the Segment-compatible
// routes) publish through it.
func (h *Handler) PublishEvents(ctx context.Context, body []byte, decoded []event.Decoded, ingestedAt time.Time) error {
	req := &request{body: body, mediaType: event.ContentTypeNDJSON, decoded: decoded, ingestedAt: ingestedAt, size: ndjsonSize(decoded)}
	if err := h.group.publish(ctx, req); err != nil {
		return err
	}
	if h.Accepted != nil {
		h.Accepted(len(decoded))
	}
	return nil
}

// Admission asks admission control whether a request may be taken now
// (nil), or why not.
func (h *Handler) Admission() error {
	if h.Admit == nil {
		return nil
	}
	return h.Admit()
}

// Now is the handler's clock.
func (h *Handler) Now() time.Time { return h.now() }

func (h *Handler) getSchema(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/schema+json")
	w.Write(event.JSONSchema())
}
