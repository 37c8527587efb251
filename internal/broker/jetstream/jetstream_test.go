package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/brokertest"
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openTB opens a broker on cfg and closes it at the end of the test.
func openTB(tb testing.TB, cfg Config) *Broker {
	tb.Helper()
	b, err := Open(tb.Context(), cfg, testLogger())
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return b
}

func openEmbedded(tb testing.TB, dir string) *Broker {
	tb.Helper()
	return openTB(tb, Config{URL: EmbeddedURL, DataDir: dir})
}

func TestConformance(t *testing.T) {
	// Records retention other than the defaults: the suite runs with it.
	open := func(t *testing.T, dir string) *Broker {
		return openTB(t, Config{URL: EmbeddedURL, DataDir: dir, RecordsMaxAge: time.Hour, RecordsMaxBytes: 64 << 20})
	}
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) broker.Broker { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			jb := b.(*Broker)
			if err := jb.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			return open(t, jb.cfg.DataDir)
		},
		Subscriptions: consumerNames,
	})
}

// consumerNames lists the consumers of topic's stream.
func consumerNames(t *testing.T, b broker.Broker, topic string) []string {
	t.Helper()
	s, err := b.(*Broker).js.Stream(t.Context(), streamName(topic))
	if err != nil {
		t.Fatalf("stream of %s: %v", topic, err)
	}
	var names []string
	l := s.ConsumerNames(t.Context())
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("consumers of %s: %v", topic, err)
	}
	return names
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings; nil means valid
	}{
		{"embedded", Config{URL: EmbeddedURL, DataDir: "d"}, nil},
		{"embedded listen", Config{URL: EmbeddedURL, DataDir: "d", Listen: "127.0.0.1:4222"}, nil},
		{"external", Config{URL: "nats://localhost:4222"}, nil},
		{"external with user", Config{URL: "nats://u:secret@localhost:4222"}, nil},
		{"all limits", Config{URL: EmbeddedURL, DataDir: "d", SyncInterval: time.Second, MaxMsgSize: 1 << 20, DeadLetterMaxAge: time.Hour}, nil},
		{"empty", Config{}, []string{"url is required"}},
		{"no data dir", Config{URL: EmbeddedURL}, []string{"data dir is required"}},
		{"bad scheme", Config{URL: "kafka://x:1"}, []string{`scheme "kafka"`}},
		{"parameters", Config{URL: "nats://x:4222?tls=1"}, []string{"parameters are not supported"}},
		{"path", Config{URL: "nats://x:4222/a"}, []string{"path"}},
		{"bad port", Config{URL: "nats://x:port"}, []string{"not a valid URL"}},
		{"listen external", Config{URL: "nats://x:4222", Listen: "127.0.0.1:1"}, []string{"listen is only valid"}},
		{"bad listen", Config{URL: EmbeddedURL, DataDir: "d", Listen: "4222"}, []string{"listen"}},
		{"records retention", Config{URL: EmbeddedURL, DataDir: "d", RecordsMaxAge: time.Minute, RecordsMaxBytes: DefaultMaxMsgSize}, nil},
		{"records smaller than a message", Config{URL: EmbeddedURL, DataDir: "d", MaxMsgSize: 1 << 20, RecordsMaxBytes: 1<<20 - 1}, []string{"records max bytes"}},
		{"every problem", Config{URL: EmbeddedURL, SyncInterval: -1, MaxMsgSize: 1 << 30, DeadLetterMaxAge: time.Second, RecordsMaxAge: time.Second, RecordsMaxBytes: -1},
			[]string{"data dir is required", "sync interval", "max message size", "dead-letter max age", "records max age", "records max bytes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: nil, want an error")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate: %v; want it to mention %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("Validate leaks the password: %v", err)
			}
		})
	}
}

func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	b := openEmbedded(t, dir)
	_, err := Open(t.Context(), Config{URL: EmbeddedURL, DataDir: dir}, testLogger())
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open on the same data dir: %v, want an in-use error", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	openEmbedded(t, dir) // the lock is released
}

