//go:build !noduckdb

package serve_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/live"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
)

// wait bounds every wait of these tests; no test asserts on timing.
const wait = 10 * time.Second

// streamEnv is a store, a hub and the API over a real HTTP server; its
// pipeline writes records to the store and publishes them, as the enrich
// worker does.
type streamEnv struct {
	st    *duckdb.Store
	hub   *live.Hub
	h     *serve.Handler
	srv   *httptest.Server
	mu    sync.Mutex
	next  int
	all   []event.Record // stored, in seq order
	proto event.Record
}

func newStreamEnv(t *testing.T, buffer int, opts serve.Options) *streamEnv {
	t.Helper()
	st, err := duckdb.Open(context.Background(), duckdb.Config{Path: filepath.Join(t.TempDir(), "skyjoin.duckdb")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hub := live.NewHub(buffer)
	opts.Hub = hub
	if opts.Logger == nil {
		opts.Logger = platform.Discard
	}
	h := serve.New(st, opts)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.SetDraining(true) // ends the streams, so that Close does not wait
		srv.Close()
		hub.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return &streamEnv{st: st, hub: hub, h: h, srv: srv, proto: variedRecords(1)[0]}
}

// store writes n new records and publishes them; it returns them with Seq.
func (e *streamEnv) store(t *testing.T, n int, edit func(i int, r *event.Record)) []event.Record {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	recs := variedRecords(e.next + n)[e.next:]
	for i := range recs {
		recs[i].EventID = fmt.Sprintf("live-%05d", e.next+i)
		if edit != nil {
			edit(e.next+i, &recs[i])
		}
	}
	e.next += n
	if err := e.st.Write(context.Background(), recs); err != nil {
		t.Error(err)
		return nil
	}
	e.hub.Publish(recs)
	e.all = append(e.all, recs...)
	return recs
}

type sseEvent struct {
	id, event, data string
}

// sseClient reads a stream into events (comments go to comments).
type sseClient struct {
	resp     *http.Response
	events   chan sseEvent
	comments chan string
	done     chan struct{} // closed at the end of the stream
	err      error         // why the stream ended; read after done
}

func connect(t *testing.T, url string, header http.Header) *sseClient {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	return &sseClient{resp: resp, events: make(chan sseEvent, 100_000), comments: make(chan string, 1000), done: make(chan struct{})}
}

// read parses the stream until it ends.
func (c *sseClient) read() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.resp.Body, 1<<16)
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.err = err
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.event != "" || ev.data != "" {
				c.events <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			select {
			case c.comments <- line:
			default:
			}
		default:
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "id":
				ev.id = v
			case "event":
				ev.event = v
			case "data":
				ev.data = v
			}
		}
	}
}

func (c *sseClient) start() *sseClient {
	go c.read()
	return c
}

// records receives n record events, checking each.
func (c *sseClient) records(t *testing.T, n int) []event.Record {
	t.Helper()
	var out []event.Record
	timeout := time.After(wait)
	for len(out) < n {
		select {
		case ev := <-c.events:
			if ev.event != "record" {
				t.Fatalf("after %d records: event %q %s, want a record", len(out), ev.event, ev.data)
			}
			var r event.Record
			if err := json.Unmarshal([]byte(ev.data), &r); err != nil {
				t.Fatalf("record data %s: %v", ev.data, err)
			}
			if ev.id != strconv.FormatInt(r.Seq, 10) {
				t.Fatalf("event id %q for a record with seq %d", ev.id, r.Seq)
			}
			out = append(out, r)
		case <-c.done:
			if len(c.events) == 0 {
				t.Fatalf("stream ended after %d of %d records: %v", len(out), n, c.err)
			}
		case <-timeout:
			t.Fatalf("%d of %d records arrived within %s", len(out), n, wait)
		}
	}
	return out
}

