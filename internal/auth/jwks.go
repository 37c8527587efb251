package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Bounds of the JWKS cache.
const (
	jwksDefaultMaxAge = time.Hour        // when the answer has no Cache-Control max-age
	jwksMinMaxAge     = time.Minute      // a shorter max-age is read as this
	jwksMaxMaxAge     = 24 * time.Hour   // a longer one as this
	jwksMaxBytes      = 1 << 20          // an answer larger than this is refused
	jwksFetchTimeout  = 10 * time.Second // one fetch
)

// jwks is an oidc.KeySet: the public keys at a JWKS URL (Google's
// https://www.googleapis.com/oauth2/v3/certs by default), cached for the
// answer's Cache-Control max-age. A token signed with a key id the cache
// does not hold makes it fetch again, at most once per refetchEvery, so
// that tokens with made-up key ids cannot turn every request into a fetch.
// Should a fetch fail, the keys it had stay in use.
type jwks struct {
	url          string
	hc           *http.Client
	now          func() time.Time
	refetchEvery time.Duration
	log          *slog.Logger

	mu        sync.Mutex // held across a fetch: concurrent misses wait for one fetch
	keys      []jose.JSONWebKey
	expires   time.Time
	lastFetch time.Time
}

// VerifySignature implements oidc.KeySet: it checks the signature of a
// compact JWS (RS256 only) and returns its payload.
func (c *jwks) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, fmt.Errorf("malformed token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys, err := c.keysFor(ctx, kid)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.KeyID == kid || kid == "" {
			if payload, err := jws.Verify(&k); err == nil {
				return payload, nil
			}
		}
	}
	return nil, errors.New("bad signature, or no key with the token's key id")
}

// keysFor returns the keys, fetched again when they expired, or when kid
// is not among them and the last fetch is older than refetchEvery.
func (c *jwks) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	known := false
	for _, k := range c.keys {
		known = known || k.KeyID == kid
	}
	stale := c.keys == nil || !now.Before(c.expires)
	if stale || !known && now.Sub(c.lastFetch) >= c.refetchEvery {
		c.lastFetch = now
		keys, maxAge, err := c.fetch(ctx)
		switch {
		case err != nil && c.keys == nil:
			return nil, err
		case err != nil:
			c.log.Warn("auth: fetch the ID token keys; using the cached ones", "url", c.url, "error", err.Error())
		default:
			c.keys, c.expires = keys, now.Add(maxAge)
		}
	}
	return c.keys, nil
}

func (c *jwks) fetch(ctx context.Context) ([]jose.JSONWebKey, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch keys: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch keys: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("fetch keys: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("fetch keys: %s", resp.Status)
	}
	if len(body) > jwksMaxBytes {
		return nil, 0, fmt.Errorf("fetch keys: the answer is larger than %d bytes", jwksMaxBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, 0, fmt.Errorf("fetch keys: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, k := range set.Keys {
		if k.Valid() && k.IsPublic() && (k.Algorithm == "" || k.Algorithm == string(jose.RS256)) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, 0, errors.New("fetch keys: no RS256 public key in the set")
	}
	return keys, maxAge(resp.Header.Get("Cache-Control")), nil
}

// maxAge reads max-age from a Cache-Control header, within bounds.
func maxAge(cc string) time.Duration {
	for part := range strings.SplitSeq(cc, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(strings.ToLower(part)), "max-age=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			break
		}
		return min(max(time.Duration(n)*time.Second, jwksMinMaxAge), jwksMaxMaxAge)
	}
	return jwksDefaultMaxAge
}
