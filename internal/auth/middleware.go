package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-json/jsontext"
	jsonv2 "github.com/goccy/go-json/v2"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// Authenticator says who sent a request: an API key or an ID token in
// "Authorization: Bearer", or, on GET and HEAD, a session cookie. With On
// false (auth off: loopback only, or --insecure-no-auth) every request is
// Anonymous, which may do everything.
type Authenticator struct {
	On       bool
	Keys     *Verifier // nil: API keys are not accepted
	IDTokens *IDTokens // nil: ID tokens are not accepted
	Sessions *Sessions // nil: no browser sessions

	// bodyReads holds a slot for each request whose body is being read, or
	// held, before its sender is known (RequireWriteKey).
	bodyOnce  sync.Once
	bodyReads chan struct{}
}

// Bounds on what a request with its writeKey in the body may cost before
// the key is verified: a client without a key must not make the process
// read and hold ingest-sized bodies.
const (
	// BodyKeyMaxBytes is the largest body, after decompression, read to
	// find a writeKey: 512 KiB, above the 500 KB of Segment's own batch
	// limit, which the browser trackers keep to.
	BodyKeyMaxBytes = 512 << 10
	// BodyKeyReads is how many such bodies are read or held at once;
	// past it a request gets 503 with Retry-After, which trackers retry.
	BodyKeyReads = 32
)

// bodyKeyReadTimeout bounds the read of such a body (408 past it), so that
// a slow sender holds one of the BodyKeyReads slots for seconds, not for
// the whole --http-read-timeout. A variable for the tests.
var bodyKeyReadTimeout = 10 * time.Second

// Require wraps h, a route that needs scope (the route table's): it answers
// 401 to a request without a valid credential (WWW-Authenticate: Bearer),
// 403 to one whose principal lacks the scope (the JSON error names it), and
// otherwise calls h with the Principal in the request's context, where
// Recheck can ask again whether the credential is still accepted.
// ScopePublic routes take no credential.
func (a *Authenticator) Require(scope string, h http.Handler) http.Handler {
	if !a.On || scope == api.ScopePublic {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !a.On {
				r = r.WithContext(WithPrincipal(r.Context(), Anonymous))
			}
			h.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticate(w, r)
		switch {
		case errors.Is(err, ErrNotAllowed):
			forbid(w, scope, p, err.Error())
			return
		case err != nil:
			unauthorized(w, err)
			return
		case !p.Has(scope):
			forbid(w, scope, p, fmt.Sprintf("this route needs the scope %q; %s has %s", scope, p.ID, scopeList(p.Scopes)))
			return
		}
		h.ServeHTTP(w, r.WithContext(a.withRecheck(WithPrincipal(r.Context(), p), r, scope)))
	})
}

// RequireWriteKey is Require for the routes that Segment's trackers call
// (api.WriteKeyRoutes): besides a Bearer credential they take HTTP Basic
// auth whose username is the API key (the tracker's writeKey) and whose
// password is empty, as the trackers send it. The key is verified as any
// other; a Basic credential that is not one is refused (401).
//
// Browser trackers (analytics.js) send the writeKey in the JSON body
// instead: a request with no Authorization header has its body read (at
// most maxBody bytes, gzip decompressed, as the route reads it), and the
// body's writeKey, the batch's or else its messages' (which must then
// agree), is taken as the Basic username is. The route then reads the
// body as read here. The key is never logged, nor put in an answer. As
// the sender is not known yet, such a body may be at most BodyKeyMaxBytes
// (413 past it: the writeKey as Basic auth takes up to maxBody), and at
// most BodyKeyReads are read or held at once (503 with Retry-After past it),
// each within bodyKeyReadTimeout (408 past it).
func (a *Authenticator) RequireWriteKey(scope string, maxBody int64, h http.Handler) http.Handler {
	next := a.Require(scope, h)
	a.bodyOnce.Do(func() { a.bodyReads = make(chan struct{}, BodyKeyReads) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs := r.Header.Values("Authorization")
		if a.On && len(hs) == 1 {
			if scheme, _, _ := strings.Cut(hs[0], " "); strings.EqualFold(scheme, "Basic") {
				user, pass, ok := r.BasicAuth()
				if !ok || pass != "" || user == "" {
					w.Header().Set("WWW-Authenticate", `Basic realm="skyjoin"`)
					platform.WriteError(w, http.StatusUnauthorized,
						"Basic auth on this route is the writeKey: an API key of scope ingest as the username, an empty password", nil)
					return
				}
				r = r.Clone(r.Context())
				r.Header.Set("Authorization", "Bearer "+user)
			}
		}
		if a.On && len(hs) == 0 {
			if r.Body == nil || r.Body == http.NoBody {
				noWriteKey(w)
				return
			}
			select {
			case a.bodyReads <- struct{}{}:
				defer func() { <-a.bodyReads }()
			default:
				w.Header().Set("Retry-After", "1")
				platform.WriteError(w, http.StatusServiceUnavailable,
					"too many requests with the writeKey in the body are being read at once: retry, or send the writeKey as Basic auth", nil)
				return
			}
			// Best effort: a writer without deadlines (a test's recorder)
			// keeps the server's read timeout.
			rc := http.NewResponseController(w)
			rc.SetReadDeadline(time.Now().Add(bodyKeyReadTimeout))
			body, berr := platform.ReadBody(w, r, min(maxBody, BodyKeyMaxBytes), true)
			if berr != nil {
				// The body may be left part-read: the connection closes
				// rather than drain it (the deadline stays).
				w.Header().Set("Connection", "close")
				berr.Write(w)
				return
			}
			rc.SetReadDeadline(time.Time{}) // read to its end: the route's own reads are in memory
			key, err := bodyWriteKey(body)
			switch {
			case err != nil:
				w.Header().Set("WWW-Authenticate", `Bearer realm="skyjoin", error="invalid_token"`)
				platform.WriteError(w, http.StatusUnauthorized, err.Error(), nil)
				return
			case key == "":
				noWriteKey(w)
				return
			}
			r = r.Clone(r.Context())
			// The body as read: decompressed already.
			r.Header.Del("Content-Encoding")
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			r.Header.Set("Authorization", "Bearer "+key)
		}
		next.ServeHTTP(w, r)
	})
}