// TestListenExternal runs an embedded server that listens on TCP and a
// second broker that connects to it as to an external server.
func TestListenExternal(t *testing.T) {
	emb := openTB(t, Config{URL: EmbeddedURL, DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	ext := openTB(t, Config{URL: "nats://" + emb.srv.Addr().String()})
	ctx := t.Context()

	sub, err := emb.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ext.Publish(ctx, broker.TopicEvents, &broker.Message{Data: []byte("hello"), Attributes: map[string]string{"a": "b"}}); err != nil {
		t.Fatalf("Publish through the external connection: %v", err)
	}
	msgs, err := sub.Fetch(ctx, 10, 5*time.Second)
	if err != nil || len(msgs) != 1 || string(msgs[0].Data) != "hello" || msgs[0].Attributes["a"] != "b" {
		t.Fatalf("Fetch = %v, %v; want the message", msgs, err)
	}
	if err := sub.Ack(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	// The embedded server goes away: the external client reports the
	// broker unavailable rather than hanging.
	if err := emb.Close(); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = ext.Publish(pctx, broker.TopicEvents, &broker.Message{Data: []byte("lost")})
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Publish with the server down: %v, want ErrUnavailable", err)
	}

	// Once the client knows the connection is down, a publish fails at
	// once rather than buffering until the deadline (which would let a
	// reconnect within the deadline hide the outage from ingest's clients).
	for deadline := time.Now().Add(10 * time.Second); ext.nc.IsConnected() && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	err = ext.Publish(ctx, broker.TopicEvents, &broker.Message{Data: []byte("lost")})
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, nats.ErrConnectionReconnecting) {
		t.Fatalf("Publish while reconnecting: %v, want ErrUnavailable for the connection down", err)
	}
}

func TestWorkQueueOneSubscriptionName(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	ctx := t.Context()
	if _, err := b.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{AckWait: time.Minute}); err != nil {
		t.Fatalf("same name again: %v", err)
	}
	if _, err := b.Subscribe(ctx, broker.TopicEvents, "other", broker.SubscribeOptions{}); err == nil {
		t.Fatal("a second subscription name on a work-queue topic: nil error")
	}
	for _, name := range []string{"replay", "audit"} {
		if _, err := b.Subscribe(ctx, broker.TopicDeadLetter, name, broker.SubscribeOptions{}); err != nil {
			t.Fatalf("dead-letter subscription %s: %v", name, err)
		}
	}
}

