package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"cloud.google.com/go/iam/apiv1/iampb"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/platform/iam"
)

// Needs is what one process uses of the broker, for Check.
type Needs struct {
	// Publish lists the topics the process publishes to. Publishing to
	// the dead-letter topic also needs its browse subscription, without
	// which Pub/Sub drops the dead letters.
	Publish []string
	// Subscribe lists the durable subscriptions the process pulls.
	Subscribe []Sub
	// Ephemeral lists the topics the process makes ephemeral
	// subscriptions of (created whatever Config.Create says).
	Ephemeral []string
	// DeadLetters: the process browses and deletes dead letters.
	DeadLetters bool
}

// Sub names a durable subscription: Name on Topic.
type Sub struct{ Topic, Name string }

// EphemeralRole is the custom role a process that makes ephemeral
// subscriptions holds on the project: their ids are not known in advance,
// so it creates, pulls and deletes subscriptions project-wide
// (roles/pubsub.editor would also let it delete topics).
const EphemeralRole = iam.CustomPrefix + "skyjoinEphemeralSubscriptions"

// EphemeralPermissions are the permissions of EphemeralRole: Subscribe
// with Ephemeral creates the subscription, StreamingPull consumes it, and
// Close deletes it. Attaching it to the topic needs
// pubsub.topics.attachSubscription on the topic (roles/pubsub.subscriber).
var EphemeralPermissions = []string{
	"pubsub.subscriptions.consume",
	"pubsub.subscriptions.create",
	"pubsub.subscriptions.delete",
}

// Grants are the IAM grants a process needs for what n names, with
// Config.Create off (with Create it needs roles/pubsub.editor on the
// project): roles/pubsub.publisher on each topic it publishes to,
// roles/pubsub.subscriber on each subscription it pulls, and for ephemeral
// subscriptions EphemeralRole on the project and roles/pubsub.subscriber
// on the topic; browsing and deleting dead letters pulls and acks the
// browse subscription. Check needs nothing more: TestIamPermissions needs
// no permission, and the reads it falls back to are optional.
func (n Needs) Grants() []iam.Grant {
	var gs []iam.Grant
	for _, t := range n.Publish {
		gs = append(gs, iam.Grant{Role: "roles/pubsub.publisher", On: iam.Topic(t)})
	}
	for _, s := range n.Subscribe {
		gs = append(gs, iam.Grant{Role: "roles/pubsub.subscriber", On: iam.Subscription(s.Topic + "-" + s.Name)})
	}
	for _, t := range n.Ephemeral {
		gs = append(gs, iam.Grant{Role: "roles/pubsub.subscriber", On: iam.Topic(t)},
			iam.Grant{Role: EphemeralRole, On: iam.Project})
	}
	if n.DeadLetters {
		gs = append(gs, iam.Grant{Role: "roles/pubsub.subscriber", On: iam.Subscription(broker.TopicDeadLetter + "-" + browseSubscription)})
	}
	return iam.Union(gs)
}

// Check verifies, when Config.Create is off, that what n names exists and
// that this process may use it, and returns every problem in one error,
// each resource by its full name. With Create it does nothing: the broker
// creates what is missing on first use.
//
// For each resource it asks TestIamPermissions, which any caller may ask
// and which tells a missing resource (NotFound) from a forbidden one (a
// permission not granted). Where the server does not implement it (the
// emulators), it reads the resource (GetTopic, GetSubscription) instead; a
// PermissionDenied there is a warning, not an error: a least-privilege
// account need not have the .get permissions, and the first publish or
// pull reports a real lack of rights anyway.
//
// The dead-letter wiring: publishing to or browsing the dead-letter topic
// needs its browse subscription, and a dead-letter policy on a pulled
// subscription of events must forward to PREFIX-deadletter. Reading the
// policy needs pubsub.subscriptions.get (roles/pubsub.viewer); without it
// Check warns that it cannot tell.
func (b *Broker) Check(ctx context.Context, n Needs) error {
	if b.cfg.Create {
		return nil
	}
	c := &checker{b: b, ctx: ctx}
	topics := map[string][]string{}
	addTopic := func(t string, perms ...string) {
		if _, ok := topics[t]; !ok {
			topics[t] = nil
		}
		for _, p := range perms {
			if !slices.Contains(topics[t], p) {
				topics[t] = append(topics[t], p)
			}
		}
	}
	for _, t := range n.Publish {
		addTopic(t, "pubsub.topics.publish")
	}
	for _, t := range n.Ephemeral {
		addTopic(t, "pubsub.topics.attachSubscription")
	}
	browse := n.DeadLetters || slices.Contains(n.Publish, broker.TopicDeadLetter)
	for _, t := range slices.Sorted(maps.Keys(topics)) {
		if !topicRE.MatchString(t) {
			c.problem(fmt.Errorf("invalid topic %q: want 1-64 of [a-z0-9_-]", t))
			continue
		}
		c.resource("topic", b.topicPath(t), topics[t], roleFor(topics[t]))
	}
	for _, s := range n.Subscribe {
		path := b.subscriptionPath(s.Topic, s.Name)
		if c.resource("subscription", path, []string{"pubsub.subscriptions.consume"}, "roles/pubsub.subscriber") {
			c.wiring(s, path)
		}
	}
	if browse {
		path := b.subscriptionPath(broker.TopicDeadLetter, browseSubscription)
		perms, role := []string{"pubsub.subscriptions.get"}, "" // existence only
		if n.DeadLetters {
			perms, role = []string{"pubsub.subscriptions.consume"}, "roles/pubsub.subscriber"
		}
		if !c.resource("dead-letter browse subscription", path, perms, role) && c.lastMissing {
			c.errs[len(c.errs)-1] = fmt.Errorf("%w (without it Pub/Sub drops every dead letter)", c.errs[len(c.errs)-1])
		}
	}
	if len(c.errs) > 0 {
		return fmt.Errorf("pubsub: check (create=false: create them with Terraform or gcloud, or give create=true): %w", errors.Join(c.errs...))
	}
	return nil
}

