// Package segment is a front door of the ingest stage that speaks Segment's
// HTTP Tracking API, so that existing trackers (Segment's libraries,
// RudderStack, Jitsu and others) can send events to skyjoin with a host
// change: POST /v1/batch and the single calls /v1/track, /v1/identify,
// /v1/page, /v1/screen, /v1/group and /v1/alias. docs/segment.md is the
// mapping to skyjoin's event.
//
// Answers follow how Segment's clients retry: 200 {"success": true} only
// once the broker has the events (they are published through ingest's own
// path: admission control, group commit); 503 or 429 for what is worth
// retrying; 400 or 413 only for a body that can never be accepted. A
// message that cannot become a valid event does not cost the others: it is
// published as a dead letter (stage "segment") with its reason, and the
// rest are accepted.
package segment

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/goccy/go-json/jsontext"
	jsonv2 "github.com/goccy/go-json/v2"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// Calls are Segment's message types, each a single-call route.
var Calls = []string{"track", "identify", "page", "screen", "group", "alias"}

// Stage is the dead letters' stage.
const Stage = "segment"

// SegmentKey is the member of properties that keeps the Segment message's
// own fields (context, integrations, traits, ids, timestamps...).
const SegmentKey = "_segment"

// Ingest is what the handler needs of the ingest stage: its validation and
// its publish path (internal/ingest.Handler).
type Ingest interface {
	Admission() error
	Validate(e *event.Event, index int, now time.Time) []event.FieldError
	PublishEvents(ctx context.Context, body []byte, decoded []event.Decoded, ingestedAt time.Time) error
}

// Publisher publishes the dead letters.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...*broker.Message) error
}

// Config bounds a request; ingest's limits apply.
type Config struct {
	MaxEvents      int           // messages per request
	MaxBodyBytes   int64         // bytes per body, as sent and decompressed
	PublishTimeout time.Duration // for the dead letters
}

// Handler serves the Segment-compatible routes.
type Handler struct {
	cfg Config
	ing Ingest
	pub Publisher
	log *slog.Logger
	now func() time.Time
}

// New returns a Handler.
func New(cfg Config, ing Ingest, pub Publisher, log *slog.Logger) *Handler {
	return &Handler{cfg: cfg, ing: ing, pub: pub, log: log, now: time.Now}
}

// Register mounts the routes.
func (h *Handler) Register(mux platform.Router) {
	mux.HandleFunc("POST /v1/batch", func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, "") })
	for _, c := range Calls {
		mux.HandleFunc("POST /v1/"+c, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, c) })
	}
}

// Answer is the body of a 200.
type Answer struct {
	Success bool `json:"success"`
	// DeadLettered counts the messages kept as dead letters, not as events.
	DeadLettered int       `json:"dead_lettered,omitempty"`
	Errors       []Problem `json:"errors,omitempty"`
}

// Problem is why one message became a dead letter.
type Problem struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

const retryAfter = time.Second