// quiet checks that no event is waiting, after the records that were
// expected: anything more would be a duplicate or a filter miss.
func (c *sseClient) quiet(t *testing.T) {
	t.Helper()
	select {
	case ev := <-c.events:
		t.Errorf("unexpected event %s %q", ev.event, ev.data)
	default:
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func seqs(recs []event.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func matching(recs []event.Record, q store.Query) []event.Record {
	var out []event.Record
	for i := range recs {
		if q.Match(&recs[i]) {
			out = append(out, recs[i])
		}
	}
	return out
}

func TestStreamLive(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{})
	env.store(t, 20, nil) // before the connection: not sent without a resume point
	all := connect(t, env.srv.URL+"/v1/stream", nil).start()
	tokyo := connect(t, env.srv.URL+"/v1/stream?city=tokyo&min_temp=0", nil).start()
	waitFor(t, "two subscribers", func() bool { return env.hub.Len() == 2 })
	var stored []event.Record
	for range 5 {
		stored = append(stored, env.store(t, 30, nil)...)
	}
	got := all.records(t, len(stored))
	if !reflect.DeepEqual(got, stored) {
		t.Errorf("records differ from those stored: seqs %v, want %v", seqs(got), seqs(stored))
	}
	want := matching(stored, store.Query{City: "Tokyo", MinTemp: ptr(0.0)})
	if len(want) == 0 || len(want) == len(stored) {
		t.Fatalf("test data: %d of %d match", len(want), len(stored))
	}
	if got := tokyo.records(t, len(want)); !slices.Equal(seqs(got), seqs(want)) {
		t.Errorf("filtered stream: %v, want %v", seqs(got), seqs(want))
	}
	// A marker record that both receive: nothing was sent between.
	marker := env.store(t, 1, func(_ int, r *event.Record) { r.Location.City = "Tokyo"; r.Weather.TemperatureC = 5 })
	for _, c := range []*sseClient{all, tokyo} {
		if got := c.records(t, 1); got[0].Seq != marker[0].Seq {
			t.Errorf("got seq %d, want the marker %d", got[0].Seq, marker[0].Seq)
		}
		c.quiet(t)
	}
}

func TestStreamResume(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{})
	before := env.store(t, 2500, nil) // more than a replay page
	filter := store.Query{Country: "Japan"}
	tests := []struct {
		name   string
		query  string
		header http.Header
		after  int64
		q      store.Query
	}{
		{"Last-Event-ID", "", http.Header{"Last-Event-Id": {fmt.Sprint(before[1200].Seq)}}, before[1200].Seq, store.Query{}},
		{"after", "?after=" + fmt.Sprint(before[10].Seq), nil, before[10].Seq, store.Query{}},
		{"after 0 replays all", "?after=0&country=japan", nil, 0, filter},
		{"header wins", "?after=1", http.Header{"Last-Event-Id": {fmt.Sprint(before[2400].Seq)}}, before[2400].Seq, store.Query{}},
		{"after the last", "?after=" + fmt.Sprint(before[2499].Seq), nil, before[2499].Seq, store.Query{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Records are stored and published while the client connects
			// and replays: each must arrive once, in seq order.
			c := connect(t, env.srv.URL+"/v1/stream"+tt.query, tt.header)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := 0; i < 40; i++ {
					select {
					case <-stop:
						return
					default:
					}
					env.store(t, 5, nil)
				}
			})
			c.start()
			wg.Wait()
			close(stop)
			env.mu.Lock()
			all := slices.Clone(env.all)
			env.mu.Unlock()
			var want []event.Record
			for _, r := range matching(all, tt.q) {
				if r.Seq > tt.after {
					want = append(want, r)
				}
			}
			got := c.records(t, len(want))
			if !slices.Equal(seqs(got), seqs(want)) {
				t.Errorf("got %d records %v,\nwant %d %v", len(got), seqs(got), len(want), seqs(want))
			}
			c.quiet(t)
		})
	}
	t.Run("reconnect", func(t *testing.T) {
		env.mu.Lock()
		start := env.all[len(env.all)-1].Seq
		env.mu.Unlock()
		c1 := connect(t, env.srv.URL+"/v1/stream?after="+fmt.Sprint(start), nil).start()
		first := env.store(t, 50, nil)
		got := c1.records(t, 20)
		c1.resp.Body.Close()
		<-c1.done
		more := env.store(t, 50, nil) // while disconnected
		c2 := connect(t, env.srv.URL+"/v1/stream", http.Header{"Last-Event-Id": {fmt.Sprint(got[19].Seq)}}).start()
		got = append(got, c2.records(t, 80)...)
		want := append(first, more...)
		if !slices.Equal(seqs(got), seqs(want)) {
			t.Errorf("across the reconnection: %v,\nwant %v", seqs(got), seqs(want))
		}
	})
}

