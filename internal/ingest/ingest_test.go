package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// recorder is a Publisher that keeps what it is given, or fails.
type recorder struct {
	mu   sync.Mutex
	msgs []*broker.Message
	err  error
}

func (r *recorder) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if topic != broker.TopicEvents {
		return fmt.Errorf("unexpected topic %q", topic)
	}
	r.msgs = append(r.msgs, msgs...)
	return nil
}

var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newServer(t *testing.T, pub Publisher, mutate func(*Config)) *httptest.Server {
	t.Helper()
	cfg := Config{MaxEvents: 1000, MaxBodyBytes: 5 << 20, MaxClockSkew: event.DefaultMaxClockSkew, PublishTimeout: time.Second, MaxErrors: 100}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := New(cfg, pub, platform.Discard)
	h.now = func() time.Time { return testNow }
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func ev(id string) string {
	return fmt.Sprintf(`{"event_id":%q,"event_type":"user.observed","occurred_at":"2026-11-26T11:59:00Z",`+
		`"user":{"id":"u-%s","name":"Ann Lee"},"location":{"latitude":52.52,"longitude":13.41,"city":"Berlin","country":"Germany"}}`, id, id)
}

func post(t *testing.T, url, contentType, body string) (*http.Response, platform.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/events", strings.NewReader(body))
	if contentType != "-" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

// do sends req and reads the answer's error body, if any.
func do(t *testing.T, req *http.Request) (*http.Response, platform.ErrorBody) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb platform.ErrorBody
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &eb); err != nil {
			t.Fatalf("error answer is not JSON: %s", b)
		}
	}
	return resp, eb
}

func TestPostEventsAccepted(t *testing.T) {
	tests := []struct {
		name, contentType, body string
		want                    int
	}{
		{"single", "application/json", ev("a"), 1},
		{"single with charset", "application/json; charset=utf-8", ev("a"), 1},
		{"array", "application/json", "[" + ev("a") + "," + ev("b") + "," + ev("c") + "]", 3},
		{"ndjson", "application/x-ndjson", ev("a") + "\n" + ev("b") + "\n", 2},
		{"jsonl", "application/jsonl", ev("a") + "\n" + ev("b"), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			srv := newServer(t, rec, nil)
			resp, _ := post(t, srv.URL, tt.contentType, tt.body)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if len(rec.msgs) != 1 {
				t.Fatalf("published %d messages, want 1 per request", len(rec.msgs))
			}
			m := rec.msgs[0]
			if m.Attributes[envelope.AttrCount] != fmt.Sprint(tt.want) || m.ID == "" || m.ID != m.Attributes[envelope.AttrMessageID] {
				t.Errorf("id %q, attributes %v", m.ID, m.Attributes)
			}
			got, err := envelope.DecodeEvents(m)
			if err != nil || len(got.Events) != tt.want || !got.IngestedAt.Equal(testNow) || got.Source != envelope.SourceIngest {
				t.Fatalf("message decodes to %d events %+v (%v), want %d", len(got.Events), got, err, tt.want)
			}
		})
	}
}

// TestPropertiesAndNoLocation: properties are no longer dropped (they reach
// the broker message as sent), and an event without coordinates is taken,
// unless the location is required.
func TestPropertiesAndNoLocation(t *testing.T) {
	body := `{"event_id":"p","event_type":"Order Completed","occurred_at":"2026-11-26T11:59:00Z","user":{"id":"u"},` +
		`"properties":{"amount":12.5,"items":["a","b"],"paid":true,"nested":{"k":null}}}`
	rec := &recorder{}
	srv := newServer(t, rec, nil)
	if resp, eb := post(t, srv.URL, "application/json", body); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d %+v", resp.StatusCode, eb)
	}
	got, err := envelope.DecodeEvents(rec.msgs[0])
	if err != nil || len(got.Events) != 1 || len(got.Events[0].Errors) > 0 ||
		string(got.Events[0].Event.Properties) != `{"amount":12.5,"items":["a","b"],"paid":true,"nested":{"k":null}}` {
		t.Fatalf("the broker has %+v (%v)", got, err)
	}

	h := New(Config{MaxEvents: 10, MaxBodyBytes: 1 << 20, MaxClockSkew: time.Minute, PublishTimeout: time.Second, MaxErrors: 10, RequireLocation: true},
		&recorder{}, platform.Discard)
	h.now = func() time.Time { return testNow }
	mux := http.NewServeMux()
	h.Register(mux)
	rsrv := httptest.NewServer(mux)
	defer rsrv.Close()
	if resp, eb := post(t, rsrv.URL, "application/json", body); resp.StatusCode != http.StatusBadRequest || !strings.Contains(eb.Error.Message, "location") {
		t.Errorf("location required: %d %+v", resp.StatusCode, eb)
	}
}

