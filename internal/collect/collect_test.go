package collect_test

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/collect"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/sim"
)

var pollTime = time.Date(2026, 11, 26, 6, 50, 0, 0, time.UTC)

// recorder is a Publisher that keeps what it was given; it fails the first
// failures calls.
type recorder struct {
	mu       sync.Mutex
	batches  [][]event.Event
	failures int
}

func (r *recorder) PublishEvents(ctx context.Context, events []event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures > 0 {
		r.failures--
		return errors.New("broker unavailable")
	}
	r.batches = append(r.batches, append([]event.Event(nil), events...))
	return nil
}

func (r *recorder) events() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event.Event
	for _, b := range r.batches {
		out = append(out, b...)
	}
	return out
}

func fixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/results.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func f(v float64) *float64 { return &v }

func TestDecodeFixture(t *testing.T) {
	events, problems, err := collect.Decode(fixture(t), pollTime)
	if err != nil || len(problems) != 0 || len(events) != 3 {
		t.Fatalf("%d events, problems %v, err %v", len(events), problems, err)
	}
	want := event.Event{
		EventID:    "ru-7a0eed16-9430-4d68-901f-c0d4c1c3bf00-" + "1795675800000" + "-0",
		EventType:  event.TypeUserObserved,
		OccurredAt: pollTime,
		User: event.User{
			ID: "7a0eed16-9430-4d68-901f-c0d4c1c3bf00", Username: "yellowpeacock117", Name: "Jennie Nichols",
			Title: "Miss", FirstName: "Jennie", LastName: "Nichols", Email: "jennie.nichols@example.com",
			Phone: "(272) 790-0888", Cell: "(489) 330-2385", Gender: "female", Nationality: "US",
			BirthDate: "1992-03-08T15:13:16.688Z", PictureURL: "https://randomuser.me/api/portraits/women/75.jpg",
		},
		Location: event.Location{
			Latitude: f(-69.8246), Longitude: f(134.8719), Street: "8929 Valwood Pkwy", City: "Billings",
			State: "Michigan", Country: "United States", Postcode: "63104", Timezone: "+9:30",
		},
	}
	got := events[0]
	gb, _ := event.Marshal(got)
	wb, _ := event.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("event 0:\n got %s\nwant %s", gb, wb)
	}
	tests := []struct {
		i                              int
		postcode, street, name, tz, id string
		lat, lon                       float64
	}{
		{1, "31745", "6521 Mühlenweg", "Jörg Schäfer", "-3:00", "0f3c8f5e-2d5b-4b8e-9d0e-6f7a1c2b3d4e", 55.4216, -43.0811},
		{2, "39512", "1193 Hämeenkatu", "Aino Heikkinen", "0:00", "c4a1e9d2-7b3f-4e6a-8c5d-1f2e3a4b5c6d", 12.2705, 170.3127},
	}
	for _, tt := range tests {
		e := events[tt.i]
		if e.Location.Postcode != tt.postcode || e.Location.Street != tt.street || e.User.Name != tt.name ||
			e.Location.Timezone != tt.tz || e.User.ID != tt.id || e.Location.Lat() != tt.lat || e.Location.Lon() != tt.lon {
			t.Errorf("event %d: %+v", tt.i, e)
		}
	}
	ids := map[string]bool{}
	for i, e := range events {
		if errs := e.Validate(i, pollTime, event.DefaultMaxClockSkew); len(errs) > 0 {
			t.Errorf("event %d invalid: %v", i, errs)
		}
		ids[e.EventID] = true
	}
	if len(ids) != 3 {
		t.Errorf("event ids not unique: %v", ids)
	}
	// Same poll, same ids; another poll, other ids.
	again, _, _ := collect.Decode(fixture(t), pollTime)
	later, _, _ := collect.Decode(fixture(t), pollTime.Add(time.Second))
	if again[0].EventID != events[0].EventID || later[0].EventID == events[0].EventID {
		t.Errorf("ids: %s %s %s", events[0].EventID, again[0].EventID, later[0].EventID)
	}
}

