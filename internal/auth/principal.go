// Package auth says who is calling and what they may do: API keys kept
// hashed in the shared registry, Google-signed ID tokens, and the middleware
// that holds every route to its scope in the route table (internal/api).
package auth

import (
	"context"
	"slices"

	"github.com/skyjoin/skyjoin/internal/api"
)

// Principal is an authenticated caller.
type Principal struct {
	// ID names the caller in logs and the audit trail: a key id
	// ("key_..."), an ID token's subject or email, or "anonymous" when the
	// process runs without auth (loopback only).
	ID string
	// Kind is how it was authenticated: KindKey, KindIDToken, KindSession
	// or KindNone.
	Kind string
	// Scopes are what it may do; api.ScopeAdmin implies every scope.
	Scopes []string

	// keyGen is, for KindKey, the generation of the key's secret that was
	// shown (keyGeneration): a session made from it records it.
	keyGen string
}

// Has reports whether p may use scope.
func (p Principal) Has(scope string) bool {
	return scope == api.ScopePublic || slices.Contains(p.Scopes, api.ScopeAdmin) || slices.Contains(p.Scopes, scope)
}

// Kinds of principal.
const (
	KindKey     = "key"
	KindIDToken = "idtoken"
	KindSession = "session" // a browser session made with a key (POST /v1/session)
	KindNone    = "none"    // auth is off: loopback only, or --insecure-no-auth
)

// Anonymous is the caller of every request when auth is off.
var Anonymous = Principal{ID: "anonymous", Kind: KindNone, Scopes: []string{api.ScopeAdmin}}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p, and tells a Witness of ctx.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	if w, ok := ctx.Value(witnessKey{}).(*Witness); ok {
		w.p, w.ok = p, true
	}
	return context.WithValue(ctx, ctxKey{}, p)
}

type witnessKey struct{}

// Witness learns the principal that authentication finds for a request
// further in (WithPrincipal on a context derived from the Witness's), for
// a middleware that wraps the handlers that authenticate, such as the
// audit trail around a mux whose routes authenticate each.
type Witness struct {
	p  Principal
	ok bool
}

// WithWitness returns ctx with a new Witness.
func WithWitness(ctx context.Context) (context.Context, *Witness) {
	w := &Witness{}
	return context.WithValue(ctx, witnessKey{}, w), w
}

// Principal returns the principal authentication found, if it ran. Read
// it after the handler returns.
func (w *Witness) Principal() (Principal, bool) { return w.p, w.ok }

// FromContext returns the caller of a request, if the request was
// authenticated (or the process runs without auth).
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}
