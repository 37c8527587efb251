package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/registry"
)

// CollKeys is the registry collection of the API keys.
const CollKeys = "keys"

// An API key is sent as "Authorization: Bearer sk_<id>_<secret>". Its id
// ("key_" and 16 base32 letters, 80 random bits) names it in lists and
// logs; its secret (52 base32 letters, 256 random bits) is shown once, when
// the key is created or rotated, and kept only as its SHA-256.
const (
	tokenPrefix  = "sk_"
	idPrefix     = "key_"
	idChars      = 16
	secretChars  = 52
	maxNameBytes = 100
)

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Key is an API key as the API lists it: never its secret or hash.
type Key struct {
	ID        string     `json:"id"`
	Name      string     `json:"name,omitempty"`
	Scopes    []string   `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RotatedAt *time.Time `json:"rotated_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Active reports whether k may be used at t: not revoked, not expired.
func (k Key) Active(t time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || t.Before(*k.ExpiresAt))
}

// keyDoc is a key as the registry keeps it: the SHA-256 of its secret
// (hex), and after a rotation with a grace period the previous one's until
// the grace ends.
type keyDoc struct {
	Key
	Hash          string     `json:"hash"`
	PreviousHash  string     `json:"previous_hash,omitempty"`
	PreviousUntil *time.Time `json:"previous_until,omitempty"`
}

// KeySpec is what a new key is made of.
type KeySpec struct {
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// Errors of the key operations.
var (
	ErrKeyNotFound = errors.New("no such key")
	ErrInvalidSpec = errors.New("invalid key")
)

// Check reports every problem of s at once; now bounds the expiry.
func (s KeySpec) Check(now time.Time) error {
	var errs []string
	if len(s.Name) > maxNameBytes || !utf8.ValidString(s.Name) || strings.ContainsFunc(s.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		errs = append(errs, fmt.Sprintf("name: at most %d bytes of printable UTF-8", maxNameBytes))
	}
	if len(s.Scopes) == 0 {
		errs = append(errs, "scopes: at least one of "+strings.Join(api.Scopes, ", "))
	}
	for i, sc := range s.Scopes {
		if !slices.Contains(api.Scopes, sc) {
			errs = append(errs, fmt.Sprintf("scopes[%d]: %q is not a scope (known: %s)", i, sc, strings.Join(api.Scopes, ", ")))
		} else if slices.Index(s.Scopes, sc) != i {
			errs = append(errs, fmt.Sprintf("scopes[%d]: %q is given twice", i, sc))
		}
	}
	if s.ExpiresAt != nil && !s.ExpiresAt.After(now) {
		errs = append(errs, "expires_at: must be in the future")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, strings.Join(errs, "; "))
	}
	return nil
}

