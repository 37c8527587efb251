package pubsub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/skyjoin/skyjoin/internal/broker"
)

const (
	// browsePullWait bounds one Pull of Browse and Delete: an empty or
	// timed-out Pull ends the listing.
	browsePullWait = 3 * time.Second
	// releaseTimeout bounds handing the read messages back.
	releaseTimeout = 10 * time.Second
	maxPullBatch   = 1000
)

// Browse calls fn for each message kept on the dead-letter topic, oldest
// first, without consuming it. It pulls every message of the topic's browse
// subscription (up to BrowseLimit), hands them back at once (modack 0) and
// then calls fn: fn may call Delete.
func (b *Broker) Browse(ctx context.Context, topic string, fn func(*broker.Message) bool) error {
	op := "browse " + topic
	if err := b.errIfClosed(); err != nil {
		return b.fail(op, err)
	}
	if topic != broker.TopicDeadLetter {
		return fmt.Errorf("pubsub: %s: only the %s topic can be browsed", op, broker.TopicDeadLetter)
	}
	if err := b.ensureTopic(ctx, topic); err != nil {
		return b.fail(op, err)
	}
	msgs, err := b.pullAll(ctx, topic, nil)
	if err != nil {
		return b.fail(op, err)
	}
	for _, rm := range msgs {
		pm := rm.GetMessage()
		m := &broker.Message{
			ID:          pm.GetMessageId(),
			Data:        pm.GetData(),
			Attributes:  pm.GetAttributes(),
			Deliveries:  1,
			PublishedAt: pm.GetPublishTime().AsTime(),
		}
		if !fn(m) {
			return nil
		}
	}
	return nil
}

// Delete removes one message of the dead-letter topic by ID: it pulls until
// it finds the message, acks it and hands the others back. Deleting a message
// that is not there is not an error.
func (b *Broker) Delete(ctx context.Context, topic, id string) error {
	op := fmt.Sprintf("delete %s from %s", id, topic)
	if err := b.errIfClosed(); err != nil {
		return b.fail(op, err)
	}
	if topic != broker.TopicDeadLetter {
		return fmt.Errorf("pubsub: %s: only the %s topic supports Delete", op, broker.TopicDeadLetter)
	}
	if id == "" {
		return fmt.Errorf("pubsub: %s: %w: empty", op, broker.ErrInvalidID)
	}
	if err := b.ensureTopic(ctx, topic); err != nil {
		return b.fail(op, err)
	}
	if _, err := b.pullAll(ctx, topic, func(rm *pb.ReceivedMessage) bool {
		return rm.GetMessage().GetMessageId() == id
	}); err != nil {
		return b.fail(op, err)
	}
	return nil
}

// pullAll pulls the messages of topic's browse subscription, until a Pull
// comes back empty, BrowseLimit is reached or take returns true for one.
// Messages take picked are acked; all others are handed back before pullAll
// returns. It returns the distinct messages pulled, oldest first.
func (b *Broker) pullAll(ctx context.Context, topic string, take func(*pb.ReceivedMessage) bool) ([]*pb.ReceivedMessage, error) {
	sub := b.subscriptionPath(topic, browseSubscription)
	subc := b.client.SubscriptionAdminClient
	byID := make(map[string]*pb.ReceivedMessage)
	var release, ack []string // ack ids

	// Hand back what was read, even if ctx is done.
	defer func() {
		if len(release) == 0 {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		for batch := range slices.Chunk(release, maxPullBatch) {
			if err := subc.ModifyAckDeadline(rctx, &pb.ModifyAckDeadlineRequest{
				Subscription: sub, AckIds: batch, AckDeadlineSeconds: 0,
			}); err != nil {
				// They come back when their lease ends.
				b.log.Warn("pubsub: browse: hand back failed", "subscription", sub, "messages", len(batch), "error", err)
			}
		}
	}()

	found := false
	for !found && len(byID) < b.cfg.BrowseLimit {
		pctx, cancel := context.WithTimeout(ctx, browsePullWait)
		resp, err := subc.Pull(pctx, &pb.PullRequest{
			Subscription: sub,
			MaxMessages:  int32(min(maxPullBatch, b.cfg.BrowseLimit-len(byID))),
		})
		cancel()
		if err != nil {
			if ctx.Err() == nil && unavailable(err) && errors.Is(pctx.Err(), context.DeadlineExceeded) {
				break // nothing came within browsePullWait
			}
			return nil, fmt.Errorf("pull %s: %w", sub, err)
		}
		got := resp.GetReceivedMessages()
		if len(got) == 0 {
			break
		}
		for _, rm := range got {
			if take != nil && take(rm) {
				ack = append(ack, rm.GetAckId())
				found = true
				continue
			}
			release = append(release, rm.GetAckId())
			if _, dup := byID[rm.GetMessage().GetMessageId()]; !dup {
				byID[rm.GetMessage().GetMessageId()] = rm
			}
		}
	}
	if len(ack) > 0 {
		if err := subc.Acknowledge(ctx, &pb.AcknowledgeRequest{Subscription: sub, AckIds: ack}); err != nil {
			return nil, fmt.Errorf("acknowledge on %s: %w", sub, err)
		}
	}
	msgs := make([]*pb.ReceivedMessage, 0, len(byID))
	for _, rm := range byID {
		msgs = append(msgs, rm)
	}
	slices.SortFunc(msgs, func(x, y *pb.ReceivedMessage) int {
		if c := x.GetMessage().GetPublishTime().AsTime().Compare(y.GetMessage().GetPublishTime().AsTime()); c != 0 {
			return c
		}
		return compareIDs(x.GetMessage().GetMessageId(), y.GetMessage().GetMessageId())
	})
	return msgs, nil
}

// compareIDs orders message ids of equal publish time: numeric ids (the
// service's) by value, then lexically.
func compareIDs(a, b string) int {
	if c := cmp.Compare(len(a), len(b)); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}
