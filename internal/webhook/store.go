package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/registry"
)

// The registry's collections of the webhooks.
const (
	collWebhooks = "webhooks"
	collFailures = "webhook_failures"
)

// registration is a stored webhook, secret included.
type registration struct {
	Webhook
	secret string
	// sealedWith is the id of the key that sealed the secret in raw; ""
	// for a plaintext secret, stored by a version before sealing.
	sealedWith string
	// secretErr says why the secret did not open here (a key this process
	// lacks): nothing is sent, batches go to the failure list.
	secretErr error
	raw       []byte // the registry document it was read from or written as
}

// same reports whether r and o deliver alike: all but how the secret is
// stored.
func (r *registration) same(o *registration) bool {
	a, b := r.Webhook, o.Webhook
	return a.ID == b.ID && a.URL == b.URL && a.Filter == b.Filter && a.BatchSize == b.BatchSize &&
		a.MaxWaitMS == b.MaxWaitMS && a.AllowPrivate == b.AllowPrivate && a.CreatedAt.Equal(b.CreatedAt) &&
		r.secret == o.secret && (r.secretErr == nil) == (o.secretErr == nil)
}

// webhookDoc is a registration as the registry keeps it. The secret is
// sealed (seal.go); Secret, its plaintext, is only read, from documents of
// versions before sealing.
type webhookDoc struct {
	ID           string    `json:"id"`
	URL          string    `json:"url"`
	Filter       string    `json:"filter"`
	Secret       string    `json:"secret,omitempty"`
	SealedSecret string    `json:"secret_sealed,omitempty"`
	AllowPrivate bool      `json:"allow_private,omitempty"`
	BatchSize    int       `json:"batch_size"`
	MaxWaitMS    int64     `json:"max_wait_ms"`
	CreatedAt    time.Time `json:"created_at"`
}

// encodeRegistration encodes r with its secret sealed with the primary key
// of keys.
func encodeRegistration(r *registration, keys *Keyring) ([]byte, error) {
	return json.Marshal(webhookDoc{ID: r.ID, URL: r.URL, Filter: r.Filter, SealedSecret: keys.seal(r.ID, r.secret),
		AllowPrivate: r.AllowPrivate, BatchSize: r.BatchSize, MaxWaitMS: r.MaxWaitMS, CreatedAt: r.CreatedAt})
}

// decodeRegistration decodes a stored registration, opening its secret
// with keys; a secret that does not open is said in secretErr.
func decodeRegistration(d registry.Doc, keys *Keyring) (*registration, error) {
	var w webhookDoc
	if err := json.Unmarshal(d.Data, &w); err != nil {
		return nil, fmt.Errorf("decode webhook %s: %w", d.ID, err)
	}
	if w.ID != d.ID {
		return nil, fmt.Errorf("decode webhook %s: the document says id %q", d.ID, w.ID)
	}
	r := &registration{
		Webhook: Webhook{ID: w.ID, URL: w.URL, Filter: w.Filter, BatchSize: w.BatchSize, MaxWaitMS: w.MaxWaitMS,
			AllowPrivate: w.AllowPrivate, CreatedAt: w.CreatedAt.UTC()},
		raw: d.Data,
	}
	switch {
	case w.SealedSecret != "":
		r.secret, r.sealedWith, r.secretErr = keys.open(w.ID, w.SealedSecret)
	case w.Secret != "":
		r.secret = w.Secret
	default:
		return nil, fmt.Errorf("decode webhook %s: no secret", d.ID)
	}
	return r, nil
}

// failureDoc is a failure as the registry keeps it: one document per
// failed batch, with its records.
type failureDoc struct {
	ID        string          `json:"id"`
	WebhookID string          `json:"webhook_id"`
	Reason    string          `json:"reason"`
	Attempts  int             `json:"attempts"`
	FailedAt  time.Time       `json:"failed_at"`
	Count     int             `json:"count"`
	EventIDs  []string        `json:"event_ids"`
	Records   json.RawMessage `json:"records"`
}

// failureKey is the registry id of a failure: its webhook's id first, so
// that the failures of one webhook are listed by id prefix.
func failureKey(webhookID, id string) string { return webhookID + "-" + id }

