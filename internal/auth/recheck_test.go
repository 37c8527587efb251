package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth/authtest"
)

// TestRecheck: a request's Recheck answers as a new request with its
// credential would: nil while it is accepted, and why not once the key is
// revoked, the session has expired or the ID token has expired.
func TestRecheck(t *testing.T) {
	reg, ks, v := keysAndVerifier(t)
	sessions, err := NewSessions(t.Context(), reg, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	iss := authtest.NewIssuer(t)
	clock := time.Now()
	idt := NewIDTokens(IDTokenConfig{Audiences: []string{testAudience}, Issuer: GoogleIssuer, JWKSURL: iss.URL,
		Scopes: []string{api.ScopeStream}}, nil, nil)
	idt.now = func() time.Time { return clock }
	a := &Authenticator{On: true, Keys: v, IDTokens: idt, Sessions: sessions}

	// open authenticates a request to a stream-scope route and returns
	// its context.
	open := func(t *testing.T, h http.Header) context.Context {
		t.Helper()
		var ctx context.Context
		req := httptest.NewRequest(http.MethodGet, "/v1/stream", nil)
		req.Header = h
		rec := httptest.NewRecorder()
		a.Require(api.ScopeStream, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { ctx = r.Context() })).ServeHTTP(rec, req)
		if ctx == nil {
			t.Fatalf("refused: %d %s", rec.Code, rec.Body)
		}
		if err := Recheck(ctx); err != nil {
			t.Fatalf("Recheck right away: %v", err)
		}
		return ctx
	}

	t.Run("key and session", func(t *testing.T) {
		k, tok, err := ks.Create(t.Context(), KeySpec{Name: "s", Scopes: []string{api.ScopeRead, api.ScopeStream}})
		if err != nil {
			t.Fatal(err)
		}
		byKey := open(t, http.Header{"Authorization": {"Bearer " + tok}})
		p, err := v.Verify(t.Context(), tok)
		if err != nil {
			t.Fatal(err)
		}
		cookie, _ := sessions.issue(k.ID, p.keyGen, []string{api.ScopeStream}, time.Now())
		bySession := open(t, http.Header{"Cookie": {SessionCookie + "=" + cookie}})
		if _, err := ks.Revoke(t.Context(), k.ID); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for Recheck(byKey) == nil || Recheck(bySession) == nil {
			if time.Now().After(deadline) {
				t.Fatal("Recheck still accepts the revoked key after 10 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := Recheck(byKey); !errors.Is(err, ErrRevoked) {
			t.Errorf("key: %v, want ErrRevoked", err)
		}
		if err := Recheck(bySession); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("session: %v, want ErrInvalid saying the key was revoked", err)
		}
	})

	t.Run("session expiry", func(t *testing.T) {
		k, tok, err := ks.Create(t.Context(), KeySpec{Name: "s2", Scopes: []string{api.ScopeStream}})
		if err != nil {
			t.Fatal(err)
		}
		// The verifier knows the key once the watch brought it (Verify
		// reads the registry for a key it has not seen).
		var p Principal
		waitKnown := time.Now().Add(10 * time.Second)
		for p, err = v.Verify(t.Context(), tok); err != nil; p, err = v.Verify(t.Context(), tok) {
			if time.Now().After(waitKnown) {
				t.Fatalf("the key is not known: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cookie, exp := sessions.issue(k.ID, p.keyGen, []string{api.ScopeStream}, time.Now())
		ctx := open(t, http.Header{"Cookie": {SessionCookie + "=" + cookie}})
		sessions.now = func() time.Time { return exp.Add(time.Second) }
		defer func() { sessions.now = time.Now }()
		if err := Recheck(ctx); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("expired session: %v", err)
		}
	})

	t.Run("ID token expiry", func(t *testing.T) {
		c := goodClaims(clock)
		exp := clock.Add(10 * time.Minute)
		c["exp"] = exp.Unix()
		ctx := open(t, http.Header{"Authorization": {"Bearer " + iss.Sign(t, c)}})
		clock = exp.Add(idTokenSkew + time.Second)
		if err := Recheck(ctx); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("expired ID token: %v", err)
		}
	})

	t.Run("auth off", func(t *testing.T) {
		var ctx context.Context
		(&Authenticator{}).Require(api.ScopeStream, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { ctx = r.Context() })).
			ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v1/stream", nil))
		if err := Recheck(ctx); err != nil {
			t.Errorf("auth off: %v", err)
		}
	})
}
