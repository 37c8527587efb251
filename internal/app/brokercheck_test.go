package app

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
)

// TestRequireBrokerPubSub: with create=false a stage does not start while
// what it uses is missing, and the error names each missing resource.
func TestRequireBrokerPubSub(t *testing.T) {
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	cfg := &config{Broker: "pubsub://local?prefix=sj"}
	cfg.EnrichPull = true
	newP := func() *process {
		p := &process{ctx: t.Context(), cfg: cfg, log: slog.New(slog.DiscardHandler), dataDir: t.TempDir()}
		t.Cleanup(func() { p.close(context.Background()) })
		return p
	}
	_, err := newP().requireBroker(cfg.enrichNeeds())
	if err == nil {
		t.Fatal("requireBroker: nil error with nothing created")
	}
	for _, want := range []string{"projects/local/topics/sj-records", "projects/local/topics/sj-deadletter",
		"projects/local/subscriptions/sj-events-enrich", "projects/local/subscriptions/sj-deadletter-browse"} {
		if !strings.Contains(err.Error(), want+" does not exist") {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
	// Ingest serves the dead-letter routes: it needs the browse subscription.
	_, err = newP().requireBroker(ingestNeeds())
	for _, want := range []string{"projects/local/topics/sj-events", "projects/local/subscriptions/sj-deadletter-browse"} {
		if err == nil || !strings.Contains(err.Error(), want+" does not exist") {
			t.Errorf("ingest: error lacks %s:\n%v", want, err)
		}
	}
	ctx := context.Background()
	for _, id := range []string{"sj-events", "sj-records", "sj-deadletter"} {
		if _, err := srv.GServer.CreateTopic(ctx, &pb.Topic{Name: "projects/local/topics/" + id}); err != nil {
			t.Fatal(err)
		}
	}
	for id, topic := range map[string]string{"sj-events-enrich": "sj-events", "sj-deadletter-browse": "sj-deadletter"} {
		if _, err := srv.GServer.CreateSubscription(ctx, &pb.Subscription{Name: "projects/local/subscriptions/" + id,
			Topic: "projects/local/topics/" + topic}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := newP().requireBroker(cfg.enrichNeeds()); err != nil {
		t.Errorf("requireBroker with everything created: %v", err)
	}
	if _, err := newP().requireBroker(ingestNeeds()); err != nil {
		t.Errorf("ingest: requireBroker with everything created: %v", err)
	}
}
