package enrich

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// queue is an in-memory Subscription and Publisher for the worker's tests.
type queue struct {
	mu      sync.Mutex
	pending []*broker.Message
	acked   []*broker.Message
	nacked  []*broker.Message
	dead    []*broker.Message
	records []*broker.Message
	pubErr  error
	recErr  error    // fails publishes to the records topic
	log     []string // "records", "ack", in order
}

func (q *queue) Fetch(ctx context.Context, max int, wait time.Duration) ([]*broker.Message, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(max, len(q.pending))
	out := q.pending[:n]
	q.pending = q.pending[n:]
	return out, nil
}
func (q *queue) Ack(ctx context.Context, msgs ...*broker.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.acked = append(q.acked, msgs...)
	q.log = append(q.log, "ack")
	return nil
}
func (q *queue) Nack(ctx context.Context, d time.Duration, msgs ...*broker.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nacked = append(q.nacked, msgs...)
	return nil
}
func (q *queue) Close() error { return nil }
func (q *queue) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pubErr != nil {
		return q.pubErr
	}
	if topic == broker.TopicRecords {
		if q.recErr != nil {
			return q.recErr
		}
		q.records = append(q.records, msgs...)
		q.log = append(q.log, "records")
		return nil
	}
	if topic != broker.TopicDeadLetter {
		return fmt.Errorf("unexpected topic %s", topic)
	}
	q.dead = append(q.dead, msgs...)
	return nil
}

// joiner answers every request with weather derived from its place, or fails
// for places south of failSouthOf.
type joiner struct {
	calls       int
	failSouthOf float64
}

func (j *joiner) Lookup(ctx context.Context, reqs []weather.Request) []weather.Result {
	j.calls++
	out := make([]weather.Result, len(reqs))
	for i, r := range reqs {
		if r.Lat < j.failSouthOf {
			out[i].Err = errors.New("provider down")
			continue
		}
		out[i] = weather.Result{Status: event.StatusEnriched, Weather: &event.Weather{
			ObservedAt: r.At.Truncate(15 * time.Minute), TemperatureC: r.Lat / 10, Provider: "test",
			CellLatitude: r.Lat, CellLongitude: r.Lon, Condition: "Clear sky"}}
	}
	return out
}

type memStore struct {
	recs   []event.Record
	err    error
	poison string // event id whose batches fail
}

func (s *memStore) Write(ctx context.Context, recs []event.Record) error {
	if s.err != nil {
		return s.err
	}
	for _, r := range recs {
		if r.EventID == s.poison {
			return fmt.Errorf("store rejects %s", r.EventID)
		}
	}
	// As store.Writer says: a new record gets the next seq; one whose
	// event id is stored already comes back as stored.
	for i := range recs {
		if j := slices.IndexFunc(s.recs, func(r event.Record) bool { return r.EventID == recs[i].EventID }); j >= 0 {
			recs[i] = s.recs[j]
			continue
		}
		recs[i].Seq = int64(len(s.recs) + 1)
		s.recs = append(s.recs, recs[i])
	}
	return nil
}

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func ev(id string, lat float64) string {
	return fmt.Sprintf(`{"event_id":%q,"event_type":"user.observed","occurred_at":"2026-11-26T11:50:00Z",`+
		`"user":{"id":"u-%s"},"location":{"latitude":%g,"longitude":13.41}}`, id, id, lat)
}

func msg(id, contentType, body string) *broker.Message {
	return &broker.Message{ID: id, Data: []byte(body), Deliveries: 1, Attributes: map[string]string{
		envelope.AttrContentType: contentType, envelope.AttrIngestedAt: now.Add(-time.Second).Format(time.RFC3339Nano)}}
}

func newWorker(q *queue, j weather.Joiner, s Writer) *Worker {
	w := New(Config{Subscription: "enrich", MaxMessages: 10, FetchWait: time.Millisecond, AckWait: time.Minute, MaxClockSkew: time.Minute,
		RetryDelay: time.Second, MaxRetry: time.Minute, MaxAttempts: 3},
		q, q, j, s, platform.Discard)
	w.now = func() time.Time { return now }
	return w
}

