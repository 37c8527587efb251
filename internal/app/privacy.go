package app

import (
	"context"
	"flag"
	"fmt"
	"github.com/skyjoin/skyjoin/internal/auth"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/audit"
	"github.com/skyjoin/skyjoin/internal/deadletter"
	"github.com/skyjoin/skyjoin/internal/erase"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
)

// devPIIKey is the PII policy's hash key of a process that listens on
// loopback only and was given none (docs/data.md): a development default,
// public, so hashes made with it protect nothing against someone who reads
// this. Beyond loopback --pii-key is required.
const devPIIKey = "skyjoin-dev-pii-key: public, for loopback development only"

// piiConfig is the PII policy part: one flag for the policy, one for its
// key.
type piiConfig struct {
	Policy string
	Key    secret.Value
	spec   pii.Spec // parsed by validate
}

// piiPart is the part of the stages that apply the policy (enrich) or must
// find what it stored (serve: erasure).
func (c *config) piiPart() *part {
	return &part{
		name: ptPII,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.PII.Policy, "pii-policy", "default",
				"what happens to personal data before it is stored: a preset (default, keep) then PATH=ACTION rules (keep, hash, coarsen[:PARAM], drop), comma-separated, or @FILE; see docs/data.md")
			fs.Var(&c.PII.Key, "pii-key", "key of the PII policy's HMAC hashes, as a `SECRET`: env://VAR, sm://projects/P/secrets/S/versions/V or the key itself (never logged); required beyond loopback when the policy hashes")
		},
		validate: func() error {
			var p platform.Problems
			spec, err := pii.ParseSpec(c.PII.Policy)
			if err != nil {
				p.Addf("pii-policy: %v", err)
			}
			c.PII.spec = spec
			if err == nil && spec.Hashes() && !c.PII.Key.IsSet() && !auth.IsLoopback(c.Addr) {
				p.Addf("pii-key is required: the PII policy hashes, and %s is not a loopback address (the development key is public)", c.Addr)
			}
			return p.Err()
		},
	}
}

// pii builds the PII policy on first use, resolving its key.
func (p *process) pii() (*pii.Policy, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.policy != nil {
		return p.policy, nil
	}
	cfg := &p.cfg.PII
	if err := resolveSecrets(p.ctx, cfg.Key); err != nil {
		return nil, fmt.Errorf("pii-key: %w", err)
	}
	key := cfg.Key.Reveal()
	if key == "" {
		key = devPIIKey
		if cfg.spec.Hashes() {
			p.log.Warn("pii: no --pii-key; hashing with the public development key (allowed on loopback only)")
		}
	}
	policy, err := pii.New(cfg.spec, []byte(key))
	if err != nil {
		return nil, err
	}
	p.log.Info("pii policy", "policy", cfg.spec.String(), "key", cfg.Key)
	p.policy = policy
	return policy, nil
}

// mountErasure mounts DELETE /v1/users/{id} in the serve stage: it reaches
// the store, the dead letters on the broker and the webhooks' failure
// lists in the registry.
func (p *process) mountErasure(r platform.Router) error {
	st, err := p.store()
	if err != nil {
		return err
	}
	b, err := p.broker()
	if err != nil {
		return err
	}
	db, ok := b.(deadletter.Broker)
	if !ok {
		return fmt.Errorf("broker %s cannot list dead letters, so erasure cannot reach them", p.cfg.Broker)
	}
	reg, err := p.registry()
	if err != nil {
		return fmt.Errorf("erasure needs the registry of the webhook failure lists: %w", err)
	}
	policy, err := p.pii()
	if err != nil {
		return err
	}
	e := &erase.Eraser{Store: st, DeadLetters: db, Registry: reg, StoredIDs: policy.UserIDs, LogID: policy.UserID, Log: p.log}
	e.Register(r)
	return nil
}

// auditOptions log user ids as the store holds them: hashed where the PII
// policy hashes user.id.
func (p *process) auditOptions() audit.Options {
	policy := p.policy // set while the stages started, if one uses it
	return audit.Options{Param: func(route, name, v string) string {
		if policy != nil && (name == "user_id" || name == "id" && strings.Contains(route, " /v1/users/")) {
			return policy.UserID(v)
		}
		return v
	}}
}

// retentionFlag is --retention: days ("30d") or a Go duration; 0 keeps
// records forever.
type retentionFlag struct{ d *time.Duration }

func (f retentionFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "0"
	}
	if *f.d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", *f.d/(24*time.Hour))
	}
	return f.d.String()
}

func (f retentionFlag) Set(s string) error {
	d, err := bigquery.ParseRetention(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

// retentionFlags are the enrich stage's: the process that writes the store
// enforces its retention.
func (c *config) retentionFlags(fs *flag.FlagSet) {
	fs.Var(retentionFlag{&c.Retention}, "retention", "delete stored records whose occurred_at is older than this, e.g. 400d (0: keep them); DuckDB only: with BigQuery it is the table's partition expiration (the store URL's retention=, set by skyjoin migrate)")
	fs.DurationVar(&c.RetentionEvery, "retention-interval", time.Hour, "how often --retention deletes the records past it")
}

func (c *config) validateRetention() error {
	var p platform.Problems
	switch {
	case c.Retention < 0:
		p.Addf("retention must not be negative, got %s", c.Retention)
	case c.Retention > 0 && c.Retention < time.Hour:
		p.Addf("retention must be at least 1h, got %s", c.Retention)
	case c.Retention > 0 && strings.HasPrefix(c.Store, "bigquery://"):
		p.Addf("retention: with BigQuery the table's partition expiration deletes old records: give retention= in the store URL and run skyjoin migrate")
	}
	if c.RetentionEvery < 100*time.Millisecond {
		p.Addf("retention-interval must be at least 100ms, got %s", c.RetentionEvery)
	}
	return p.Err()
}

// runRetention deletes the records past the retention now and then, until
// ctx is done: at once, then every interval.
func runRetention(ctx context.Context, st store.Store, retention, every time.Duration, log *slog.Logger) {
	e, ok := st.(store.Expirer)
	if retention <= 0 || !ok {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		cutoff := time.Now().Add(-retention)
		start := time.Now()
		n, err := e.DeleteOccurredBefore(ctx, cutoff)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("retention: delete old records; trying again later", "error", err.Error())
		case n > 0:
			log.Info("retention: deleted old records", "records", n, "occurred_before", cutoff.UTC().Format(time.RFC3339),
				"duration_ms", time.Since(start).Milliseconds())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runCompact rewrites a DuckDB store's file with its live data only, so
// that deleted records (erased users, expired ones) leave the disk.
func runCompact(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("compact", stderr)
	dataDir := fs.String("data-dir", "data", "data directory of the store (its skyjoin.duckdb)")
	storeURL := fs.String("store", "", "store URL: duckdb://PATH (default duckdb://DATA_DIR/skyjoin.duckdb)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: compact takes no arguments, got %q", errUsage, fs.Args())
	}
	path := filepath.Join(*dataDir, "skyjoin.duckdb")
	if *storeURL != "" {
		rest, ok := strings.CutPrefix(*storeURL, "duckdb://")
		if !ok || rest == "" || strings.ContainsAny(rest, "?#") {
			return fmt.Errorf("%w: compact: store URL %q: want duckdb://PATH (BigQuery needs no compaction)", errUsage, *storeURL)
		}
		path = rest
	}
	before, after, err := compactDuckDB(ctx, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "compacted %s: %d -> %d bytes\n", path, before, after)
	return nil
}