// maxProblems bounds the problems an answer lists.
const maxProblems = 100

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, call string) {
	ctx := r.Context()
	if err := h.ing.Admission(); err != nil {
		platform.WriteUnavailable(w, retryAfter, err.Error())
		return
	}
	body, berr := platform.ReadBody(w, r, h.cfg.MaxBodyBytes, true)
	if berr != nil {
		berr.Write(w)
		return
	}
	now := h.now().UTC()
	msgs, batch, err := split(body, call)
	if err != nil {
		platform.WriteError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if len(msgs) > h.cfg.MaxEvents {
		platform.WriteError(w, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("the batch holds %d messages, the limit is %d: send smaller batches", len(msgs), h.cfg.MaxEvents), nil)
		return
	}
	var (
		good   []event.Decoded
		nd     []byte
		dead   []*broker.Message
		answer = Answer{Success: true}
		orig   = envelope.NewEvents(nil, event.ContentTypeJSON, len(msgs), now, envelope.SourceIngest)
		// problem dead-letters message i: data is the mapped event, which
		// replays once the cause is fixed, or, when asSent, the message as
		// sent, which cannot be replayed (the pipeline reads events).
		problem = func(i int, data []byte, reason string, asSent bool) {
			m := envelope.NewDeadLetter(orig, i, data, Stage, reason, "", now)
			if asSent {
				m.Attributes[envelope.AttrNoReplay] = "a Segment message that could not be mapped, kept as sent: fix the sender and resend it"
			}
			dead = append(dead, m)
			answer.DeadLettered++
			if len(answer.Errors) < maxProblems {
				answer.Errors = append(answer.Errors, Problem{Index: i, Reason: reason})
			}
		}
	)
	for i, raw := range msgs {
		e, err := Map(raw, call, batch, now)
		if err != nil {
			problem(i, withoutWriteKey(raw), err.Error(), true)
			continue
		}
		native, err := event.Marshal(&e)
		if err != nil {
			problem(i, withoutWriteKey(raw), "encode the event: "+err.Error(), true)
			continue
		}
		if errs := h.ing.Validate(&e, i, now); len(errs) > 0 {
			// The mapped event, which replays once corrected.
			problem(i, native, event.JoinErrors(errs), false)
			continue
		}
		good = append(good, event.Decoded{Event: e, Raw: native})
		nd = append(append(nd, native...), '\n')
	}
	if len(dead) > 0 {
		pctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
		err := h.pub.Publish(pctx, broker.TopicDeadLetter, dead...)
		cancel()
		if err != nil {
			h.log.WarnContext(ctx, "segment: publish dead letters failed; answering 503", "error", err.Error(), "dead_letters", len(dead))
			platform.WriteUnavailable(w, retryAfter, "the broker did not take the batch; nothing was accepted, retry later")
			return
		}
	}
	if len(good) > 0 {
		if err := h.ing.PublishEvents(ctx, nd, good, now); err != nil {
			h.log.WarnContext(ctx, "segment: publish failed; answering 503", "error", err.Error(), "events", len(good))
			platform.WriteUnavailable(w, retryAfter, "the broker did not take the events; nothing was accepted, retry later")
			return
		}
	}
	platform.WriteJSON(w, http.StatusOK, answer)
}

// envelopeFields are the members of a batch body besides batch that apply
// to each of its messages when the message lacks them.
var envelopeFields = []string{"context", "integrations", "sentAt", "_metadata"}

// split returns the messages of a body: the members of batch, or the body
// itself for a single call; and the batch's own fields (sentAt, context...).
func split(body []byte, call string) ([]jsontext.Value, map[string]jsontext.Value, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, nil, errors.New("the body must be a JSON object: {\"batch\": [...]} on /v1/batch, one message on the other routes")
	}
	if call != "" {
		if !json.Valid(body) {
			return nil, nil, errors.New("the body is not valid JSON")
		}
		return []jsontext.Value{body}, nil, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, nil, fmt.Errorf("the body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	rawBatch, ok := top["batch"]
	if !ok {
		return nil, nil, errors.New("batch: is required: {\"batch\": [message, ...]}")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(rawBatch, &items); err != nil {
		return nil, nil, errors.New("batch: must be an array of messages")
	}
	msgs := make([]jsontext.Value, len(items))
	for i, it := range items {
		msgs[i] = jsontext.Value(it)
	}
	shared := map[string]jsontext.Value{}
	for _, f := range envelopeFields {
		if v, ok := top[f]; ok {
			shared[f] = jsontext.Value(v)
		}
	}
	return msgs, shared, nil
}

// Map turns one Segment message into an event (docs/segment.md). call is
// the route's call ("" on /v1/batch: the message's type says); batch holds
// the batch's own fields; now is when the request arrived. It does not
// validate the event beyond what mapping needs.
func Map(raw jsontext.Value, call string, batch map[string]jsontext.Value, now time.Time) (event.Event, error) {
	var e event.Event
	var m map[string]jsontext.Value
	if len(raw) == 0 || raw[0] != '{' {
		return e, errors.New("a message must be a JSON object")
	}
	if err := jsonv2.Unmarshal(raw, &m); err != nil {
		return e, fmt.Errorf("the message is not valid JSON: %s", strings.TrimPrefix(err.Error(), "jsontext: "))
	}
	for k, v := range batch {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	// The writeKey is a credential: never stored.
	delete(m, "writeKey")

	typ := call
	if typ == "" {
		if err := str(m, "type", &typ); err != nil {
			return e, err
		}
		typ = strings.ToLower(typ)
		if !isCall(typ) {
			return e, fmt.Errorf("type: must be one of %s, got %q", strings.Join(Calls, ", "), typ)
		}
	}
	m["type"] = quote(typ)

	// event_id
	if err := str(m, "messageId", &e.EventID); err != nil {
		return e, err
	}
	if e.EventID == "" {
		sum := sha256.Sum256(raw)
		e.EventID = "sj-" + hex.EncodeToString(sum[:16])
	}

	// event_type
	switch typ {
	case "track":
		if err := str(m, "event", &e.EventType); err != nil {
			return e, err
		}
		if e.EventType == "" {
			return e, errors.New("event: is required on a track call (the name of the event, such as \"Order Completed\")")
		}
	default:
		e.EventType = typ
	}

	// occurred_at
	t, err := occurredAt(m, now)
	if err != nil {
		return e, err
	}
	e.OccurredAt = t

	// user
	var userID, anonID string
	if err := id(m, "userId", &userID); err != nil {
		return e, err
	}
	if err := id(m, "anonymousId", &anonID); err != nil {
		return e, err
	}
	e.User.ID = cmpOr(userID, anonID)
	if e.User.ID == "" {
		return e, errors.New("userId: a message needs a userId or an anonymousId")
	}

	var ctx map[string]jsontext.Value
	if v, ok := m["context"]; ok && !isNull(v) {
		if err := jsonv2.Unmarshal(v, &ctx); err != nil {
			return e, errors.New("context: must be an object")
		}
	}
	// What became a field of the event is not kept a second time in
	// properties, where the PII policy's rules for that field would not
	// reach it: the traits that became user fields, and the coordinates
	// that became the location.
	ctxChanged := false
	// User fields: identify's traits, else context.traits.
	var traits map[string]jsontext.Value
	traitsOf, traitsName := ctx["traits"], "context.traits"
	if typ == "identify" {
		traitsOf, traitsName = m["traits"], "traits"
	}
	if len(traitsOf) > 0 && !isNull(traitsOf) {
		if err := jsonv2.Unmarshal(traitsOf, &traits); err != nil {
			return e, fmt.Errorf("%s: must be an object", traitsName)
		}
		mapped := userTraits(traits, &e.User)
		for _, name := range mapped {
			delete(traits, name)
		}
		if typ != "identify" && len(mapped) > 0 {
			if len(traits) == 0 {
				delete(ctx, "traits")
			} else if ctx["traits"], err = marshal(traits); err != nil {
				return e, err
			}
			ctxChanged = true
		}
	}
	moved, err := location(ctx, &e.Location)
	if err != nil {
		return e, err
	}
	ctxChanged = ctxChanged || moved
	if ctxChanged {
		if m["context"], err = marshal(ctx); err != nil {
			return e, err
		}
	}

	// properties: the message's properties (traits for identify and group),
	// plus the rest of the message under _segment.
	var propsKey string
	switch typ {
	case "track", "page", "screen":
		propsKey = "properties"
	case "identify", "group":
		propsKey = "traits"
	}
	props := jsontext.Value("{}")
	if propsKey != "" {
		if v, ok := m[propsKey]; ok && !isNull(v) {
			if v.Kind() != '{' {
				return e, fmt.Errorf("%s: must be an object", propsKey)
			}
			props = bytes.Clone(v)
			delete(m, propsKey)
		}
	}
	if typ == "identify" && traits != nil {
		// identify's traits less those that became user fields; the
		// personal ones skyjoin has no user field for (address, or a user
		// field's trait that is not a string) go to _segment.traits, where
		// the default PII policy drops them.
		personal := map[string]jsontext.Value{}
		for name, v := range traits {
			if _, ok := userTraitFields[name]; ok || name == "address" {
				personal[name] = v
				delete(traits, name)
			}
		}
		if props, err = marshal(traits); err != nil {
			return e, err
		}
		if len(personal) > 0 {
			if m["traits"], err = marshal(personal); err != nil {
				return e, err
			}
		}
	}
	var keys map[string]jsontext.Value
	if err := jsonv2.Unmarshal(props, &keys); err != nil {
		return e, fmt.Errorf("%s: %s", propsKey, strings.TrimPrefix(err.Error(), "jsontext: "))
	}
	if _, taken := keys[SegmentKey]; taken {
		return e, fmt.Errorf("%s.%s: is a name skyjoin keeps for the message's Segment fields", propsKey, SegmentKey)
	}
	rest, err := jsonv2.Marshal(m, jsonv2.Deterministic(true))
	if err != nil {
		return e, fmt.Errorf("encode the message's fields: %w", err)
	}
	if err := props.Compact(); err != nil {
		return e, fmt.Errorf("%s: %w", propsKey, err)
	}
	out := make([]byte, 0, len(props)+len(rest)+16)
	out = append(out, props[:len(props)-1]...)
	if len(keys) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"`+SegmentKey+`":`...)
	out = append(out, rest...)
	out = append(out, '}')
	e.Properties = out
	return e, nil
}

// withoutWriteKey is a message as sent, for its dead letter, less its
// writeKey (a secret: browser trackers put it in each message). A message
// that cannot be read as an object is kept as is unless it might hold a
// writeKey (the name, or an escape that could spell it): then a note
// stands for it.
func withoutWriteKey(raw jsontext.Value) []byte {
	var m map[string]jsontext.Value
	if err := jsonv2.Unmarshal(raw, &m); err != nil {
		if bytes.Contains(raw, []byte("writeKey")) || bytes.Contains(raw, []byte(`\u`)) {
			return []byte(`"skyjoin: the message is not kept: it is not a JSON object skyjoin can read, and may hold a writeKey"`)
		}
		return raw
	}
	if _, ok := m["writeKey"]; !ok {
		return raw
	}
	delete(m, "writeKey")
	out, err := marshal(m)
	if err != nil {
		return []byte(`"skyjoin: the message is not kept: it could not be encoded without its writeKey"`)
	}
	return out
}

// occurredAt is timestamp, or else originalTimestamp corrected by the
// client's clock skew (receive time minus sentAt, as Segment does), or
// else originalTimestamp, or else the receive time.
func occurredAt(m map[string]jsontext.Value, now time.Time) (time.Time, error) {
	ts := func(name string) (time.Time, bool, error) {
		var s string
		if err := str(m, name, &s); err != nil || s == "" {
			return time.Time{}, false, err
		}
		t, err := event.ParseRFC3339(s)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("%s: %v", name, err)
		}
		return t, true, nil
	}
	if t, ok, err := ts("timestamp"); err != nil || ok {
		return t.UTC(), err
	}
	orig, ok, err := ts("originalTimestamp")
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return now, nil
	}
	sent, ok, err := ts("sentAt")
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return orig.UTC(), nil
	}
	return now.Add(-sent.Sub(orig)).UTC(), nil
}

// userTraitFields are the traits that are user fields (Segment's reserved
// traits), by name.
var userTraitFields = map[string]func(u *event.User) *string{
	"email":     func(u *event.User) *string { return &u.Email },
	"name":      func(u *event.User) *string { return &u.Name },
	"phone":     func(u *event.User) *string { return &u.Phone },
	"firstName": func(u *event.User) *string { return &u.FirstName },
	"lastName":  func(u *event.User) *string { return &u.LastName },
	"username":  func(u *event.User) *string { return &u.Username },
	"title":     func(u *event.User) *string { return &u.Title },
	"gender":    func(u *event.User) *string { return &u.Gender },
	"birthday":  func(u *event.User) *string { return &u.BirthDate },
	"avatar":    func(u *event.User) *string { return &u.PictureURL },
}

// userTraits copies the traits that are user fields, when strings, and
// returns their names.
func userTraits(traits map[string]jsontext.Value, u *event.User) []string {
	var mapped []string
	for name, dst := range userTraitFields {
		var s string
		if v, ok := traits[name]; ok && v.Kind() == '"' && jsonv2.Unmarshal(v, &s) == nil {
			*dst(u) = s
			mapped = append(mapped, name)
		}
	}
	return mapped
}

// location reads context.location: latitude, longitude, city, country,
// region; and context.timezone. The coordinates it takes are removed from
// ctx's location (the other members stay), and it reports whether it
// changed ctx.
func location(ctx map[string]jsontext.Value, l *event.Location) (bool, error) {
	if v, ok := ctx["timezone"]; ok && v.Kind() == '"' {
		jsonv2.Unmarshal(v, &l.Timezone)
	}
	v, ok := ctx["location"]
	if !ok || isNull(v) {
		return false, nil
	}
	var loc struct {
		Latitude  *float64 `json:"latitude"`
		Longitude *float64 `json:"longitude"`
		City      *string  `json:"city"`
		Country   *string  `json:"country"`
		Region    *string  `json:"region"`
	}
	// Other members (speed...) stay in _segment.context.
	if err := jsonv2.Unmarshal(v, &loc); err != nil {
		return false, fmt.Errorf("context.location: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	l.Latitude, l.Longitude = loc.Latitude, loc.Longitude
	for _, p := range []struct {
		src *string
		dst *string
	}{{loc.City, &l.City}, {loc.Country, &l.Country}, {loc.Region, &l.State}} {
		if p.src != nil {
			*p.dst = *p.src
		}
	}
	if loc.Latitude == nil && loc.Longitude == nil {
		return false, nil
	}
	var members map[string]jsontext.Value
	if err := jsonv2.Unmarshal(v, &members); err != nil {
		return false, fmt.Errorf("context.location: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	delete(members, "latitude")
	delete(members, "longitude")
	if len(members) == 0 {
		delete(ctx, "location")
		return true, nil
	}
	rest, err := marshal(members)
	if err != nil {
		return false, err
	}
	ctx["location"] = rest
	return true, nil
}

// marshal encodes an object of members, names in sorted order.
func marshal(m map[string]jsontext.Value) (jsontext.Value, error) {
	b, err := jsonv2.Marshal(m, jsonv2.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("encode the message's fields: %w", err)
	}
	return b, nil
}

// str reads a string member; absent or null leaves *dst.
func str(m map[string]jsontext.Value, name string, dst *string) error {
	v, ok := m[name]
	if !ok || isNull(v) {
		return nil
	}
	if v.Kind() != '"' {
		return fmt.Errorf("%s: must be a string", name)
	}
	return jsonv2.Unmarshal(v, dst)
}

// id reads an id: a string, or a number as written (Segment's libraries
// take numeric user ids).
func id(m map[string]jsontext.Value, name string, dst *string) error {
	v, ok := m[name]
	if ok && v.Kind() == '0' {
		*dst = string(v)
		return nil
	}
	return str(m, name, dst)
}

func isNull(v jsontext.Value) bool { return v.Kind() == 'n' }

func isCall(s string) bool {
	for _, c := range Calls {
		if c == s {
			return true
		}
	}
	return false
}

func quote(s string) jsontext.Value { return jsontext.Value(strconv.Quote(s)) }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