func TestProcess(t *testing.T) {
	q := &queue{}
	j := &joiner{failSouthOf: -1000}
	s := &memStore{}
	w := newWorker(q, j, s)
	msgs := []*broker.Message{
		msg("1", event.ContentTypeJSON, ev("a", 10)),
		msg("2", event.ContentTypeJSON, "["+ev("b", 20)+","+ev("c", 95)+","+ev("d", 30)+"]"),
		msg("3", event.ContentTypeNDJSON, ev("e", 40)+"\n{broken\n"),
		msg("4", event.ContentTypeJSON, "not json at all"),
		msg("5", "text/csv", "a,b"),
	}
	if err := w.Process(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if j.calls != 1 {
		t.Errorf("weather looked up %d times for one batch, want 1", j.calls)
	}
	var ids []string
	for _, r := range s.recs {
		ids = append(ids, r.EventID)
		if r.Weather == nil || r.Enrichment.Status != event.StatusEnriched || r.Weather.TemperatureC != r.Location.Lat()/10 {
			t.Errorf("%s: not enriched: %+v", r.EventID, r)
		}
		if !r.IngestedAt.Equal(now.Add(-time.Second)) || !r.ProcessedAt.Equal(now) {
			t.Errorf("%s: ingested %v processed %v", r.EventID, r.IngestedAt, r.ProcessedAt)
		}
	}
	if got := strings.Join(ids, ","); got != "a,b,d,e" {
		t.Errorf("stored %s, want a,b,d,e", got)
	}
	if len(q.acked) != len(msgs) {
		t.Errorf("acked %d of %d messages", len(q.acked), len(msgs))
	}
	wantDead := []struct{ stage, reasonHas, index string }{
		{"validate", "location.latitude", "1"},
		{"decode", "invalid JSON", "1"},
		{"decode", "JSON object", "-1"},
		{"decode", "content type", "-1"},
	}
	if len(q.dead) != len(wantDead) {
		t.Fatalf("%d dead letters, want %d", len(q.dead), len(wantDead))
	}
	for i, want := range wantDead {
		a := q.dead[i].Attributes
		if a[envelope.AttrStage] != want.stage || !strings.Contains(a[envelope.AttrReason], want.reasonHas) || a[envelope.AttrOriginalIndex] != want.index {
			t.Errorf("dead letter %d: %v", i, a)
		}
		if a[envelope.AttrAttempts] != "1" || a[envelope.AttrSubscription] != "enrich" || a[envelope.AttrFailedAt] == "" {
			t.Errorf("dead letter %d lacks its context: %v", i, a)
		}
	}
	// A dead-lettered event is a JSON object that decodes on its own, so it
	// can be replayed.
	if got, err := event.Decode(q.dead[0].Data, q.dead[0].Attributes[envelope.AttrContentType], 0); err != nil || len(got) != 1 || got[0].Event.EventID != "c" {
		t.Errorf("dead letter does not replay: %v %v", got, err)
	}
	st := w.Stats()
	if st.Stored != 4 || st.DeadLettered != 4 || st.Messages != 5 {
		t.Errorf("stats %+v", st)
	}
}

// TestProcessEnvelopes: a message of today's envelope is processed like one
// written before it; one of an envelope version this build does not know is
// dead-lettered whole, at stage decode, with the reason, and acked.
func TestProcessEnvelopes(t *testing.T) {
	q := &queue{}
	s := &memStore{}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	v1 := envelope.NewEvents([]byte(ev("a", 10)+"\n"+ev("b", 20)), event.ContentTypeNDJSON, 2, now.Add(-time.Second), envelope.SourceIngest)
	v2 := envelope.NewEvents([]byte(ev("c", 30)), event.ContentTypeJSON, 1, now, envelope.SourceIngest)
	v2.Attributes[envelope.AttrVersion] = "2"
	if err := w.Process(context.Background(), []*broker.Message{v1, v2}); err != nil {
		t.Fatal(err)
	}
	if len(s.recs) != 2 || !s.recs[0].IngestedAt.Equal(now.Add(-time.Second)) || len(q.acked) != 2 {
		t.Fatalf("stored %d, acked %d", len(s.recs), len(q.acked))
	}
	if len(q.dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(q.dead))
	}
	d := envelope.ParseDeadLetter(q.dead[0])
	if d.Stage != "decode" || !strings.Contains(d.Reason, `unknown envelope version "2"`) || d.Index != -1 || string(d.Data) != ev("c", 30) {
		t.Errorf("dead letter %+v", d)
	}
	if id := q.dead[0].Attributes[envelope.AttrMessageID]; id == "" || id == v2.Attributes[envelope.AttrMessageID] || q.dead[0].ID != id {
		t.Errorf("dead letter id %q (ID %q), original's %q", id, q.dead[0].ID, v2.Attributes[envelope.AttrMessageID])
	}
}