func TestPublishDedupByID(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	ctx := t.Context()
	m := func() *broker.Message { return &broker.Message{ID: "req-1", Data: []byte("x")} }
	for range 3 {
		if err := b.Publish(ctx, broker.TopicEvents, m()); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := b.Backlog(ctx, broker.TopicEvents, "enrich"); err != nil || n != 1 {
		t.Fatalf("Backlog = %d, %v; want 1 message after duplicates", n, err)
	}
}

func TestPublishRejects(t *testing.T) {
	b := openTB(t, Config{URL: EmbeddedURL, DataDir: t.TempDir(), MaxMsgSize: 1024})
	ctx := t.Context()
	tests := []struct {
		name  string
		topic string
		msg   *broker.Message
	}{
		{"reserved attribute", broker.TopicEvents, &broker.Message{Data: []byte("x"), Attributes: map[string]string{"Nats-Msg-Id": "1"}}},
		{"attribute with colon", broker.TopicEvents, &broker.Message{Data: []byte("x"), Attributes: map[string]string{"a:b": "1"}}},
		{"value with newline", broker.TopicEvents, &broker.Message{Data: []byte("x"), Attributes: map[string]string{"a": "1\r\n"}}},
		{"too large", broker.TopicEvents, &broker.Message{Data: make([]byte, 2048)}},
		{"nil", broker.TopicEvents, nil},
		{"bad topic", "Events.*", &broker.Message{Data: []byte("x")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := b.Publish(ctx, tc.topic, tc.msg)
			if err == nil {
				t.Fatal("Publish: nil error")
			}
			if errors.Is(err, broker.ErrUnavailable) {
				t.Errorf("Publish: %v; a bad message must not read as ErrUnavailable", err)
			}
			if !strings.HasPrefix(err.Error(), "jetstream: publish to ") {
				t.Errorf("error %q does not name the operation", err)
			}
		})
	}
}

func TestStreamNames(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	ctx := t.Context()
	for topic, want := range map[string]string{broker.TopicEvents: "SKYJOIN_EVENTS", broker.TopicDeadLetter: "SKYJOIN_DEADLETTER", broker.TopicRecords: "SKYJOIN_RECORDS"} {
		if err := b.Publish(ctx, topic, &broker.Message{Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		s, err := b.js.Stream(ctx, want)
		if err != nil {
			t.Fatalf("stream %s of topic %s: %v", want, topic, err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Subjects[0] != "skyjoin."+topic || cfg.MaxMsgSize != DefaultMaxMsgSize {
			t.Errorf("stream %s: subjects %v, max msg size %d", want, cfg.Subjects, cfg.MaxMsgSize)
		}
		wantRetention := jetstream.WorkQueuePolicy
		switch topic {
		case broker.TopicDeadLetter:
			wantRetention = jetstream.LimitsPolicy
			if cfg.MaxAge != DefaultDeadLetterMaxAge {
				t.Errorf("dead letters kept for %v, want %v", cfg.MaxAge, DefaultDeadLetterMaxAge)
			}
		case broker.TopicRecords:
			wantRetention = jetstream.LimitsPolicy
			if cfg.MaxAge != DefaultRecordsMaxAge || cfg.MaxBytes != DefaultRecordsMaxBytes || cfg.Discard != jetstream.DiscardOld {
				t.Errorf("records: max age %v, max bytes %d, discard %v; want %v, %d, old",
					cfg.MaxAge, cfg.MaxBytes, cfg.Discard, DefaultRecordsMaxAge, DefaultRecordsMaxBytes)
			}
		}
		if cfg.Retention != wantRetention || cfg.Storage != jetstream.FileStorage {
			t.Errorf("stream %s: retention %v, storage %v; want %v, file", want, cfg.Retention, cfg.Storage, wantRetention)
		}
	}
}

func TestAckTwiceAndAfterNack(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	ctx := t.Context()
	sub, err := b.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, broker.TopicEvents, &broker.Message{Data: []byte("a")}, &broker.Message{Data: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Fetch(ctx, 2, 5*time.Second)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("Fetch = %d messages, %v", len(msgs), err)
	}
	if err := sub.Ack(ctx, msgs[0]); err != nil {
		t.Fatal(err)
	}
	if err := sub.Ack(ctx, msgs[0]); err != nil {
		t.Errorf("second Ack: %v, want nil", err)
	}
	if err := sub.Nack(ctx, time.Hour, msgs[1]); err != nil {
		t.Fatal(err)
	}
	// Acking a nacked message still confirms through the server.
	if err := sub.Ack(ctx, msgs...); err != nil {
		t.Errorf("Ack after Nack: %v, want nil", err)
	}
	if n, err := b.Backlog(ctx, broker.TopicEvents, "enrich"); err != nil || n != 0 {
		t.Errorf("Backlog = %d, %v; want 0", n, err)
	}
	if err := sub.Ack(ctx, &broker.Message{ID: "1"}); err == nil {
		t.Error("Ack of a message not fetched from JetStream: nil error")
	}
}

func TestFetchContextDeadline(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	sub, err := b.Subscribe(t.Context(), broker.TopicEvents, "enrich", broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A context deadline shorter than maxWait ends the wait with no error.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	msgs, err := sub.Fetch(ctx, 10, time.Minute)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("Fetch = %d messages, %v; want none and nil", len(msgs), err)
	}
}

func TestDeleteMissingIsNoError(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	if err := b.Delete(t.Context(), broker.TopicDeadLetter, "42"); err != nil {
		t.Fatalf("Delete of a missing message: %v", err)
	}
	if err := b.Delete(t.Context(), broker.TopicDeadLetter, "x"); err == nil {
		t.Fatal("Delete with a bad id: nil error")
	}
}

func ExampleOpen() {
	b, err := Open(context.Background(), Config{URL: EmbeddedURL, DataDir: os.TempDir() + "/skyjoin-example"}, slog.Default())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	// b.Publish, b.Subscribe, ...
}