func TestStreamSlowClient(t *testing.T) {
	const buffer = 16
	env := newStreamEnv(t, buffer, serve.Options{})
	fast := connect(t, env.srv.URL+"/v1/stream", nil).start()
	slow := connect(t, env.srv.URL+"/v1/stream", nil) // never reads, for now
	waitFor(t, "two subscribers", func() bool { return env.hub.Len() == 2 })
	// Big records fill the socket buffers soon. Each batch is smaller than
	// the hub's buffer, and the fast client reads it before the next one
	// is published, so only the slow one can fall behind. Publish returns
	// whatever the slow client does (it never blocks).
	big := strings.Repeat("x", 16<<10)
	var stored []event.Record
	for batches := 0; env.hub.Len() == 2; batches++ {
		if batches == 2000 {
			t.Fatalf("the slow client was not dropped after %d records", len(stored))
		}
		recs := env.store(t, buffer/2, func(_ int, r *event.Record) { r.Attributes = map[string]string{"big": big} })
		stored = append(stored, recs...)
		fast.records(t, len(recs))
	}
	// The other client goes on receiving.
	more := env.store(t, 3, nil)
	if got := fast.records(t, 3); !slices.Equal(seqs(got), seqs(more)) {
		t.Errorf("fast client after the drop: %v, want %v", seqs(got), seqs(more))
	}
	// The slow client now reads: what it got is a gapless prefix, then a
	// dropped event naming the last id, then the end of the stream.
	c := slow.start()
	got, dropped := c.untilDropped(t)
	if !strings.Contains(dropped.Reason, "fell behind") {
		t.Errorf("reason %q", dropped.Reason)
	}
	if len(got) == 0 || len(got) >= len(stored) || !slices.Equal(seqs(got), seqs(stored[:len(got)])) {
		t.Fatalf("slow client got %d records, want a proper prefix of the %d stored", len(got), len(stored))
	}
	if dropped.LastEventID != got[len(got)-1].Seq {
		t.Errorf("last_event_id %d, last record sent %d", dropped.LastEventID, got[len(got)-1].Seq)
	}
	// Resuming from there delivers the rest.
	r := connect(t, env.srv.URL+"/v1/stream?after="+fmt.Sprint(dropped.LastEventID), nil).start()
	rest := append(stored[len(got):], more...)
	if got := r.records(t, len(rest)); !slices.Equal(seqs(got), seqs(rest)) {
		t.Errorf("resume after the drop: %d records, want %d", len(got), len(rest))
	}
}

func TestStreamHeartbeat(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{Heartbeat: 20 * time.Millisecond})
	c := connect(t, env.srv.URL+"/v1/stream", nil).start()
	select {
	case line := <-c.comments:
		if line != ": heartbeat" {
			t.Errorf("comment %q", line)
		}
	case <-time.After(wait):
		t.Fatalf("no heartbeat within %s", wait)
	}
}

func TestStreamDrain(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{})
	c := connect(t, env.srv.URL+"/v1/stream", nil).start()
	waitFor(t, "a subscriber", func() bool { return env.hub.Len() == 1 })
	env.h.SetDraining(true)
	select {
	case <-c.done:
	case <-time.After(wait):
		t.Fatal("the stream did not end when the server drained")
	}
	c.quiet(t)
	resp, err := http.Get(env.srv.URL + "/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("new stream while draining: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	waitFor(t, "no subscriber", func() bool { return env.hub.Len() == 0 })

	env.h.SetDraining(false)
	c = connect(t, env.srv.URL+"/v1/stream", nil).start()
	waitFor(t, "a subscriber", func() bool { return env.hub.Len() == 1 })
	env.hub.Close() // the pipeline stopped: the stream ends
	select {
	case <-c.done:
	case <-time.After(wait):
		t.Fatal("the stream did not end when the hub closed")
	}
}

func TestStreamBadRequests(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{})
	tests := []struct {
		name   string
		query  string
		header string
		status int
		msg    string
	}{
		{"bad Last-Event-ID", "", "abc", 400, `Last-Event-ID: header must be the id of an event of this stream`},
		{"negative Last-Event-ID", "", "-1", 400, "Last-Event-ID:"},
		{"bad after", "?after=x", "", 400, `after: must be a record seq: an integer >= 0, got "x"`},
		{"negative after", "?after=-2", "", 400, "after: must be"},
		{"unknown parameter", "?limit=5", "", 400, "limit: unknown parameter; known: after, city"},
		{"bad filter", "?max_temp=cold", "", 400, "max_temp: must be a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/v1/stream"+tt.query, nil)
			if tt.header != "" {
				req.Header.Set("Last-Event-ID", tt.header)
			}
			rec := httptest.NewRecorder()
			env.h.ServeHTTP(rec, req)
			wantError(t, answer{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}, tt.status, tt.msg)
		})
	}
	t.Run("no hub", func(t *testing.T) {
		h := serve.New(env.st, serve.Options{Logger: platform.Discard})
		wantError(t, do(t, h, http.MethodGet, "/v1/stream"), http.StatusNotImplemented, "live stream")
	})
}