// roleFor is the predefined role that grants perms on a topic.
func roleFor(perms []string) string {
	if slices.Contains(perms, "pubsub.topics.attachSubscription") && !slices.Contains(perms, "pubsub.topics.publish") {
		return "roles/pubsub.subscriber"
	}
	if len(perms) > 1 {
		return "roles/pubsub.publisher and roles/pubsub.subscriber"
	}
	return "roles/pubsub.publisher"
}

type checker struct {
	b           *Broker
	ctx         context.Context
	errs        []error
	lastMissing bool
}

func (c *checker) problem(err error) { c.errs = append(c.errs, err) }

func (c *checker) warn(msg string, path string) {
	c.b.log.Warn("pubsub: "+msg, slog.String("resource", path))
}

// resource checks that the resource path (a topic or subscription) exists
// and that the caller holds perms on it; role names what grants them ("":
// only existence matters). It reports whether the resource exists as far
// as it could tell.
func (c *checker) resource(kind, path string, perms []string, role string) bool {
	c.lastMissing = false
	req := &iampb.TestIamPermissionsRequest{Resource: path, Permissions: perms}
	var resp *iampb.TestIamPermissionsResponse
	var err error
	if kind == "topic" {
		resp, err = c.b.client.TopicAdminClient.TestIamPermissions(c.ctx, req)
	} else {
		resp, err = c.b.client.SubscriptionAdminClient.TestIamPermissions(c.ctx, req)
	}
	switch status.Code(err) {
	case codes.OK:
		if role == "" {
			return true
		}
		var lacks []string
		for _, p := range perms {
			if !slices.Contains(resp.GetPermissions(), p) {
				lacks = append(lacks, p)
			}
		}
		if len(lacks) > 0 {
			c.problem(fmt.Errorf("%s %s: the service account lacks %s (grant %s on it)", kind, path, strings.Join(lacks, ", "), role))
		}
		return true
	case codes.NotFound:
		c.missing(kind, path)
		return false
	case codes.Unimplemented, codes.PermissionDenied:
		// The emulators have no IAM: read the resource instead.
	default:
		c.problem(fmt.Errorf("cannot check %s %s: %w", kind, path, classify(err)))
		return true
	}
	getPerm := "pubsub.topics.get"
	if kind == "topic" {
		_, err = c.b.client.TopicAdminClient.GetTopic(c.ctx, &pb.GetTopicRequest{Topic: path})
	} else {
		getPerm = "pubsub.subscriptions.get"
		_, err = c.b.client.SubscriptionAdminClient.GetSubscription(c.ctx, &pb.GetSubscriptionRequest{Subscription: path})
	}
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		c.missing(kind, path)
		return false
	case codes.PermissionDenied:
		c.warn(fmt.Sprintf("cannot check %s %s: the service account lacks %s; it needs %s, and %s (or roles/pubsub.viewer) to let this check run",
			kind, path, getPerm, strings.Join(perms, ", "), getPerm), path)
	default:
		c.problem(fmt.Errorf("cannot check %s %s: %w", kind, path, classify(err)))
	}
	return true
}

func (c *checker) missing(kind, path string) {
	c.problem(fmt.Errorf("%s %s does not exist", kind, path))
	c.lastMissing = true
}

// wiring checks the pulled subscription s (at path, which exists): it is
// attached to its topic, and a dead-letter policy forwards to
// PREFIX-deadletter.
func (c *checker) wiring(s Sub, path string) {
	sub, err := c.b.client.SubscriptionAdminClient.GetSubscription(c.ctx, &pb.GetSubscriptionRequest{Subscription: path})
	switch status.Code(err) {
	case codes.OK:
	case codes.PermissionDenied:
		if s.Topic == broker.TopicEvents {
			c.warn("cannot check the topic and dead-letter policy of subscription "+path+
				": the service account lacks pubsub.subscriptions.get (grant roles/pubsub.viewer on it to let this check run)", path)
		}
		return
	case codes.NotFound:
		c.missing("subscription", path)
		return
	default:
		c.problem(fmt.Errorf("cannot check subscription %s: %w", path, classify(err)))
		return
	}
	if want := c.b.topicPath(s.Topic); sub.GetTopic() != want {
		c.problem(fmt.Errorf("subscription %s is attached to %s, not %s", path, sub.GetTopic(), want))
	}
	dl := sub.GetDeadLetterPolicy().GetDeadLetterTopic()
	if dl == "" {
		return
	}
	if want := c.b.topicPath(broker.TopicDeadLetter); dl != want {
		c.problem(fmt.Errorf("subscription %s forwards dead letters to %s, not %s (skyjoin browses and replays only the latter)", path, dl, want))
	}
}