func TestWeatherUnavailableIsStored(t *testing.T) {
	q := &queue{}
	s := &memStore{}
	w := newWorker(q, &joiner{failSouthOf: 0}, s)
	if err := w.Process(context.Background(), []*broker.Message{msg("1", event.ContentTypeNDJSON, ev("n", 10)+"\n"+ev("s", -10))}); err != nil {
		t.Fatal(err)
	}
	if len(s.recs) != 2 || len(q.acked) != 1 {
		t.Fatalf("stored %d, acked %d", len(s.recs), len(q.acked))
	}
	south := s.recs[1]
	if south.Weather != nil || south.Enrichment.Status != event.StatusUnavailable || south.Enrichment.Error != "provider down" {
		t.Errorf("south: %+v", south.Enrichment)
	}
	if w.Stats().Unavailable != 1 {
		t.Errorf("stats %+v", w.Stats())
	}
}

func TestFailuresDoNotAck(t *testing.T) {
	tests := []struct {
		name  string
		store error
		pub   error
	}{
		{"store fails", errors.New("disk full"), nil},
		{"dead-letter publish fails", nil, broker.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &queue{pubErr: tt.pub}
			s := &memStore{err: tt.store}
			w := newWorker(q, &joiner{failSouthOf: -1000}, s)
			err := w.Process(context.Background(), []*broker.Message{msg("1", event.ContentTypeJSON, "["+ev("a", 1)+`,{"event_id":"x"}]`)})
			if err == nil {
				t.Fatal("Process succeeded")
			}
			if len(q.acked) != 0 {
				t.Errorf("acked %d messages after a failure", len(q.acked))
			}
		})
	}
}

func TestRunNacksFailedBatches(t *testing.T) {
	q := &queue{pending: []*broker.Message{msg("1", event.ContentTypeJSON, ev("a", 1))}}
	s := &memStore{err: errors.New("disk full")}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	w.cfg.RetryDelay = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx, context.Background()) }()
	for {
		q.mu.Lock()
		n := len(q.nacked)
		q.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(q.acked) != 0 || w.Stats().Failed == 0 {
		t.Errorf("acked %d, stats %+v", len(q.acked), w.Stats())
	}
}

