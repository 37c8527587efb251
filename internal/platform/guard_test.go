package platform

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestGuard: the guard refuses a path or a query that is not UTF-8, a
// cross-origin request from an origin not allowed, and a body of a media
// type, charset or encoding the route does not take; it answers a CORS
// preflight from an allowed origin.
func TestGuard(t *testing.T) {
	var reached int
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++; w.WriteHeader(204) })
	g := Guard{Origins: []string{"https://app.example.com"}, Bodies: func(r *http.Request) ([]string, bool) {
		if r.URL.Path == "/v1/events" {
			return []string{"application/json", "application/x-ndjson"}, true
		}
		return []string{"application/json"}, false
	}}
	h := g.Wrap(next)
	tests := []struct {
		name, method, target string
		header               map[string]string
		body                 string
		status               int
		want                 string // in the answer's message, or a header "Name: value"
	}{
		{"plain GET", "GET", "/v1/events?city=Z%C3%BCrich", nil, "", 204, ""},
		{"path not UTF-8", "GET", "/v1/events/%ff%fe", nil, "", 400, "path: is not valid UTF-8"},
		{"query value not UTF-8", "GET", "/v1/events?city=%ff", nil, "", 400, "city: is not valid UTF-8"},
		{"query name not UTF-8", "GET", "/v1/events?%ff=1", nil, "", 400, "a parameter name is not valid UTF-8"},
		{"bad escape", "GET", "/v1/events?city=%zz", nil, "", 400, "query string"},
		{"JSON POST", "POST", "/v1/webhooks", map[string]string{"Content-Type": "application/json; charset=UTF-8"}, "{}", 204, ""},
		{"empty POST without a type", "POST", "/v1/deadletters/replay", nil, "", 204, ""},
		{"DELETE without a body", "DELETE", "/v1/webhooks/x", nil, "", 204, ""},
		{"form", "POST", "/v1/webhooks", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "a=b", 415, "not accepted here"},
		{"text", "POST", "/v1/events", map[string]string{"Content-Type": "text/plain"}, "{}", 415, "not accepted here"},
		{"multipart", "POST", "/v1/events", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, "--x--", 415, "not accepted"},
		{"no type", "POST", "/v1/webhooks", nil, "{}", 415, "Content-Type is required"},
		{"NDJSON to a JSON route", "POST", "/v1/webhooks", map[string]string{"Content-Type": "application/x-ndjson"}, "{}", 415, "send application/json"},
		{"NDJSON to events", "POST", "/v1/events", map[string]string{"Content-Type": "application/x-ndjson"}, "{}", 204, ""},
		{"latin-1", "POST", "/v1/events", map[string]string{"Content-Type": "application/json; charset=latin1"}, "{}", 415, "charset"},
		{"gzip to events", "POST", "/v1/events", map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"}, "x", 204, ""},
		{"gzip elsewhere", "POST", "/v1/webhooks", map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"}, "x", 415, "Content-Encoding"},
		{"br to events", "POST", "/v1/events", map[string]string{"Content-Type": "application/json", "Content-Encoding": "br"}, "x", 415, "Content-Encoding"},
		{"DELETE with a form", "DELETE", "/v1/webhooks/x", map[string]string{"Content-Type": "text/plain"}, "x", 415, ""},
		{"same origin", "POST", "/v1/events", map[string]string{"Origin": "http://example.com", "Content-Type": "application/json"}, "{}", 204, ""},
		{"other origin", "POST", "/v1/events", map[string]string{"Origin": "https://evil.example", "Content-Type": "application/json"}, "{}", 403, "not in the allowed origins"},
		{"other origin GET", "GET", "/v1/events", map[string]string{"Origin": "https://evil.example"}, "", 403, "--cors-origins"},
		{"other origin preflight", "OPTIONS", "/v1/events", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, "", 403, ""},
		{"allowed origin preflight", "OPTIONS", "/v1/events", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization, content-type"}, "", 204, "Access-Control-Allow-Headers: Authorization, Content-Type, Content-Encoding, Last-Event-ID"},
		{"allowed origin GET", "GET", "/v1/events", map[string]string{"Origin": "https://app.example.com"}, "", 204, "Access-Control-Allow-Origin: https://app.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reached = 0
			r := httptest.NewRequest(tt.method, "http://example.com"+tt.target, strings.NewReader(tt.body))
			if tt.body == "" {
				r.Body, r.ContentLength = http.NoBody, 0
			}
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if (reached == 1) != (tt.status == 204 && tt.method != "OPTIONS") {
				t.Errorf("reached the route %d times", reached)
			}
			if name, value, ok := strings.Cut(tt.want, ": "); ok && strings.HasPrefix(name, "Access-") {
				if got := w.Header().Get(name); got != value {
					t.Errorf("%s: %q, want %q", name, got, value)
				}
			} else if !strings.Contains(w.Body.String(), tt.want) {
				t.Errorf("answer %s does not say %q", w.Body, tt.want)
			}
		})
	}
}

func TestParseOrigins(t *testing.T) {
	got, err := parseOrigins(" https://App.Example.com, http://localhost:3000 ,")
	if err != nil || strings.Join(got, " ") != "https://app.example.com http://localhost:3000" {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"*", "app.example.com", "https://a.example/path", "ftp://a.example", "https://u@a.example"} {
		if _, err := parseOrigins(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRateLimit: a caller gets its burst, then 429 with Retry-After; other
// callers are not affected. No timing: the rate is one request an hour.
func TestRateLimit(t *testing.T) {
	const burst = 3
	l := NewRateLimiter("read", 1.0/3600, burst)
	h := l.Wrap(func(r *http.Request) string { return r.Header.Get("X-Caller") }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	}))
	do := func(caller string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/v1/events", nil)
		r.Header.Set("X-Caller", caller)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range burst {
		if w := do("a"); w.Code != 204 {
			t.Fatalf("request %d of the burst: %d", i+1, w.Code)
		}
	}
	w := do("a")
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("request %d: %d, want 429", burst+1, w.Code)
	}
	if ra := w.Header().Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After %q", ra)
	}
	if !strings.Contains(w.Body.String(), "RESOURCE_EXHAUSTED") || !strings.Contains(w.Body.String(), "per caller") {
		t.Errorf("body %s", w.Body)
	}
	if w := do("b"); w.Code != 204 {
		t.Errorf("another caller: %d", w.Code)
	}
	// A refused request takes no token: still refused, with no longer a wait.
	if w := do("a"); w.Code != http.StatusTooManyRequests {
		t.Errorf("again: %d", w.Code)
	}
	if NewRateLimiter("read", 0, 10) != nil || NewRateLimiter("read", 0, 10).Wrap(nil, h) == nil {
		t.Error("a rate of 0 is no limit")
	}
}

// TestRateLimiterForgetsIdleCallers: the map of callers does not grow
// without bound: callers whose bucket is full again are swept.
func TestRateLimiterForgetsIdleCallers(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewRateLimiter("ingest", 1, 1)
	l.now = func() time.Time { return now }
	for i := range 5 * minSweep {
		l.Allow(fmt.Sprint(i))
		now = now.Add(time.Second) // each earlier caller's bucket has refilled
	}
	if n := len(l.keys); n > minSweep+1 {
		t.Errorf("%d callers kept", n)
	}
}

// TestConnectionCap: past HTTPConfig.MaxConns, a new connection waits (it
// is not answered) until one closes, then it is served.
func TestConnectionCap(t *testing.T) {
	srv, err := HTTPConfig{MaxConns: 1, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second}.Listen("127.0.0.1:0",
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), Discard)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Shutdown(context.Background())
	get := func(c net.Conn) (*bufio.Reader, error) {
		_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		return bufio.NewReader(c), err
	}
	a, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ra, _ := get(a)
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(ra, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first connection: %v", err)
	}
	// a stays open (keep-alive) and holds the one slot.
	b, err := net.Dial("tcp", srv.Addr()) // the kernel accepts it; the server does not yet
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rb, _ := get(b)
	b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := http.ReadResponse(rb, nil); err == nil {
		t.Fatal("second connection served past the cap")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("second connection: %v, want it waiting", err)
	}
	a.Close()
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(rb, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("second connection once the first closed: %v", err)
	}
}

// TestReadBodyErrors: the body helper's answers for what it refuses.
func TestReadBodyErrors(t *testing.T) {
	for _, tt := range []struct {
		name, encoding, body string
		gzipOK               bool
		status               int
	}{
		{"too large", "", strings.Repeat("x", 2000), false, 413},
		{"gzip not taken", "gzip", "x", false, 415},
		{"not gzip", "gzip", "x", true, 400},
		{"fine", "", "{}", false, 0},
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
		if tt.encoding != "" {
			r.Header.Set("Content-Encoding", tt.encoding)
		}
		_, berr := ReadBody(httptest.NewRecorder(), r, 1024, tt.gzipOK)
		switch {
		case tt.status == 0 && berr != nil:
			t.Errorf("%s: %v", tt.name, berr)
		case tt.status != 0 && (berr == nil || berr.Status != tt.status):
			t.Errorf("%s: %v, want %d", tt.name, berr, tt.status)
		}
	}
}
