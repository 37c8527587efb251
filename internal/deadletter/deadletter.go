// Package deadletter lists and replays the messages the worker could not
// process. The worker publishes each bad event (or undecodable message) to
// the dead-letter topic with why, where and after how many attempts; once the
// cause is fixed, Replay publishes them to the events topic again and removes
// them from the dead-letter topic.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// Broker is what this package needs: browse and delete dead letters, and
// publish replayed events.
type Broker interface {
	broker.Browser
	broker.Publisher
}

// Entry is one dead letter.
type Entry struct {
	ID           string            `json:"id"`
	Stage        string            `json:"stage"`
	Reason       string            `json:"reason"`
	Attempts     int               `json:"attempts"`
	FailedAt     time.Time         `json:"failed_at"`
	MessageID    string            `json:"message_id"` // the original message's broker id
	Index        int               `json:"index"`      // the event's index within it; -1 for the whole message
	Subscription string            `json:"subscription,omitempty"`
	ContentType  string            `json:"content_type"`
	NoReplay     string            `json:"no_replay,omitempty"` // why it cannot be replayed; absent if it can
	Data         json.RawMessage   `json:"data,omitempty"`      // the event (or message) as JSON, when it is JSON
	Text         string            `json:"text,omitempty"`      // the payload as text, when it is not JSON
	Attributes   map[string]string `json:"attributes"`          // all attributes of the dead letter
}

func entryOf(m *broker.Message) Entry {
	d := envelope.ParseDeadLetter(m)
	e := Entry{
		ID:           m.ID,
		Stage:        d.Stage,
		Reason:       d.Reason,
		Attempts:     d.Attempts,
		FailedAt:     d.FailedAt,
		MessageID:    d.OriginalID,
		Index:        d.Index,
		Subscription: d.Subscription,
		ContentType:  d.ContentType,
		NoReplay:     d.NoReplay,
		Attributes:   m.Attributes,
	}
	if json.Valid(m.Data) {
		e.Data = append(json.RawMessage(nil), m.Data...)
	} else {
		e.Text = string(m.Data)
	}
	return e
}

// Filter selects dead letters. Zero fields select everything.
type Filter struct {
	IDs            []string
	Stage          string
	ReasonContains string
	Since          time.Time // failed at or after
	Limit          int       // at most this many; 0: no limit
}