// TestPoisonIsolated: a message the store rejects fails its batch; the
// worker retries each message alone, stores the others, delivers the poison
// again with backoff and dead-letters it after MaxAttempts deliveries.
func TestPoisonIsolated(t *testing.T) {
	for _, deliveries := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("delivery ", deliveries), func(t *testing.T) {
			q := &queue{}
			s := &memStore{poison: "bad"}
			w := newWorker(q, &joiner{failSouthOf: -1000}, s)
			msgs := []*broker.Message{msg("1", event.ContentTypeJSON, ev("a", 1)), msg("2", event.ContentTypeJSON, ev("bad", 2)),
				msg("3", event.ContentTypeJSON, ev("c", 3))}
			msgs[1].Deliveries = deliveries
			if pause := w.handle(context.Background(), msgs); pause != 0 {
				t.Errorf("paused %s for a poison message", pause)
			}
			if len(s.recs) != 2 || len(q.acked) < 2 {
				t.Fatalf("stored %d, acked %d; want the two good messages stored and acked", len(s.recs), len(q.acked))
			}
			if deliveries < 3 {
				if len(q.nacked) != 1 || q.nacked[0].ID != "2" || len(q.dead) != 0 {
					t.Fatalf("nacked %d, dead %d; want the poison nacked", len(q.nacked), len(q.dead))
				}
				return
			}
			if len(q.dead) != 1 || len(q.nacked) != 0 || len(q.acked) != 3 {
				t.Fatalf("dead %d nacked %d acked %d; want the poison dead-lettered and acked", len(q.dead), len(q.nacked), len(q.acked))
			}
			a := q.dead[0].Attributes
			if a[envelope.AttrStage] != "store" || a[envelope.AttrAttempts] != "3" || !strings.Contains(a[envelope.AttrReason], "rejects bad") {
				t.Errorf("dead letter attributes %v", a)
			}
		})
	}
}

// TestOutageNeverDeadLetters: when every message fails, it is an outage:
// everything is delivered again, nothing dead-lettered, however often.
func TestOutageNeverDeadLetters(t *testing.T) {
	q := &queue{}
	s := &memStore{err: errors.New("disk full")}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	msgs := []*broker.Message{msg("1", event.ContentTypeJSON, ev("a", 1)), msg("2", event.ContentTypeJSON, ev("b", 2))}
	for _, m := range msgs {
		m.Deliveries = 50
	}
	if pause := w.handle(context.Background(), msgs); pause <= 0 {
		t.Error("no pause in an outage")
	}
	if len(q.dead) != 0 || len(q.nacked) != 2 || len(q.acked) != 0 {
		t.Fatalf("dead %d nacked %d acked %d", len(q.dead), len(q.nacked), len(q.acked))
	}
}

type panicJoiner struct{}

func (panicJoiner) Lookup(ctx context.Context, reqs []weather.Request) []weather.Result {
	panic("boom")
}

func TestPanicIsPoison(t *testing.T) {
	q := &queue{}
	w := newWorker(q, panicJoiner{}, &memStore{})
	m := msg("1", event.ContentTypeJSON, ev("a", 1))
	m.Deliveries = 3
	w.handle(context.Background(), []*broker.Message{m})
	if len(q.dead) != 1 || q.dead[0].Attributes[envelope.AttrStage] != "enrich" || !strings.Contains(q.dead[0].Attributes[envelope.AttrReason], "boom") {
		t.Fatalf("dead letters %v", q.dead)
	}
}

