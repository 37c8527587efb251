package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// Reasons a credential is refused (401).
var (
	ErrNoCredential = errors.New("no credential")
	ErrInvalid      = errors.New("invalid credential")
	ErrExpired      = errors.New("the key has expired")
	ErrRevoked      = errors.New("the key was revoked")
)

// Verifier verifies API keys against the keys of a registry, which it
// keeps in memory and up to date from a watch of the collection: a key
// created, rotated or revoked through any process takes effect in this one
// as soon as the registry reports it (about a second on JetStream and
// Firestore), without a registry read per request.
type Verifier struct {
	reg registry.Registry
	log *slog.Logger
	now func() time.Time

	mu   sync.RWMutex
	keys map[string]keyDoc

	stop context.CancelFunc
	done chan struct{}
}

// NewVerifier loads the keys of reg and watches them until Close. ctx
// bounds the first load only.
func NewVerifier(ctx context.Context, reg registry.Registry, log *slog.Logger) (*Verifier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &Verifier{reg: reg, log: log, now: time.Now, keys: map[string]keyDoc{}, done: make(chan struct{})}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	unbind := context.AfterFunc(ctx, stop)
	docs, changes, err := reg.Watch(wctx, CollKeys)
	if !unbind() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("load keys: %w", err)
	}
	v.stop = stop
	v.sync(docs)
	go v.watch(wctx, changes)
	return v, nil
}

// Close stops the watch.
func (v *Verifier) Close() error {
	v.stop()
	<-v.done
	return nil
}

func (v *Verifier) watch(ctx context.Context, changes <-chan registry.Change) {
	defer close(v.done)
	backoff := retry.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	registry.Follow(ctx, v.reg, CollKeys, changes, backoff.Delay, v.apply, v.sync,
		func(err error) { v.log.Error("auth: watch the keys", "error", err.Error()) })
}

// sync makes the keys those of docs.
func (v *Verifier) sync(docs []registry.Doc) {
	keys := make(map[string]keyDoc, len(docs))
	for _, doc := range docs {
		d, err := decodeKey(doc)
		if err != nil {
			v.log.Error("auth: a key is unreadable; it is refused", "key_id", doc.ID, "error", err.Error())
			continue
		}
		keys[d.ID] = d
	}
	v.mu.Lock()
	v.keys = keys
	v.mu.Unlock()
}

func (v *Verifier) apply(c registry.Change) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if c.Deleted {
		delete(v.keys, c.ID)
		return
	}
	d, err := decodeKey(c.Doc)
	if err != nil {
		delete(v.keys, c.ID)
		v.log.Error("auth: a key is unreadable; it is refused", "key_id", c.ID, "error", err.Error())
		return
	}
	v.keys[d.ID] = d
}

// Verify returns the principal of an API key, or an error: ErrInvalid
// (not a key, unknown, wrong secret), ErrExpired or ErrRevoked (only to
// the holder of the right secret).
func (v *Verifier) Verify(tok string) (Principal, error) {
	id, secret, ok := ParseToken(tok)
	if !ok {
		return Principal{}, ErrInvalid
	}
	v.mu.RLock()
	d, found := v.keys[id]
	v.mu.RUnlock()
	now := v.now()
	if !found {
		// Spend the time of a comparison all the same.
		hashMatches(secret, "0000000000000000000000000000000000000000000000000000000000000000")
		return Principal{}, ErrInvalid
	}
	match := hashMatches(secret, d.Hash)
	if !match && d.PreviousUntil != nil && now.Before(*d.PreviousUntil) {
		match = hashMatches(secret, d.PreviousHash)
	}
	switch {
	case !match:
		return Principal{}, ErrInvalid
	case d.RevokedAt != nil:
		return Principal{}, ErrRevoked
	case d.ExpiresAt != nil && !now.Before(*d.ExpiresAt):
		return Principal{}, ErrExpired
	}
	return Principal{ID: d.ID, Kind: KindKey, Scopes: slices.Clone(d.Scopes)}, nil
}

// Lookup returns a key that is active now, for a session of it.
func (v *Verifier) Lookup(id string) (Key, bool) {
	v.mu.RLock()
	d, ok := v.keys[id]
	v.mu.RUnlock()
	if !ok || !d.Active(v.now()) {
		return Key{}, false
	}
	return d.Key, true
}

// Active counts the keys usable now.
func (v *Verifier) Active() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n, now := 0, v.now()
	for _, d := range v.keys {
		if d.Active(now) {
			n++
		}
	}
	return n
}
