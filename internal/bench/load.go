// Package bench drives a running skyjoin over HTTP from a separate process
// and measures it: ingest throughput, pipeline throughput, end-to-end
// latency from the 202 to queryable, weather calls and cache hits, and the
// server's memory and CPU. Every loop is bounded in events and time, and
// the target must be a loopback address.
package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/collect"
	"github.com/skyjoin/skyjoin/internal/sim"
)

// CheckLoopback refuses targets that are not on this machine: load is only
// ever sent to loopback addresses.
func CheckLoopback(base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("target %q: %w", base, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %q: bench sends load to loopback addresses only (127.0.0.0/8, ::1, localhost)", base)
	}
	return nil
}

// Events makes request bodies of realistic events: the users of the demo
// population (so that the weather cache warms up as in the demo), each event
// with a unique id. It is safe for concurrent use.
type Events struct {
	prefix    string
	templates [][3][]byte // JSON before the event id, between it and occurred_at's value, after that
	users     []string    // the user id of each template
	next      atomic.Int64
}

// benchProperties are the typed properties of every load event: an order
// as a product team sends one (numbers, a boolean, a nested object and an
// array), so that the properties column is written and read as in use.
const benchProperties = `{"order_id":"ord-20481","amount":42.5,"currency":"EUR","items":[{"sku":"sku-1","qty":2,"price":12.5},{"sku":"sku-7","qty":1,"price":17.5}],"coupon":null,"first_order":false,"channel":{"name":"app","version":"5.2.1"}}`

// NewEvents builds templates from the simulator's users. runID makes the
// event ids of this run unique. Each event carries typed properties.
func NewEvents(runID string, users int) (*Events, error) {
	s := sim.New(sim.Options{Users: users})
	rec := httptest.NewRecorder()
	s.RandomUser().ServeHTTP(rec, httptest.NewRequest("GET", "/api/?results="+strconv.Itoa(min(users, sim.MaxResults)), nil))
	if rec.Code != 200 {
		return nil, fmt.Errorf("bench: simulated users: %d %s", rec.Code, rec.Body.String())
	}
	evs, _, err := collect.Decode(rec.Body.Bytes(), time.Now())
	if err != nil {
		return nil, fmt.Errorf("bench: simulated users: %w", err)
	}
	e := &Events{prefix: "bench-" + runID + "-"}
	for i := range evs {
		ev := evs[i]
		e.users = append(e.users, ev.User.ID)
		ev.EventID = "\x00"
		ev.EventType = "bench.event"
		ev.OccurredAt = occurredSentinel
		ev.Properties = json.RawMessage(benchProperties)
		b, err := json.Marshal(&ev)
		if err != nil {
			return nil, err
		}
		before, rest, ok1 := bytes.Cut(b, []byte(`"\u0000"`))
		between, after, ok2 := bytes.Cut(rest, []byte(`"`+occurredSentinel.Format(time.RFC3339)+`"`))
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("bench: an event's JSON has no event_id or occurred_at to fill in: %s", b)
		}
		e.templates = append(e.templates, [3][]byte{bytes.Clone(before), bytes.Clone(between), bytes.Clone(after)})
	}
	if len(e.templates) == 0 {
		return nil, fmt.Errorf("bench: no simulated users")
	}
	return e, nil
}

// Users are the user ids of the events.
func (e *Events) Users() []string { return e.users }

// ID is the event id of the n-th event of this run.
func (e *Events) ID(n int64) string { return e.prefix + strconv.FormatInt(n, 10) }

// occurredSentinel is the occurred_at of the templates, replaced by the
// time each event is made.
var occurredSentinel = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

// Append appends one event to buf and returns its sequence number.
func (e *Events) Append(buf []byte) ([]byte, int64) {
	n := e.next.Add(1)
	return e.appendSeq(buf, n), n
}

// Body builds one request body of n events: a single JSON object for n == 1,
// else a JSON array. It returns the sequence number of the first event.
func (e *Events) Body(buf []byte, n int) ([]byte, int64) {
	if n == 1 {
		return e.Append(buf[:0])
	}
	buf = append(buf[:0], '[')
	var first int64
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		var seq int64
		buf, seq = e.Append(buf)
		if i == 0 {
			first = seq
		}
	}
	return append(buf, ']'), first
}

// Client posts to and reads from one skyjoin.
type Client struct {
	Base string
	// Admin is the base URL of the target's admin listener, where
	// /debug/pipeline is (its ready file's admin_url); "" means Base.
	Admin string
	// Key, if set, is sent as Authorization: Bearer on every request (the
	// target has auth on, as a deployment does).
	Key string
	HC  *http.Client
}