// TestStreamRepublishedAndOutOfOrder: the records topic may carry a batch
// again (a worker redelivered it after a crash) and, with several workers,
// batches out of seq order. A stream sends each record once and none is
// lost for arriving late.
func TestStreamRepublishedAndOutOfOrder(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{})
	c := connect(t, env.srv.URL+"/v1/stream", nil).start()
	waitFor(t, "a subscriber", func() bool { return env.hub.Len() == 1 })
	a := env.store(t, 10, nil)
	b := env.store(t, 10, nil)
	got := c.records(t, 20)
	env.hub.Publish(a) // again: already sent
	late := make([]event.Record, 3)
	for i := range late {
		late[i] = b[0]
		late[i].EventID = fmt.Sprintf("late-%d", i)
		late[i].Seq = a[0].Seq + int64(i) // below what was sent
	}
	env.hub.Publish(late)
	got = append(got, c.records(t, 3)...)
	c.quiet(t)
	var ids []string
	for _, r := range got {
		ids = append(ids, r.EventID)
	}
	var want []string
	for _, r := range append(append(append([]event.Record{}, a...), b...), late...) {
		want = append(want, r.EventID)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("sent %v\nwant %v", ids, want)
	}
}

// TestStreamProperties: a record's properties arrive in the stream as a
// JSON object with their types (numbers stay numbers, not strings; large
// integers keep every digit), and property filters select the stream.
func TestStreamProperties(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{})
	c := connect(t, env.srv.URL+"/v1/stream?prop.amount=gt:10", nil).start()
	waitFor(t, "a subscriber", func() bool { return env.hub.Len() == 1 })
	props := `{"amount":12.5,"qty":3,"big":9007199254740993,"ok":true,"tags":["a",1],"ship":{"days":2,"express":false},"none":null,"note":"12"}`
	stored := env.store(t, 3, func(i int, r *event.Record) {
		r.Properties = json.RawMessage(props)
		if i == 1 {
			r.Properties = json.RawMessage(`{"amount":9.5}`) // filtered out
		}
	})
	var got []sseEvent
	timeout := time.After(wait)
	for len(got) < 2 {
		select {
		case ev := <-c.events:
			got = append(got, ev)
		case <-timeout:
			t.Fatalf("%d of 2 records arrived within %s", len(got), wait)
		}
	}
	for k, ev := range got {
		if want := strconv.FormatInt(stored[2*k].Seq, 10); ev.event != "record" || ev.id != want {
			t.Fatalf("event %q id %s, want a record with seq %s", ev.event, ev.id, want)
		}
		var rec struct {
			Properties map[string]any `json:"properties"`
		}
		d := json.NewDecoder(strings.NewReader(ev.data))
		d.UseNumber()
		if err := d.Decode(&rec); err != nil {
			t.Fatalf("record %s: %v", ev.data, err)
		}
		p := rec.Properties
		ship, _ := p["ship"].(map[string]any)
		tags, _ := p["tags"].([]any)
		switch {
		case p == nil:
			t.Fatalf("no properties object in %s", ev.data)
		case p["amount"] != json.Number("12.5"), p["qty"] != json.Number("3"), p["big"] != json.Number("9007199254740993"):
			t.Errorf("numbers: amount %#v qty %#v big %#v, want JSON numbers 12.5, 3, 9007199254740993", p["amount"], p["qty"], p["big"])
		case p["ok"] != true, p["note"] != "12", p["none"] != nil:
			t.Errorf("ok %#v note %#v none %#v, want true, the string \"12\", null", p["ok"], p["note"], p["none"])
		case len(tags) != 2 || tags[0] != "a" || tags[1] != json.Number("1"):
			t.Errorf("tags %#v, want [\"a\", 1]", p["tags"])
		case ship == nil || ship["days"] != json.Number("2") || ship["express"] != false:
			t.Errorf("ship %#v, want an object {days: 2, express: false}", p["ship"])
		}
		if _, ok := p["none"]; !ok {
			t.Errorf("the null property is gone: %s", ev.data)
		}
	}
	c.quiet(t)
}
