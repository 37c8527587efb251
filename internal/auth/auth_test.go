package auth

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth/authtest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/registry/natskv/natskvtest"
)

func TestParseToken(t *testing.T) {
	id, secret := idPrefix+newSecret(idChars), newSecret(secretChars)
	tok := token(id, secret)
	gotID, gotSecret, ok := ParseToken(tok)
	if !ok || gotID != id || gotSecret != secret {
		t.Fatalf("ParseToken(%s) = %s %s %v", tok, gotID, gotSecret, ok)
	}
	for _, bad := range []string{"", "sk_", tok + "a", tok[:len(tok)-1], strings.Replace(tok, "sk_", "sx_", 1),
		strings.ToUpper(tok), tok[:len(tok)-1] + "1", strings.Replace(tok, "_"+secret, "-"+secret, 1)} {
		if _, _, ok := ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

// keysAndVerifier is a registry on an embedded NATS server, its Keys and a
// Verifier watching them (closed at the end of the test).
func keysAndVerifier(t *testing.T) (registry.Registry, Keys, *Verifier) {
	t.Helper()
	reg := natskvtest.Start(t, t.TempDir()).Registry(t)
	v, err := NewVerifier(t.Context(), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return reg, Keys{Reg: reg}, v
}

// TestKeysLifecycle: create, verify, list (no secret), rotate with and
// without grace, revoke, expiry; the registry holds only a hash. A new or
// rotated token works on its first use, before the watch brings it.
func TestKeysLifecycle(t *testing.T) {
	ctx := t.Context()
	reg, ks, v := keysAndVerifier(t)

	if _, _, err := ks.Create(ctx, KeySpec{Scopes: []string{"read", "bogus", "read"}}); !errors.Is(err, ErrInvalidSpec) ||
		!strings.Contains(err.Error(), `"bogus" is not a scope`) || !strings.Contains(err.Error(), `"read" is given twice`) {
		t.Fatalf("bad spec: %v", err)
	}
	k, tok, err := ks.Create(ctx, KeySpec{Name: "ci", Scopes: []string{api.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := ParseToken(tok)
	doc, err := reg.Get(ctx, CollKeys, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(doc.Data), secret) || !strings.Contains(string(doc.Data), hashSecret(secret)) {
		t.Fatalf("the registry document holds the secret, or not its hash: %s", doc.Data)
	}
	// The first call, with no wait: a key the watch has not brought yet is
	// read from the registry.
	verified := func(tok string) (Principal, error) { return v.Verify(ctx, tok) }
	p, err := verified(tok)
	if err != nil || p.ID != k.ID || p.Kind != KindKey || !p.Has(api.ScopeRead) || p.Has(api.ScopeIngest) {
		t.Fatalf("verify: %+v %v", p, err)
	}
	// A wrong secret for a known id, and an unknown id.
	if _, err := v.Verify(ctx, token(k.ID, newSecret(secretChars))); !errors.Is(err, ErrInvalid) {
		t.Errorf("wrong secret: %v", err)
	}
	if _, err := v.Verify(ctx, token(idPrefix+newSecret(idChars), secret)); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown id: %v", err)
	}

	keys, err := ks.List(ctx)
	if err != nil || len(keys) != 1 || keys[0].ID != k.ID {
		t.Fatalf("list: %+v %v", keys, err)
	}
	b, _ := json.Marshal(keys)
	if strings.Contains(string(b), secret) || strings.Contains(string(b), hashSecret(secret)) || strings.Contains(string(b), "hash") {
		t.Fatalf("list shows a secret or hash: %s", b)
	}

	// Rotation with grace: both work; without: only the new one.
	_, tok2, err := ks.Rotate(ctx, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verified(tok2); err != nil {
		t.Fatalf("new token after rotation: %v", err)
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("old token within the grace: %v", err)
	}
	_, tok3, err := ks.Rotate(ctx, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verified(tok3); err != nil {
		t.Fatal(err)
	}
	for _, old := range []string{tok, tok2} {
		if _, err := v.Verify(ctx, old); !errors.Is(err, ErrInvalid) {
			t.Errorf("an old token after a rotation without grace: %v", err)
		}
	}

	// Revocation.
	if _, err := ks.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err = v.Verify(ctx, tok3); errors.Is(err, ErrRevoked) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key: %v", err)
		}
	}
	if _, _, err := ks.Rotate(ctx, k.ID, 0); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("rotate a revoked key: %v", err)
	}
	if _, err := ks.Revoke(ctx, "key_nosuchkeyatall22"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("revoke an unknown key: %v", err)
	}

	// Expiry, by the verifier's clock.
	exp := time.Now().Add(time.Hour)
	_, etok, err := ks.Create(ctx, KeySpec{Scopes: []string{api.ScopeIngest}, ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verified(etok); err != nil {
		t.Fatal(err)
	}
	v.now = func() time.Time { return exp.Add(time.Second) }
	if _, err := v.Verify(ctx, etok); !errors.Is(err, ErrExpired) {
		t.Errorf("expired key: %v", err)
	}
	if n := v.Active(); n != 0 {
		t.Errorf("active keys: %d, want 0", n)
	}
}

// countGets counts the registry's Get calls.
type countGets struct {
	registry.Registry
	gets atomic.Int64
}

func (c *countGets) Get(ctx context.Context, coll, id string) (registry.Doc, error) {
	c.gets.Add(1)
	return c.Registry.Get(ctx, coll, id)
}

// TestUnknownKeysBoundRegistryReads: tokens of unknown ids are refused,
// and the registry reads they cause are bounded by the miss limit, not one
// per request.
func TestUnknownKeysBoundRegistryReads(t *testing.T) {
	ctx := t.Context()
	reg := &countGets{Registry: natskvtest.Start(t, t.TempDir()).Registry(t)}
	v, err := NewVerifier(ctx, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	const n = 500
	start := time.Now()
	for range n {
		if _, err := v.Verify(ctx, token(idPrefix+newSecret(idChars), newSecret(secretChars))); !errors.Is(err, ErrInvalid) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	bound := missReads + int64(time.Since(start).Seconds()*missReads) + 1
	if got := reg.gets.Load(); got > bound || got == 0 {
		t.Errorf("%d unknown tokens read the registry %d times, want 1..%d", n, got, bound)
	}
}

// TestRevocationReachesAnotherProcess: two Verifiers, each on its own
// connection to the broker as two processes are; a key revoked through a
// third connection is refused by both within 5 s (real clock).
func TestRevocationReachesAnotherProcess(t *testing.T) {
	srv := natskvtest.Start(t, t.TempDir())
	ctx := t.Context()
	a, err := NewVerifier(ctx, srv.Dial(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewVerifier(ctx, srv.Dial(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	admin := Keys{Reg: srv.Dial(t)}
	k, tok, err := admin.Create(ctx, KeySpec{Scopes: []string{api.ScopeIngest}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*Verifier{a, b} {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := v.Verify(ctx, tok); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a new key is not verified within 5 s")
			}
		}
	}
	revoked := time.Now()
	if _, err := admin.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	for i, v := range []*Verifier{a, b} {
		for {
			if _, err := v.Verify(ctx, tok); errors.Is(err, ErrRevoked) {
				t.Logf("verifier %d refuses the key %s after the revocation", i, time.Since(revoked).Round(time.Millisecond))
				break
			}
			if time.Since(revoked) > 5*time.Second {
				t.Fatalf("verifier %d still accepts the key 5 s after its revocation", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

const testAudience = "https://skyjoin.example.test"

func goodClaims(now time.Time) map[string]any {
	return authtest.Claims(testAudience, "pusher@p.iam.gserviceaccount.com", now)
}

func with(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for a, b := range m {
		out[a] = b
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// TestIDTokens: signature, issuer (both Google forms), audience, times,
// the allow list, against a local JWKS server and a test RSA key.
func TestIDTokens(t *testing.T) {
	p := authtest.NewIssuer(t)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	cfg := IDTokenConfig{Audiences: []string{"other", testAudience}, Issuer: GoogleIssuer, JWKSURL: p.URL,
		Scopes: []string{api.ScopeIngest}, Emails: []string{"pusher@p.iam.gserviceaccount.com"}}
	v := NewIDTokens(cfg, nil, nil)
	kid := p.KID()
	sign := func(key *rsa.PrivateKey, kid string, c map[string]any) string {
		return authtest.SignWith(t, key, kid, c)
	}
	now := time.Now()
	c := goodClaims(now)
	cases := []struct {
		name string
		tok  string
		want string // "" ok; else a part of the error
	}{
		{"valid", p.Sign(t, c), ""},
		{"issuer without scheme", p.Sign(t, with(c, "iss", "accounts.google.com")), ""},
		{"audience in a list", p.Sign(t, with(c, "aud", []string{"x", testAudience})), ""},
		{"expired within the skew", p.Sign(t, with(c, "exp", now.Add(-30*time.Second).Unix())), ""},
		{"wrong audience", p.Sign(t, with(c, "aud", "https://evil.example.test")), "audience"},
		{"wrong issuer", p.Sign(t, with(c, "iss", "https://evil.example.test")), "wrong issuer"},
		{"expired", p.Sign(t, with(c, "exp", now.Add(-5*time.Minute).Unix())), "expired"},
		{"no exp", p.Sign(t, with(c, "exp", nil)), "expired"},
		{"issued in the future", p.Sign(t, with(c, "iat", now.Add(10*time.Minute).Unix())), "iat"},
		{"no iat", p.Sign(t, with(c, "iat", nil)), "iat"},
		{"not valid yet", p.Sign(t, with(c, "nbf", now.Add(10*time.Minute).Unix())), "nbf"},
		{"unknown kid", sign(other, "k-unknown", c), "signature"},
		{"bad signature", sign(other, kid, c), "signature"},
		{"tampered", strings.Replace(p.Sign(t, c), ".", ".x", 1), "malformed"},
		{"email not allowed", p.Sign(t, with(c, "email", "someone@gmail.com")), "not allowed"},
		{"email not verified", p.Sign(t, with(c, "email_verified", false)), "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pr, err := v.Verify(context.Background(), tc.tok)
			if tc.want == "" {
				if err != nil || pr.ID != "pusher@p.iam.gserviceaccount.com" || pr.Kind != KindIDToken || !pr.Has(api.ScopeIngest) || pr.Has(api.ScopeRead) {
					t.Fatalf("got %+v, %v", pr, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %+v, %v; want an error with %q", pr, err, tc.want)
			}
		})
	}
	// The keys were cached: one fetch for the valid tokens, and unknown
	// kids fetch again at most once per 30 s.
	if n := p.Fetches.Load(); n > 2 {
		t.Errorf("%d fetches of the key set, want at most 2 (cache, rate-limited refetch)", n)
	}
}

// TestJWKSCache: the keys are kept for the answer's max-age; a new kid is
// fetched (once per refetch interval); a failed fetch keeps the old keys.
func TestJWKSCache(t *testing.T) {
	p := authtest.NewIssuer(t)
	p.SetMaxAge("120")
	clock := time.Now()
	v := NewIDTokens(IDTokenConfig{Audiences: []string{testAudience}, Issuer: GoogleIssuer, JWKSURL: p.URL,
		Scopes: []string{api.ScopeRead}}, nil, nil)
	v.now = func() time.Time { return clock }
	verify := func() error {
		_, err := v.Verify(context.Background(), p.Sign(t, goodClaims(clock)))
		return err
	}
	for range 5 {
		if err := verify(); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.Fetches.Load(); n != 1 {
		t.Fatalf("fetches: %d, want 1", n)
	}
	clock = clock.Add(121 * time.Second) // past max-age
	if err := verify(); err != nil || p.Fetches.Load() != 2 {
		t.Fatalf("after max-age: %v, %d fetches", err, p.Fetches.Load())
	}
	// The issuer rotates its key: the new kid is fetched at once, since
	// the last fetch is over 30 s old... but not within 30 s of a fetch.
	p.Rotate(t, "k2")
	if err := verify(); err == nil {
		t.Fatal("a new kid right after a fetch was accepted: no rate limit")
	}
	clock = clock.Add(31 * time.Second)
	if err := verify(); err != nil {
		t.Fatalf("a new kid after the refetch interval: %v", err)
	}
	if n := p.Fetches.Load(); n != 3 {
		t.Fatalf("fetches: %d, want 3", n)
	}
	if maxAge("no-cache") != jwksDefaultMaxAge || maxAge("max-age=5") != jwksMinMaxAge || maxAge("public, max-age=19516") != 19516*time.Second {
		t.Error("maxAge")
	}
}

func TestDecide(t *testing.T) {
	t.Setenv("K_SERVICE", "")
	cases := []struct {
		cfg   Config
		addrs []string
		on    bool
		err   string
	}{
		{Config{Mode: ModeAuto}, []string{"127.0.0.1:8080", "127.0.0.1:0"}, false, ""},
		{Config{Mode: ModeAuto}, []string{"localhost:8080", "[::1]:0"}, false, ""},
		{Config{Mode: ModeAuto}, []string{"0.0.0.0:8080", "127.0.0.1:0"}, true, ""},
		{Config{Mode: ModeAuto}, []string{":8080"}, true, ""},
		{Config{Mode: ModeAuto}, []string{"127.0.0.1:8080", "10.0.0.5:9090"}, true, ""},
		{Config{Mode: ModeOn}, []string{"127.0.0.1:8080"}, true, ""},
		{Config{Mode: ModeOff}, []string{"127.0.0.1:8080"}, false, ""},
		{Config{Mode: ModeOff}, []string{"0.0.0.0:8080"}, false, "--insecure-no-auth"},
		{Config{Mode: ModeOff, InsecureNoAuth: true}, []string{"0.0.0.0:8080"}, false, ""},
		{Config{Mode: ModeAuto, InsecureNoAuth: true}, []string{"0.0.0.0:8080"}, false, ""},
	}
	for _, tc := range cases {
		on, err := tc.cfg.Decide(tc.addrs...)
		if on != tc.on || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v %v: %v %v", tc.cfg, tc.addrs, on, err)
		}
	}
	t.Setenv("K_SERVICE", "ingest")
	if on, _ := (Config{Mode: ModeAuto}).Decide("127.0.0.1:8080"); !on {
		t.Error("on Cloud Run auth is on")
	}
}

// TestCloudRunAudience: on Cloud Run the audience is the service's URL,
// from K_SERVICE and the metadata server (here a local one).
func TestCloudRunAudience(t *testing.T) {
	authtest.Metadata(t, "123456789", "europe-west1")
	t.Setenv("K_SERVICE", "skyjoin-ingest")
	aud, err := CloudRunAudience(t.Context())
	if err != nil || aud != "https://skyjoin-ingest-123456789.europe-west1.run.app" {
		t.Fatalf("%q %v", aud, err)
	}
	// On Cloud Run the allow list is optional (its IAM checks the invoker).
	c := Config{Mode: ModeAuto, SessionTTL: time.Hour, IDToken: IDTokenConfig{Audiences: []string{aud},
		Issuer: GoogleIssuer, JWKSURL: GoogleJWKSURL, Scopes: []string{api.ScopeIngest}}}
	if err := c.Validate(); err != nil {
		t.Errorf("on Cloud Run: %v", err)
	}
	t.Setenv("K_SERVICE", "")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "auth-idtoken-emails") {
		t.Errorf("off Cloud Run without an allow list: %v", err)
	}
}

// TestWriteKey: the Segment-compatible routes take the key as HTTP Basic
// auth (username the key, password empty), as trackers send their
// writeKey, or, without an Authorization header, as the body's writeKey
// (browser trackers); Bearer still works; anything else is refused.
func TestWriteKey(t *testing.T) {
	ctx := t.Context()
	_, ks, v := keysAndVerifier(t)
	_, ingestKey, err := ks.Create(ctx, KeySpec{Scopes: []string{api.ScopeIngest}})
	if err != nil {
		t.Fatal(err)
	}
	_, readKey, err := ks.Create(ctx, KeySpec{Scopes: []string{api.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); v.Active() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	a := &Authenticator{On: true, Keys: v}
	var who, got string
	h := a.RequireWriteKey(api.ScopeIngest, 1<<20, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := FromContext(r.Context())
		who = p.ID
		b, err := platform.ReadBody(w, r, 1<<20, true)
		if err != nil {
			t.Errorf("the route cannot read the body: %v", err)
		}
		got = string(b)
	}))
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	batch := func(top string, msgKeys ...string) string {
		var msgs []string
		for _, k := range msgKeys {
			m := `{"type":"track","event":"E","userId":"u"`
			if k != "" {
				m += `,"writeKey":"` + k + `"`
			}
			msgs = append(msgs, m+"}")
		}
		b := `{"batch":[` + strings.Join(msgs, ",") + `]`
		if top != "" {
			b += `,"writeKey":"` + top + `"`
		}
		return b + "}"
	}
	for _, c := range []struct {
		name, header, body string
		gzip               bool
		want               int
	}{
		{"writeKey as Basic username", basic(ingestKey, ""), "", false, 200},
		{"Bearer", "Bearer " + ingestKey, "", false, 200},
		{"Basic with a password", basic(ingestKey, "x"), "", false, 401},
		{"Basic, not a key", basic("wk_not_a_key", ""), "", false, 401},
		{"Basic, no username", basic("", ""), "", false, 401},
		{"Basic, a key without the scope", basic(readKey, ""), "", false, 403},
		{"none", "", "", false, 401},
		// Browser trackers: the writeKey in the body, no Authorization.
		{"the body's writeKey, a single call", "", `{"type":"track","event":"E","userId":"u","writeKey":"` + ingestKey + `"}`, false, 200},
		{"the body's writeKey, a batch", "", batch(ingestKey, "", ""), false, 200},
		{"the body's writeKey, gzip", "", batch(ingestKey, ""), true, 200},
		{"the messages' writeKey", "", batch("", ingestKey, "", ingestKey), false, 200},
		{"messages with different writeKeys", "", batch("", ingestKey, readKey), false, 401},
		{"the body's writeKey, wrong", "", batch("wk_not_a_key", ""), false, 401},
		{"the body's writeKey, a key of another's", "", batch(ingestKey[:len(ingestKey)-1]+"x", ""), false, 401},
		{"the body's writeKey, without the scope", "", batch(readKey, ""), false, 403},
		{"a body without a writeKey", "", batch("", ""), false, 401},
		{"a body that is not JSON", "", `not json ` + ingestKey, false, 401},
		// An Authorization header is the credential: the body's is not read.
		{"a wrong Bearer beside the body's writeKey", "Bearer wk_not_a_key", batch(ingestKey), false, 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			who, got = "", ""
			var body io.Reader = strings.NewReader(c.body)
			if c.gzip {
				var zb bytes.Buffer
				zw := gzip.NewWriter(&zb)
				zw.Write([]byte(c.body))
				zw.Close()
				body = &zb
			}
			r := httptest.NewRequest("POST", "/v1/batch", body)
			if c.header != "" {
				r.Header.Set("Authorization", c.header)
			}
			if c.gzip {
				r.Header.Set("Content-Encoding", "gzip")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, c.want)
			}
			if c.want == 200 && !strings.HasPrefix(who, "key_") {
				t.Errorf("principal %q", who)
			}
			if c.want == 200 && got != c.body {
				t.Errorf("the route reads %q, sent %q", got, c.body)
			}
			if strings.Contains(w.Body.String(), ingestKey) || strings.Contains(w.Body.String(), readKey) {
				t.Errorf("the answer holds the key: %s", w.Body)
			}
			noKey := c.header == "" && !strings.Contains(c.body, "writeKey")
			if noKey && !strings.Contains(w.Body.String(), "writeKey") {
				t.Errorf("a 401 of a writeKey route that does not say where the writeKey goes: %s", w.Body)
			}
		})
	}

	// Before the key is verified, a body is read only within bounds: at
	// most BodyKeyMaxBytes (the route itself takes 1 MiB here)...
	post := func(body, header string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/v1/batch", strings.NewReader(body))
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	big := `{"writeKey":"` + ingestKey + `","batch":[{"type":"track","event":"E","userId":"u","properties":{"pad":"` +
		strings.Repeat("x", BodyKeyMaxBytes) + `"}}]}`
	if w := post(big, ""); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a body of %d bytes with the writeKey in it: %d %s, want 413", len(big), w.Code, w.Body)
	}
	if w := post(big, basic(ingestKey, "")); w.Code != http.StatusOK {
		t.Errorf("the same body with the writeKey as Basic auth: %d %s, want 200", w.Code, w.Body)
	}
	// ... and at most BodyKeyReads at once: past it, 503 with Retry-After.
	for range BodyKeyReads {
		a.bodyReads <- struct{}{}
	}
	w := post(batch(ingestKey), "")
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("with %d bodies being read: %d %q %s, want 503 with Retry-After", BodyKeyReads, w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := post(batch(""), basic(ingestKey, "")); w.Code != http.StatusOK {
		t.Errorf("Basic auth while the slots are taken: %d %s, want 200", w.Code, w.Body)
	}
	<-a.bodyReads
	if w := post(batch(ingestKey), ""); w.Code != http.StatusOK {
		t.Errorf("with a slot free again: %d %s, want 200", w.Code, w.Body)
	}
}

// TestBodyKeyReadDeadline: a body read to find its writeKey that stalls is
// answered 408 once bodyKeyReadTimeout passes, not held for the server's
// whole read timeout, and its slot is free again.
func TestBodyKeyReadDeadline(t *testing.T) {
	defer func(d time.Duration) { bodyKeyReadTimeout = d }(bodyKeyReadTimeout)
	bodyKeyReadTimeout = 200 * time.Millisecond
	a := &Authenticator{On: true}
	srv := httptest.NewServer(a.RequireWriteKey(api.ScopeIngest, 1<<20, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("the route was reached")
	})))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Half a body, then nothing: the test's own read waits at most a minute.
	io.WriteString(conn, "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n{\"writeKey\":")
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("a stalled body: %d, want 408", resp.StatusCode)
	}
	// The slot is given back once the handler returns, just after the answer.
	for deadline := time.Now().Add(5 * time.Second); len(a.bodyReads) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still taken", len(a.bodyReads))
		}
	}

	// A body refused part-read (not gzip data) closes the connection, so
	// that the server does not wait, without a deadline, to drain the rest
	// from a client that stopped sending.
	conn2, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	io.WriteString(conn2, "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: 1000\r\n\r\nnot gzip at all, then nothing")
	conn2.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(conn2)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a body that is not gzip: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Errorf("a body that is not gzip: %d, close %v; want 400 and the connection closed", resp.StatusCode, resp.Close)
	}
	conn2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("the connection after a body refused part-read: %v, want it closed (EOF)", err)
	}
}

// sessionRig is an Authenticator with keys and sessions on one clock that
// the test moves (the Keys', the Verifier's and the Sessions'), serving
// POST /v1/session and a GET route of scope read.
type sessionRig struct {
	t     *testing.T
	reg   registry.Registry
	ks    Keys
	v     *Verifier
	s     *Sessions
	clock time.Time
	mux   *http.ServeMux
}

func newSessionRig(t *testing.T, ttl time.Duration) *sessionRig {
	t.Helper()
	reg, ks, v := keysAndVerifier(t)
	s, err := NewSessions(t.Context(), nil, ttl)
	if err != nil {
		t.Fatal(err)
	}
	rig := &sessionRig{t: t, reg: reg, v: v, s: s, clock: time.Now(), mux: http.NewServeMux()}
	now := func() time.Time { return rig.clock }
	ks.Now, v.now, s.now = now, now, now
	rig.ks = ks
	a := &Authenticator{On: true, Keys: v, Sessions: s}
	h := &Handler{Auth: a}
	rig.mux.Handle("POST /v1/session", a.Require(api.ScopeRead, http.HandlerFunc(h.session)))
	rig.mux.Handle("GET /v1/events", a.Require(api.ScopeRead, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	return rig
}

// session makes a session with the API key tok.
func (rig *sessionRig) session(tok string) *http.Cookie {
	rig.t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/session", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	rig.mux.ServeHTTP(w, r)
	for _, c := range w.Result().Cookies() {
		if c.Name == SessionCookie && w.Code == http.StatusOK {
			return c
		}
	}
	rig.t.Fatalf("POST /v1/session: %d %s", w.Code, w.Body)
	return nil
}

// get sends GET /v1/events with the session c and returns the status and
// the renewed cookie, if the answer sets one.
func (rig *sessionRig) get(c *http.Cookie) (int, *http.Cookie) {
	r := httptest.NewRequest(http.MethodGet, "/v1/events", nil)
	r.AddCookie(c)
	w := httptest.NewRecorder()
	rig.mux.ServeHTTP(w, r)
	for _, nc := range w.Result().Cookies() {
		if nc.Name == SessionCookie {
			return w.Code, nc
		}
	}
	return w.Code, nil
}

// verified waits until the verifier accepts tok (it then holds the key's
// latest version: a rotated token is read from the registry on its first
// use).
func (rig *sessionRig) verified(tok string) {
	rig.t.Helper()
	if _, err := rig.v.Verify(rig.t.Context(), tok); err != nil {
		rig.t.Fatalf("verify: %v", err)
	}
}

// TestSessionEndsWithItsSecret: a session is tied to the secret that made
// it: a rotation without grace ends it at once; with a grace, a session of
// the old secret (made before or during the grace) works during the grace
// and stops after it, while one of the new secret goes on; a revocation
// ends every session of the key.
func TestSessionEndsWithItsSecret(t *testing.T) {
	ctx := t.Context()
	rig := newSessionRig(t, time.Hour)
	k, tok0, err := rig.ks.Create(ctx, KeySpec{Scopes: []string{api.ScopeRead, api.ScopeStream}})
	if err != nil {
		t.Fatal(err)
	}
	s0 := rig.session(tok0)
	if code, _ := rig.get(s0); code != http.StatusOK {
		t.Fatalf("a new session: %d", code)
	}

	// Rotation without grace: the old secret, and its session, stop.
	_, tok1, err := rig.ks.Rotate(ctx, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	rig.verified(tok1)
	if _, err := rig.v.Verify(ctx, tok0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("the old token after a rotation without grace: %v", err)
	}
	if code, _ := rig.get(s0); code != http.StatusUnauthorized {
		t.Errorf("the old secret's session after a rotation without grace: %d, want 401", code)
	}

	// Rotation with a grace of 10 min.
	s1 := rig.session(tok1)
	_, tok2, err := rig.ks.Rotate(ctx, k.ID, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rig.verified(tok2)
	s1During := rig.session(tok1) // made with the old secret within the grace
	s2 := rig.session(tok2)
	rig.clock = rig.clock.Add(10*time.Minute - time.Second)
	for name, c := range map[string]*http.Cookie{"old, made before": s1, "old, made during the grace": s1During, "new": s2} {
		if code, _ := rig.get(c); code != http.StatusOK {
			t.Errorf("within the grace, the %s session: %d, want 200", name, code)
		}
	}
	rig.clock = rig.clock.Add(2 * time.Second)
	if _, err := rig.v.Verify(ctx, tok1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("the old token after the grace: %v", err)
	}
	for name, c := range map[string]*http.Cookie{"old, made before": s1, "old, made during the grace": s1During} {
		if code, _ := rig.get(c); code != http.StatusUnauthorized {
			t.Errorf("after the grace, the %s session: %d, want 401", name, code)
		}
	}
	if code, _ := rig.get(s2); code != http.StatusOK {
		t.Errorf("after the grace, the new secret's session: %d, want 200", code)
	}

	// A revocation ends the rest (once the watch brings it).
	if _, err := rig.ks.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := rig.v.Verify(ctx, tok2); errors.Is(err, ErrRevoked) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the revocation has not reached the verifier in 5 s")
		}
	}
	if code, _ := rig.get(s2); code != http.StatusUnauthorized {
		t.Errorf("a session of a revoked key: %d, want 401", code)
	}
}

// TestSessionMaxAge: a session used all the time is renewed, but never
// past SessionMaxAge from its making: then it gets 401. A ttl above
// SessionMaxAge is cut to it.
func TestSessionMaxAge(t *testing.T) {
	rig := newSessionRig(t, time.Hour)
	_, tok, err := rig.ks.Create(t.Context(), KeySpec{Scopes: []string{api.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	made := rig.clock
	limit := made.Truncate(time.Second).Add(SessionMaxAge)
	c := rig.session(tok)
	renewals := 0
	for step := 20 * time.Minute; rig.clock.Add(step).Before(limit); {
		rig.clock = rig.clock.Add(step)
		code, renewed := rig.get(c)
		if code != http.StatusOK {
			t.Fatalf("%s after its making, a session in use: %d, want 200", rig.clock.Sub(made), code)
		}
		if renewed != nil {
			if renewed.Expires.After(limit) {
				t.Fatalf("renewed until %s, past %s after its making", renewed.Expires, SessionMaxAge)
			}
			c, renewals = renewed, renewals+1
		}
	}
	if renewals < 10 {
		t.Fatalf("%d renewals in %s", renewals, SessionMaxAge)
	}
	rig.clock = limit
	if code, renewed := rig.get(c); code != http.StatusUnauthorized || renewed != nil {
		t.Errorf("%s after its making: %d (renewed: %v), want 401", SessionMaxAge, code, renewed != nil)
	}
	// The key itself still works: a new session does.
	if code, _ := rig.get(rig.session(tok)); code != http.StatusOK {
		t.Errorf("a new session: %d", code)
	}

	long, err := NewSessions(t.Context(), nil, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, exp := long.issue("key_x", "g", []string{api.ScopeRead}, now); exp.After(now.Add(SessionMaxAge)) {
		t.Errorf("a ttl of 24h: a session until %s, past %s", exp.Sub(now), SessionMaxAge)
	}
}

// TestSessionOfAKeyNotBroughtYet: a session made through one process with
// a key rotated a moment ago works at once in another process whose watch
// has not brought the rotation (here: stopped): the key is read from the
// registry, as for a token.
func TestSessionOfAKeyNotBroughtYet(t *testing.T) {
	ctx := t.Context()
	rig := newSessionRig(t, time.Hour)
	k, tok0, err := rig.ks.Create(ctx, KeySpec{Scopes: []string{api.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewVerifier(ctx, rig.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	other.now = rig.v.now
	if _, err := other.Verify(ctx, tok0); err != nil {
		t.Fatal(err)
	}
	other.Close() // its cache holds the key before the rotation, and stays so
	_, tok1, err := rig.ks.Rotate(ctx, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := rig.session(tok1)
	a := &Authenticator{On: true, Keys: other, Sessions: rig.s}
	r := httptest.NewRequest(http.MethodGet, "/v1/events", nil)
	r.AddCookie(c)
	if p, err := a.Authenticate(r); err != nil || p.ID != k.ID || p.Kind != KindSession {
		t.Errorf("the new secret's session in a process that has not seen the rotation: %+v %v", p, err)
	}
}
