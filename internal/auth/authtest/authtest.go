// Package authtest is a local OpenID Connect issuer for tests: a JWKS
// server on loopback and an RSA key that signs ID tokens, so that ID token
// verification is tested offline.
package authtest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer serves its public key at URL (a JWKS) and signs tokens.
type Issuer struct {
	URL     string
	Fetches atomic.Int64 // GETs of the key set

	mu     sync.Mutex
	key    *rsa.PrivateKey
	kid    string
	maxAge string
}

// NewIssuer starts the JWKS server; the test closes it at its end.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	iss := &Issuer{maxAge: "3600"}
	iss.Rotate(t, "k1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		iss.Fetches.Add(1)
		iss.mu.Lock()
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &iss.key.PublicKey, KeyID: iss.kid, Algorithm: "RS256", Use: "sig"}}}
		age := iss.maxAge
		iss.mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age="+age+", must-revalidate")
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	iss.URL = srv.URL
	return iss
}

// Rotate makes a new signing key with key id kid.
func (i *Issuer) Rotate(t testing.TB, kid string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	i.mu.Lock()
	i.key, i.kid = key, kid
	i.mu.Unlock()
}

// SetMaxAge sets the Cache-Control max-age (seconds) of the key set.
func (i *Issuer) SetMaxAge(s string) {
	i.mu.Lock()
	i.maxAge = s
	i.mu.Unlock()
}

// KID is the current key id.
func (i *Issuer) KID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.kid
}

// Sign signs claims with the issuer's key under its key id.
func (i *Issuer) Sign(t testing.TB, claims map[string]any) string {
	i.mu.Lock()
	key, kid := i.key, i.kid
	i.mu.Unlock()
	return SignWith(t, key, kid, claims)
}

// SignWith signs claims with key, under key id kid (RS256).
func SignWith(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Claims are the claims of a valid Google ID token issued now, for aud
// and email.
func Claims(aud, email string, now time.Time) map[string]any {
	return map[string]any{"iss": "https://accounts.google.com", "aud": aud, "sub": "1234567890", "email": email,
		"email_verified": true, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

// Metadata starts a fake of the Google Cloud metadata server that answers
// the project number and the region of a Cloud Run instance
// (projects/NUMBER/regions/REGION), and points GCE_METADATA_HOST at it for
// the rest of the test. It refuses a request without Metadata-Flavor:
// Google, as the real one does.
func Metadata(t testing.TB, projectNumber, region string) {
	t.Helper()
	CloudRunMetadata(t, "", projectNumber, region, "")
}

// CloudRunMetadata is Metadata that also answers the project id and the
// instance id, unless they are "".
func CloudRunMetadata(t testing.TB, projectID, projectNumber, region, instanceID string) {
	t.Helper()
	md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata-Flavor") != "Google" {
			http.Error(w, "no flavor", http.StatusForbidden)
			return
		}
		w.Header().Set("Metadata-Flavor", "Google")
		switch p := r.URL.Path; {
		case p == "/computeMetadata/v1/project/numeric-project-id":
			io.WriteString(w, projectNumber)
		case p == "/computeMetadata/v1/instance/region":
			io.WriteString(w, "projects/"+projectNumber+"/regions/"+region)
		case p == "/computeMetadata/v1/project/project-id" && projectID != "":
			io.WriteString(w, projectID)
		case p == "/computeMetadata/v1/instance/id" && instanceID != "":
			io.WriteString(w, instanceID)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(md.Close)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(md.URL, "http://"))
}
