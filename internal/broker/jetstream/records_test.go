package jetstream

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skyjoin/skyjoin/internal/broker"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw     string
		want    Config
		wantErr []string // substrings; nil means valid
	}{
		{raw: "nats://embedded", want: Config{URL: EmbeddedURL}},
		{raw: "nats://embedded?listen=127.0.0.1:4222", want: Config{URL: EmbeddedURL, Listen: "127.0.0.1:4222"}},
		{raw: "nats://embedded?records_max_age=90m&records_max_bytes=2GiB&deadletter_max_age=72h",
			want: Config{URL: EmbeddedURL, RecordsMaxAge: 90 * time.Minute, RecordsMaxBytes: 2 << 30, DeadLetterMaxAge: 72 * time.Hour}},
		{raw: "nats://u:secret@nats.internal:4222?records_max_bytes=536870912",
			want: Config{URL: "nats://u:secret@nats.internal:4222", RecordsMaxBytes: 512 << 20}},
		{raw: "nats://embedded?records_max_bytes=64KiB", want: Config{URL: EmbeddedURL, RecordsMaxBytes: 64 << 10}},
		{raw: "nats://embedded?retention=1h", wantErr: []string{`unknown parameter "retention"`}},
		{raw: "nats://embedded?records_max_age=1h&records_max_age=2h", wantErr: []string{"given 2 times"}},
		{raw: "nats://u:secret@h:1?records_max_age=soon&records_max_bytes=lots", wantErr: []string{"records_max_age", "records_max_bytes"}},
		{raw: "nats://embedded?records_max_bytes=-1", wantErr: []string{"records_max_bytes"}},
		{raw: "nats://embedded?records_max_age=0s", wantErr: []string{"records_max_age"}},
		{raw: "kafka://h:1", wantErr: []string{`"kafka://h:1": want nats://embedded`}},
		{raw: "nats://u:secret@h:1#x", wantErr: []string{"without a fragment"}},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := ParseURL(tc.raw)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseURL: %v", err)
				}
				if got != tc.want {
					t.Errorf("ParseURL = %+v, want %+v", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseURL = %+v, nil error", got)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseURL: %v; want it to mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("ParseURL leaks the password: %v", err)
			}
		})
	}
	// What ParseURL gives, Open takes (with the caller's data dir).
	cfg, err := ParseURL("nats://embedded?records_max_age=2h&records_max_bytes=64MiB")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	b := openTB(t, cfg)
	if err := b.Publish(t.Context(), broker.TopicRecords, &broker.Message{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	s, err := b.js.Stream(t.Context(), streamName(broker.TopicRecords))
	if err != nil {
		t.Fatal(err)
	}
	if sc := s.CachedInfo().Config; sc.MaxAge != 2*time.Hour || sc.MaxBytes != 64<<20 {
		t.Errorf("records stream: max age %v, max bytes %d; want 2h, 64 MiB", sc.MaxAge, sc.MaxBytes)
	}
}

// TestRecordsDiscardOld: past RecordsMaxBytes the records stream drops its
// oldest messages; publishing never fails for want of room, and a reader
// that fell behind gets what is left.
func TestRecordsDiscardOld(t *testing.T) {
	const size = 60_000
	b := openTB(t, Config{URL: EmbeddedURL, DataDir: t.TempDir(), MaxMsgSize: 100_000, RecordsMaxBytes: 200_000})
	ctx := t.Context()
	sub, err := b.Subscribe(ctx, broker.TopicRecords, "slow", broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		data := append(bytes.Repeat([]byte{'x'}, size), fmt.Sprint(i)...)
		if err := b.Publish(ctx, broker.TopicRecords, &broker.Message{Data: data}); err != nil {
			t.Fatalf("Publish %d past the limit: %v", i, err)
		}
	}
	s, err := b.js.Stream(ctx, streamName(broker.TopicRecords))
	if err != nil {
		t.Fatal(err)
	}
	st := s.CachedInfo().State
	if st.Bytes > 200_000 || st.Msgs >= 10 || st.Msgs == 0 {
		t.Fatalf("records stream holds %d messages, %d bytes; want fewer than 10 within 200000 bytes", st.Msgs, st.Bytes)
	}
	msgs, err := sub.Fetch(ctx, 20, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(msgs)) != st.Msgs || !bytes.HasSuffix(msgs[len(msgs)-1].Data, []byte("9")) {
		t.Fatalf("the reader got %d messages, want the %d newest", len(msgs), st.Msgs)
	}
}

func TestEphemeral(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	ctx := t.Context()
	if _, err := b.Subscribe(ctx, broker.TopicEvents, "live", broker.SubscribeOptions{Ephemeral: true}); err == nil {
		t.Error("an ephemeral subscription on the work-queue topic: nil error")
	}
	sub, err := b.Subscribe(ctx, broker.TopicRecords, "live", broker.SubscribeOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	js := sub.(*Subscription)
	ci := js.c.CachedInfo()
	if ci.Config.Durable != "" || ci.Config.InactiveThreshold != EphemeralInactiveThreshold ||
		ci.Config.DeliverPolicy != jetstream.DeliverNewPolicy || !ci.Config.MemoryStorage || !strings.HasPrefix(ci.Name, "live-") {
		t.Errorf("ephemeral consumer %s: %+v", ci.Name, ci.Config)
	}

	// The server removed it (as after EphemeralInactiveThreshold without a
	// Fetch): Fetch says so, every time, rather than returning nothing.
	s, err := b.js.Stream(ctx, streamName(broker.TopicRecords))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConsumer(ctx, ci.Name); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, err := sub.Fetch(ctx, 10, 200*time.Millisecond)
		if !errors.Is(err, broker.ErrSubscriptionGone) || errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("Fetch after the consumer was removed: %v, want ErrSubscriptionGone, not ErrUnavailable", err)
		}
	}
	if err := sub.Close(); err != nil {
		t.Errorf("Close of a removed subscription: %v", err)
	}
}
