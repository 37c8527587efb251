package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

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
//
// A key the watch has not brought yet (just created, or just rotated, by
// this process or another) is read from the registry once, so that a
// token works the moment it is printed. Those reads are rate-limited
// (missReads per second), so unknown tokens cannot turn into a flood of
// registry reads; past the limit they are refused as before.
type Verifier struct {
	reg registry.Registry
	log *slog.Logger
	now func() time.Time

	mu   sync.RWMutex
	keys map[string]cachedKey

	misses *rate.Limiter

	stop context.CancelFunc
	done chan struct{}
}

// NewVerifier loads the keys of reg and watches them until Close. ctx
// bounds the first load only.
func NewVerifier(ctx context.Context, reg registry.Registry, log *slog.Logger) (*Verifier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &Verifier{reg: reg, log: log, now: time.Now, keys: map[string]cachedKey{}, done: make(chan struct{}),
		misses: rate.NewLimiter(missReads, missReads)}
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

// missReads bounds the registry reads of keys this process does not know
// yet, per second.
const missReads = 20

// cachedKey is a key and when the registry last wrote it: a change older
// than what the cache holds (a watch that lags a read) is not applied.
type cachedKey struct {
	keyDoc
	at time.Time
}

// sync makes the keys those of docs.
func (v *Verifier) sync(docs []registry.Doc) {
	keys := make(map[string]cachedKey, len(docs))
	for _, doc := range docs {
		d, err := decodeKey(doc)
		if err != nil {
			v.log.Error("auth: a key is unreadable; it is refused", "key_id", doc.ID, "error", err.Error())
			continue
		}
		keys[d.ID] = cachedKey{d, doc.UpdatedAt}
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
	if old, ok := v.keys[c.ID]; ok && old.at.After(c.UpdatedAt) {
		return // the cache already holds a later version, read on a miss
	}
	d, err := decodeKey(c.Doc)
	if err != nil {
		delete(v.keys, c.ID)
		v.log.Error("auth: a key is unreadable; it is refused", "key_id", c.ID, "error", err.Error())
		return
	}
	v.keys[d.ID] = cachedKey{d, c.UpdatedAt}
}

// refresh reads key id from the registry, when the cache does not know it
// or does not match its secret, and caches what it reads unless the watch
// brought a later version meanwhile. It returns the latest version of the
// two, and false if it has none (unknown id, registry error, over the
// limit).
func (v *Verifier) refresh(ctx context.Context, id string) (cachedKey, bool) {
	if !v.misses.Allow() {
		return cachedKey{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	doc, err := v.reg.Get(ctx, CollKeys, id)
	if err != nil {
		if !errors.Is(err, registry.ErrNotFound) {
			v.log.Warn("auth: read a key the watch has not brought", "key_id", id, "error", err.Error())
		}
		return cachedKey{}, false
	}
	d, err := decodeKey(doc)
	if err != nil {
		return cachedKey{}, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.keys[id]; ok && !doc.UpdatedAt.After(old.at) {
		return old, true
	}
	k := cachedKey{d, doc.UpdatedAt}
	v.keys[id] = k
	return k, true
}

// Verify returns the principal of an API key, or an error: ErrInvalid
// (not a key, unknown, wrong secret), ErrExpired or ErrRevoked (only to
// the holder of the right secret).
func (v *Verifier) Verify(ctx context.Context, tok string) (Principal, error) {
	id, secret, ok := ParseToken(tok)
	if !ok {
		return Principal{}, ErrInvalid
	}
	v.mu.RLock()
	d, found := v.keys[id]
	v.mu.RUnlock()
	now := v.now()
	if !found {
		if d, found = v.refresh(ctx, id); !found {
			// Spend the time of a comparison all the same.
			hashMatches(secret, "0000000000000000000000000000000000000000000000000000000000000000")
			return Principal{}, ErrInvalid
		}
	}
	hash := d.matches(secret, now)
	if hash == "" {
		// A rotation the watch has not brought yet.
		if fresh, ok := v.refresh(ctx, id); ok {
			d, hash = fresh, fresh.matches(secret, now)
		}
	}
	switch {
	case hash == "":
		return Principal{}, ErrInvalid
	case d.RevokedAt != nil:
		return Principal{}, ErrRevoked
	case d.ExpiresAt != nil && !now.Before(*d.ExpiresAt):
		return Principal{}, ErrExpired
	}
	return Principal{ID: d.ID, Kind: KindKey, Scopes: slices.Clone(d.Scopes), keyGen: keyGeneration(hash)}, nil
}

// matches returns the stored hash that secret matches at now: the current
// one, or the previous one within the grace of a rotation; "" if none.
func (d keyDoc) matches(secret string, now time.Time) string {
	if hashMatches(secret, d.Hash) {
		return d.Hash
	}
	if d.PreviousUntil != nil && now.Before(*d.PreviousUntil) && hashMatches(secret, d.PreviousHash) {
		return d.PreviousHash
	}
	return ""
}

// acceptsGeneration reports whether a session of generation gen may be
// used at now: gen is the current secret's, or the previous one's within
// the grace of a rotation. A secret that no longer works ends its sessions.
func (d keyDoc) acceptsGeneration(gen string, now time.Time) bool {
	if gen == "" {
		return false
	}
	if gen == keyGeneration(d.Hash) {
		return true
	}
	return d.PreviousUntil != nil && now.Before(*d.PreviousUntil) && gen == keyGeneration(d.PreviousHash)
}

// sessionRecent is how young a session must be for a key it does not
// match to be read from the registry: one made through another process,
// with a key made or rotated a moment ago, before the watch brought it
// here. An older session whose key or generation is unknown is refused
// without a read.
const sessionRecent = 10 * time.Second

// sessionKey returns the key of a session made at created from key id
// with a secret of generation gen, if the session may be used now: the
// key is active (not revoked, not expired) and that secret still works.
func (v *Verifier) sessionKey(ctx context.Context, id, gen string, created time.Time) (Key, bool) {
	v.mu.RLock()
	d, found := v.keys[id]
	v.mu.RUnlock()
	now := v.now()
	if (!found || !d.acceptsGeneration(gen, now)) && now.Sub(created) < sessionRecent {
		if fresh, ok := v.refresh(ctx, id); ok {
			d, found = fresh, true
		}
	}
	if !found || !d.Active(now) || !d.acceptsGeneration(gen, now) {
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