// do sends req with the client's credential.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	return c.doWith(c.HC, req)
}

// doWith is do through hc.
func (c *Client) doWith(hc *http.Client, req *http.Request) (*http.Response, error) {
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	return hc.Do(req)
}

// NewClient returns a client with enough idle connections for conc workers.
func NewClient(base string, conc int) *Client {
	return &Client{Base: base, HC: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conc * 2, MaxIdleConnsPerHost: conc * 2, IdleConnTimeout: time.Minute}}}
}

// Post sends a body and returns the status (0 on a transport error).
func (c *Client) Post(ctx context.Context, body []byte) int {
	return c.PostAnswer(ctx, body).Status
}

// Exists says whether an event is queryable.
func (c *Client) Exists(ctx context.Context, id string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.Base+"/v1/events/"+url.PathEscape(id), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case 200:
		return true, nil
	case 404:
		return false, nil
	}
	return false, fmt.Errorf("GET event %s: %d", id, resp.StatusCode)
}

// Debug is the server's GET /debug/pipeline answer.
type Debug struct {
	PID        int   `json:"pid"`
	Procs      int   `json:"gomaxprocs"`
	MaxRSS     int64 `json:"max_rss_bytes"`
	PeakRSS    int64 `json:"peak_rss_bytes"` // since the last reset_peak
	RSS        int64 `json:"rss_bytes"`
	PeakReset  bool  `json:"peak_reset"`
	CPUSeconds float64
	UserCPU    float64 `json:"user_cpu_seconds"`
	SystemCPU  float64 `json:"system_cpu_seconds"`
	Stored     int64   `json:"stored"`
	Messages   int64   `json:"messages"`
	Dead       int64   `json:"dead_lettered"`
	Backlog    int64   `json:"backlog"`
	Memory     *Memory `json:"memory"` // with ?memory=1
	Weather    struct {
		Requests int64 `json:"requests"`
		Hits     int64 `json:"hits"`
		Misses   int64 `json:"misses"`
		Calls    int64 `json:"calls"`
		Points   int64 `json:"points"`
	} `json:"weather"`
}

// Debug reads the server's counters.
func (c *Client) Debug(ctx context.Context) (Debug, error) {
	return c.debug(ctx, "")
}

// ResetPeak resets the server's peak RSS (so that a phase can read its own)
// and returns its counters.
func (c *Client) ResetPeak(ctx context.Context) (Debug, error) {
	d, err := c.debug(ctx, "?reset_peak=1")
	if err == nil && !d.PeakReset {
		err = fmt.Errorf("GET /debug/pipeline?reset_peak=1: the server did not reset its peak RSS")
	}
	return d, err
}

// CPUProfile writes the server's CPU profile over the next secs seconds
// (its admin listener's /debug/pprof/profile) to path.
func (c *Client) CPUProfile(ctx context.Context, secs int, path string) error {
	return c.pprof(ctx, "profile", fmt.Sprintf("?seconds=%d", secs), path)
}

// HeapProfile writes the server's heap profile (its admin listener's
// /debug/pprof/heap: the memory in use as of its last GC, and what
// allocated it) to path.
func (c *Client) HeapProfile(ctx context.Context, path string) error {
	return c.pprof(ctx, "heap", "", path)
}

// pprof writes the server's /debug/pprof/<name><query> to path.
func (c *Client) pprof(ctx context.Context, name, query, path string) error {
	base := c.Admin
	if base == "" {
		base = c.Base
	}
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/debug/pprof/"+name+query, nil)
	if err != nil {
		return err
	}
	// Not c.HC: its timeout is shorter than a phase's profile.
	resp, err := c.doWith(&http.Client{Transport: c.HC.Transport}, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET /debug/pprof/%s: %s: %s", name, resp.Status, bytes.TrimSpace(b))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (c *Client) debug(ctx context.Context, query string) (Debug, error) {
	var d Debug
	base := c.Admin
	if base == "" {
		base = c.Base
	}
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/debug/pipeline"+query, nil)
	if err != nil {
		return d, err
	}
	resp, err := c.do(req)
	if err != nil {
		return d, fmt.Errorf("GET /debug/pipeline: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return d, fmt.Errorf("GET /debug/pipeline: %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return d, fmt.Errorf("GET /debug/pipeline: %w", err)
	}
	d.CPUSeconds = d.UserCPU + d.SystemCPU
	return d, nil
}

// Load is one run of the load generator.
type Load struct {
	Client      *Client
	Events      *Events
	BatchSize   int           // events per request
	Concurrency int           // requests in flight
	Rate        float64       // events per second offered; 0: as fast as possible
	MaxEvents   int64         // stop after offering this many events
	Duration    time.Duration // stop after this long
	ProbeEvery  int64         // watch every n-th request's first event for latency (0: none)
	// Progress, if set, is called about once a second.
	Progress func(LoadResult)
}

// LoadResult counts what a Load did.
type LoadResult struct {
	Elapsed     time.Duration
	Requests    int64
	Accepted    int64 // events answered 202
	Refused503  int64 // requests answered 503
	OtherErrors int64 // requests answered otherwise, or not at all
	// AcceptedIDs are the sequence numbers of the first events of accepted
	// requests with their batch size, when KeepAccepted is set.
	Latencies []time.Duration // 202 to queryable, of the probes
	Probes    int64
	Lost      int64 // probes accepted but not queryable within the probe timeout
}

// EventsPerSecond is the accepted rate.
func (r LoadResult) EventsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Accepted) / r.Elapsed.Seconds()
}

