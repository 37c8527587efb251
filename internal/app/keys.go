package app

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/audit"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
)

const keysUsage = `skyjoin keys manages the API keys, kept hashed in the registry that every process verifies against.

Usage:
  skyjoin keys create --scope SCOPE[,SCOPE...] [--name NAME] [--expires-in DURATION]
  skyjoin keys list
  skyjoin keys rotate [--grace DURATION] KEY_ID
  skyjoin keys revoke KEY_ID

Scopes: ingest, read, stream, webhooks, admin (admin implies every other).
A created or rotated key's token is printed once: only its SHA-256 is kept.

Where the keys are (one of):
  --url http://127.0.0.1:8080   a running skyjoin, through its key routes (admin scope:
                                 --key, or SKYJOIN_KEY; none needed on a loopback process without auth)
  --registry URL                 the registry itself: nats://HOST:PORT or firestore://PROJECT
  --broker nats://HOST:PORT      the key-value bucket of a NATS server (skyjoin broker, or
                                 up --broker nats://embedded?listen=HOST:PORT)
  (default) --data-dir data      the embedded broker's files, while no skyjoin runs on them
                                 (a running up holds them: use --url or its broker's listen address)

Audit: each create, list, rotate and revoke made on the registry itself writes an
audit entry to stderr (--log-format), with the principal cli:USER@HOST, the action,
the key id (params.id) and the result. Through --url, the process's key routes write it.

Flags:
`

