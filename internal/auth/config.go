package auth

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// Modes of --auth.
const (
	ModeAuto = "auto" // on when a listener is beyond loopback, or on Cloud Run
	ModeOn   = "on"
	ModeOff  = "off" // loopback only, unless --insecure-no-auth
)

// Config is how a process authenticates its callers.
type Config struct {
	Mode           string
	InsecureNoAuth bool
	SessionTTL     time.Duration
	IDToken        IDTokenConfig
}

// IDTokenConfig accepts Google-signed ID tokens (OIDC). They are on when
// at least one audience is given (on Cloud Run, by default, the service's
// own URL).
type IDTokenConfig struct {
	Audiences []string // aud values accepted: the service URL, or a custom audience
	Issuer    string
	JWKSURL   string
	Scopes    []string // what every accepted ID token may do
	Emails    []string // if set, only these (verified) emails are accepted
}

// Configured reports whether ID tokens are accepted.
func (c IDTokenConfig) Configured() bool { return len(c.Audiences) > 0 }

// RegisterFlags adds the auth flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Mode, "auth", ModeAuto, "who may call: auto (on unless every listener is on loopback; on Cloud Run always), on, or off (loopback only, see --insecure-no-auth)")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", false, "serve every route without credentials even beyond loopback (anyone who reaches the port can read and change everything)")
	fs.DurationVar(&c.SessionTTL, "auth-session-ttl", time.Hour, "life of a browser session (POST /v1/session), renewed while it is used, up to 12h from its making")
	c.IDToken.Issuer, c.IDToken.JWKSURL = GoogleIssuer, GoogleJWKSURL
	c.IDToken.Scopes = []string{api.ScopeIngest, api.ScopePush}
	fs.Var((*listFlag)(&c.IDToken.Audiences), "auth-idtoken-audience", "accept Google-signed ID tokens for these audiences, comma-separated (on Cloud Run the default is the service's URL)")
	fs.StringVar(&c.IDToken.Issuer, "auth-idtoken-issuer", GoogleIssuer, "the issuer (iss) of accepted ID tokens")
	fs.StringVar(&c.IDToken.JWKSURL, "auth-idtoken-jwks-url", GoogleJWKSURL, "where the issuer's public keys are (JWKS)")
	fs.Var((*listFlag)(&c.IDToken.Scopes), "auth-idtoken-scopes", "scopes of a caller with a valid ID token, comma-separated, of "+strings.Join(api.Scopes, ", "))
	fs.Var((*listFlag)(&c.IDToken.Emails), "auth-idtoken-emails", "accept ID tokens of these verified emails only (service accounts), comma-separated; required off Cloud Run")
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p platform.Problems
	switch c.Mode {
	case ModeAuto, ModeOn, ModeOff:
	default:
		p.Addf("auth: %q is not a mode (known: auto, on, off)", c.Mode)
	}
	if c.InsecureNoAuth && c.Mode == ModeOn {
		p.Addf("auth: --insecure-no-auth contradicts --auth=on")
	}
	if c.SessionTTL < time.Minute || c.SessionTTL > 24*time.Hour {
		p.Addf("auth-session-ttl must be between 1m and 24h, got %s", c.SessionTTL)
	}
	for i, s := range c.IDToken.Scopes {
		if !slices.Contains(api.Scopes, s) {
			p.Addf("auth-idtoken-scopes: %q is not a scope (known: %s)", s, strings.Join(api.Scopes, ", "))
		} else if slices.Index(c.IDToken.Scopes, s) != i {
			p.Addf("auth-idtoken-scopes: %q is given twice", s)
		}
	}
	for _, u := range []struct{ name, v string }{{"auth-idtoken-issuer", c.IDToken.Issuer}, {"auth-idtoken-jwks-url", c.IDToken.JWKSURL}} {
		if pu, err := url.Parse(u.v); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			p.Addf("%s: want an http(s) URL, got %q", u.name, u.v)
		}
	}
	for i, e := range c.IDToken.Emails {
		if !strings.Contains(e, "@") {
			p.Addf("auth-idtoken-emails: %q is not an email", e)
		}
		c.IDToken.Emails[i] = strings.ToLower(e)
	}
	if c.IDToken.Configured() && len(c.IDToken.Emails) == 0 && !OnCloudRun() {
		p.Addf("auth-idtoken-emails: required with --auth-idtoken-audience off Cloud Run (any Google account can mint a token for any audience; on Cloud Run, its IAM checks the invoker first)")
	}
	return p.Err()
}

// OnCloudRun reports whether this process is a Cloud Run service.
func OnCloudRun() bool { return os.Getenv("K_SERVICE") != "" }

// Decide says whether auth is on for a process with listeners on addrs
// (host:port). An error is a configuration that is refused.
func (c Config) Decide(addrs ...string) (bool, error) {
	var beyond []string
	for _, a := range addrs {
		if a != "" && !IsLoopback(a) {
			beyond = append(beyond, a)
		}
	}
	switch {
	case c.InsecureNoAuth:
		return false, nil
	case c.Mode == ModeOn:
		return true, nil
	case c.Mode == ModeOff && len(beyond) > 0:
		return false, fmt.Errorf("auth: --auth=off on %s, beyond loopback: add --insecure-no-auth to serve every route to anyone who reaches it", strings.Join(beyond, ", "))
	case c.Mode == ModeOff:
		return false, nil
	}
	return len(beyond) > 0 || OnCloudRun(), nil
}

// IsLoopback reports whether a listen address (host:port) is on loopback
// only: 127.0.0.0/8, ::1 or localhost. An empty host (every interface) is
// not.
func IsLoopback(addr string) bool { return platform.IsLoopback(addr) }

// CloudRunAudience is the URL of this Cloud Run service, the audience its
// callers' ID tokens carry: https://SERVICE-PROJECT_NUMBER.REGION.run.app,
// from K_SERVICE and the metadata server.
func CloudRunAudience(ctx context.Context) (string, error) {
	svc := os.Getenv("K_SERVICE")
	c := metadata.NewClient(nil)
	num, err := c.NumericProjectIDWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("the service's URL (audience of ID tokens): project number: %w", err)
	}
	region, err := c.GetWithContext(ctx, "instance/region")
	if err != nil {
		return "", fmt.Errorf("the service's URL (audience of ID tokens): region: %w", err)
	}
	region = region[strings.LastIndex(region, "/")+1:]
	return fmt.Sprintf("https://%s-%s.%s.run.app", svc, num, region), nil
}

// listFlag is a comma-separated list flag; each Set replaces the list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}
