package pubsub

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skyjoin/skyjoin/internal/broker"
)

// enrichNeeds is what the worker uses.
var enrichNeeds = Needs{
	Publish:   []string{broker.TopicRecords, broker.TopicDeadLetter},
	Subscribe: []Sub{{broker.TopicEvents, "enrich"}},
}

func mustCreate(t *testing.T, srv *pstest.Server, topics []string, subs map[string]*pb.Subscription) {
	t.Helper()
	ctx := context.Background()
	for _, tp := range topics {
		if _, err := srv.GServer.CreateTopic(ctx, &pb.Topic{Name: "projects/" + testProject + "/topics/" + tp}); err != nil {
			t.Fatal(err)
		}
	}
	for id, s := range subs {
		s.Name = "projects/" + testProject + "/subscriptions/" + id
		if _, err := srv.GServer.CreateSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
}

func topicName(id string) string { return "projects/" + testProject + "/topics/" + id }

func TestCheckReportsEveryMissingResource(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "")
	srv := newServer(t)
	mustCreate(t, srv, []string{"skyjoin-events", "skyjoin-deadletter"}, nil)
	cfg := testConfig()
	cfg.Create = false
	b := openOn(t, srv, cfg)
	err := b.Check(t.Context(), enrichNeeds)
	if err == nil {
		t.Fatal("Check: nil error, want the missing resources")
	}
	for _, want := range []string{
		"topic projects/skyjoin-test/topics/skyjoin-records does not exist",
		"subscription projects/skyjoin-test/subscriptions/skyjoin-events-enrich does not exist",
		"dead-letter browse subscription projects/skyjoin-test/subscriptions/skyjoin-deadletter-browse does not exist (without it Pub/Sub drops every dead letter)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "topics/skyjoin-deadletter ") || strings.Contains(err.Error(), "topics/skyjoin-events ") {
		t.Errorf("Check reports a topic that exists:\n%v", err)
	}
}

func TestCheckAllPresent(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "")
	srv := newServer(t)
	mustCreate(t, srv, []string{"skyjoin-events", "skyjoin-deadletter", "skyjoin-records"}, map[string]*pb.Subscription{
		"skyjoin-events-enrich": {Topic: topicName("skyjoin-events"), DeadLetterPolicy: &pb.DeadLetterPolicy{
			DeadLetterTopic: topicName("skyjoin-deadletter"), MaxDeliveryAttempts: 10}},
		"skyjoin-deadletter-browse": {Topic: topicName("skyjoin-deadletter")},
		"skyjoin-records-deliver":   {Topic: topicName("skyjoin-records")},
	})
	cfg := testConfig()
	cfg.Create = false
	b := openOn(t, srv, cfg)
	for _, n := range []Needs{
		enrichNeeds,
		{Publish: []string{broker.TopicEvents}},
		{Subscribe: []Sub{{broker.TopicRecords, "deliver"}}},
		{Ephemeral: []string{broker.TopicRecords}, DeadLetters: true},
	} {
		if err := b.Check(t.Context(), n); err != nil {
			t.Errorf("Check(%+v): %v", n, err)
		}
	}
}

func TestCheckDeadLetterWiring(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "")
	srv := newServer(t)
	mustCreate(t, srv, []string{"skyjoin-events", "skyjoin-deadletter", "skyjoin-records", "other-dl"}, map[string]*pb.Subscription{
		"skyjoin-events-enrich": {Topic: topicName("skyjoin-events"), DeadLetterPolicy: &pb.DeadLetterPolicy{
			DeadLetterTopic: topicName("other-dl"), MaxDeliveryAttempts: 10}},
		"skyjoin-deadletter-browse": {Topic: topicName("skyjoin-deadletter")},
	})
	cfg := testConfig()
	cfg.Create = false
	b := openOn(t, srv, cfg)
	err := b.Check(t.Context(), enrichNeeds)
	want := "subscription projects/skyjoin-test/subscriptions/skyjoin-events-enrich forwards dead letters to projects/skyjoin-test/topics/other-dl, not projects/skyjoin-test/topics/skyjoin-deadletter"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Check: %v, want %q", err, want)
	}
}