// failureWebhook is the webhook id of a failure's registry id.
func failureWebhook(key string) string {
	wid, _, _ := strings.Cut(key, "-")
	return wid
}

// maxReasonLength bounds a failure's stored error.
const maxReasonLength = 1024

// failureOverhead is room kept in a failure document for all but its
// records and event ids (a reason of maxReasonLength included).
const failureOverhead = 4 << 10

func encodeFailure(f *Failure, records []byte) ([]byte, error) {
	reason := f.Reason
	if len(reason) > maxReasonLength {
		reason = strings.ToValidUTF8(reason[:maxReasonLength], "") + "..."
	}
	return json.Marshal(failureDoc{ID: f.ID, WebhookID: f.WebhookID, Reason: reason, Attempts: f.Attempts,
		FailedAt: f.FailedAt, Count: f.Count, EventIDs: f.EventIDs, Records: records})
}

func decodeFailure(d registry.Doc) (*Failure, error) {
	var fd failureDoc
	if err := json.Unmarshal(d.Data, &fd); err != nil {
		return nil, fmt.Errorf("decode failure %s: %w", d.ID, err)
	}
	if fd.EventIDs == nil {
		fd.EventIDs = []string{}
	}
	return &Failure{ID: fd.ID, WebhookID: fd.WebhookID, Reason: fd.Reason, Attempts: fd.Attempts,
		FailedAt: fd.FailedAt.UTC(), Count: fd.Count, EventIDs: fd.EventIDs, records: fd.Records}, nil
}

// splitFailure returns the failures to store for a failed batch: f itself,
// or, when its records would not fit one registry document, several, each
// with some of the records; the first keeps f's id, the others get
// ID_2, ID_3...
func splitFailure(f *Failure) []*Failure {
	budget := registry.MaxDocSize - failureOverhead
	var parts []*Failure
	start, size := 0, 0
	cut := func(end int) {
		p := *f
		p.batch = f.batch[start:end]
		if len(parts) > 0 {
			p.ID = fmt.Sprintf("%s_%d", f.ID, len(parts)+1)
		}
		p.Count = len(p.batch)
		p.EventIDs = eventIDs(p.batch)
		parts = append(parts, &p)
		start, size = end, 0
	}
	for i, e := range f.batch {
		n := len(e.json) + len(e.id) + 8 // commas, quotes, escapes
		if i > start && size+n > budget {
			cut(i)
		}
		size += n
	}
	cut(len(f.batch))
	return parts
}

func eventIDs(batch []encoded) []string {
	ids := make([]string, len(batch))
	for i, e := range batch {
		ids[i] = e.id
	}
	return ids
}

// store is the webhooks' side of the registry.
type store struct {
	reg  registry.Registry
	keys *Keyring
}

func (s store) createWebhook(ctx context.Context, r *registration) error {
	if s.keys == nil {
		return fmt.Errorf("webhook: this process cannot seal secrets: it has no --webhook-secret-key, which a registry shared with other processes needs: %w", ErrNoKey)
	}
	doc, err := encodeRegistration(r, s.keys)
	if err != nil {
		return errorf("store webhook "+r.ID, err)
	}
	if err := s.reg.Create(ctx, collWebhooks, r.ID, doc); err != nil {
		return errorf("store webhook "+r.ID, err)
	}
	r.raw, r.sealedWith = doc, s.keys.Primary()
	return nil
}

// resealWebhook stores doc, a registration with its secret sealed with the
// primary key, if the registry still holds read, the document it was
// read from; it reports whether it did. (The registry has no compare-and-swap: a
// deletion between the read and the write, a few milliseconds, is undone;
// the Dispatcher sees it in the watch and deletes again.)
func (s store) resealWebhook(ctx context.Context, id string, read, doc []byte) (bool, error) {
	d, err := s.reg.Get(ctx, collWebhooks, id)
	if errors.Is(err, registry.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, errorf("reseal webhook "+id, err)
	}
	if !bytes.Equal(d.Data, read) {
		return false, nil // changed meanwhile: its own load reseals it
	}
	if err := s.reg.Put(ctx, collWebhooks, id, doc); err != nil {
		return false, errorf("reseal webhook "+id, err)
	}
	return true, nil
}