// noWriteKey answers 401 to a request of a writeKey route that carries no
// credential, saying where the trackers put one.
func noWriteKey(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="skyjoin"`)
	w.Header().Add("WWW-Authenticate", `Basic realm="skyjoin"`)
	platform.WriteError(w, http.StatusUnauthorized,
		"this route needs a writeKey (an API key of scope ingest): as the Basic auth username with an empty password, as the body's writeKey, or as Authorization: Bearer", nil)
}

// bodyWriteKey returns the writeKey of a Segment body: the member writeKey
// of the body (a batch, or one message), or else the one its batch's
// messages carry; "" if there is none, or the body is not a JSON object
// (the request then has no credential: 401). Messages that carry
// different writeKeys are an error.
func bodyWriteKey(body []byte) (string, error) {
	var v struct {
		WriteKey string           `json:"writeKey"`
		Batch    []jsontext.Value `json:"batch"`
	}
	if jsonv2.Unmarshal(body, &v) != nil || v.WriteKey != "" {
		return v.WriteKey, nil
	}
	key := ""
	for _, raw := range v.Batch {
		// A message that is not an object, or whose writeKey is not a
		// string, carries none (the route makes it a dead letter).
		var m struct {
			WriteKey string `json:"writeKey"`
		}
		jsonv2.Unmarshal(raw, &m)
		switch {
		case m.WriteKey == "" || m.WriteKey == key:
		case key == "":
			key = m.WriteKey
		default:
			return "", errors.New("the batch's messages carry different writeKeys: send one batch per writeKey, or the writeKey as Basic auth")
		}
	}
	return key, nil
}

// Authenticate returns the principal of r (Anonymous when auth is off).
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	if !a.On {
		return Anonymous, nil
	}
	return a.authenticate(nil, r)
}

// authenticate reads the credential of r; a session about to expire is
// renewed on w (if not nil).
func (a *Authenticator) authenticate(w http.ResponseWriter, r *http.Request) (Principal, error) {
	if hs := r.Header.Values("Authorization"); len(hs) > 0 {
		scheme, tok, ok := strings.Cut(hs[0], " ")
		if len(hs) > 1 || !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t") {
			return Principal{}, fmt.Errorf("%w: want one header Authorization: Bearer <API key or ID token>", ErrInvalid)
		}
		switch {
		case IsKeyToken(tok) && a.Keys != nil:
			return a.Keys.Verify(r.Context(), tok)
		case LooksLikeJWT(tok) && a.IDTokens != nil:
			return a.IDTokens.Verify(r.Context(), tok)
		}
		return Principal{}, ErrInvalid
	}
	if c, err := r.Cookie(SessionCookie); err == nil && a.Sessions != nil && a.Keys != nil {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return Principal{}, fmt.Errorf("%w: a session cookie is honoured on GET and HEAD only; send Authorization: Bearer", ErrNoCredential)
		}
		sc, ok := a.Sessions.check(c.Value)
		if !ok {
			return Principal{}, fmt.Errorf("%w: the session is invalid or has expired: sign in again (POST /v1/session)", ErrInvalid)
		}
		created := time.Unix(sc.Created, 0)
		k, ok := a.Keys.sessionKey(r.Context(), sc.KeyID, sc.Gen, created)
		if !ok {
			return Principal{}, fmt.Errorf("%w: the session's key was revoked, rotated or has expired: sign in again (POST /v1/session)", ErrInvalid)
		}
		p := Principal{ID: k.ID, Kind: KindSession, Scopes: k.Scopes}
		p.Scopes = intersect(sc.Scopes, p)
		// Renewed past half its life, never past SessionMaxAge from its
		// making (issue caps the expiry; a cookie as long as the last one
		// is not sent again).
		if w != nil && a.Sessions.now().Add(a.Sessions.ttl/2).Unix() > sc.Expires {
			if v, exp := a.Sessions.issue(k.ID, sc.Gen, p.Scopes, created); exp.Unix() > sc.Expires {
				a.Sessions.setCookie(w, r, v, exp)
			}
		}
		return p, nil
	}
	return Principal{}, ErrNoCredential
}

func unauthorized(w http.ResponseWriter, err error) {
	msg := "this route needs a credential: send Authorization: Bearer <API key or ID token> (a browser: a session from POST /v1/session)"
	www := `Bearer realm="skyjoin"`
	if !errors.Is(err, ErrNoCredential) {
		msg = err.Error()
		www += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", www)
	platform.WriteError(w, http.StatusUnauthorized, msg, nil)
}

func forbid(w http.ResponseWriter, scope string, p Principal, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="skyjoin", error="insufficient_scope", scope=%q`, scope))
	platform.WriteError(w, http.StatusForbidden, msg, map[string]any{"required_scope": scope, "principal": p.ID, "scopes": nonNil(p.Scopes)})
}

func scopeList(s []string) string {
	if len(s) == 0 {
		return "no scope"
	}
	return strings.Join(s, ", ")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