// TestCheckPermissionDenied: a least-privilege account that may not read a
// topic is warned about, not stopped; a missing resource still is.
func TestCheckPermissionDenied(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "")
	srv := pstest.NewServer(pstest.WithErrorInjection("GetTopic", codes.PermissionDenied, "denied"))
	t.Cleanup(func() { srv.Close() })
	cfg := testConfig()
	cfg.Create = false
	b := openOn(t, srv, cfg)
	if err := b.Check(t.Context(), Needs{Publish: []string{broker.TopicEvents}}); err != nil {
		t.Errorf("Check with GetTopic denied: %v, want nil (a warning)", err)
	}
	err := b.Check(t.Context(), Needs{Subscribe: []Sub{{broker.TopicRecords, "deliver"}}})
	if err == nil || !strings.Contains(err.Error(), "skyjoin-records-deliver does not exist") {
		t.Errorf("Check: %v, want the missing subscription", err)
	}
}

func TestCheckCreateSkips(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "")
	b := openOn(t, newServer(t), testConfig())
	if err := b.Check(t.Context(), enrichNeeds); err != nil {
		t.Errorf("Check with create=true: %v", err)
	}
}

// fakeIAM answers TestIamPermissions as the service does: NotFound for a
// resource that does not exist, else the permissions granted.
type fakeIAM struct {
	iampb.UnimplementedIAMPolicyServer
	granted map[string][]string // resource -> permissions
}

func (f *fakeIAM) TestIamPermissions(_ context.Context, req *iampb.TestIamPermissionsRequest) (*iampb.TestIamPermissionsResponse, error) {
	g, ok := f.granted[req.Resource]
	if !ok {
		return nil, status.Error(codes.NotFound, "Resource not found")
	}
	var out []string
	for _, p := range req.Permissions {
		if slices.Contains(g, p) {
			out = append(out, p)
		}
	}
	return &iampb.TestIamPermissionsResponse{Permissions: out}, nil
}

func TestCheckIAMForbidden(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "")
	iam := &fakeIAM{granted: map[string][]string{
		topicName("skyjoin-records"):                                       {},
		topicName("skyjoin-deadletter"):                                    {"pubsub.topics.publish"},
		"projects/" + testProject + "/subscriptions/skyjoin-events-enrich": {"pubsub.subscriptions.consume"},
	}}
	srv := pstest.NewServerWithCallback(0, func(s *grpc.Server) { iampb.RegisterIAMPolicyServer(s, iam) })
	t.Cleanup(func() { srv.Close() })
	mustCreate(t, srv, []string{"skyjoin-events"}, map[string]*pb.Subscription{
		"skyjoin-events-enrich": {Topic: topicName("skyjoin-events")}})
	cfg := testConfig()
	cfg.Create = false
	b := openOn(t, srv, cfg)
	err := b.Check(t.Context(), enrichNeeds)
	if err == nil {
		t.Fatal("Check: nil")
	}
	for _, want := range []string{
		"topic projects/skyjoin-test/topics/skyjoin-records: the service account lacks pubsub.topics.publish (grant roles/pubsub.publisher on it)",
		"dead-letter browse subscription projects/skyjoin-test/subscriptions/skyjoin-deadletter-browse does not exist",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error lacks %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 2 {
		t.Errorf("Check reported %d problems, want 2:\n%v", n, err)
	}
}

func TestServiceAckDeadline(t *testing.T) {
	for _, c := range []struct {
		ackWait     time.Duration
		exactlyOnce bool
		want        time.Duration
	}{
		{0, false, 10 * time.Second},
		{30 * time.Second, false, 30 * time.Second},
		{30 * time.Second, true, 60 * time.Second},
		{90*time.Second + time.Millisecond, true, 90 * time.Second},
		{time.Hour, true, 600 * time.Second},
		{time.Hour, false, 600 * time.Second},
	} {
		if got := serviceAckDeadline(c.ackWait, c.exactlyOnce); got != c.want {
			t.Errorf("serviceAckDeadline(%v, %v) = %v, want %v", c.ackWait, c.exactlyOnce, got, c.want)
		}
	}
}
