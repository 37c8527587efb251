package jetstream

import (
	"fmt"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
)

const benchMsgSize = 300

func benchMessages(n int) []*broker.Message {
	msgs := make([]*broker.Message, n)
	for i := range msgs {
		msgs[i] = &broker.Message{
			Data:       make([]byte, benchMsgSize),
			Attributes: map[string]string{"type": "user_event"},
		}
	}
	return msgs
}

// BenchmarkPublish publishes batches of 300-byte messages to the embedded
// broker; one op is one batch.
func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			br := openEmbedded(b, b.TempDir())
			msgs := benchMessages(batch)
			ctx := b.Context()
			b.SetBytes(int64(batch * benchMsgSize))
			start := time.Now()
			n := 0
			for b.Loop() {
				if err := br.Publish(ctx, broker.TopicEvents, msgs...); err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msg/s")
		})
	}
}

// BenchmarkFetchAck fetches and acks 300-byte messages in batches of up to
// 500; one op is one message. The messages are published beforehand.
func BenchmarkFetchAck(b *testing.B) {
	br := openEmbedded(b, b.TempDir())
	ctx := b.Context()
	sub, err := br.Subscribe(ctx, broker.TopicEvents, "bench", broker.SubscribeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	msgs := benchMessages(1000)
	for left := b.N; left > 0; left -= len(msgs) {
		if err := br.Publish(ctx, broker.TopicEvents, msgs[:min(left, len(msgs))]...); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(benchMsgSize)
	b.ResetTimer()
	start := time.Now()
	for got := 0; got < b.N; {
		batch, err := sub.Fetch(ctx, 500, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if len(batch) == 0 {
			b.Fatalf("no message after %d of %d", got, b.N)
		}
		if err := sub.Ack(ctx, batch...); err != nil {
			b.Fatal(err)
		}
		got += len(batch)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