// newSecret returns n base32 letters of randomness.
func newSecret(n int) string {
	b := make([]byte, (n*5+7)/8)
	rand.Read(b) // never fails (crypto/rand)
	return b32.EncodeToString(b)[:n]
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// hashMatches compares in constant time.
func hashMatches(secret, stored string) bool {
	if stored == "" {
		return false
	}
	h := sha256.Sum256([]byte(secret))
	want, err := hex.DecodeString(stored)
	return err == nil && subtle.ConstantTimeCompare(h[:], want) == 1
}

// ParseToken splits an API key into its id and secret; ok is false for
// anything that is not shaped as one.
func ParseToken(tok string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(tok, tokenPrefix)
	if !found || len(rest) != len(idPrefix)+idChars+1+secretChars {
		return "", "", false
	}
	id, secret = rest[:len(idPrefix)+idChars], rest[len(idPrefix)+idChars+1:]
	if !strings.HasPrefix(id, idPrefix) || rest[len(id)] != '_' || !isB32(id[len(idPrefix):]) || !isB32(secret) {
		return "", "", false
	}
	return id, secret, true
}

func isB32(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// IsKeyToken reports whether a bearer credential is shaped as an API key
// (rather than an ID token).
func IsKeyToken(tok string) bool { return strings.HasPrefix(tok, tokenPrefix) }

func token(id, secret string) string { return tokenPrefix + id + "_" + secret }

// Keys keeps the API keys in a registry: create, list, rotate and revoke.
// Every process reads the same collection (see Verifier).
type Keys struct {
	Reg registry.Registry
	Now func() time.Time // nil: time.Now
}

func (ks Keys) now() time.Time {
	if ks.Now != nil {
		return ks.Now().UTC()
	}
	return time.Now().UTC()
}

// Create makes a key and returns it with its token, the only time the
// token is seen.
func (ks Keys) Create(ctx context.Context, s KeySpec) (Key, string, error) {
	now := ks.now()
	if err := s.Check(now); err != nil {
		return Key{}, "", err
	}
	secret := newSecret(secretChars)
	d := keyDoc{Key: Key{ID: idPrefix + newSecret(idChars), Name: s.Name, Scopes: slices.Clone(s.Scopes),
		CreatedAt: now.Truncate(time.Second), ExpiresAt: utcPtr(s.ExpiresAt)}, Hash: hashSecret(secret)}
	b, err := json.Marshal(d)
	if err != nil {
		return Key{}, "", fmt.Errorf("create key: %w", err)
	}
	if err := ks.Reg.Create(ctx, CollKeys, d.ID, b); err != nil {
		return Key{}, "", fmt.Errorf("create key: %w", err)
	}
	return d.Key, token(d.ID, secret), nil
}

// List returns every key, revoked and expired ones included, by id.
func (ks Keys) List(ctx context.Context) ([]Key, error) {
	docs, err := ks.Reg.List(ctx, CollKeys, "")
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := make([]Key, 0, len(docs))
	for _, doc := range docs {
		d, err := decodeKey(doc)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		out = append(out, d.Key)
	}
	return out, nil
}

// Active counts the keys usable now.
func (ks Keys) Active(ctx context.Context) (int, error) {
	keys, err := ks.List(ctx)
	n := 0
	for _, k := range keys {
		if k.Active(ks.now()) {
			n++
		}
	}
	return n, err
}

// Rotate gives a key a new secret and returns its new token. The old
// secret keeps working for grace (0: it stops at once). A revoked key
// cannot be rotated.
func (ks Keys) Rotate(ctx context.Context, id string, grace time.Duration) (Key, string, error) {
	if grace < 0 || grace > 7*24*time.Hour {
		return Key{}, "", fmt.Errorf("%w: grace: between 0 and 168h, got %s", ErrInvalidSpec, grace)
	}
	var tok string
	k, err := ks.update(ctx, "rotate", id, func(d *keyDoc, now time.Time) error {
		if d.RevokedAt != nil {
			return fmt.Errorf("%w: key %s is revoked", ErrInvalidSpec, id)
		}
		d.PreviousHash, d.PreviousUntil = "", nil
		if grace > 0 {
			until := now.Add(grace)
			d.PreviousHash, d.PreviousUntil = d.Hash, &until
		}
		secret := newSecret(secretChars)
		d.Hash = hashSecret(secret)
		t := now.Truncate(time.Second)
		d.RotatedAt = &t
		tok = token(d.ID, secret)
		return nil
	})
	return k, tok, err
}

// Revoke revokes a key: it stops working in every process within seconds
// (each Verifier watches the collection). The key stays listed, with
// revoked_at. Revoking a revoked key changes nothing.
func (ks Keys) Revoke(ctx context.Context, id string) (Key, error) {
	return ks.update(ctx, "revoke", id, func(d *keyDoc, now time.Time) error {
		if d.RevokedAt == nil {
			t := now.Truncate(time.Second)
			d.RevokedAt = &t
		}
		d.PreviousHash, d.PreviousUntil = "", nil
		return nil
	})
}

func (ks Keys) update(ctx context.Context, op, id string, f func(*keyDoc, time.Time) error) (Key, error) {
	if registry.CheckID(id) != nil || !strings.HasPrefix(id, idPrefix) {
		return Key{}, fmt.Errorf("%s key %q: %w", op, id, ErrKeyNotFound)
	}
	doc, err := ks.Reg.Get(ctx, CollKeys, id)
	if errors.Is(err, registry.ErrNotFound) {
		return Key{}, fmt.Errorf("%s key %q: %w", op, id, ErrKeyNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("%s key %s: %w", op, id, err)
	}
	d, err := decodeKey(doc)
	if err != nil {
		return Key{}, fmt.Errorf("%s key %s: %w", op, id, err)
	}
	if err := f(&d, ks.now()); err != nil {
		return Key{}, err
	}
	b, err := json.Marshal(d)
	if err == nil {
		err = ks.Reg.Put(ctx, CollKeys, id, b)
	}
	if err != nil {
		return Key{}, fmt.Errorf("%s key %s: %w", op, id, err)
	}
	return d.Key, nil
}

func decodeKey(doc registry.Doc) (keyDoc, error) {
	var d keyDoc
	if err := json.Unmarshal(doc.Data, &d); err != nil {
		return d, fmt.Errorf("decode key %s: %w", doc.ID, err)
	}
	if d.ID != doc.ID {
		return d, fmt.Errorf("decode key %s: the document says id %q", doc.ID, d.ID)
	}
	return d, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
