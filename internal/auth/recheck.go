package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

type recheckKey struct{}

// Recheck asks again whether the credential of the request that ctx
// belongs to is accepted now, as a new request with it would be: nil while
// it is; else why not (the key was revoked or has expired, the session is
// no longer valid, the ID token has expired, the scope is gone). A
// long-lived answer (the live stream) calls it periodically and ends when
// it fails. A request that Require did not authenticate (auth off, a
// public route) has nothing to recheck: nil.
//
// Call it from the request's handler goroutine: it reads the request's
// headers. It costs what authenticating the request did (for a key a map
// lookup and a hash; for an ID token a signature check), with no session
// renewal.
func Recheck(ctx context.Context) error {
	if f, ok := ctx.Value(recheckKey{}).(func() error); ok {
		return f()
	}
	return nil
}

// withRecheck returns ctx with the Recheck of r's credential for scope.
func (a *Authenticator) withRecheck(ctx context.Context, r *http.Request, scope string) context.Context {
	return context.WithValue(ctx, recheckKey{}, func() error {
		p, err := a.authenticate(nil, r)
		switch {
		case err != nil && !refusal(err):
			// Not a verdict on the credential (the issuer's keys could
			// not be fetched, say): the stream goes on, and asks again.
			return nil
		case err != nil:
			return err
		case !p.Has(scope):
			return fmt.Errorf("%w: %s no longer has the scope %q", ErrInvalid, p.ID, scope)
		}
		return nil
	})
}

// refusal reports whether err says the credential is not accepted, rather
// than that it could not be checked.
func refusal(err error) bool {
	for _, e := range []error{ErrInvalid, ErrRevoked, ErrExpired, ErrNoCredential, ErrNotAllowed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
