package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Defaults of the ID tokens: Google's.
const (
	GoogleIssuer  = "https://accounts.google.com" // also accepted without the scheme, as Google issues some
	GoogleJWKSURL = "https://www.googleapis.com/oauth2/v3/certs"
)

// idTokenSkew is the clock skew allowed on exp, iat and nbf.
const idTokenSkew = time.Minute

// IDTokens verifies Google-signed ID tokens (OIDC, RS256): signature
// against the issuer's published keys (cached, see jwks), issuer, audience,
// expiry, issue and not-before times; then the allow list of emails. The
// claims checks are go-oidc's, with the audience list and the times
// checked here too.
type IDTokens struct {
	cfg IDTokenConfig
	v   *oidc.IDTokenVerifier
	now func() time.Time
}

// NewIDTokens builds the verifier of cfg; hc fetches the keys (nil:
// http.DefaultClient). It fetches nothing before the first token.
func NewIDTokens(cfg IDTokenConfig, hc *http.Client, log *slog.Logger) *IDTokens {
	if hc == nil {
		hc = http.DefaultClient
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &IDTokens{cfg: cfg, now: time.Now}
	keys := &jwks{url: cfg.JWKSURL, hc: hc, now: func() time.Time { return t.now() }, refetchEvery: 30 * time.Second, log: log}
	t.v = oidc.NewVerifier(cfg.Issuer, keys, &oidc.Config{
		SkipClientIDCheck:    true, // several audiences may be accepted: checked below
		SupportedSigningAlgs: []string{oidc.RS256},
		// The expiry is checked with the skew allowed: the library's clock
		// runs that much behind.
		Now: func() time.Time { return t.now().Add(-idTokenSkew) },
	})
	return t
}

// claims are the claims read beyond the library's.
type claims struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
	NotBefore     *int64 `json:"nbf"`
	IssuedAt      *int64 `json:"iat"`
}

// Verify returns the principal of an ID token, or an error that says why
// it is refused (it names no secret).
func (t *IDTokens) Verify(ctx context.Context, raw string) (Principal, error) {
	tok, err := t.v.Verify(ctx, raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return Principal{}, fmt.Errorf("%w: the ID token has expired", ErrInvalid)
		}
		return Principal{}, fmt.Errorf("%w: ID token: %s", ErrInvalid, oidcReason(err))
	}
	if !slices.ContainsFunc(tok.Audience, func(a string) bool { return slices.Contains(t.cfg.Audiences, a) }) {
		return Principal{}, fmt.Errorf("%w: the ID token is not for this service (audience)", ErrInvalid)
	}
	var c claims
	if err := tok.Claims(&c); err != nil {
		return Principal{}, fmt.Errorf("%w: ID token claims: %v", ErrInvalid, err)
	}
	now := t.now()
	if c.IssuedAt == nil || time.Unix(*c.IssuedAt, 0).After(now.Add(idTokenSkew)) {
		return Principal{}, fmt.Errorf("%w: the ID token has no iat, or one in the future", ErrInvalid)
	}
	if c.NotBefore != nil && time.Unix(*c.NotBefore, 0).After(now.Add(idTokenSkew)) {
		return Principal{}, fmt.Errorf("%w: the ID token is not valid yet (nbf)", ErrInvalid)
	}
	id := "sub:" + tok.Subject
	if c.Email != "" && c.EmailVerified {
		id = c.Email
	}
	if len(t.cfg.Emails) > 0 && !(c.EmailVerified && slices.Contains(t.cfg.Emails, strings.ToLower(c.Email))) {
		return Principal{ID: id, Kind: KindIDToken}, fmt.Errorf("%w: %s is not allowed here (--auth-idtoken-emails)", ErrNotAllowed, id)
	}
	return Principal{ID: id, Kind: KindIDToken, Scopes: slices.Clone(t.cfg.Scopes)}, nil
}

// ErrNotAllowed is a valid ID token of a principal not on the allow list
// (403).
var ErrNotAllowed = errors.New("principal not allowed")

// oidcReason shortens go-oidc's error to what the caller may read.
func oidcReason(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "issued by a different provider"):
		return "wrong issuer"
	case strings.Contains(s, "malformed jwt"):
		return "malformed"
	case strings.Contains(s, "failed to verify signature"):
		return "signature not verified"
	case strings.Contains(s, "nbf"):
		return "not valid yet (nbf)"
	}
	return "not valid"
}

// LooksLikeJWT reports whether a bearer credential has the shape of a
// compact JWS (three base64url parts).
func LooksLikeJWT(tok string) bool {
	return strings.Count(tok, ".") == 2 && strings.HasPrefix(tok, "eyJ")
}