// runKeys is `skyjoin keys create|list|rotate|revoke`.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys", stderr)
	fs.Usage = func() {
		io.WriteString(stderr, keysUsage)
		fs.PrintDefaults()
	}
	var (
		target      = fs.String("url", "", "base URL of a running skyjoin whose key routes to use")
		key         secret.Value
		registryURL = fs.String("registry", "", "registry URL (nats://HOST:PORT, firestore://PROJECT[/DATABASE])")
		brokerURL   = fs.String("broker", "nats://embedded", "broker whose key-value bucket is the registry, when --registry is empty")
		dataDir     = fs.String("data-dir", "data", "data dir of the embedded broker (--broker nats://embedded)")
		scopes      = fs.String("scope", "", "create: the key's scopes, comma-separated")
		name        = fs.String("name", "", "create: what the key is for")
		expiresIn   = fs.Duration("expires-in", 0, "create: the key expires after this long (0: never)")
		grace       = fs.Duration("grace", 0, "rotate: how long the old secret keeps working (0: it stops at once)")
		asJSON      = fs.Bool("json", false, "print the answer as JSON")
		logFormat   = fs.String("log-format", "auto", "format of the audit entry on stderr: json (Cloud Logging field names), text or auto (text on a terminal, json elsewhere)")
	)
	fs.Var(&key, "key", "with --url: an admin API key, as a `SECRET`: env://VAR, sm://..., or the key itself (prefer SKYJOIN_KEY; a flag shows in ps)")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return fmt.Errorf("%w: keys: want create, list, rotate or revoke", errUsage)
	}
	action := args[0]
	// Flags may come before or after the key id.
	var pos []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if err := platform.ParseFlags(fs, nil); err != nil { // the SKYJOIN_* environment
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	wantArgs := map[string]int{"create": 0, "list": 0, "rotate": 1, "revoke": 1}
	n, ok := wantArgs[action]
	if !ok {
		return fmt.Errorf("%w: keys: unknown action %q (want create, list, rotate or revoke)", errUsage, action)
	}
	if len(pos) != n {
		return fmt.Errorf("%w: keys %s takes %d argument(s), got %q", errUsage, action, n, pos)
	}
	var spec auth.KeySpec
	if action == "create" {
		for s := range strings.SplitSeq(*scopes, ",") {
			if s = strings.TrimSpace(s); s != "" {
				spec.Scopes = append(spec.Scopes, s)
			}
		}
		if len(spec.Scopes) == 0 {
			return fmt.Errorf("%w: keys create needs --scope (of %s)", errUsage, strings.Join(api.Scopes, ", "))
		}
		spec.Name = *name
		if *expiresIn < 0 {
			return fmt.Errorf("%w: --expires-in must not be negative", errUsage)
		}
		if *expiresIn > 0 {
			t := time.Now().Add(*expiresIn).UTC().Truncate(time.Second)
			spec.ExpiresAt = &t
		}
	}

	// The audit entry's logger, made first so that a bad --log-format is
	// refused whichever way the keys are reached.
	log, err := platform.NewLogger(stderr, platform.LogConfig{Level: "info", Format: *logFormat})
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	var (
		c       keysClient
		audited func(keyID string, err error) // nil: through --url, the process audits
	)
	if *target != "" {
		if err := resolveSecrets(ctx, key); err != nil {
			return err
		}
		hc, err := newHTTPKeys(*target, key.Reveal())
		if err != nil {
			return err
		}
		c = hc
	} else {
		rc, closeFn, err := openKeysRegistry(ctx, *registryURL, *brokerURL, *dataDir)
		if err != nil {
			return err
		}
		defer closeFn()
		c = rc
		audited = auditKeys(ctx, log, action, spec, time.Now())
	}

	var (
		out   any
		token string
	)
	switch action {
	case "create":
		var k auth.Key
		k, token, err = c.create(ctx, spec)
		out = keyOut{k, token}
	case "list":
		var keys []auth.Key
		keys, err = c.list(ctx)
		out = map[string]any{"keys": keys}
		if err == nil && !*asJSON {
			printKeys(stdout, keys)
			return nil
		}
	case "rotate":
		var k auth.Key
		k, token, err = c.rotate(ctx, pos[0], *grace)
		out = keyOut{k, token}
	case "revoke":
		var k auth.Key
		k, err = c.revoke(ctx, pos[0])
		out = keyOut{Key: k}
	}
	if audited != nil {
		id := ""
		if len(pos) > 0 {
			id = pos[0]
		} else if k, ok := out.(keyOut); ok {
			id = k.ID // create: the new key's, once it exists
		}
		audited(id, err)
	}
	if err != nil {
		return fmt.Errorf("keys %s: %w", action, err)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	k := out.(keyOut)
	switch action {
	case "create", "rotate":
		fmt.Fprintf(stdout, "%s (%s) %sd. Its token, shown this once (only its hash is kept):\n%s\n", k.ID, strings.Join(k.Scopes, ", "), action, token)
	case "revoke":
		fmt.Fprintf(stdout, "%s revoked at %s: every process refuses it within seconds.\n", k.ID, k.RevokedAt.Format(time.RFC3339))
	}
	return nil
}

// auditKeys returns what writes the audit entry of a key action made on
// the registry itself, with the local OS user as the principal (see
// audit.Action): the action, the key id (and a created key's scopes) and
// the result.
func auditKeys(ctx context.Context, log *slog.Logger, action string, spec auth.KeySpec, start time.Time) func(string, error) {
	return func(keyID string, err error) {
		params := map[string]string{}
		if keyID != "" {
			params["id"] = keyID
		}
		if action == "create" {
			params["scopes"] = strings.Join(spec.Scopes, ",")
		}
		audit.Action(ctx, log, audit.Entry{Principal: audit.LocalPrincipal(), Action: "keys." + action, Params: params, Start: start, Err: err})
	}
}

type keyOut struct {
	auth.Key
	Token string `json:"token,omitempty"`
}

func printKeys(w io.Writer, keys []auth.Key) {
	if len(keys) == 0 {
		fmt.Fprintln(w, "no keys")
		return
	}
	now := time.Now()
	fmt.Fprintf(w, "%-21s %-8s %-28s %-20s %s\n", "ID", "STATE", "SCOPES", "CREATED", "NAME")
	for _, k := range keys {
		state := "active"
		switch {
		case k.RevokedAt != nil:
			state = "revoked"
		case !k.Active(now):
			state = "expired"
		}
		fmt.Fprintf(w, "%-21s %-8s %-28s %-20s %s\n", k.ID, state, strings.Join(k.Scopes, ","), k.CreatedAt.Format(time.RFC3339), k.Name)
	}
}

// keysClient is where the key operations go: the registry or a process's
// key routes.
type keysClient interface {
	create(ctx context.Context, s auth.KeySpec) (auth.Key, string, error)
	list(ctx context.Context) ([]auth.Key, error)
	rotate(ctx context.Context, id string, grace time.Duration) (auth.Key, string, error)
	revoke(ctx context.Context, id string) (auth.Key, error)
}

// registryKeys works on the registry directly.
type registryKeys struct{ ks auth.Keys }

func (r registryKeys) create(ctx context.Context, s auth.KeySpec) (auth.Key, string, error) {
	return r.ks.Create(ctx, s)
}
func (r registryKeys) list(ctx context.Context) ([]auth.Key, error) { return r.ks.List(ctx) }
func (r registryKeys) rotate(ctx context.Context, id string, g time.Duration) (auth.Key, string, error) {
	return r.ks.Rotate(ctx, id, g)
}
func (r registryKeys) revoke(ctx context.Context, id string) (auth.Key, error) {
	return r.ks.Revoke(ctx, id)
}

// openKeysRegistry opens the registry: --registry, or the key-value bucket
// of --broker (the embedded one on --data-dir: it must not be in use).
func openKeysRegistry(ctx context.Context, regURL, brokerURL, dataDir string) (keysClient, func(), error) {
	if regURL != "" {
		reg, err := openRegistry(ctx, regURL, nil)
		if err != nil {
			return nil, nil, err
		}
		return registryKeys{auth.Keys{Reg: reg}}, func() { reg.Close() }, nil
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, nil, err
	}
	b, err := openBroker(ctx, brokerURL, dir, platform.Discard)
	if err != nil {
		if strings.Contains(err.Error(), "in use by another skyjoin process") {
			err = fmt.Errorf("%w\n(a skyjoin runs on %s: go through it with --url http://ITS_ADDR, or through its broker with --broker nats://HOST:PORT when it listens)", err, dir)
		}
		return nil, nil, err
	}
	reg, err := openRegistry(ctx, "", b)
	if err == nil && reg == nil {
		err = fmt.Errorf("the broker %s has no key-value store: give --registry", brokerURL)
	}
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return registryKeys{auth.Keys{Reg: reg}}, func() { reg.Close(); b.Close() }, nil
}

// httpKeys goes through a running process's key routes.
type httpKeys struct {
	base, key string
	hc        *http.Client
}

// keyTarget checks the URL a command sends key to (flag names it): an
// http(s) URL, and an API key over https only, or to loopback.
func keyTarget(flag, base, key string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: %s: want http(s)://HOST:PORT, got %q", errUsage, flag, base)
	}
	if key != "" && u.Scheme == "http" && !auth.IsLoopback(u.Host) {
		return fmt.Errorf("%w: %s %s: an API key is sent over https only, or to loopback", errUsage, flag, base)
	}
	return nil
}