func TestPostEventsRefused(t *testing.T) {
	big := "[" + strings.Repeat(ev("x")+",", 1000) + ev("y") + "]"
	tests := []struct {
		name, contentType, body string
		status                  int
		fields                  []string // index:field expected in details
	}{
		{"wrong content type", "text/plain", ev("a"), 415, nil},
		{"form", "application/x-www-form-urlencoded", "a=b", 415, nil},
		{"multipart form", "multipart/form-data; boundary=x", "--x--", 415, nil},
		{"no content type", "-", ev("a"), 415, nil},
		{"latin-1", "application/json; charset=iso-8859-1", ev("a"), 415, nil},
		{"utf-16", "application/x-ndjson; charset=utf-16", ev("a"), 415, nil},
		{"unknown field", "application/json", strings.Replace(ev("a"), `"event_id"`, `"colour":"red","event_id"`, 1), 400, []string{"0:colour"}},
		{"unknown field in every event", "application/json", "[" + strings.Replace(ev("a"), `"event_id"`, `"colour":"red","event_id"`, 1) + "," + strings.Replace(ev("b"), `"event_id"`, `"size":1,"event_id"`, 1) + "]", 400, []string{"0:colour", "1:size"}},
		{"name in upper case", "application/x-ndjson", ev("a") + "\n" + strings.Replace(ev("b"), `"event_id"`, `"EVENT_ID"`, 1), 400, []string{"1:EVENT_ID"}},
		{"duplicate name", "application/json", strings.Replace(ev("a"), `"event_type"`, `"event_id":"b","event_type"`, 1), 400, []string{"0:event_id"}},
		{"invalid UTF-8", "application/json", strings.Replace(ev("a"), "Ann Lee", "Ann \xffLee", 1), 400, []string{"0:user.name"}},
		{"offset +24:00", "application/json", strings.Replace(ev("a"), "2026-11-26T11:59:00Z", "2026-11-26T11:59:00+24:00", 1), 400, []string{"0:occurred_at"}},
		{"empty", "application/json", "", 400, nil},
		{"not json", "application/json", "hello", 400, nil},
		{"empty array", "application/json", "[]", 400, nil},
		{"missing event_id", "application/json", strings.Replace(ev("a"), `"event_id":"a",`, "", 1), 400, []string{"0:event_id"}},
		{"bad latitude in batch", "application/json", "[" + ev("a") + "," + strings.Replace(ev("b"), "52.52", "152.52", 1) + "]", 400, []string{"1:location.latitude"}},
		{"latitude as string", "application/x-ndjson", ev("a") + "\n" + strings.Replace(ev("b"), "52.52", `"52.52"`, 1), 400, []string{"1:location.latitude"}},
		{"future event", "application/json", strings.Replace(ev("a"), "2026-11-26T11:59:00Z", "2026-11-26T13:00:00Z", 1), 400, []string{"0:occurred_at"}},
		{"several errors", "application/json", `[{"event_id":"a"}]`, 400, []string{"0:event_type", "0:occurred_at", "0:user.id"}},
		{"one coordinate", "application/json", `[{"event_id":"a","event_type":"x","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"u"},"location":{"latitude":1}}]`, 400, []string{"0:location.longitude"}},
		{"too many events", "application/json", big, 413, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			srv := newServer(t, rec, nil)
			resp, eb := post(t, srv.URL, tt.contentType, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%+v)", resp.StatusCode, tt.status, eb)
			}
			if eb.Error.Message == "" || eb.Error.Code != tt.status {
				t.Errorf("error body %+v", eb)
			}
			if len(rec.msgs) != 0 {
				t.Errorf("published %d messages for a refused request", len(rec.msgs))
			}
			if tt.fields == nil {
				return
			}
			b, _ := json.Marshal(eb.Error.Details)
			var inv Invalid
			json.Unmarshal(b, &inv)
			got := map[string]bool{}
			for _, e := range inv.Errors {
				got[fmt.Sprintf("%d:%s", e.Index, e.Field)] = true
			}
			for _, f := range tt.fields {
				if !got[f] {
					t.Errorf("details do not name %s: %+v", f, inv.Errors)
				}
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	rec := &recorder{}
	srv := newServer(t, rec, func(c *Config) { c.MaxBodyBytes = 2048 })
	body := "[" + strings.Repeat(ev("x")+",", 20) + ev("y") + "]"
	resp, eb := post(t, srv.URL, "application/json", body)
	if resp.StatusCode != 413 || !strings.Contains(eb.Error.Message, "2048") {
		t.Fatalf("status %d %+v", resp.StatusCode, eb)
	}
	// Without Content-Length (chunked), the limit still holds.
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte(body)); pw.Close() }()
	req, _ := http.NewRequest("POST", srv.URL+"/v1/events", pr)
	req.Header.Set("Content-Type", "application/json")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 413 || len(rec.msgs) != 0 {
		t.Fatalf("chunked: status %d, %d published", r2.StatusCode, len(rec.msgs))
	}
}