func TestDecodeSkipsBadUsers(t *testing.T) {
	user := func(uuid, coords string) string {
		return `{"login":{"uuid":"` + uuid + `"},"name":{"first":"A","last":"B"},"location":{"coordinates":` + coords + `}}`
	}
	tests := []struct {
		name    string
		user    string
		ok      bool
		problem string
	}{
		{"string coordinates", user("u1", `{"latitude":"1.5","longitude":"-2.25"}`), true, ""},
		{"number coordinates", user("u1", `{"latitude":1.5,"longitude":-2.25}`), true, ""},
		{"not a number", user("u1", `{"latitude":"abc","longitude":"2"}`), false, `latitude "abc"`},
		{"latitude out of range", user("u1", `{"latitude":"95.1","longitude":"2"}`), false, "latitude"},
		{"longitude out of range", user("u1", `{"latitude":"5","longitude":"-180.5"}`), false, "longitude"},
		{"empty", user("u1", `{"latitude":"","longitude":"2"}`), false, "no latitude"},
		{"null", user("u1", `{"latitude":null,"longitude":null}`), false, "no latitude"},
		{"no uuid", user("", `{"latitude":"1","longitude":"2"}`), false, "no login.uuid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"results":[` + user("good", `{"latitude":"1","longitude":"2"}`) + `,` + tt.user + `]}`
			events, problems, err := collect.Decode([]byte(body), pollTime)
			if err != nil {
				t.Fatal(err)
			}
			if tt.ok != (len(events) == 2) || tt.ok != (len(problems) == 0) {
				t.Fatalf("%d events, problems %v", len(events), problems)
			}
			if !tt.ok && !strings.Contains(problems[0].Error(), tt.problem) {
				t.Errorf("problem %v, want %q", problems[0], tt.problem)
			}
		})
	}
	if _, _, err := collect.Decode([]byte(`{"error":"Uh oh, something has gone wrong."}`), pollTime); err == nil {
		t.Errorf("no error for an error answer")
	}
	if _, _, err := collect.Decode([]byte(`<html>`), pollTime); err == nil {
		t.Errorf("no error for HTML")
	}
}

func newCollector(t *testing.T, cfg collect.Config, pub collect.Publisher) *collect.Collector {
	t.Helper()
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 10
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Millisecond
	}
	cfg.Timeout = 5 * time.Second
	if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	c, err := collect.New(cfg, pub, collect.Options{Now: func() time.Time { return pollTime }, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPollFixture(t *testing.T) {
	body := fixture(t)
	var gotURL atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotURL.Store(r.URL.String())
		w.Write(body)
	}))
	defer srv.Close()
	pub := &recorder{}
	c := newCollector(t, collect.Config{URL: srv.URL + "/", BatchSize: 3, Nat: "us,de"}, pub)
	n, err := c.Poll(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("Poll = %d, %v", n, err)
	}
	if u := gotURL.Load().(string); u != "/api/?nat=us%2Cde&results=3" {
		t.Errorf("requested %s", u)
	}
	if evs := pub.events(); len(evs) != 3 || evs[1].User.Nationality != "DE" {
		t.Errorf("published %+v", evs)
	}
}

