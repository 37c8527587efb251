package enrich

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// pushBody is a Pub/Sub push request carrying m.
func pushBody(m *broker.Message, attempt int) string {
	b, _ := json.Marshal(map[string]any{
		"message": map[string]any{"data": base64.StdEncoding.EncodeToString(m.Data), "attributes": m.Attributes,
			"messageId": m.ID, "message_id": m.ID, "publishTime": "2026-11-26T11:59:59.123Z", "publish_time": "2026-11-26T11:59:59.123Z"},
		"subscription":    "projects/p/subscriptions/skyjoin-events-push",
		"deliveryAttempt": attempt,
	})
	return string(b)
}

func push(t *testing.T, h http.Handler, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/push/events", strings.NewReader(body)))
	return rec
}

// TestPushStoresAndPublishes: an envelope message pushed by Pub/Sub is
// stored, its records published, and only then answered 204; the pull
// subscription of the worker is not touched.
func TestPushStoresAndPublishes(t *testing.T) {
	q := &queue{}
	s := &memStore{}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	h := w.PushHandler()
	m := msg("m-1", event.ContentTypeNDJSON, ev("a", 10)+"\n"+ev("b", 20))
	m.Attributes["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	rec := push(t, h, pushBody(m, 1))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("push: %d %s", rec.Code, rec.Body)
	}
	if len(s.recs) != 2 || s.recs[0].EventID != "a" || s.recs[0].Weather == nil || !s.recs[0].IngestedAt.Equal(now.Add(-time.Second)) {
		t.Fatalf("stored %+v", s.recs)
	}
	if len(q.records) != 1 {
		t.Fatalf("records messages %d, want 1", len(q.records))
	}
	recs, err := envelope.DecodeRecords(q.records[0])
	if err != nil || len(recs) != 2 {
		t.Fatalf("records message: %v %d", err, len(recs))
	}
	if len(q.acked)+len(q.nacked) != 0 || w.Stats().Messages != 1 || w.Stats().Stored != 2 {
		t.Errorf("pull queue acked %d nacked %d; stats %+v", len(q.acked), len(q.nacked), w.Stats())
	}
}