func TestBrokerDown(t *testing.T) {
	rec := &recorder{err: fmt.Errorf("publish: %w", broker.ErrUnavailable)}
	srv := newServer(t, rec, nil)
	resp, eb := post(t, srv.URL, "application/json", ev("a"))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if eb.Error.Status != "UNAVAILABLE" {
		t.Errorf("error body %+v", eb)
	}
}

func TestAdmission(t *testing.T) {
	rec := &recorder{}
	cfg := Config{MaxEvents: 10, MaxBodyBytes: 1 << 20, PublishTimeout: time.Second, MaxErrors: 10}
	h := New(cfg, rec, platform.Discard)
	h.Admit = func() error { return errors.New("backlog is full") }
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, eb := post(t, srv.URL, "application/json", ev("a"))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(eb.Error.Message, "backlog") {
		t.Fatalf("status %d %+v", resp.StatusCode, eb)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	err := Config{}.Validate()
	if err == nil {
		t.Fatal("zero config is valid")
	}
	for _, f := range []string{"ingest-max-events", "ingest-max-bytes", "ingest-publish-timeout", "ingest-max-errors"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error does not name %s: %v", f, err)
		}
	}
}

func TestSchemaEndpoint(t *testing.T) {
	srv := newServer(t, &recorder{}, nil)
	resp, err := http.Get(srv.URL + "/v1/schema")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != string(event.JSONSchema()) {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func BenchmarkPostBatch(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			parts := make([]string, n)
			for i := range parts {
				parts[i] = ev(fmt.Sprint(i))
			}
			body := "[" + strings.Join(parts, ",") + "]"
			h := New(Config{MaxEvents: 1000, MaxBodyBytes: 5 << 20, MaxClockSkew: time.Hour, PublishTimeout: time.Second, MaxErrors: 10}, &discard{}, platform.Discard)
			h.now = func() time.Time { return testNow }
			mux := http.NewServeMux()
			h.Register(mux)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "/v1/events", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, req)
				if w.Code != 202 {
					b.Fatal(w.Code, w.Body.String())
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

type discard struct{}

func (discard) Publish(context.Context, string, ...*broker.Message) error { return nil }

func TestBacklogGate(t *testing.T) {
	var backlog int64
	g := NewBacklogGate(func(context.Context) (int64, error) { return backlog, nil }, 100, time.Hour, platform.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range []struct {
		backlog int64
		admit   bool
	}{{0, true}, {100, true}, {101, false}, {5000, false}, {99, true}} {
		backlog = tt.backlog
		g.Run(ctx) // one poll, then it returns: ctx is done
		if err := g.Admit(); (err == nil) != tt.admit {
			t.Errorf("backlog %d: Admit() = %v, want admit=%v", tt.backlog, err, tt.admit)
		}
	}
	if g.Refused() != 2 {
		t.Errorf("refused %d, want 2", g.Refused())
	}
	// A failing backlog read keeps the last value.
	backlog = 500
	g.Run(ctx)
	g.backlog = func(context.Context) (int64, error) { return 0, errors.New("down") }
	g.Run(ctx)
	if g.Backlog() != 500 {
		t.Errorf("backlog after a failed read: %d", g.Backlog())
	}
}

func TestBacklogGateBytes(t *testing.T) {
	var bytes int64
	g := NewBacklogGate(func(context.Context) (int64, error) { return 1, nil }, 0, time.Hour, platform.Discard)
	g.LimitBytes(func(context.Context) (int64, error) { return bytes, nil }, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range []struct {
		bytes int64
		admit bool
	}{{0, true}, {1 << 20, true}, {1<<20 + 1, false}, {0, true}} {
		bytes = tt.bytes
		g.Run(ctx)
		if err := g.Admit(); (err == nil) != tt.admit {
			t.Errorf("%d bytes waiting: Admit() = %v, want admit=%v", tt.bytes, err, tt.admit)
		}
	}
}

// gatedPublisher holds its first Publish until release is closed, and fails
// the later ones with failLater, if set.
type gatedPublisher struct {
	recorder
	first     chan struct{} // closed when the first Publish has started
	release   chan struct{}
	failLater error
	calls     int
}

func (g *gatedPublisher) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	g.mu.Lock()
	g.calls++
	n := g.calls
	g.mu.Unlock()
	if n == 1 {
		close(g.first)
		<-g.release
	} else if g.failLater != nil {
		return g.failLater
	}
	return g.recorder.Publish(ctx, topic, msgs...)
}

func TestGroupCommit(t *testing.T) {
	pretty := "{\n  \"event_id\": \"c2\", \"event_type\": \"user.observed\", \"occurred_at\": \"2026-11-26T11:59:00Z\",\n" +
		"  \"user\": {\"id\": \"u\"},\n  \"location\": {\"latitude\": 1, \"longitude\": 2}\n}"
	for _, tt := range []struct {
		name      string
		failLater error
		want      int // status of the grouped requests
	}{
		{"acked", nil, http.StatusAccepted},
		{"refused", errors.New("broker down"), http.StatusServiceUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub := &gatedPublisher{first: make(chan struct{}), release: make(chan struct{}), failLater: tt.failLater}
			h := New(Config{MaxEvents: 1000, MaxBodyBytes: 5 << 20, MaxClockSkew: event.DefaultMaxClockSkew,
				PublishTimeout: 5 * time.Second, MaxErrors: 100, GroupPublishes: 1, GroupMaxBytes: 1 << 20}, pub, platform.Discard)
			h.now = func() time.Time { return testNow }
			mux := http.NewServeMux()
			h.Register(mux)
			srv := httptest.NewServer(mux)
			defer srv.Close()

			send := func(ct, body string) chan int {
				c := make(chan int, 1)
				go func() {
					req, _ := http.NewRequest("POST", srv.URL+"/v1/events", strings.NewReader(body))
					req.Header.Set("Content-Type", ct)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						c <- 0
						return
					}
					resp.Body.Close()
					c <- resp.StatusCode
				}()
				return c
			}
			a := send("application/json", ev("a"))
			<-pub.first // a holds the only publish slot
			// grouped waits until the queued group holds n events.
			grouped := func(n int) {
				for {
					h.group.mu.Lock()
					got := 0
					if len(h.group.queue) == 1 {
						got = h.group.queue[0].count
					}
					h.group.mu.Unlock()
					if got == n {
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
			// Three requests join one group, one after the other.
			var waiting []chan int
			waiting = append(waiting, send("application/json", ev("b")))
			grouped(1)
			waiting = append(waiting, send("application/json", "["+ev("c1")+",\n"+pretty+"]"))
			grouped(3)
			waiting = append(waiting, send("application/x-ndjson", ev("d")+"\n"))
			grouped(4)
			for i, c := range waiting {
				select {
				case code := <-c:
					t.Fatalf("request %d answered %d before its events were published", i, code)
				default:
				}
			}
			close(pub.release)
			if code := <-a; code != http.StatusAccepted {
				t.Errorf("first request: %d", code)
			}
			for i, c := range waiting {
				if code := <-c; code != tt.want {
					t.Errorf("grouped request %d: %d, want %d", i, code, tt.want)
				}
			}
			pub.mu.Lock()
			defer pub.mu.Unlock()
			wantMsgs := 2
			if tt.failLater != nil {
				wantMsgs = 1
			}
			if len(pub.msgs) != wantMsgs {
				t.Fatalf("published %d messages, want %d", len(pub.msgs), wantMsgs)
			}
			if tt.failLater != nil {
				return
			}
			m := pub.msgs[1]
			if m.Attributes[envelope.AttrContentType] != event.ContentTypeNDJSON || m.Attributes[envelope.AttrCount] != "4" ||
				m.Attributes[envelope.AttrIngestedAt] != testNow.Format(time.RFC3339Nano) || m.ID == pub.msgs[0].ID {
				t.Errorf("attributes %v", m.Attributes)
			}
			got, err := event.Decode(m.Data, event.ContentTypeNDJSON, 0)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, d := range got {
				if len(d.Errors) > 0 {
					t.Errorf("event %s: %v", d.Raw, d.Errors)
				}
				ids = append(ids, d.Event.EventID)
			}
			if strings.Join(ids, ",") != "b,c1,c2,d" {
				t.Errorf("grouped message holds %v, want b,c1,c2,d", ids)
			}
		})
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestContentEncoding: a gzip body is accepted and published decompressed;
// the body limit holds after decompression (a gzip bomb is 413); other
// encodings are 415.
func TestContentEncoding(t *testing.T) {
	const limit = 64 << 10
	body := []byte(ev("a") + "\n" + ev("b") + "\n")
	bomb := gzipped(t, bytes.Repeat([]byte(" "), 64<<20)) // 64 MiB of spaces in about 64 KiB
	tests := []struct {
		name, encoding string
		body           []byte
		status         int
	}{
		{"gzip", "gzip", gzipped(t, body), 202},
		{"x-gzip", "x-gzip", gzipped(t, body), 202},
		{"identity", "identity", body, 202},
		{"gzip bomb", "gzip", bomb, 413},
		{"not gzip", "gzip", body, 400},
		{"cut short", "gzip", gzipped(t, body)[:20], 400},
		{"deflate", "deflate", body, 415},
		{"brotli", "br", body, 415},
		{"gzip twice", "gzip, gzip", gzipped(t, gzipped(t, body)), 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "gzip bomb" && len(bomb) >= limit {
				t.Fatalf("the bomb is %d bytes compressed: not under the limit", len(bomb))
			}
			rec := &recorder{}
			srv := newServer(t, rec, func(c *Config) { c.MaxBodyBytes = limit })
			req, _ := http.NewRequest("POST", srv.URL+"/v1/events", bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Header.Set("Content-Encoding", tt.encoding)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.status != 202 {
				if len(rec.msgs) != 0 {
					t.Errorf("published %d messages", len(rec.msgs))
				}
				return
			}
			if len(rec.msgs) != 1 || !bytes.Equal(rec.msgs[0].Data, body) {
				t.Fatalf("published %d messages; want the decompressed body", len(rec.msgs))
			}
		})
	}
}

// TestStalledBody: a client that sends the headers and half the body, then
// stalls, gets 408 once the server's read timeout passes, and the answer
// names no socket address.
func TestStalledBody(t *testing.T) {
	rec := &recorder{}
	h := New(Config{MaxEvents: 1000, MaxBodyBytes: 5 << 20, MaxClockSkew: time.Hour, PublishTimeout: time.Second, MaxErrors: 10}, rec, platform.Discard)
	mux := http.NewServeMux()
	h.Register(mux)
	srv, err := platform.HTTPConfig{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 300 * time.Millisecond}.Listen("127.0.0.1:0", mux, platform.Discard)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Shutdown(context.Background())

	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := ev("a")
	fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)/2])
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // bounded: the server answers after 300 ms
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	local, remote := conn.LocalAddr().String(), conn.RemoteAddr().String()
	if strings.Contains(string(b), "127.0.0.1") || strings.Contains(string(b), local) || strings.Contains(string(b), remote) {
		t.Errorf("the answer names a socket address: %s", b)
	}
	if len(rec.msgs) != 0 {
		t.Errorf("published %d messages", len(rec.msgs))
	}
}
