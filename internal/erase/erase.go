// Package erase erases a person: DELETE /v1/users/{id} removes the user's
// records from the store, their events from the dead letters and their
// records from every webhook's failure list. See docs/data.md for what it
// cannot reach (events in flight, BigQuery's time travel, copies already
// delivered to webhook targets).
package erase

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/skyjoin/skyjoin/internal/deadletter"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/webhook"
)

// MaxUserIDLength is the longest user id, in characters (the event
// schema's maxLength of user.id).
const MaxUserIDLength = 128

// Eraser erases users everywhere skyjoin keeps them at rest.
type Eraser struct {
	Store store.Eraser
	// DeadLetters is the broker that keeps the dead letters.
	DeadLetters deadletter.Broker
	// Registry keeps the webhooks' failure lists.
	Registry registry.Registry
	// StoredIDs returns every form a user id may be stored in (the id,
	// and its hash under the PII policy's key: pii.Policy.UserIDs). The
	// store and the webhook failures hold records as the policy left them;
	// dead letters hold events as sent.
	StoredIDs func(id string) []string
	// LogID is the id as logs may show it (pii.Policy.UserID: hashed when
	// the policy hashes user ids); nil shows it as given.
	LogID func(id string) string
	Log   *slog.Logger
}

// Result says what an erasure removed.
type Result struct {
	UserID          string            `json:"user_id"`
	Records         int64             `json:"records"` // rows deleted from the store
	DeadLetters     deadletter.Erased `json:"dead_letters"`
	WebhookFailures webhook.Erased    `json:"webhook_failures"`
}

// Erase erases the user with id. It tries every place even if one fails,
// and returns the errors joined; an erasure is idempotent, so a failed one
// is run again.
func (e *Eraser) Erase(ctx context.Context, id string) (Result, error) {
	res := Result{UserID: id}
	ids := []string{id}
	if e.StoredIDs != nil {
		ids = e.StoredIDs(id)
	}
	var errs []error
	n, err := e.Store.DeleteUsers(ctx, ids)
	res.Records = n
	if err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	if e.DeadLetters != nil {
		res.DeadLetters, err = deadletter.EraseUser(ctx, e.DeadLetters, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("dead letters: %w", err))
		}
	}
	if e.Registry != nil {
		res.WebhookFailures, err = webhook.EraseUsers(ctx, e.Registry, ids)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook failures: %w", err))
		}
	}
	return res, errors.Join(errs...)
}

// Register mounts DELETE /v1/users/{id}.
func (e *Eraser) Register(r platform.Router) {
	r.HandleFunc("DELETE /v1/users/{id}", e.handle)
}

// errorDetails is the body's details of a failed erasure: what was done.
type errorDetails struct {
	Done Result `json:"done"`
}

func (e *Eraser) handle(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	switch {
	case id == "":
		platform.WriteError(w, http.StatusBadRequest, "id: required", nil)
		return
	case !utf8.ValidString(id):
		platform.WriteError(w, http.StatusBadRequest, "id: must be valid UTF-8", nil)
		return
	case utf8.RuneCountInString(id) > MaxUserIDLength:
		platform.WriteError(w, http.StatusBadRequest, fmt.Sprintf("id: longer than %d characters, the longest user id an event may carry", MaxUserIDLength), nil)
		return
	}
	// Any id an event may carry can be erased: control characters included
	// (the schema allows them in user.id; the log escapes them).
	start := time.Now()
	res, err := e.Erase(r.Context(), id)
	logID := id
	if e.LogID != nil {
		logID = e.LogID(id)
	}
	attrs := []any{"user_id", logID, "records", res.Records,
		"dead_letters_deleted", res.DeadLetters.Deleted, "dead_letters_rewritten", res.DeadLetters.Rewritten,
		"webhook_failures_deleted", res.WebhookFailures.Deleted, "webhook_failures_rewritten", res.WebhookFailures.Rewritten,
		"duration_ms", time.Since(start).Milliseconds()}
	if err != nil {
		e.Log.ErrorContext(r.Context(), "erasure failed; run it again", append(attrs, "error", err.Error())...)
		w.Header().Set("Retry-After", "5")
		platform.WriteError(w, http.StatusServiceUnavailable,
			"erasure not complete, run it again (it is idempotent): "+err.Error(), errorDetails{Done: res})
		return
	}
	e.Log.InfoContext(r.Context(), "user erased", attrs...)
	platform.WriteJSON(w, http.StatusOK, res)
}