func (s store) getWebhook(ctx context.Context, id string) (*registration, error) {
	if registry.CheckID(id) != nil {
		return nil, fmt.Errorf("webhook %q: %w", id, ErrNotFound)
	}
	d, err := s.reg.Get(ctx, collWebhooks, id)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("webhook %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, errorf("load webhook "+id, err)
	}
	r, err := decodeRegistration(d, s.keys)
	if err != nil {
		return nil, errorf("load webhook "+id, err)
	}
	return r, nil
}

// deleteWebhook removes a registration, then its failures.
func (s store) deleteWebhook(ctx context.Context, id string) error {
	if err := s.reg.Delete(ctx, collWebhooks, id); err != nil {
		return errorf("delete webhook "+id, err)
	}
	keys, err := s.reg.IDs(ctx, collFailures, failureKey(id, ""))
	if err != nil {
		return errorf("delete failures of webhook "+id, err)
	}
	for _, k := range keys {
		if err := s.reg.Delete(ctx, collFailures, k); err != nil {
			return errorf("delete failures of webhook "+id, err)
		}
	}
	return nil
}

// putFailure stores f as loaded from the registry, updated by a replay.
func (s store) putFailure(ctx context.Context, f *Failure) error {
	doc, err := encodeFailure(f, f.records)
	if err == nil {
		err = s.reg.Put(ctx, collFailures, failureKey(f.WebhookID, f.ID), doc)
	}
	if err != nil {
		return errorf("store failure "+f.ID+" of webhook "+f.WebhookID, err)
	}
	return nil
}

func (s store) deleteFailure(ctx context.Context, f *Failure) error {
	if err := s.reg.Delete(ctx, collFailures, failureKey(f.WebhookID, f.ID)); err != nil {
		return errorf("delete failure "+f.ID, err)
	}
	return nil
}

// failures lists a webhook's failures, oldest first; ids, if given, select
// some; limit > 0 keeps the first limit.
func (s store) failures(ctx context.Context, webhookID string, ids []string, limit int) ([]*Failure, error) {
	docs, err := s.reg.List(ctx, collFailures, failureKey(webhookID, ""))
	if err != nil {
		return nil, errorf("list failures of webhook "+webhookID, err)
	}
	out := []*Failure{}
	for _, d := range docs {
		f, err := decodeFailure(d)
		if err != nil {
			return nil, errorf("list failures of webhook "+webhookID, err)
		}
		if len(ids) == 0 || slices.Contains(ids, f.ID) {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b *Failure) int {
		return cmp.Or(a.FailedAt.Compare(b.FailedAt), strings.Compare(a.ID, b.ID))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// failureCounts counts the failures of the webhook with id, or of every
// webhook if id is "".
func (s store) failureCounts(ctx context.Context, id string) (map[string]int64, error) {
	prefix := ""
	if id != "" {
		prefix = failureKey(id, "")
	}
	keys, err := s.reg.IDs(ctx, collFailures, prefix)
	if err != nil {
		return nil, errorf("count failures", err)
	}
	out := map[string]int64{}
	for _, k := range keys {
		out[failureWebhook(k)]++
	}
	return out, nil
}

// failedAt is the part of a failure document expiry reads.
type failedAt struct {
	FailedAt time.Time `json:"failed_at"`
}

// expiredFailures returns the failures, of every webhook, whose failed_at
// is before cutoff, as registry keys with their webhook's id.
func (s store) expiredFailures(ctx context.Context, cutoff time.Time) (keys, webhooks []string, _ error) {
	docs, err := s.reg.List(ctx, collFailures, "")
	if err != nil {
		return nil, nil, errorf("list failures", err)
	}
	for _, d := range docs {
		var f failedAt
		if err := json.Unmarshal(d.Data, &f); err != nil {
			return nil, nil, errorf("list failures", fmt.Errorf("decode failure %s: %w", d.ID, err))
		}
		if f.FailedAt.Before(cutoff) {
			keys, webhooks = append(keys, d.ID), append(webhooks, failureWebhook(d.ID))
		}
	}
	return keys, webhooks, nil
}
