// Package brokertest is the conformance suite every broker backend runs:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Harness{New: newBroker, Reopen: reopen})
//	}
//
// The suite keeps message counts small (it also runs against pstest) and its
// waits are generous but bounded; it asserts no timings beyond "arrives
// within Harness.Timeout". Every test subscribes before it publishes, as
// Pub/Sub only keeps messages for subscriptions that exist.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
)

// Harness tells the suite how to get brokers of one backend.
type Harness struct {
	// New returns a fresh, empty broker. The harness closes it at the end
	// of the test (t.Cleanup); the suite may close it earlier, so Close
	// must be idempotent.
	New func(t *testing.T) broker.Broker
	// Reopen, if not nil, closes b and returns a broker on the same durable
	// state (data dir, project), as after a restart. Nil skips the
	// durability tests.
	Reopen func(t *testing.T, b broker.Broker) broker.Broker
	// AckWait is the ack deadline used by the redelivery tests; zero means
	// 1 s. Use the shortest the backend honours (Pub/Sub: 10 s).
	AckWait time.Duration
	// Timeout bounds every "arrives within" wait; zero means 30 s.
	Timeout time.Duration
	// Subscriptions, if not nil, returns the names of the subscriptions
	// (JetStream consumers, Pub/Sub subscription ids) that exist on topic
	// in the broker, so that the suite can check that an ephemeral
	// subscription goes away on Close. Nil skips that check.
	Subscriptions func(t *testing.T, b broker.Broker, topic string) []string
}

// Topic and subscription names used by the suite.
const (
	topic   = broker.TopicEvents
	subName = "conformance"
)

// Run runs the conformance suite, one fresh broker per subtest. Backlog and
// Browse/Delete are tested when the broker implements broker.Backlogger and
// broker.Browser; durability across a restart when h.Reopen is set; the
// removal of ephemeral subscriptions when h.Subscriptions is set.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("brokertest: Harness.New is nil")
	}
	if h.AckWait == 0 {
		h.AckWait = time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = 30 * time.Second
	}
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"PublishFetchAck", testPublishFetchAck},
		{"PublishNothing", testPublishNothing},
		{"FetchEmptyOnTimeout", testFetchEmptyOnTimeout},
		{"AckedNotRedelivered", testAckedNotRedelivered},
		{"NackRedelivers", testNackRedelivers},
		{"NackWithDelayRedelivers", testNackWithDelayRedelivers},
		{"UnackedRedeliveredAfterAckWait", testUnackedRedelivered},
		{"SharedSubscription", testSharedSubscription},
		{"LargeMessage", testLargeMessage},
		{"ConcurrentPublish", testConcurrentPublish},
		{"Closed", testClosed},
		{"DurableAcrossReopen", testDurableAcrossReopen},
		{"Backlog", testBacklog},
		{"BrowseDelete", testBrowseDelete},
		{"RecordsWithoutSubscribers", testRecordsWithoutSubscribers},
		{"FanOutDurable", testFanOutDurable},
		{"FanOutEphemeral", testFanOutEphemeral},
		{"EphemeralRemovedOnClose", testEphemeralRemovedOnClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &suite{h: h, b: h.New(t)}
			tc.fn(t, s)
		})
	}
}

type suite struct {
	h Harness
	b broker.Broker
}

// ctx is a context bounded by the suite's timeout.
func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), s.h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) subscribe(t *testing.T, b broker.Broker, topic, name string) broker.Subscription {
	t.Helper()
	return s.subscribeWith(t, b, topic, name, broker.SubscribeOptions{AckWait: s.h.AckWait})
}

