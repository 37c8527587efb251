package pubsub

import (
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/brokertest"
)

// TestConformanceEmulator runs brokertest against Google's own Pub/Sub
// emulator (the Google Cloud CLI's), which scripts/test starts and names in
// SKYJOIN_PUBSUB_EMULATOR_HOST: a second, independent server beside pstest,
// closer to the service (its own flow control, redelivery and
// ack-deadline handling). Each broker gets a project of its own on it, so
// that the subtests do not see each other's topics.
func TestConformanceEmulator(t *testing.T) {
	host := os.Getenv("SKYJOIN_PUBSUB_EMULATOR_HOST")
	if host == "" {
		t.Skip("SKYJOIN_PUBSUB_EMULATOR_HOST is not set (scripts/test starts Google's Pub/Sub emulator when it is installed)")
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", host)
	open := func(t *testing.T, cfg Config) *Broker {
		b, err := Open(t.Context(), cfg, testLogger())
		if err != nil {
			t.Fatalf("Open on the emulator: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) broker.Broker {
			cfg := testConfig()
			cfg.Project = "skyjoin-" + strings.ToLower(rand.Text()[:12])
			return open(t, cfg)
		},
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			old := b.(*Broker)
			if err := old.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			return open(t, old.cfg)
		},
		AckWait:       2 * time.Second,
		Subscriptions: topicSubscriptions,
	})
}