func (f Filter) match(e Entry) bool {
	if len(f.IDs) > 0 {
		found := false
		for _, id := range f.IDs {
			if id == e.ID {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if f.Stage != "" && f.Stage != e.Stage {
		return false
	}
	if f.ReasonContains != "" && !strings.Contains(strings.ToLower(e.Reason), strings.ToLower(f.ReasonContains)) {
		return false
	}
	if !f.Since.IsZero() && e.FailedAt.Before(f.Since) {
		return false
	}
	return true
}

// List returns the dead letters that match f, oldest first.
func List(ctx context.Context, b broker.Browser, f Filter) ([]Entry, error) {
	var out []Entry
	err := b.Browse(ctx, broker.TopicDeadLetter, func(m *broker.Message) bool {
		e := entryOf(m)
		if f.match(e) {
			out = append(out, e)
		}
		return f.Limit == 0 || len(out) < f.Limit
	})
	if err != nil {
		return out, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

// Replay publishes the matching dead letters to the events topic again, one
// message each, and deletes each from the dead-letter topic once its publish
// succeeded. It returns how many were replayed, and how many that matched
// cannot be: those marked so (envelope.AttrNoReplay) stay, untouched. A
// replayed event that fails again is dead-lettered again by the worker,
// with a new reason.
func Replay(ctx context.Context, b Broker, f Filter) (replayed, kept int, err error) {
	var batch []*broker.Message
	err = b.Browse(ctx, broker.TopicDeadLetter, func(m *broker.Message) bool {
		if e := entryOf(m); f.match(e) {
			if e.NoReplay != "" {
				kept++
			} else {
				batch = append(batch, m)
			}
		}
		return f.Limit == 0 || len(batch)+kept < f.Limit
	})
	if err != nil {
		return 0, kept, fmt.Errorf("replay dead letters: %w", err)
	}
	for _, m := range batch {
		if err := b.Publish(ctx, broker.TopicEvents, envelope.Replay(m)); err != nil {
			return replayed, kept, fmt.Errorf("replay dead letter %s: %w", m.ID, err)
		}
		if err := b.Delete(ctx, broker.TopicDeadLetter, m.ID); err != nil {
			return replayed, kept, fmt.Errorf("replay dead letter %s: published, but not deleted (it may be replayed twice; the store keeps one copy): %w", m.ID, err)
		}
		replayed++
	}
	return replayed, kept, nil
}

// Handler serves the dead-letter admin API:
//
//	GET    /v1/deadletters?stage=&reason=&since=&limit=   list
//	POST   /v1/deadletters/replay   {"ids":[],"stage":"","reason":"","since":""}   replay
//	DELETE /v1/deadletters/{id}     discard one
type Handler struct {
	b   Broker
	log *slog.Logger
}

// NewHandler returns the admin API over b.
func NewHandler(b Broker, log *slog.Logger) *Handler { return &Handler{b: b, log: log} }

// Register mounts the routes on mux.
func (h *Handler) Register(mux platform.Router) {
	mux.HandleFunc("GET /v1/deadletters", h.list)
	mux.HandleFunc("POST /v1/deadletters/replay", h.replay)
	mux.HandleFunc("DELETE /v1/deadletters/{id}", h.delete)
}

// ListResponse is the answer of GET /v1/deadletters.
type ListResponse struct {
	DeadLetters []Entry `json:"deadletters"`
	Count       int     `json:"count"`
}

// ReplayRequest is the body of POST /v1/deadletters/replay; an empty body
// replays everything.
type ReplayRequest struct {
	IDs    []string `json:"ids,omitempty"`
	Stage  string   `json:"stage,omitempty"`
	Reason string   `json:"reason,omitempty"` // substring of the reason, case-insensitive
	Since  string   `json:"since,omitempty"`  // RFC 3339
	Limit  int      `json:"limit,omitempty"`
}

// ReplayResponse is the answer of a replay: how many dead letters were
// replayed, and how many of those selected cannot be and were kept (a
// Segment message that could not be mapped: fix the sender and resend it).
type ReplayResponse struct {
	Replayed int `json:"replayed"`
	Kept     int `json:"not_replayable,omitempty"`
}

func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, errors.New("since: must be an RFC 3339 timestamp such as 2026-11-26T10:00:00Z")
	}
	return t, nil
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Stage: q.Get("stage"), ReasonContains: q.Get("reason"), Limit: 100}
	for k := range q {
		switch k {
		case "stage", "reason", "since", "limit":
		default:
			platform.WriteError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q (known: stage, reason, since, limit)", k), nil)
			return
		}
	}
	var err error
	if f.Since, err = parseSince(q.Get("since")); err != nil {
		platform.WriteError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			platform.WriteError(w, http.StatusBadRequest, "limit: must be an integer from 1 to 10000", nil)
			return
		}
		f.Limit = n
	}
	entries, err := List(r.Context(), h.b, f)
	if err != nil {
		h.log.Error("deadletters: list", "error", err.Error())
		platform.WriteError(w, http.StatusServiceUnavailable, "cannot read the dead-letter topic", nil)
		return
	}
	if entries == nil {
		entries = []Entry{}
	}
	platform.WriteJSON(w, http.StatusOK, ListResponse{DeadLetters: entries, Count: len(entries)})
}

func (h *Handler) replay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if berr := platform.DecodeJSON(w, r, 1<<20, &req, true); berr != nil {
		if berr.Status == http.StatusBadRequest {
			berr.Message += ` (the body is empty, or a JSON object such as {"stage":"validate"})`
		}
		berr.Write(w)
		return
	}
	since, err := parseSince(req.Since)
	if err != nil {
		platform.WriteError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	n, kept, err := Replay(r.Context(), h.b, Filter{IDs: req.IDs, Stage: req.Stage, ReasonContains: req.Reason, Since: since, Limit: req.Limit})
	if err != nil {
		h.log.Error("deadletters: replay", "error", err.Error(), "replayed", n)
		platform.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("replay stopped after %d: %v", n, err), ReplayResponse{Replayed: n, Kept: kept})
		return
	}
	platform.WriteJSON(w, http.StatusOK, ReplayResponse{Replayed: n, Kept: kept})
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := h.b.Delete(r.Context(), broker.TopicDeadLetter, id)
	switch {
	case errors.Is(err, broker.ErrInvalidID):
		platform.WriteError(w, http.StatusBadRequest, fmt.Sprintf("id: %s is not a dead letter id: use an id that GET /v1/deadletters lists", strconv.Quote(id)),
			[]map[string]string{{"field": "id", "message": "not a dead letter id"}})
	case err != nil:
		h.log.Error("deadletters: delete", "id", id, "error", err.Error())
		platform.WriteUnavailable(w, time.Second, "the dead-letter topic cannot be changed now; retry later")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