// TestRetryDelay: the redelivery delay doubles per delivery up to
// MaxRetry, with full jitter: every draw is within [0, ceiling] and the
// draws cover that range.
func TestRetryDelay(t *testing.T) {
	w := newWorker(&queue{}, &joiner{}, &memStore{})
	w.cfg.RetryDelay, w.cfg.MaxRetry = time.Second, 10*time.Second
	for _, tt := range []struct {
		deliveries int
		ceiling    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {10, 10 * time.Second}, {1000, 10 * time.Second}} {
		lo, hi := time.Duration(1<<63-1), time.Duration(0)
		for range 1000 {
			d := w.retryDelay(tt.deliveries)
			if d < 0 || d > tt.ceiling {
				t.Fatalf("retryDelay(%d) = %s, want 0..%s", tt.deliveries, d, tt.ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// 1000 uniform draws all missing the lowest (or highest) fifth:
		// a chance of 0.8^1000, about 1e-97.
		if lo > tt.ceiling/5 || hi < tt.ceiling-tt.ceiling/5 {
			t.Errorf("retryDelay(%d) drew from %s to %s, want the whole of 0..%s", tt.deliveries, lo, hi, tt.ceiling)
		}
	}
}

// failingFetch is a queue whose Fetch fails with errs, in turn.
type failingFetch struct {
	*queue
	mu      sync.Mutex
	errs    []error
	fetches int
}

func (f *failingFetch) Fetch(ctx context.Context, max int, wait time.Duration) ([]*broker.Message, error) {
	f.mu.Lock()
	f.fetches++
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	return f.queue.Fetch(ctx, max, wait)
}

// TestRunRetriesFetch: a failed fetch is retried with backoff until the
// subscription is closed, which ends Run with an error.
func TestRunRetriesFetch(t *testing.T) {
	down := errors.New("broker down")
	sub := &failingFetch{queue: &queue{}, errs: []error{down, down, fmt.Errorf("fetch: %w", broker.ErrClosed), down}}
	w := newWorker(sub.queue, &joiner{}, &memStore{})
	w.sub = sub
	err := w.Run(context.Background(), context.Background())
	if !errors.Is(err, broker.ErrClosed) || sub.fetches != 3 {
		t.Fatalf("Run = %v after %d fetches, want ErrClosed after 3", err, sub.fetches)
	}
}

func BenchmarkProcessWarm(b *testing.B) {
	parts := make([]string, 500)
	for i := range parts {
		parts[i] = ev(fmt.Sprint(i), float64(i%90))
	}
	body := strings.Join(parts, "\n")
	q := &queue{}
	w := newWorker(q, &joiner{failSouthOf: -1000}, discardStore{})
	m := []*broker.Message{msg("1", event.ContentTypeNDJSON, body)}
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Process(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(500*b.N)/b.Elapsed().Seconds(), "events/s")
}

type discardStore struct{}

func (discardStore) Write(context.Context, []event.Record) error { return nil }

// TestHeldBatchIsNotPoison: when the worker holds events for want of
// weather, the batch is an outage: delivered again, never dead-lettered,
// even after many deliveries and even if other messages succeed alone.
func TestHeldBatchIsNotPoison(t *testing.T) {
	q := &queue{}
	s := &memStore{}
	w := newWorker(q, &joiner{failSouthOf: 0}, s)
	w.cfg.OnWeatherFailure = WeatherFailureRetry
	msgs := []*broker.Message{msg("1", event.ContentTypeJSON, ev("north", 10)), msg("2", event.ContentTypeJSON, ev("south", -10))}
	for _, m := range msgs {
		m.Deliveries = 50
	}
	if pause := w.handle(context.Background(), msgs); pause <= 0 {
		t.Error("no pause while weather is out")
	}
	if len(q.dead) != 0 || len(q.nacked) != 2 || len(q.acked) != 0 || len(s.recs) != 0 {
		t.Fatalf("dead %d nacked %d acked %d stored %d; want both delivered again, nothing stored",
			len(q.dead), len(q.nacked), len(q.acked), len(s.recs))
	}
}

// rowErrors is a store.RejectedRows.
type rowErrors map[int]string

func (r rowErrors) Error() string           { return fmt.Sprintf("%d rows rejected", len(r)) }
func (r rowErrors) Reasons() map[int]string { return r }

// rejectingStore stores every record but those whose event id it rejects,
// and names those in a store.RejectedRows error, as BigQuery does.
type rejectingStore struct {
	memStore
	reject map[string]bool
}

func (s *rejectingStore) Write(ctx context.Context, recs []event.Record) error {
	bad := rowErrors{}
	for i, r := range recs {
		if s.reject[r.EventID] {
			bad[i] = "invalid value for " + r.EventID
			continue
		}
		s.recs = append(s.recs, r)
	}
	if len(bad) > 0 {
		return bad
	}
	return nil
}

func TestRejectedRowsAreDeadLettered(t *testing.T) {
	q := &queue{}
	s := &rejectingStore{reject: map[string]bool{"b": true}}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	msgs := []*broker.Message{msg("1", event.ContentTypeJSON, "["+ev("a", 1)+","+ev("b", 2)+"]"), msg("2", event.ContentTypeJSON, ev("c", 3))}
	if err := w.Process(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if len(s.recs) != 2 || len(q.acked) != 2 {
		t.Fatalf("stored %d acked %d; want a and c stored, both messages acked", len(s.recs), len(q.acked))
	}
	if len(q.dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(q.dead))
	}
	a := q.dead[0].Attributes
	if a[envelope.AttrStage] != "store" || a[envelope.AttrOriginalIndex] != "1" || a[envelope.AttrOriginalID] != "1" || !strings.Contains(a[envelope.AttrReason], "invalid value for b") {
		t.Errorf("dead letter %v", a)
	}
	if got, err := event.Decode(q.dead[0].Data, event.ContentTypeJSON, 0); err != nil || got[0].Event.EventID != "b" {
		t.Errorf("dead letter data does not replay: %v %v", got, err)
	}
}

// TestRecordsPublishedBeforeAck: the stored records go to the records topic
// before the batch is acked; when that publish fails, the batch is not
// acked, and its redelivery publishes the records the store holds.
func TestRecordsPublishedBeforeAck(t *testing.T) {
	q := &queue{recErr: errors.New("records topic down")}
	st := &memStore{}
	w := newWorker(q, &joiner{}, st)
	m := msg("m1", event.ContentTypeNDJSON, ev("r1", 50)+"\n"+ev("r2", 51)+"\n")
	if err := w.Process(context.Background(), []*broker.Message{m}); err == nil {
		t.Fatal("the batch went through with the records topic down")
	}
	if len(st.recs) != 2 || len(q.acked) != 0 || len(q.records) != 0 {
		t.Fatalf("stored %d, acked %d, records messages %d; want 2, 0, 0", len(st.recs), len(q.acked), len(q.records))
	}
	stored := slices.Clone(st.recs)

	// Redelivered (the worker crashed, or nacked): the store has the
	// records; they are published as stored, then the message is acked.
	q.recErr = nil
	w.now = func() time.Time { return now.Add(time.Minute) }
	m.Deliveries = 2
	if err := w.Process(context.Background(), []*broker.Message{m}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q.log, []string{"records", "ack"}) {
		t.Errorf("order %v, want records then ack", q.log)
	}
	if len(q.records) != 1 {
		t.Fatalf("%d records messages, want 1", len(q.records))
	}
	got, err := envelope.DecodeRecords(q.records[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d records published, want 2", len(got))
	}
	for i := range got {
		if got[i].EventID != stored[i].EventID || got[i].Seq != stored[i].Seq || !got[i].ProcessedAt.Equal(stored[i].ProcessedAt) {
			t.Errorf("published %s seq %d processed %s, the store holds seq %d processed %s",
				got[i].EventID, got[i].Seq, got[i].ProcessedAt, stored[i].Seq, stored[i].ProcessedAt)
		}
	}
}

// TestNoLocation: an event without coordinates is stored with status
// no_location and no weather lookup; with RequireLocation it is a dead
// letter of stage validate.
func TestNoLocation(t *testing.T) {
	noLoc := `{"event_id":"nl","event_type":"Order Completed","occurred_at":"2026-11-26T11:50:00Z","user":{"id":"u"},"location":{"city":"Paris"}}`
	q := &queue{}
	s := &memStore{}
	j := &joiner{failSouthOf: -1000}
	w := newWorker(q, j, s)
	if err := w.Process(context.Background(), []*broker.Message{msg("1", event.ContentTypeNDJSON, noLoc+"\n"+ev("n", 10))}); err != nil {
		t.Fatal(err)
	}
	if len(s.recs) != 2 || len(q.acked) != 1 || len(q.dead) != 0 {
		t.Fatalf("stored %d, acked %d, dead %d", len(s.recs), len(q.acked), len(q.dead))
	}
	if r := s.recs[0]; r.Weather != nil || r.Enrichment.Status != event.StatusNoLocation || r.Location.City != "Paris" {
		t.Errorf("no location: %+v", r)
	}
	if r := s.recs[1]; r.Enrichment.Status != event.StatusEnriched || r.Weather == nil {
		t.Errorf("with location: %+v", r.Enrichment)
	}
	// Only coordinate-less batches: no lookup at all.
	j.calls = 0
	w.Process(context.Background(), []*broker.Message{msg("2", event.ContentTypeJSON, strings.Replace(noLoc, `"nl"`, `"nl2"`, 1))})
	if j.calls > 1 || len(s.recs) != 3 {
		t.Errorf("lookups %d, stored %d", j.calls, len(s.recs))
	}

	q, s = &queue{}, &memStore{}
	w = newWorker(q, j, s)
	w.cfg.RequireLocation = true
	if err := w.Process(context.Background(), []*broker.Message{msg("1", event.ContentTypeNDJSON, noLoc+"\n"+ev("n", 10))}); err != nil {
		t.Fatal(err)
	}
	if len(s.recs) != 1 || len(q.dead) != 1 || envelope.ParseDeadLetter(q.dead[0]).Stage != "validate" {
		t.Fatalf("required: stored %d, dead %d", len(s.recs), len(q.dead))
	}
}

// sizedFetch is a queue that records the max of every Fetch and closes
// the subscription once it is empty.
type sizedFetch struct {
	*queue
	asked []int
}

func (f *sizedFetch) Fetch(ctx context.Context, max int, wait time.Duration) ([]*broker.Message, error) {
	f.mu.Lock()
	empty := len(f.pending) == 0
	f.mu.Unlock()
	if empty {
		return nil, broker.ErrClosed
	}
	f.asked = append(f.asked, max)
	return f.queue.Fetch(ctx, max, wait)
}

// TestRunBoundsBatchEvents: with MaxEvents, the worker first takes one
// message, then as many messages of the largest count it saw as the bound
// holds (at least one, at most MaxMessages), and every event is stored.
func TestRunBoundsBatchEvents(t *testing.T) {
	var msgs []*broker.Message
	id := 0
	add := func(n int) {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = ev(fmt.Sprint(id), 10)
			id++
		}
		m := msg(fmt.Sprint("m", len(msgs)), event.ContentTypeNDJSON, strings.Join(parts, "\n"))
		m.Attributes[envelope.AttrCount] = fmt.Sprint(n)
		msgs = append(msgs, m)
	}
	for range 6 {
		add(30) // 100/30: 3 a batch
	}
	for range 3 {
		add(200) // more than the bound: 1 a batch
	}
	for range 12 {
		add(2) // 100/2 = 50, but MaxMessages is 10
	}
	add(2)
	sub := &sizedFetch{queue: &queue{pending: msgs}}
	st := &memStore{}
	w := newWorker(sub.queue, &joiner{}, st)
	w.sub = sub
	w.cfg.MaxEvents = 100
	if err := w.Run(t.Context(), t.Context()); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Run = %v", err)
	}
	want := []int{1, 3, 3, 1, 1, 1, 10, 10}
	if !slices.Equal(sub.asked, want) {
		t.Errorf("fetches asked for %v messages, want %v", sub.asked, want)
	}
	if len(st.recs) != id {
		t.Errorf("%d records stored, want %d", len(st.recs), id)
	}
}

// countingStore is a memStore that counts its writes.
type countingStore struct {
	memStore
	writes int
}

func (s *countingStore) Write(ctx context.Context, recs []event.Record) error {
	s.writes++
	return s.memStore.Write(ctx, recs)
}

// TestRunLingers: after a fetch of less than half a batch, the worker
// waits Linger and takes what came meanwhile into the same batch: one
// store write for the messages of the second and third fetches. Without
// Linger, each fetch is its own batch.
func TestRunLingers(t *testing.T) {
	for _, linger := range []time.Duration{time.Millisecond, 0} {
		var msgs []*broker.Message
		for i := range 3 {
			m := msg(fmt.Sprint("m", i), event.ContentTypeJSON, ev(fmt.Sprint(i), 10))
			m.Attributes[envelope.AttrCount] = "1"
			msgs = append(msgs, m)
		}
		// The first fetch takes one message (to learn their size); the
		// second finds one, and one more arrives after it.
		sub := &stagedFetch{queue: &queue{}, stages: [][]*broker.Message{msgs[:1], msgs[1:2], msgs[2:]}}
		st := &countingStore{}
		w := newWorker(sub.queue, &joiner{}, st)
		w.sub = sub
		w.cfg.MaxEvents, w.cfg.Linger = 100, linger
		if err := w.Run(t.Context(), t.Context()); !errors.Is(err, broker.ErrClosed) {
			t.Fatalf("Run = %v", err)
		}
		want := 2
		if linger == 0 {
			want = 3
		}
		if len(st.recs) != 3 || st.writes != want {
			t.Errorf("linger %v: %d records in %d writes, want 3 in %d", linger, len(st.recs), st.writes, want)
		}
	}
}

// stagedFetch is a queue whose fetches find, in turn, the messages of each
// stage (one stage a fetch), then ErrClosed.
type stagedFetch struct {
	*queue
	stages [][]*broker.Message
}

func (f *stagedFetch) Fetch(ctx context.Context, max int, wait time.Duration) ([]*broker.Message, error) {
	if len(f.stages) == 0 {
		return nil, broker.ErrClosed
	}
	f.mu.Lock()
	f.pending = append(f.pending, f.stages[0]...)
	f.mu.Unlock()
	f.stages = f.stages[1:]
	return f.queue.Fetch(ctx, max, wait)
}

// lineStore is a memStore that gives back the stored records' lines
// (store.LineWriter), in a form of its own: processed_at to the second.
type lineStore struct{ memStore }

func (s *lineStore) WriteLines(ctx context.Context, recs []event.Record) ([][]byte, error) {
	if err := s.Write(ctx, recs); err != nil {
		return nil, err
	}
	lines := make([][]byte, len(recs))
	for i, r := range recs {
		if r.Seq == 0 {
			continue
		}
		r.ProcessedAt = r.ProcessedAt.Truncate(time.Second)
		b, err := event.NewLineEncoder().Encode(&r)
		if err != nil {
			return nil, err
		}
		lines[i] = slices.Clone(b)
	}
	return lines, nil
}

// TestRecordsFromStoreLines: with a store that gives back the lines of what
// it stored, the records topic carries those lines, not the worker's own
// encoding of the records.
func TestRecordsFromStoreLines(t *testing.T) {
	q := &queue{}
	st := &lineStore{}
	w := newWorker(q, &joiner{}, st)
	processed := now.Add(1500 * time.Millisecond)
	w.now = func() time.Time { return processed }
	m := msg("m1", event.ContentTypeNDJSON, ev("r1", 50)+"\n"+ev("r2", 51)+"\n")
	if err := w.Process(context.Background(), []*broker.Message{m}); err != nil {
		t.Fatal(err)
	}
	if len(q.records) != 1 || len(st.recs) != 2 {
		t.Fatalf("%d records messages, %d stored; want 1, 2", len(q.records), len(st.recs))
	}
	got, err := envelope.DecodeRecords(q.records[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d records published, want 2", len(got))
	}
	for i, r := range got {
		if r.EventID != st.recs[i].EventID || r.Seq != st.recs[i].Seq || !r.ProcessedAt.Equal(processed.Truncate(time.Second)) {
			t.Errorf("published %s seq %d processed %s; want the store's line: %s seq %d processed %s",
				r.EventID, r.Seq, r.ProcessedAt, st.recs[i].EventID, st.recs[i].Seq, processed.Truncate(time.Second))
		}
	}
}