// RequestsPerSecond is the accepted request rate.
func (r LoadResult) RequestsPerSecond(batch int) float64 {
	return r.EventsPerSecond() / float64(batch)
}

// Run offers load until MaxEvents, Duration or ctx, whichever comes first.
func (l *Load) Run(ctx context.Context) LoadResult {
	parent := ctx // the probes outlive the phase, not the run
	ctx, cancel := context.WithTimeout(ctx, l.Duration)
	defer cancel()
	var (
		requests, accepted, refused, other, offered atomic.Int64
		mu                                          sync.Mutex
		latencies                                   []time.Duration
		probes, lost                                atomic.Int64
		probeWG                                     sync.WaitGroup
	)
	start := time.Now()
	var pace <-chan time.Time
	if l.Rate > 0 {
		every := time.Duration(float64(time.Second) * float64(l.BatchSize) / l.Rate)
		t := time.NewTicker(max(every, 50*time.Microsecond))
		defer t.Stop()
		pace = t.C
	}
	done := make(chan struct{})
	if l.Progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					l.Progress(LoadResult{Elapsed: time.Since(start), Requests: requests.Load(), Accepted: accepted.Load(),
						Refused503: refused.Load(), OtherErrors: other.Load()})
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for range l.Concurrency {
		wg.Go(func() {
			buf := make([]byte, 0, 1<<20)
			for {
				if pace != nil {
					select {
					case <-ctx.Done():
						return
					case <-pace:
					}
				}
				if ctx.Err() != nil || offered.Add(int64(l.BatchSize)) > l.MaxEvents {
					return
				}
				var first int64
				buf, first = l.Events.Body(buf, l.BatchSize)
				n := requests.Add(1)
				code := l.Client.Post(ctx, buf)
				acceptedAt := time.Now()
				switch code {
				case http.StatusAccepted:
					accepted.Add(int64(l.BatchSize))
					if l.ProbeEvery > 0 && n%l.ProbeEvery == 0 {
						probes.Add(1)
						probeWG.Go(func() {
							d, ok := l.probe(parent, l.Events.ID(first), acceptedAt)
							if !ok {
								lost.Add(1)
								return
							}
							mu.Lock()
							latencies = append(latencies, d)
							mu.Unlock()
						})
					}
				case http.StatusServiceUnavailable:
					refused.Add(1)
					time.Sleep(50 * time.Millisecond) // honour the back-off the 503 asks for, briefly
				default:
					if ctx.Err() == nil {
						other.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(done)
	probeWG.Wait()
	return LoadResult{Elapsed: elapsed, Requests: requests.Load(), Accepted: accepted.Load(), Refused503: refused.Load(),
		OtherErrors: other.Load(), Latencies: latencies, Probes: probes.Load(), Lost: lost.Load()}
}

// probeTimeout bounds how long a probe waits for its event to be queryable.
const probeTimeout = 60 * time.Second

// probe polls until the event is queryable, or for probeTimeout, or until
// ctx (the run's, not the phase's) is done; it returns the time from the 202.
func (l *Load) probe(ctx context.Context, id string, acceptedAt time.Time) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	// Poll at a twentieth of the time waited so far (1-250 ms): within 5%
	// of the latency, without the probes of a saturated run (seconds of
	// backlog, dozens of probes waiting) loading the server with reads
	// (polling every 10 ms took half the server's CPU in such a run: a GET
	// of one record costs DuckDB about 1.5 ms).
	for ctx.Err() == nil {
		ok, err := l.Client.Exists(ctx, id)
		if err == nil && ok {
			return time.Since(acceptedAt), true
		}
		time.Sleep(min(max(time.Since(acceptedAt)/20, time.Millisecond), 250*time.Millisecond))
	}
	return 0, false
}