func newHTTPKeys(base, key string) (*httpKeys, error) {
	if err := keyTarget("--url", base, key); err != nil {
		return nil, err
	}
	return &httpKeys{base: strings.TrimRight(base, "/"), key: key, hc: &http.Client{Timeout: 30 * time.Second}}, nil
}

func (h *httpKeys) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.key != "" {
		req.Header.Set("Authorization", "Bearer "+h.key)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e platform.ErrorBody
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, e.Error.Message)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

func (h *httpKeys) create(ctx context.Context, s auth.KeySpec) (auth.Key, string, error) {
	var out keyOut
	err := h.do(ctx, http.MethodPost, "/v1/keys", s, &out)
	return out.Key, out.Token, err
}

func (h *httpKeys) list(ctx context.Context) ([]auth.Key, error) {
	var out struct {
		Keys []auth.Key `json:"keys"`
	}
	err := h.do(ctx, http.MethodGet, "/v1/keys", nil, &out)
	return out.Keys, err
}

func (h *httpKeys) rotate(ctx context.Context, id string, grace time.Duration) (auth.Key, string, error) {
	var out keyOut
	err := h.do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(id)+"/rotate", map[string]int64{"grace_seconds": int64(grace / time.Second)}, &out)
	return out.Key, out.Token, err
}

func (h *httpKeys) revoke(ctx context.Context, id string) (auth.Key, error) {
	var out keyOut
	err := h.do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(id), nil, &out)
	return out.Key, err
}