func (s *suite) subscribeWith(t *testing.T, b broker.Broker, topic, name string, opts broker.SubscribeOptions) broker.Subscription {
	t.Helper()
	sub, err := b.Subscribe(s.ctx(t), topic, name, opts)
	if err != nil {
		t.Fatalf("Subscribe(%s, %s, %+v): %v", topic, name, opts, err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func (s *suite) publish(t *testing.T, b broker.Broker, topic string, msgs ...*broker.Message) {
	t.Helper()
	if err := b.Publish(s.ctx(t), topic, msgs...); err != nil {
		t.Fatalf("Publish(%s, %d messages): %v", topic, len(msgs), err)
	}
}

// fetchN fetches until it has n messages or the timeout passes, acking
// each batch when ack is set.
func (s *suite) fetchN(t *testing.T, sub broker.Subscription, n int, ack bool) []*broker.Message {
	t.Helper()
	ctx := s.ctx(t)
	start := time.Now()
	var got []*broker.Message
	for len(got) < n {
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d messages within %v", len(got), n, s.h.Timeout)
		}
		msgs, err := sub.Fetch(ctx, n-len(got), time.Second)
		if err != nil {
			t.Fatalf("Fetch after %d of %d messages: %v", len(got), n, err)
		}
		if ack && len(msgs) > 0 {
			// The Ack has a deadline of its own: a message that came back
			// late (after a service's ack deadline) may leave fetchN's
			// little time, and the Ack is not what was waited for.
			fetched := time.Since(start)
			if err := sub.Ack(s.ctx(t), msgs...); err != nil {
				t.Fatalf("Ack(%d messages), %d of %d fetched %v after the first Fetch: %v",
					len(msgs), len(got)+len(msgs), n, fetched.Round(time.Millisecond), err)
			}
		}
		got = append(got, msgs...)
	}
	return got
}

// expectNone fetches for wait and fails on any message.
func (s *suite) expectNone(t *testing.T, sub broker.Subscription, wait time.Duration) {
	t.Helper()
	msgs, err := sub.Fetch(s.ctx(t), 100, wait)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if len(msgs) > 0 {
		t.Fatalf("Fetch returned %d messages, want none; first: %s", len(msgs), describe(msgs[0]))
	}
}

func describe(m *broker.Message) string {
	d := m.Data
	if len(d) > 40 {
		d = d[:40]
	}
	return fmt.Sprintf("id=%s deliveries=%d data=%q attrs=%v", m.ID, m.Deliveries, d, m.Attributes)
}

// testMessages returns n messages with distinct data, IDs and attributes.
func testMessages(prefix string, n int) []*broker.Message {
	msgs := make([]*broker.Message, n)
	for i := range msgs {
		msgs[i] = &broker.Message{
			ID:   fmt.Sprintf("%s-%d", prefix, i),
			Data: fmt.Appendf(nil, "%s payload %04d", prefix, i),
			Attributes: map[string]string{
				"kind":  "test",
				"index": fmt.Sprint(i),
			},
		}
	}
	return msgs
}

// byData indexes messages by their data, failing on duplicates.
func byData(t *testing.T, msgs []*broker.Message) map[string]*broker.Message {
	t.Helper()
	m := make(map[string]*broker.Message, len(msgs))
	for _, msg := range msgs {
		if prev, ok := m[string(msg.Data)]; ok {
			t.Fatalf("message delivered twice: %s and %s", describe(prev), describe(msg))
		}
		m[string(msg.Data)] = msg
	}
	return m
}

// checkSame checks that got holds exactly the data and attributes of want.
func checkSame(t *testing.T, got, want []*broker.Message) {
	t.Helper()
	g := byData(t, got)
	if len(g) != len(want) {
		t.Errorf("got %d messages, want %d", len(g), len(want))
	}
	for _, w := range want {
		m, ok := g[string(w.Data)]
		if !ok {
			t.Errorf("message %q missing", w.Data)
			continue
		}
		if !maps.Equal(m.Attributes, w.Attributes) {
			t.Errorf("message %q: attributes %v, want %v", w.Data, m.Attributes, w.Attributes)
		}
	}
}

func testPublishFetchAck(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	want := testMessages("pfa", 50)
	start := time.Now()
	s.publish(t, s.b, topic, want...)
	got := s.fetchN(t, sub, len(want), true)
	checkSame(t, got, want)
	ids := map[string]bool{}
	for _, m := range got {
		if m.ID == "" {
			t.Errorf("message %q has no ID", m.Data)
		}
		if ids[m.ID] {
			t.Errorf("ID %s given to two messages", m.ID)
		}
		ids[m.ID] = true
		if m.Deliveries != 1 {
			t.Errorf("message %q: Deliveries = %d on first delivery, want 1", m.Data, m.Deliveries)
		}
		if !m.PublishedAt.IsZero() && (m.PublishedAt.Before(start.Add(-time.Hour)) || m.PublishedAt.After(time.Now().Add(time.Hour))) {
			t.Errorf("message %q: PublishedAt %v far from now", m.Data, m.PublishedAt)
		}
	}
	s.expectNone(t, sub, 500*time.Millisecond)
}

func testPublishNothing(t *testing.T, s *suite) {
	if err := s.b.Publish(s.ctx(t), topic); err != nil {
		t.Fatalf("Publish of no messages: %v", err)
	}
}

func testFetchEmptyOnTimeout(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	msgs, err := sub.Fetch(s.ctx(t), 10, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("Fetch on an empty topic: %v, want nil", err)
	}
	if len(msgs) != 0 {
		t.Fatalf("Fetch on an empty topic returned %d messages", len(msgs))
	}
}

func testAckedNotRedelivered(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	s.publish(t, s.b, topic, testMessages("ack", 5)...)
	s.fetchN(t, sub, 5, true)
	time.Sleep(s.h.AckWait + s.h.AckWait/2)
	s.expectNone(t, sub, s.h.AckWait)
}

func testNackRedelivers(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	s.publish(t, s.b, topic, testMessages("nack", 1)...)
	first := s.fetchN(t, sub, 1, false)[0]
	if err := sub.Nack(s.ctx(t), 0, first); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	again := s.fetchN(t, sub, 1, true)[0]
	checkRedelivery(t, first, again)
	s.expectNone(t, sub, 500*time.Millisecond)
}

func testNackWithDelayRedelivers(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	s.publish(t, s.b, topic, testMessages("nackdelay", 1)...)
	first := s.fetchN(t, sub, 1, false)[0]
	if err := sub.Nack(s.ctx(t), 500*time.Millisecond, first); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	again := s.fetchN(t, sub, 1, true)[0]
	checkRedelivery(t, first, again)
}

func checkRedelivery(t *testing.T, first, again *broker.Message) {
	t.Helper()
	if !bytes.Equal(first.Data, again.Data) || again.ID != first.ID {
		t.Fatalf("redelivered %s, want the same message as %s", describe(again), describe(first))
	}
	if again.Deliveries <= first.Deliveries {
		t.Errorf("redelivery has Deliveries %d, want more than %d", again.Deliveries, first.Deliveries)
	}
	if !maps.Equal(first.Attributes, again.Attributes) {
		t.Errorf("redelivery attributes %v, want %v", again.Attributes, first.Attributes)
	}
}

func testUnackedRedelivered(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	s.publish(t, s.b, topic, testMessages("unacked", 3)...)
	first := s.fetchN(t, sub, 3, false)
	again := s.fetchN(t, sub, 3, true) // arrives once AckWait has passed
	g := byData(t, again)
	for _, f := range first {
		a, ok := g[string(f.Data)]
		if !ok {
			t.Fatalf("message %q not redelivered; got %d others", f.Data, len(again))
		}
		checkRedelivery(t, f, a)
	}
}

func testSharedSubscription(t *testing.T, s *suite) {
	subs := []broker.Subscription{s.subscribe(t, s.b, topic, subName), s.subscribe(t, s.b, topic, subName)}
	want := testMessages("shared", 100)
	s.publish(t, s.b, topic, want...)

	ctx := s.ctx(t)
	var (
		mu  sync.Mutex
		got []*broker.Message
		wg  sync.WaitGroup
	)
	errs := make(chan error, len(subs))
	for _, sb := range subs {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				done := len(got) >= len(want)
				mu.Unlock()
				if done {
					return
				}
				msgs, err := sb.Fetch(ctx, 10, 500*time.Millisecond)
				if err == nil && len(msgs) > 0 {
					err = sb.Ack(ctx, msgs...)
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				got = append(got, msgs...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Fetch/Ack: %v", err)
	}
	checkSame(t, got, want)
	s.expectNone(t, subs[0], 500*time.Millisecond)
}

func testLargeMessage(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	data := make([]byte, 1<<20)
	rand.Read(data)
	s.publish(t, s.b, topic, &broker.Message{Data: data, Attributes: map[string]string{"size": "1MiB"}})
	got := s.fetchN(t, sub, 1, true)[0]
	if !bytes.Equal(got.Data, data) {
		t.Fatalf("1 MiB message came back with %d bytes, different", len(got.Data))
	}
	if got.Attributes["size"] != "1MiB" {
		t.Errorf("attributes %v", got.Attributes)
	}
}

func testConcurrentPublish(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	const goroutines, batches, perBatch = 8, 5, 10
	var want []*broker.Message
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*batches)
	for g := range goroutines {
		msgs := testMessages(fmt.Sprintf("g%d", g), batches*perBatch)
		want = append(want, msgs...)
		wg.Go(func() {
			for batch := range slices.Chunk(msgs, perBatch) {
				if err := s.b.Publish(s.ctx(t), topic, batch...); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Publish: %v", err)
	}
	got := s.fetchN(t, sub, len(want), true)
	checkSame(t, got, want)
	s.expectNone(t, sub, 500*time.Millisecond)
}

func testClosed(t *testing.T, s *suite) {
	sub := s.subscribe(t, s.b, topic, subName)
	s.publish(t, s.b, topic, testMessages("closed", 1)...)

	// A closed subscription fails; the broker goes on.
	other := s.subscribe(t, s.b, topic, subName)
	if err := other.Close(); err != nil {
		t.Fatalf("Subscription.Close: %v", err)
	}
	if _, err := other.Fetch(s.ctx(t), 1, 100*time.Millisecond); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Fetch on a closed subscription: %v, want ErrClosed", err)
	}

	if err := s.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.b.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if err := s.b.Publish(s.ctx(t), topic, testMessages("after", 1)...); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := sub.Fetch(s.ctx(t), 1, 100*time.Millisecond); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Fetch after Close: %v, want ErrClosed", err)
	}
	if _, err := s.b.Subscribe(s.ctx(t), topic, subName, broker.SubscribeOptions{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

func testDurableAcrossReopen(t *testing.T, s *suite) {
	if s.h.Reopen == nil {
		t.Skip("Harness.Reopen is nil")
	}
	sub1 := s.subscribe(t, s.b, topic, subName)
	msgs := testMessages("durable", 20)
	s.publish(t, s.b, topic, msgs...)
	fetched := s.fetchN(t, sub1, 15, false)
	acked := fetched[:10]
	if err := sub1.Ack(s.ctx(t), acked...); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	ackedData := map[string]bool{}
	for _, m := range acked {
		ackedData[string(m.Data)] = true
	}
	var want []*broker.Message // 5 fetched and not acked, 5 never fetched
	for _, m := range msgs {
		if !ackedData[string(m.Data)] {
			want = append(want, m)
		}
	}

	b2 := s.h.Reopen(t, s.b)
	sub2 := s.subscribe(t, b2, topic, subName)
	got := s.fetchN(t, sub2, len(want), true)
	for _, m := range got {
		if ackedData[string(m.Data)] {
			t.Errorf("acked message came back after reopen: %s", describe(m))
		}
	}
	checkSame(t, got, want)
	s.expectNone(t, sub2, s.h.AckWait)
}

func testBacklog(t *testing.T, s *suite) {
	bl, ok := s.b.(broker.Backlogger)
	if !ok {
		t.Skip("broker does not implement broker.Backlogger")
	}
	sub := s.subscribe(t, s.b, topic, subName)
	s.publish(t, s.b, topic, testMessages("backlog", 10)...)
	s.waitBacklog(t, bl, 10)
	s.fetchN(t, sub, 4, true)
	s.waitBacklog(t, bl, 6)
	s.fetchN(t, sub, 6, true)
	s.waitBacklog(t, bl, 0)
}

// waitBacklog polls Backlog until it reports want (backends may report
// with a delay).
func (s *suite) waitBacklog(t *testing.T, bl broker.Backlogger, want int64) {
	t.Helper()
	ctx := s.ctx(t)
	var n int64
	var err error
	for ctx.Err() == nil {
		if n, err = bl.Backlog(ctx, topic, subName); err == nil && n == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("Backlog = %d, %v; want %d within %v", n, err, want, s.h.Timeout)
}

func testBrowseDelete(t *testing.T, s *suite) {
	br, ok := s.b.(broker.Browser)
	if !ok {
		t.Skip("broker does not implement broker.Browser")
	}
	const dl = broker.TopicDeadLetter
	s.subscribe(t, s.b, dl, "replay") // some backends keep messages only for subscriptions
	want := testMessages("dead", 5)
	for _, m := range want { // one by one, so that the order is defined
		s.publish(t, s.b, dl, m)
	}

	browse := func(limit int) []*broker.Message {
		t.Helper()
		var got []*broker.Message
		err := br.Browse(s.ctx(t), dl, func(m *broker.Message) bool {
			got = append(got, m)
			return limit <= 0 || len(got) < limit
		})
		if err != nil {
			t.Fatalf("Browse: %v", err)
		}
		return got
	}
	dataOf := func(msgs []*broker.Message) []string {
		var d []string
		for _, m := range msgs {
			d = append(d, string(m.Data))
		}
		return d
	}

	all := browse(0)
	if !slices.Equal(dataOf(all), dataOf(want)) {
		t.Fatalf("Browse returned %q, want %q oldest first", dataOf(all), dataOf(want))
	}
	for i, m := range all {
		if !maps.Equal(m.Attributes, want[i].Attributes) {
			t.Errorf("browsed message %q: attributes %v, want %v", m.Data, m.Attributes, want[i].Attributes)
		}
		if m.ID == "" {
			t.Errorf("browsed message %q has no ID", m.Data)
		}
	}
	if again := browse(0); len(again) != len(want) {
		t.Fatalf("second Browse returned %d messages, want %d: Browse must not consume", len(again), len(want))
	}
	if first2 := browse(2); len(first2) != 2 {
		t.Fatalf("Browse went on after fn returned false: %d calls, want 2", len(first2))
	}

	if err := br.Delete(s.ctx(t), dl, all[1].ID); err != nil {
		t.Fatalf("Delete(%s): %v", all[1].ID, err)
	}
	// An id that names nothing is the caller's mistake, not an outage.
	if err := br.Delete(s.ctx(t), dl, ""); !errors.Is(err, broker.ErrInvalidID) {
		t.Fatalf("Delete(\"\") = %v, want an error wrapping broker.ErrInvalidID", err)
	}
	left := browse(0)
	wantLeft := slices.Delete(slices.Clone(dataOf(want)), 1, 2)
	if !slices.Equal(dataOf(left), wantLeft) {
		t.Fatalf("after Delete, Browse returned %q, want %q", dataOf(left), wantLeft)
	}
}

// The records topic fans out: see broker.TopicRecords.
const records = broker.TopicRecords

func testRecordsWithoutSubscribers(t *testing.T, s *suite) {
	// The worker publishes records whether or not anyone reads them yet.
	s.publish(t, s.b, records, testMessages("nobody", 3)...)
	// A subscription made afterwards starts after them.
	sub := s.subscribe(t, s.b, records, "late")
	want := testMessages("late", 2)
	s.publish(t, s.b, records, want...)
	checkSame(t, s.fetchN(t, sub, len(want), true), want)
	s.expectNone(t, sub, 500*time.Millisecond)
}

func testFanOutDurable(t *testing.T, s *suite) {
	// Two names (say webhook delivery and an archiver) each get every
	// message; two Subscriptions of one name share it.
	a := s.subscribe(t, s.b, records, "fan-a")
	b1, b2 := s.subscribe(t, s.b, records, "fan-b"), s.subscribe(t, s.b, records, "fan-b")
	want := testMessages("fan", 6)
	s.publish(t, s.b, records, want...)

	checkSame(t, s.fetchN(t, a, len(want), true), want)
	s.expectNone(t, a, 500*time.Millisecond)

	// The two Subscriptions of fan-b share its messages between them, in
	// whatever split the backend makes (Pub/Sub may hand every message to
	// one stream): read both until all have come, each once.
	ctx := s.ctx(t)
	var got []*broker.Message
	for len(got) < len(want) {
		if ctx.Err() != nil {
			t.Fatalf("fan-b: got %d of %d messages within %v", len(got), len(want), s.h.Timeout)
		}
		for _, sub := range []broker.Subscription{b1, b2} {
			if len(got) == len(want) {
				break
			}
			msgs, err := sub.Fetch(ctx, len(want)-len(got), 200*time.Millisecond)
			if err == nil && len(msgs) > 0 {
				err = sub.Ack(ctx, msgs...)
			}
			if err != nil {
				t.Fatalf("Fetch/Ack on a Subscription of fan-b: %v", err)
			}
			got = append(got, msgs...)
		}
	}
	checkSame(t, got, want)
	s.expectNone(t, b1, 500*time.Millisecond)
	s.expectNone(t, b2, 100*time.Millisecond)
}

func testFanOutEphemeral(t *testing.T, s *suite) {
	durable := s.subscribe(t, s.b, records, "keeps-old") // keeps the old messages on every backend
	old := testMessages("before", 3)
	s.publish(t, s.b, records, old...)

	// Two processes' live streams: the same name, each its own copy.
	opts := broker.SubscribeOptions{AckWait: s.h.AckWait, Ephemeral: true}
	e1 := s.subscribeWith(t, s.b, records, "live", opts)
	e2 := s.subscribeWith(t, s.b, records, "live", opts)
	want := testMessages("after", 4)
	s.publish(t, s.b, records, want...)

	for i, e := range []broker.Subscription{e1, e2} {
		got := s.fetchN(t, e, len(want), true)
		for _, m := range got {
			if bytes.HasPrefix(m.Data, []byte("before")) {
				t.Errorf("ephemeral subscription %d got %q, published before it subscribed", i+1, m.Data)
			}
		}
		checkSame(t, got, want)
	}
	s.expectNone(t, e1, 500*time.Millisecond)
	s.expectNone(t, e2, 100*time.Millisecond)
	// The durable name was not disturbed.
	checkSame(t, s.fetchN(t, durable, len(old)+len(want), true), append(old, want...))

	// Unacked, a message comes back to the same ephemeral subscription.
	s.publish(t, s.b, records, testMessages("again", 1)...)
	first := s.fetchN(t, e1, 1, false)[0]
	if err := e1.Nack(s.ctx(t), 0, first); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	checkRedelivery(t, first, s.fetchN(t, e1, 1, true)[0])
	s.fetchN(t, e2, 1, true)
}

func testEphemeralRemovedOnClose(t *testing.T, s *suite) {
	opts := broker.SubscribeOptions{AckWait: s.h.AckWait, Ephemeral: true}
	durable := s.subscribe(t, s.b, records, "stays")
	var before []string
	if s.h.Subscriptions != nil {
		before = s.h.Subscriptions(t, s.b, records)
	}
	e := s.subscribeWith(t, s.b, records, "live", opts)
	if s.h.Subscriptions != nil {
		during := s.h.Subscriptions(t, s.b, records)
		if len(during) != len(before)+1 {
			t.Fatalf("subscriptions on %s: %q before an ephemeral Subscribe, %q after; want one more", records, before, during)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if _, err := e.Fetch(s.ctx(t), 1, 100*time.Millisecond); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Fetch on a closed ephemeral subscription: %v, want ErrClosed", err)
	}
	if s.h.Subscriptions != nil {
		after := s.h.Subscriptions(t, s.b, records)
		slices.Sort(before)
		slices.Sort(after)
		if !slices.Equal(after, before) {
			t.Errorf("subscriptions on %s after Close: %q, want %q as before", records, after, before)
		}
	}
	// The durable one still works.
	want := testMessages("stays", 2)
	s.publish(t, s.b, records, want...)
	checkSame(t, s.fetchN(t, durable, len(want), true), want)

	// The broker's Close removes an ephemeral subscription left open; a
	// Close of it afterwards is harmless.
	left := s.subscribeWith(t, s.b, records, "left-open", opts)
	if err := s.b.Close(); err != nil {
		t.Fatalf("broker Close: %v", err)
	}
	if err := left.Close(); err != nil {
		t.Errorf("Close after the broker's Close: %v", err)
	}
}
