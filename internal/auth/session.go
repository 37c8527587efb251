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

// SessionMaxAge is the longest a browser session lives from its making
// (POST /v1/session), however often it is renewed: past it the session is
// refused (401) and the browser must sign in with a key again. A
// --auth-session-ttl above it is cut to it.
const SessionMaxAge = 12 * time.Hour

// Sessions makes and checks browser sessions: a cookie holding the key id,
// the generation of the key's secret that made it, the scopes, the time it
// was made and its expiry, signed with HMAC-SHA256 under a secret that
// every process shares through the registry. The key itself is never in
// the cookie. A session stops, at once, when its key is revoked or
// expires, and when the secret that made it stops working (a rotation,
// after its grace if any); it is renewed while used, up to SessionMaxAge
// from its making.
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
	KeyID string `json:"k"`
	// Gen is the generation of the key's secret that made the session
	// (keyGeneration): the session is refused once that secret is.
	Gen     string   `json:"g"`
	Scopes  []string `json:"s"`
	Created int64    `json:"c"` // when the session was made, Unix seconds; a renewal keeps it
	Expires int64    `json:"e"`
}

// issue returns a cookie value for a session of key made with a secret of
// generation gen at created (a new session: now), and its expiry: a ttl
// from now, but at most SessionMaxAge from created.
func (s *Sessions) issue(key, gen string, scopes []string, created time.Time) (string, time.Time) {
	created = created.Truncate(time.Second)
	exp := s.now().Add(s.ttl).Truncate(time.Second)
	if limit := created.Add(SessionMaxAge); exp.After(limit) {
		exp = limit
	}
	b, _ := json.Marshal(sessionClaims{KeyID: key, Gen: gen, Scopes: scopes, Created: created.Unix(), Expires: exp.Unix()})
	p := base64.RawURLEncoding.EncodeToString(b)
	return p + "." + base64.RawURLEncoding.EncodeToString(s.mac(p)), exp
}

// mac signs a cookie's claims. v2: the claims hold the key's generation
// and the session's making time; a v1 cookie (without them) is refused.
func (s *Sessions) mac(p string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("skyjoin session v2\n" + p))
	return m.Sum(nil)
}

// check returns the claims of a cookie value that is signed, not expired,
// not older than SessionMaxAge and names a key generation.
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
	if err != nil || json.Unmarshal(b, &c) != nil || c.Gen == "" || c.Created <= 0 {
		return c, false
	}
	now := s.now()
	if !now.Before(time.Unix(c.Expires, 0)) || !now.Before(time.Unix(c.Created, 0).Add(SessionMaxAge)) {
		return c, false
	}
	return c, true
}

// keyGeneration names the generation of a key's secret by the SHA-256 that
// the registry keeps of it, as a session records it: a digest of that hash
// (96 bits), so that the cookie shows nothing of the hash itself. "" for
// no hash.
func keyGeneration(hash string) string {
	if hash == "" {
		return ""
	}
	h := sha256.Sum256([]byte("skyjoin session key generation\n" + hash))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

// setCookie sets the session cookie: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page sends it), Secure when the request
// came over TLS (directly, or to the proxy in front: X-Forwarded-Proto).
func (s *Sessions) setCookie(w http.ResponseWriter, r *http.Request, value string, exp time.Time) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: value, Path: "/", Expires: exp, MaxAge: int(exp.Sub(s.now()).Seconds()),
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
