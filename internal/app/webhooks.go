package app

import (
	"context"
	"fmt"
	"github.com/skyjoin/skyjoin/internal/auth"
	"path/filepath"
	"strings"

	"github.com/skyjoin/skyjoin/internal/broker/jetstream"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/webhook"
)

// registryShared reports whether the webhooks' registry may be shared with
// other processes, and names it: any registry but the key-value bucket of
// an embedded broker that takes no other clients (no listen=).
func (c *config) registryShared() (bool, string) {
	if c.Registry != "" && c.Registry != jetstream.EmbeddedURL {
		return true, platform.RedactURL(c.Registry)
	}
	if !strings.HasPrefix(c.Broker, "nats://") {
		return false, "" // no registry unless --registry: said when the stage starts
	}
	bc, err := jetstream.ParseURL(c.Broker)
	switch {
	case err != nil:
		return false, "" // the broker's own error says what is wrong
	case bc.URL != jetstream.EmbeddedURL:
		return true, "the key-value bucket on the broker " + platform.RedactURL(c.Broker)
	case bc.Listen != "":
		return true, "the key-value bucket on the embedded broker, which other processes reach on " + bc.Listen
	}
	return false, ""
}

// validateWebhookKey requires --webhook-secret-key of `skyjoin deliver`
// when the registry is shared: every process on it must seal and open the
// secrets with the same key, which a key generated in one process's data
// dir is not. (`up` starts without it, for those who use no webhooks: it
// says so, and refuses registrations.)
func (c *config) validateWebhookKey() error {
	if c.Webhook.SecretKey.IsSet() || c.command != stDeliver {
		return nil
	}
	if shared, what := c.registryShared(); shared {
		return fmt.Errorf("webhook-secret-key is required: the registry (%s) is shared by other processes, which must seal and open webhook secrets with one key; give env://VAR or sm://... holding 32 bytes in base64 or hex (openssl rand -base64 32)", what)
	}
	return nil
}

// webhookConfig is the deliver stage's webhook.Config with its key
// references resolved, and the data dir's key file: the key itself when
// the registry is this process's own and no key is given, an old key
// otherwise.
func (c *config) webhookConfig(ctx context.Context, p *process) (webhook.Config, error) {
	cfg := c.Webhook
	if err := resolveSecrets(ctx, cfg.Secrets()...); err != nil {
		return cfg, fmt.Errorf("webhook secret key: %w", err)
	}
	shared, what := c.registryShared()
	if !shared || cfg.SecretKey.IsSet() {
		cfg.KeyFile = filepath.Join(p.dataDir, webhook.KeyFileName)
	} else {
		p.log.Warn("no --webhook-secret-key, and the registry is shared: webhooks cannot be registered through this process",
			"registry", what)
	}
	if cfg.AllowPrivate && !auth.IsLoopback(c.Addr) {
		p.log.Warn("--webhook-allow-private on a process that listens beyond loopback: any caller that may register a webhook can make it reach private addresses",
			"addr", c.Addr)
	}
	return cfg, nil
}