// TestPushDeadLetters: a bad event is dead-lettered with its reason and
// the request answered 204 (its good neighbour stored); a message that is
// not an envelope is dead-lettered whole; a request that is not a push
// message is a 400.
func TestPushDeadLetters(t *testing.T) {
	q := &queue{}
	s := &memStore{}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	h := w.PushHandler()
	bad := `{"event_id":"bad","event_type":"t","occurred_at":"2026-11-26T11:50:00Z","location":{"latitude":10,"longitude":13}}`
	if rec := push(t, h, pushBody(msg("m-1", event.ContentTypeNDJSON, ev("a", 10)+"\n"+bad), 1)); rec.Code != http.StatusNoContent {
		t.Fatalf("push: %d %s", rec.Code, rec.Body)
	}
	if len(s.recs) != 1 || len(q.dead) != 1 || q.dead[0].Attributes[envelope.AttrStage] != "validate" {
		t.Fatalf("stored %d, dead %d %v", len(s.recs), len(q.dead), q.dead)
	}
	if rec := push(t, h, pushBody(msg("m-2", "application/x-unknown", "???"), 1)); rec.Code != http.StatusNoContent || len(q.dead) != 2 ||
		q.dead[1].Attributes[envelope.AttrStage] != "decode" {
		t.Fatalf("undecodable: %d, dead %d", rec.Code, len(q.dead))
	}
	for _, body := range []string{`not json`, `{"message":{"data":"e30="}}`, `{"message":{"data":"!!!","messageId":"1"}}`} {
		if rec := push(t, h, body); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"error"`) {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
}

// failingStore fails every Write while failing is set, and counts the
// records it stored by event id.
type failingStore struct {
	mu      sync.Mutex
	failing atomic.Bool
	poison  string
	writes  map[string]int
}

func (s *failingStore) Write(_ context.Context, recs []event.Record) error {
	if s.failing.Load() {
		return errors.New("injected: store down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if r.EventID == s.poison {
			return fmt.Errorf("store rejects %s", r.EventID)
		}
	}
	for i := range recs {
		s.writes[recs[i].EventID]++
		recs[i].Seq = int64(len(s.writes))
	}
	return nil
}

// TestPushRetry: while the store fails, a push is answered 503 (Pub/Sub
// delivers it again) and nothing is stored or published; the redelivery
// after the store is back stores the event once. A message that fails
// while others are stored is poison: 503 before its last attempt,
// dead-lettered and answered 204 at --enrich-max-attempts. In an outage
// (nothing stored lately) even its last attempt is not dead-lettered.
func TestPushRetry(t *testing.T) {
	q := &queue{}
	s := &failingStore{writes: map[string]int{}, poison: "poison"}
	w := newWorker(q, &joiner{failSouthOf: -1000}, s)
	clock := now
	w.now = func() time.Time { return clock }
	h := w.PushHandler()

	s.failing.Store(true)
	m := msg("m-1", event.ContentTypeJSON, ev("a", 10))
	rec := push(t, h, pushBody(m, 1))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("store down: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	// The last attempt during an outage: not poison, not dead-lettered.
	if rec := push(t, h, pushBody(m, 3)); rec.Code != http.StatusServiceUnavailable || len(q.dead) != 0 {
		t.Fatalf("outage, last attempt: %d, dead %d", rec.Code, len(q.dead))
	}
	if len(s.writes) != 0 || len(q.records) != 0 {
		t.Fatalf("stored %v, published %d during the outage", s.writes, len(q.records))
	}
	s.failing.Store(false)
	if rec := push(t, h, pushBody(m, 4)); rec.Code != http.StatusNoContent {
		t.Fatalf("after the outage: %d %s", rec.Code, rec.Body)
	}
	if s.writes["a"] != 1 || len(q.records) != 1 {
		t.Fatalf("writes %v, records messages %d; want a stored and published once", s.writes, len(q.records))
	}

	// Poison: others were stored a moment ago.
	clock = clock.Add(time.Second)
	p := msg("m-2", event.ContentTypeJSON, ev("poison", 10))
	if rec := push(t, h, pushBody(p, 2)); rec.Code != http.StatusServiceUnavailable || len(q.dead) != 0 {
		t.Fatalf("poison, attempt 2 of 3: %d, dead %d", rec.Code, len(q.dead))
	}
	if rec := push(t, h, pushBody(p, 3)); rec.Code != http.StatusNoContent || len(q.dead) != 1 {
		t.Fatalf("poison, attempt 3 of 3: %d %s, dead %d", rec.Code, rec.Body, len(q.dead))
	}
	if a := q.dead[0].Attributes; a[envelope.AttrStage] != "store" || !strings.Contains(a[envelope.AttrReason], "rejects poison") {
		t.Errorf("dead letter %v", a)
	}
	// Long after the last success, the same failure is an outage again.
	clock = clock.Add(time.Minute)
	if rec := push(t, h, pushBody(msg("m-3", event.ContentTypeJSON, ev("poison", 10)), 3)); rec.Code != http.StatusServiceUnavailable || len(q.dead) != 1 {
		t.Fatalf("nothing stored lately: %d, dead %d", rec.Code, len(q.dead))
	}
}

// safeJoiner is joiner without its counter, for concurrent use.
type safeJoiner struct{ j joiner }

func (s safeJoiner) Lookup(ctx context.Context, reqs []weather.Request) []weather.Result {
	j := s.j
	return j.Lookup(ctx, reqs)
}

// BenchmarkPushLoopback measures the push route over loopback HTTP: one
// message of one event per request, as Pub/Sub push sends them, 16
// requests in flight, the store discarding. Compare BenchmarkProcessWarm
// (a pulled batch of 500 events) and docs/benchmarks.md.
func BenchmarkPushLoopback(b *testing.B) {
	q := &queue{}
	w := newWorker(q, safeJoiner{joiner{failSouthOf: -1000}}, discardStore{})
	srv := httptest.NewServer(w.PushHandler())
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	c := &http.Client{Transport: tr}
	var n atomic.Int64
	b.SetParallelism(8) // 8 x GOMAXPROCS in flight
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			body := pushBody(msg(fmt.Sprint(i), event.ContentTypeJSON, ev(fmt.Sprint(i), float64(i%90))), 1)
			resp, err := c.Post(srv.URL, "application/json", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				b.Errorf("push: %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// timeoutBody is a request body whose read fails as a stalled connection's
// does once the server's read timeout passes: a net.OpError that names
// both socket addresses.
type timeoutBody struct{}

func (timeoutBody) Read([]byte) (int, error) {
	return 0, &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
		Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 51234}, Err: os.ErrDeadlineExceeded}
}

// TestPushBodyLimits: a body past the limit is 413; a body that does not
// arrive in time is 408, and neither answer carries a socket address.
func TestPushBodyLimits(t *testing.T) {
	h := newWorker(&queue{}, &joiner{failSouthOf: -1000}, &memStore{}).PushHandler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/push/events", strings.NewReader(strings.Repeat(" ", maxPushBody+1))))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize: %d %s, want 413", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/push/events", io.NopCloser(timeoutBody{})))
	if rec.Code != http.StatusRequestTimeout || !strings.Contains(rec.Body.String(), `"status":"DEADLINE_EXCEEDED"`) ||
		strings.Contains(rec.Body.String(), "127.0.0.1") || rec.Header().Get("Connection") != "close" {
		t.Errorf("stalled: %d %v %s, want 408 naming no address, and the connection closed", rec.Code, rec.Header(), rec.Body)
	}
}
