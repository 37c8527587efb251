// Package secret resolves the secrets skyjoin is configured with (weather
// API keys, ingest and serve API keys, webhook signing keys) from a
// reference, and keeps them out of usage output, config dumps and logs.
//
// A reference is one of:
//
//	sm://projects/PROJECT/secrets/SECRET/versions/VERSION   a Secret Manager secret version (VERSION may be "latest")
//	sm://projects/PROJECT/secrets/SECRET                    the same, version latest
//	env://VAR                                               the environment variable VAR
//	anything else without "://"                             the secret itself (a literal)
//
// Any other SCHEME:// is an error rather than a literal, so that a typo in a
// reference never becomes the secret.
package secret

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"strings"
	"sync"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"

	"github.com/skyjoin/skyjoin/internal/platform/iam"
)

// Schemes of references.
const (
	SchemeSecretManager = "sm://"
	SchemeEnv           = "env://"
)

// Redacted is what a set secret prints as in logs.
const Redacted = "[REDACTED]"

// Kind is the form of a reference.
type Kind uint8

// Kinds of reference.
const (
	KindNone          Kind = iota // empty: no secret
	KindLiteral                   // the secret itself
	KindEnv                       // env://VAR
	KindSecretManager             // sm://projects/P/secrets/S/versions/V
)

// Ref is a parsed reference. Its String never shows a literal secret.
type Ref struct {
	kind    Kind
	name    string // environment variable, or Secret Manager version resource name
	literal string
}

// ParseRef parses a reference (see the package documentation). An empty
// string is the empty reference: no secret.
func ParseRef(s string) (Ref, error) {
	switch {
	case s == "":
		return Ref{}, nil
	case strings.HasPrefix(s, SchemeEnv):
		name := strings.TrimPrefix(s, SchemeEnv)
		if !validEnvName(name) {
			return Ref{}, fmt.Errorf("parse secret reference %q: want env://VAR with VAR made of letters, digits and underscores", s)
		}
		return Ref{kind: KindEnv, name: name}, nil
	case strings.HasPrefix(s, SchemeSecretManager):
		name, err := versionName(strings.TrimPrefix(s, SchemeSecretManager))
		if err != nil {
			return Ref{}, fmt.Errorf("parse secret reference %q: %w", s, err)
		}
		return Ref{kind: KindSecretManager, name: name}, nil
	}
	if i := strings.Index(s, "://"); i > 0 && isScheme(s[:i]) {
		// Do not echo s: it may be a secret that happens to hold "://".
		return Ref{}, fmt.Errorf("parse secret reference: unknown scheme %q: want sm://, env:// or a literal value", s[:i]+"://")
	}
	return Ref{kind: KindLiteral, literal: s}, nil
}

func isScheme(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return s != ""
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// versionName checks projects/P/secrets/S[/versions/V] and returns the
// version's resource name (version latest when left out).
func versionName(s string) (string, error) {
	parts := strings.Split(s, "/")
	if len(parts) == 4 {
		parts = append(parts, "versions", "latest")
	}
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "secrets" || parts[4] != "versions" {
		return "", errors.New("want sm://projects/PROJECT/secrets/SECRET/versions/VERSION")
	}
	for i, what := range map[int]string{1: "project", 3: "secret", 5: "version"} {
		if parts[i] == "" || strings.ContainsAny(parts[i], " \t\r\n?#%") {
			return "", fmt.Errorf("bad %s %q: want sm://projects/PROJECT/secrets/SECRET/versions/VERSION", what, parts[i])
		}
	}
	return strings.Join(parts, "/"), nil
}

// Grants are the IAM grants resolving r needs: an sm:// reference reads a
// version of its secret (roles/secretmanager.secretAccessor on the
// secret); the others need none.
func (r Ref) Grants() []iam.Grant {
	if r.kind != KindSecretManager {
		return nil
	}
	// name is projects/P/secrets/S/versions/V (ParseRef checked it).
	parts := strings.Split(r.name, "/")
	return []iam.Grant{{Role: "roles/secretmanager.secretAccessor", On: iam.Secret(parts[3])}}
}

// Kind is the form of the reference.
func (r Ref) Kind() Kind { return r.kind }

// String describes the reference without the secret: the sm:// or env://
// reference, "literal" or "".
func (r Ref) String() string {
	switch r.kind {
	case KindEnv:
		return SchemeEnv + r.name
	case KindSecretManager:
		return SchemeSecretManager + r.name
	case KindLiteral:
		return "literal"
	}
	return ""
}

// Resolver resolves references. The zero Resolver reads the process's
// environment and, on the first sm:// reference, connects to Secret Manager
// with Application Default Credentials. It is safe for concurrent use.
type Resolver struct {
	// LookupEnv, if set, replaces os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ClientOptions configure the Secret Manager client (tests point it at
	// an in-process server).
	ClientOptions []option.ClientOption

	mu     sync.Mutex
	client *secretmanager.Client
}

// Resolve returns the secret ref refers to ("" for the empty reference).
func (r *Resolver) Resolve(ctx context.Context, ref string) (string, error) {
	p, err := ParseRef(ref)
	if err != nil {
		return "", err
	}
	return r.ResolveRef(ctx, p)
}

// ResolveRef returns the secret p refers to.
func (r *Resolver) ResolveRef(ctx context.Context, p Ref) (string, error) {
	switch p.kind {
	case KindNone:
		return "", nil
	case KindLiteral:
		return p.literal, nil
	case KindEnv:
		lookup := r.LookupEnv
		if lookup == nil {
			lookup = os.LookupEnv
		}
		v, ok := lookup(p.name)
		if !ok {
			return "", fmt.Errorf("resolve secret %s: the environment variable is not set", p)
		}
		return v, nil
	case KindSecretManager:
		return r.access(ctx, p)
	}
	return "", fmt.Errorf("resolve secret: unknown reference kind %d", p.kind)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (r *Resolver) access(ctx context.Context, p Ref) (string, error) {
	c, err := r.smClient(ctx)
	if err != nil {
		return "", fmt.Errorf("resolve secret %s: %w", p, err)
	}
	resp, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: p.name})
	if err != nil {
		return "", fmt.Errorf("resolve secret %s: access secret version: %w", p, err)
	}
	data := resp.GetPayload().GetData()
	if sum := resp.GetPayload().DataCrc32C; sum != nil && int64(crc32.Checksum(data, castagnoli)) != *sum {
		return "", fmt.Errorf("resolve secret %s: payload checksum mismatch", p)
	}
	// `echo KEY | gcloud secrets versions add --data-file=-` stores a newline.
	return strings.TrimRight(string(data), "\r\n"), nil
}

