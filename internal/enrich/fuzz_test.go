package enrich

import (
	"context"
	"testing"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
)

// FuzzProcess feeds arbitrary messages to the worker: it must never panic,
// always ack the message, and account for every event it finds: stored or
// dead-lettered, none lost.
func FuzzProcess(f *testing.F) {
	for _, seed := range []struct {
		data, contentType string
	}{
		{ev("a", 1), event.ContentTypeJSON},
		{"[" + ev("a", 1) + "," + ev("b", 95) + "]", event.ContentTypeJSON},
		{ev("a", 1) + "\n{oops\n" + ev("b", 2), event.ContentTypeNDJSON},
		{"", event.ContentTypeJSON},
		{"[1,2,3]", event.ContentTypeJSON},
		{"a,b,c", "text/csv"},
		{`{"event_id":"x","occurred_at":"2099-01-01T00:00:00Z"}`, event.ContentTypeJSON},
	} {
		f.Add([]byte(seed.data), seed.contentType)
	}
	f.Fuzz(func(t *testing.T, data []byte, contentType string) {
		q := &queue{}
		s := &memStore{}
		w := newWorker(q, &joiner{failSouthOf: -1000}, s)
		m := &broker.Message{ID: "1", Data: data, Deliveries: 1, Attributes: map[string]string{
			envelope.AttrContentType: contentType, envelope.AttrIngestedAt: now.Format("2006-01-02T15:04:05Z07:00")}}
		if err := w.Process(context.Background(), []*broker.Message{m}); err != nil {
			t.Fatalf("Process: %v", err)
		}
		if len(q.acked) != 1 {
			t.Fatalf("message not acked")
		}
		// Every event the decoder sees is either stored or dead-lettered.
		in, err := envelope.DecodeEvents(m)
		if err != nil {
			if len(s.recs) != 0 || len(q.dead) != 1 {
				t.Fatalf("undecodable message: %d stored, %d dead letters; want 0 and 1", len(s.recs), len(q.dead))
			}
			return
		}
		if len(s.recs)+len(q.dead) != len(in.Events) {
			t.Fatalf("%d events: %d stored + %d dead-lettered", len(in.Events), len(s.recs), len(q.dead))
		}
		for _, d := range q.dead {
			if d.Attributes[envelope.AttrReason] == "" || d.Attributes[envelope.AttrStage] == "" {
				t.Fatalf("dead letter without reason or stage: %v", d.Attributes)
			}
		}
	})
}