func TestRunAgainstSim(t *testing.T) {
	sm := sim.New(sim.Options{Users: 30, Clock: func() time.Time { return pollTime }})
	srv := httptest.NewServer(sm.Handler())
	defer srv.Close()
	pub := &recorder{}
	c := newCollector(t, collect.Config{URL: srv.URL + sim.PrefixRandomUser, BatchSize: 50, MaxEvents: 120}, pub)
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := pub.events()
	if len(evs) != 120 || len(pub.batches) != 3 || len(pub.batches[2]) != 20 {
		t.Fatalf("%d events in %d batches", len(evs), len(pub.batches))
	}
	users := map[string]sim.User{}
	for _, u := range sm.Users() {
		users[u.UUID] = u
	}
	ids := map[string]bool{}
	seen := map[string]int{}
	for i, e := range evs {
		u, ok := users[e.User.ID]
		if !ok || e.Location.Lat() != u.Latitude || e.Location.Lon() != u.Longitude || e.User.Nationality != u.Nationality {
			t.Fatalf("event %d: %+v, sim user %+v", i, e, u)
		}
		if errs := e.Validate(i, pollTime, event.DefaultMaxClockSkew); len(errs) > 0 {
			t.Fatalf("event %d invalid: %v", i, errs)
		}
		ids[e.EventID] = true
		seen[e.User.ID]++
	}
	if len(ids) != 120 {
		t.Errorf("%d distinct event ids", len(ids))
	}
	if len(seen) != 30 {
		t.Errorf("%d distinct users of 30 in 120 events", len(seen))
	}
	if st := c.Stats(); st.Events != 120 || st.Polls != 3 || st.Skipped != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestRetries(t *testing.T) {
	t.Run("5xx then ok", func(t *testing.T) {
		fails := atomic.Int64{}
		sm := sim.New(sim.Options{Users: 5, Fault: func(api string, r *http.Request) int {
			if fails.Add(1) <= 2 {
				return http.StatusServiceUnavailable
			}
			return 0
		}})
		srv := httptest.NewServer(sm.RandomUser())
		defer srv.Close()
		pub := &recorder{failures: 1}
		c := newCollector(t, collect.Config{URL: srv.URL, BatchSize: 4}, pub)
		n, err := c.Poll(context.Background())
		if err != nil || n != 4 {
			t.Fatalf("Poll = %d, %v", n, err)
		}
		if st := c.Stats(); st.FetchErrors != 2 || st.PublishErrors != 1 || st.Events != 4 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("4xx is fatal", func(t *testing.T) {
		var n atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"not found"}`))
		}))
		defer srv.Close()
		c := newCollector(t, collect.Config{URL: srv.URL}, &recorder{})
		err := c.Run(context.Background())
		if !errors.Is(err, collect.ErrFatal) || !strings.Contains(err.Error(), "HTTP 404: not found") || n.Load() != 1 {
			t.Errorf("Run = %v after %d requests", err, n.Load())
		}
	})
	t.Run("network errors exhaust retries", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c := newCollector(t, collect.Config{URL: url, Retries: 2}, &recorder{})
		_, err := c.Poll(context.Background())
		if err == nil || errors.Is(err, collect.ErrFatal) || c.Stats().FetchErrors != 3 {
			t.Errorf("Poll = %v, stats %+v", err, c.Stats())
		}
	})
	t.Run("publish keeps failing", func(t *testing.T) {
		sm := sim.New(sim.Options{Users: 5})
		srv := httptest.NewServer(sm.RandomUser())
		defer srv.Close()
		c := newCollector(t, collect.Config{URL: srv.URL, Retries: 1}, &recorder{failures: 5})
		if err := c.Run(context.Background()); !errors.Is(err, collect.ErrFatal) || !strings.Contains(err.Error(), "broker unavailable") {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestRetryAfter: a 503's Retry-After, in either form, is honoured. The
// poll runs under a deadline shorter than the wait a hint asks for, so a
// hint that was read ends the poll at once, after one request, instead of
// retrying after the 1 ms backoff.
func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name         string
		retryAfter   func() string
		wantRequests int64 // 1: the hint was honoured; 4: the retries went ahead
	}{
		{"delay-seconds", func() string { return "120" }, 1},
		{"HTTP-date in the future", func() string { return time.Now().Add(time.Hour).UTC().Format(http.TimeFormat) }, 1},
		{"HTTP-date in the past", func() string { return time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat) }, 4},
		{"zero", func() string { return "0" }, 4},
		{"garbage", func() string { return "soon" }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				w.Header().Set("Retry-After", tt.retryAfter())
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			defer srv.Close()
			c := newCollector(t, collect.Config{URL: srv.URL, Retries: 3}, &recorder{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := c.Poll(ctx)
			if err == nil || !strings.Contains(err.Error(), "HTTP 503") || n.Load() != tt.wantRequests {
				t.Fatalf("Poll = %v after %d requests, want HTTP 503 after %d", err, n.Load(), tt.wantRequests)
			}
			if honoured := tt.wantRequests == 1; honoured != errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Poll = %v: want deadline exceeded only when the hint outlasts it", err)
			}
		})
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	sm := sim.New(sim.Options{Users: 5})
	srv := httptest.NewServer(sm.RandomUser())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	pub := &cancelAfter{n: 3, cancel: cancel}
	c := newCollector(t, collect.Config{URL: srv.URL, BatchSize: 2}, pub)
	if err := c.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
	if pub.calls < 3 {
		t.Errorf("%d publishes", pub.calls)
	}
}

type cancelAfter struct {
	n, calls int
	cancel   func()
}

func (p *cancelAfter) PublishEvents(ctx context.Context, events []event.Event) error {
	p.calls++
	if p.calls == p.n {
		p.cancel()
	}
	return nil
}

func TestConfig(t *testing.T) {
	err := collect.Config{URL: "ftp://x", BatchSize: 0, Interval: 0, MaxEvents: -1, Nat: "usa", Timeout: 0, Retries: -1}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"URL", "batch size", "interval", "max events", "nationalities", "timeout", "retries"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in:\n%v", want, err)
		}
	}
	var cfg collect.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-collect-url", "http://127.0.0.1:1/randomuser", "-collect-batch", "7", "-collect-max-events", "10"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil || cfg.BatchSize != 7 || cfg.MaxEvents != 10 || cfg.Interval != collect.DefaultInterval {
		t.Errorf("cfg %+v: %v", cfg, err)
	}
	if err := collect.DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// TestErrorsHoldNoCredential: a collect URL with user:password@ (an API
// behind basic auth) never shows the password in an error; an answer that
// echoes a token is cut and redacted. (A loopback server.)
func TestErrorsHoldNoCredential(t *testing.T) {
	const password, token = "pw-0123456789", "tk-0123456789"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":"forbidden: GET /api/?results=1&access_token=` + token + strings.Repeat(" padding", 100) + `"}`))
	}))
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://user:"+password+"@", 1)
	c := newCollector(t, collect.Config{URL: u}, &recorder{})
	_, err := c.Poll(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 403") || len(err.Error()) > 400 {
		t.Fatalf("Poll = %v", err)
	}
	for _, cred := range []string{password, token} {
		if strings.Contains(err.Error(), cred) {
			t.Errorf("the error holds %q: %v", cred, err)
		}
	}
	bad := collect.DefaultConfig()
	bad.URL = "http://user:" + password + "@127.0.0.1:1/?x=1"
	if err := bad.Validate(); err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("Validate = %v", err)
	}
}