func (r *Resolver) smClient(ctx context.Context) (*secretmanager.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, nil
	}
	c, err := secretmanager.NewClient(ctx, r.ClientOptions...)
	if err != nil {
		return nil, fmt.Errorf("create secret manager client: %w", err)
	}
	r.client = c
	return c, nil
}

// Close releases the Secret Manager client, if one was made.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	if err != nil {
		return fmt.Errorf("close secret manager client: %w", err)
	}
	return nil
}

// Value is a secret given by reference, for flags and config structs
// (flag.Var(&cfg.Key, "key", usage)). It never prints or logs the secret:
// String is "(set)" or "", LogValue and MarshalText are Redacted or "".
// Set parses the reference; Resolve fetches the secret; Reveal returns it.
//
// Copies of a Value share its state, so a Value resolved through one copy
// of a config struct is resolved in all.
type Value struct{ s *valueState }

type valueState struct {
	ref      Ref
	secret   string
	resolved bool
}

// NewValue returns a Value holding ref, for defaults and tests.
func NewValue(ref string) (Value, error) {
	var v Value
	return v, v.Set(ref)
}

// Set parses a reference (flag.Value). A bad reference is an error here,
// when the flags are parsed, before anything runs.
func (v *Value) Set(ref string) error {
	p, err := ParseRef(ref)
	if err != nil {
		return err
	}
	if v.s == nil {
		v.s = new(valueState)
	}
	*v.s = valueState{ref: p}
	if p.kind == KindLiteral || p.kind == KindNone {
		v.s.secret, v.s.resolved = p.literal, true
	}
	return nil
}

// String is "(set)" when a reference was given and "" otherwise: flag
// usage and config dumps never show the secret, nor its default.
func (v Value) String() string {
	if v.IsSet() {
		return "(set)"
	}
	return ""
}

// GoString keeps %#v from showing the secret.
func (v Value) GoString() string { return "secret.Value(" + v.String() + ")" }

// LogValue redacts the secret in slog output.
func (v Value) LogValue() slog.Value {
	if v.IsSet() {
		return slog.StringValue(Redacted)
	}
	return slog.StringValue("")
}

// MarshalText redacts the secret in JSON and text encodings.
func (v Value) MarshalText() ([]byte, error) {
	if v.IsSet() {
		return []byte(Redacted), nil
	}
	return nil, nil
}

// IsSet reports whether a (non-empty) reference was given.
func (v Value) IsSet() bool { return v.s != nil && v.s.ref.kind != KindNone }

// Ref is the parsed reference; its String is safe to log.
func (v Value) Ref() Ref {
	if v.s == nil {
		return Ref{}
	}
	return v.s.ref
}

// Resolve fetches the secret with r (a no-op for literals and the empty
// reference, and once resolved).
func (v Value) Resolve(ctx context.Context, r *Resolver) error {
	if v.s == nil || v.s.resolved {
		return nil
	}
	s, err := r.ResolveRef(ctx, v.s.ref)
	if err != nil {
		return err
	}
	v.s.secret, v.s.resolved = s, true
	return nil
}

// Reveal returns the secret: "" when unset, and "" for an sm:// or env://
// reference not yet resolved (see Resolved).
func (v Value) Reveal() string {
	if v.s == nil {
		return ""
	}
	return v.s.secret
}

// Resolved reports whether Reveal returns the secret.
func (v Value) Resolved() bool { return v.s == nil || v.s.resolved }
