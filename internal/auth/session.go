package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/registry"
)

// SessionCookie is the cookie of a browser session.
const SessionCookie = "skyjoin_session"

// sessionScopes are the most a session may do: read and stream, which is
// what the dashboard needs. A session never carries webhooks or admin, and
// is honoured on GET and HEAD only, so that a cookie (sent by the browser
// on its own) can change nothing.
var sessionScopes = []string{api.ScopeRead, api.ScopeStream}

// Sessions makes and checks browser sessions: a cookie holding the key id,
// the scopes and the expiry, signed with HMAC-SHA256 under a secret that
// every process shares through the registry. The key itself is never in
// the cookie; a session of a key that is revoked or expired stops at once.
type Sessions struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// collAuth holds the session secret (document "session").
const collAuth = "auth_secrets"

// NewSessions loads the session secret from reg, creating it on first use.
// With no registry the secret is this process's own (sessions then work
// against this process only).
func NewSessions(ctx context.Context, reg registry.Registry, ttl time.Duration) (*Sessions, error) {
	s := &Sessions{ttl: ttl, now: time.Now}
	fresh := make([]byte, 32)
	rand.Read(fresh)
	if reg == nil {
		s.secret = fresh
		return s, nil
	}
	type doc struct {
		Secret []byte `json:"secret"`
	}
	b, _ := json.Marshal(doc{fresh})
	err := reg.Create(ctx, collAuth, "session", b)
	if err != nil && !errors.Is(err, registry.ErrExists) {
		return nil, fmt.Errorf("session secret: %w", err)
	}
	d, err := reg.Get(ctx, collAuth, "session")
	if err != nil {
		return nil, fmt.Errorf("session secret: %w", err)
	}
	var got doc
	if err := json.Unmarshal(d.Data, &got); err != nil || len(got.Secret) < 32 {
		return nil, fmt.Errorf("session secret: unreadable document %s/session", collAuth)
	}
	s.secret = got.Secret
	return s, nil
}

type sessionClaims struct {
	KeyID   string   `json:"k"`
	Scopes  []string `json:"s"`
	Expires int64    `json:"e"`
}

// issue returns a cookie value for key, and its expiry.
func (s *Sessions) issue(key string, scopes []string) (string, time.Time) {
	exp := s.now().Add(s.ttl).Truncate(time.Second)
	b, _ := json.Marshal(sessionClaims{KeyID: key, Scopes: scopes, Expires: exp.Unix()})
	p := base64.RawURLEncoding.EncodeToString(b)
	return p + "." + base64.RawURLEncoding.EncodeToString(s.mac(p)), exp
}

func (s *Sessions) mac(p string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("skyjoin session v1\n" + p))
	return m.Sum(nil)
}

// check returns the claims of a cookie value that is signed and not
// expired.
func (s *Sessions) check(v string) (sessionClaims, bool) {
	var c sessionClaims
	p, sig, ok := strings.Cut(v, ".")
	if !ok {
		return c, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(p)) {
		return c, false
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil || json.Unmarshal(b, &c) != nil || !s.now().Before(time.Unix(c.Expires, 0)) {
		return c, false
	}
	return c, true
}

// setCookie sets the session cookie: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page sends it), Secure when the request
// came over TLS (directly, or to the proxy in front: X-Forwarded-Proto).
func (s *Sessions) setCookie(w http.ResponseWriter, r *http.Request, value string, exp time.Time) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: value, Path: "/", Expires: exp, MaxAge: int(time.Until(exp).Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"),
	})
}

// sessionScopesOf is what a session of a key with scopes may do.
func sessionScopesOf(p Principal) []string {
	var out []string
	for _, sc := range sessionScopes {
		if p.Has(sc) {
			out = append(out, sc)
		}
	}
	return out
}

// intersect keeps the scopes of a that b allows.
func intersect(a []string, b Principal) []string {
	return slices.DeleteFunc(slices.Clone(a), func(sc string) bool { return !b.Has(sc) })
}
