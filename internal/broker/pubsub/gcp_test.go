package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/brokertest"
)

// TestConformanceGCP runs the conformance suite against real Pub/Sub in the
// project SKYJOIN_GCP_PROJECT (credentials: Application Default
// Credentials; roles/pubsub.editor). Every broker gets a unique prefix, and
// its topics and subscriptions are deleted afterwards. See docs/gcp.md.
//
//	SKYJOIN_GCP_PROJECT=my-project go test ./internal/broker/pubsub -run GCP -v
func TestConformanceGCP(t *testing.T) {
	project := os.Getenv("SKYJOIN_GCP_PROJECT")
	if project == "" {
		t.Skip("SKYJOIN_GCP_PROJECT is not set")
	}
	if os.Getenv("PUBSUB_EMULATOR_HOST") != "" {
		t.Log("PUBSUB_EMULATOR_HOST is set: running against the emulator")
	}
	open := func(t *testing.T, cfg Config) *Broker {
		t.Helper()
		b, err := Open(t.Context(), cfg, testLogger())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return b
	}
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) broker.Broker {
			cfg := Config{Project: project, Prefix: uniquePrefix(t), Create: true}
			t.Cleanup(func() { deleteAll(t, project, cfg.Prefix) })
			return open(t, cfg)
		},
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			old := b.(*Broker)
			if err := old.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			return open(t, old.cfg)
		},
		AckWait:       10 * time.Second,
		Timeout:       90 * time.Second,
		Subscriptions: topicSubscriptions,
	})
}

// uniquePrefix names one test's resources: skyjoin-test-<random>.
func uniquePrefix(t *testing.T) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	return "skyjoin-test-" + hex.EncodeToString(b[:])
}

// deleteAll deletes the subscriptions and topics of project whose ids start
// with prefix-.
func deleteAll(t *testing.T, project, prefix string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
	defer cancel()
	c, err := ps.NewClient(ctx, project)
	if err != nil {
		t.Errorf("cleanup: client: %v", err)
		return
	}
	defer c.Close()
	mine := func(name string) bool {
		return strings.HasPrefix(name[strings.LastIndex(name, "/")+1:], prefix+"-")
	}
	for s, err := range c.SubscriptionAdminClient.ListSubscriptions(ctx, &pb.ListSubscriptionsRequest{Project: "projects/" + project}).All() {
		if err != nil {
			t.Errorf("cleanup: list subscriptions: %v", err)
			break
		}
		if mine(s.GetName()) {
			if err := c.SubscriptionAdminClient.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Subscription: s.GetName()}); err != nil {
				t.Errorf("cleanup: delete %s: %v", s.GetName(), err)
			}
		}
	}
	for tp, err := range c.TopicAdminClient.ListTopics(ctx, &pb.ListTopicsRequest{Project: "projects/" + project}).All() {
		if err != nil {
			t.Errorf("cleanup: list topics: %v", err)
			break
		}
		if mine(tp.GetName()) {
			if err := c.TopicAdminClient.DeleteTopic(ctx, &pb.DeleteTopicRequest{Topic: tp.GetName()}); err != nil {
				t.Errorf("cleanup: delete %s: %v", tp.GetName(), err)
			}
		}
	}
}
