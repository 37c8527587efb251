package app

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/auth"
)

// strictEvent is a valid event as JSON, for the strict-input table.
func strictEvent(id, country string) string {
	return fmt.Sprintf(`{"event_id":%q,"event_type":"user.observed","occurred_at":%q,"user":{"id":"u-1","name":"Ann Lee"},`+
		`"location":{"latitude":40.4,"longitude":-3.7,"city":"Madrid","country":%q}}`, id, time.Now().UTC().Format(time.RFC3339Nano), country)
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestStrictInput is the strict-input table, through the real HTTP
// handlers of `up`: each input a hostile tester sent, with the answer it
// must get and the field (or parameter, or header) the answer names.
func TestStrictInput(t *testing.T) {
	base, stop := startInProcess(t, upHooks{}, "--cors-origins", "https://app.example.com", "--ingest-max-bytes", "65536",
		"--http-read-timeout", "500ms", "--rate-ingest", "0", "--rate-read", "0")
	defer stop()
	good := strictEvent("s-1", "Spain")
	swap := func(old, new string) string { return strings.Replace(good, old, new, 1) }
	at := func(ts string) string {
		i := strings.Index(good, `"occurred_at":"`) + len(`"occurred_at":"`)
		return good[:i] + ts + good[i+strings.IndexByte(good[i:], '"'):]
	}
	json_ := map[string]string{"Content-Type": "application/json"}
	tests := []struct {
		name, method, path string
		header             map[string]string
		body               string
		status             int
		names              string // in the answer: the field, parameter or header, as the answer names it
	}{
		{"valid", "POST", "/v1/events", json_, good, 202, `"accepted":1`},
		{"invalid UTF-8 in a field", "POST", "/v1/events", json_, swap("Ann Lee", "Ann \xffLee"), 400, `"field":"user.name","message":"is not valid UTF-8`},
		{"duplicate key", "POST", "/v1/events", json_, swap(`"event_type"`, `"event_id":"s-2","event_type"`), 400, `"field":"event_id","message":"is given more than once`},
		{"key in another case", "POST", "/v1/events", json_, swap(`"event_id"`, `"EVENT_ID"`), 400, `"field":"EVENT_ID","message":"is not a field: names are exact and case-sensitive; did you mean \"event_id\"?"`},
		{"unknown key", "POST", "/v1/events", json_, swap(`"user":{`, `"usr":{},"user":{`), 400, `"field":"usr"`},
		{"occurred_at year 1", "POST", "/v1/events", json_, at("0001-01-01T00:00:00Z"), 400, `"field":"occurred_at","message":"must be on or after 2000-01-01T00:00:00Z, got 0001-01-01T00:00:00Z"`},
		{"occurred_at year 9999", "POST", "/v1/events", json_, at("9999-12-31T23:59:59Z"), 400, `"field":"occurred_at","message":"is in the future: got 9999-12-31T23:59:59Z`},
		{"occurred_at offset +24:00", "POST", "/v1/events", json_, at("2026-11-26T11:00:00+24:00"), 400, `"field":"occurred_at","message":"must be an RFC 3339 timestamp`},
		{"occurred_at not RFC 3339", "POST", "/v1/events", json_, at("2026-11-26 11:00:00Z"), 400, `"field":"occurred_at"`},
		{"gzip", "POST", "/v1/events", map[string]string{"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
			string(gz(t, []byte(strictEvent("s-3", "Spain")+"\n"+strictEvent("s-4", "Spain")))), 202, `"accepted":2`},
		{"gzip bomb", "POST", "/v1/events", map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"},
			string(gz(t, bytes.Repeat([]byte(" "), 8<<20))), 413, "larger than 65536 bytes once decompressed"},
		{"brotli", "POST", "/v1/events", map[string]string{"Content-Type": "application/json", "Content-Encoding": "br"}, good, 415, `Content-Encoding \"br\"`},
		{"latin-1", "POST", "/v1/events", map[string]string{"Content-Type": "application/json; charset=iso-8859-1"}, good, 415, `charset \"iso-8859-1\"`},
		{"text", "POST", "/v1/events", map[string]string{"Content-Type": "text/plain"}, good, 415, `Content-Type \"text/plain\"`},
		{"form", "POST", "/v1/events", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "event_id=x", 415, "Content-Type"},
		{"no content type", "POST", "/v1/events", nil, good, 415, "Content-Type is required"},
		{"form to webhooks", "POST", "/v1/webhooks", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "url=x", 415, "Content-Type"},
		{"NDJSON to webhooks", "POST", "/v1/webhooks", map[string]string{"Content-Type": "application/x-ndjson"}, "{}", 415, "send application/json"},
		{"text to replay", "POST", "/v1/deadletters/replay", map[string]string{"Content-Type": "text/plain"}, `{"stage":"x"}`, 415, "Content-Type"},
		{"gzip to webhooks", "POST", "/v1/webhooks", map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"}, string(gz(t, []byte("{}"))), 415, "Content-Encoding"},
		{"invalid UTF-8 in a query", "GET", "/v1/events?city=%ff", nil, "", 400, "city: is not valid UTF-8"},
		{"invalid UTF-8 in a query name", "GET", "/v1/stats?%fe=1", nil, "", 400, "a parameter name is not valid UTF-8"},
		{"invalid UTF-8 in a path", "GET", "/v1/events/%ff%fe", nil, "", 400, "path: is not valid UTF-8"},
		{"invalid UTF-8 in a user path", "GET", "/v1/users/%c3%28/latest", nil, "", 400, "path: is not valid UTF-8"},
		{"dead letter id not one", "DELETE", "/v1/deadletters/abc", nil, "", 400, `id: \"abc\" is not a dead letter id`},
		{"page too large", "GET", "/v1/events?limit=100000", nil, "", 400, `"field":"limit"`},
		{"too many buckets", "GET", "/v1/stats?group_by=time&bucket=1s&since=2026-01-01", nil, "", 400, `"field":"bucket"`},
		{"stats window too wide", "GET", "/v1/stats?group_by=country&since=2000-01-01", nil, "", 400, `"field":"since"`},
		{"stats without a window", "GET", "/v1/stats?group_by=country", nil, "", 400, `"field":"since","message":"is required`},
		{"cross-origin, not allowed", "POST", "/v1/events", map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, good, 403, "https://evil.example"},
		{"cross-origin read, not allowed", "GET", "/v1/events", map[string]string{"Origin": "https://evil.example"}, "", 403, "--cors-origins"},
		{"preflight, allowed", "OPTIONS", "/v1/events", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}, "", 204, ""},
		{"preflight, not allowed", "OPTIONS", "/v1/events", map[string]string{"Origin": "http://127.0.0.1.evil.example", "Access-Control-Request-Method": "POST"}, "", 403, "may not call this API"},
		// The key routes decode as strictly as the rest of the API.
		{"key: a name in another case", "POST", "/v1/keys", json_, `{"name":"k","SCOPES":["read"]}`, 400, `unknown field \"SCOPES\"`},
		{"key: a name given twice", "POST", "/v1/keys", json_, `{"name":"k","scopes":["admin"],"scopes":["read"]}`, 400, "scopes: is given more than once"},
		{"key: invalid UTF-8 in a field", "POST", "/v1/keys", json_, "{\"name\":\"k\xff\",\"scopes\":[\"read\"]}", 400, "name: is not valid UTF-8"},
		{"key: unknown field", "POST", "/v1/keys", json_, `{"name":"k","scopes":["read"],"admin":true}`, 400, `unknown field \"admin\"`},
		{"key: rotate, a name in another case", "POST", "/v1/keys/key_x/rotate", json_, `{"GRACE_SECONDS":60}`, 400, `unknown field \"GRACE_SECONDS\"`},
		{"key: oversize", "POST", "/v1/keys", json_, `{"name":"` + strings.Repeat("k", 64<<10) + `","scopes":["read"]}`, 413, "larger than 65536 bytes"},
		{"session: a body with a field", "POST", "/v1/session", json_, `{"scope":"admin"}`, 400, `unknown field \"scope\"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.body == "" {
				req.Body, req.ContentLength = http.NoBody, 0
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.names) {
				t.Fatalf("%d %s\nwant %d naming %s", resp.StatusCode, b, tt.status, tt.names)
			}
			if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 500 {
				t.Errorf("a 5xx for bad input")
			}
			if tt.name == "preflight, allowed" && (resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
				!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")) {
				t.Errorf("preflight headers: %v", resp.Header)
			}
		})
	}

	t.Run("cursor bound to its query", func(t *testing.T) {
		get := func(q string) (int, []byte) {
			resp, err := http.Get(base + "/v1/events?" + q)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, b
		}
		var page struct {
			Count      int    `json:"count"`
			NextCursor string `json:"next_cursor"`
		}
		waitFor(t, func() bool { // the three valid events above
			_, b := get("country=Spain")
			json.Unmarshal(b, &page)
			return page.Count >= 3
		})
		if _, b := get("country=Spain&limit=1"); json.Unmarshal(b, &page) != nil || page.NextCursor == "" {
			t.Fatalf("no next_cursor: %s", b)
		}
		c := url.QueryEscape(page.NextCursor)
		if code, b := get("country=Spain&limit=2&cursor=" + c); code != 200 {
			t.Errorf("same query: %d %s", code, b)
		}
		if code, b := get("country=France&limit=1&cursor=" + c); code != 400 || !strings.Contains(string(b), `"field":"cursor","message":"was issued for another query`) {
			t.Errorf("another query: %d %s", code, b)
		}
	})

	// A body that stops halfway is 408 on every route that reads one, with
	// no socket address in the answer.
	for _, path := range []string{"/v1/events", "/v1/push/events", "/v1/keys", "/v1/session"} {
		t.Run("stalled body "+path, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(good), good[:len(good)/2])
			conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // bounded; the server answers after --http-read-timeout
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), `"status":"DEADLINE_EXCEEDED"`) ||
				strings.Contains(string(b), "127.0.0.1") || strings.Contains(string(b), conn.LocalAddr().String()) {
				t.Errorf("%d %s; want 408, the API's error body, naming no address", resp.StatusCode, b)
			}
		})
	}
}

// TestRateLimits: per caller and per route class, the burst passes and the
// next request gets 429 with Retry-After; routes of other classes (the
// probes, webhooks) are not limited. No timing: the rate is one request in
// a thousand seconds.
func TestRateLimits(t *testing.T) {
	base, stop := startInProcess(t, upHooks{}, "--rate-ingest", "0.001", "--rate-ingest-burst", "1", "--rate-read", "0.001", "--rate-read-burst", "2")
	defer stop()
	do := func(method, path, body string) *http.Response {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i, want := range []int{200, 200, 429} {
		resp := do("GET", "/v1/events", "")
		if resp.StatusCode != want {
			t.Fatalf("read %d: %d, want %d", i+1, resp.StatusCode, want)
		}
		if want == 429 && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if resp := do("GET", "/v1/stats?group_by=country&since=2026-11-30", ""); resp.StatusCode != 429 {
		t.Errorf("another read route: %d, want 429 (one limit for the reads)", resp.StatusCode)
	}
	for i, want := range []int{202, 429} {
		if resp := do("POST", "/v1/events", strictEvent(fmt.Sprintf("r-%d", i), "Spain")); resp.StatusCode != want {
			t.Fatalf("ingest %d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	for range 5 {
		if resp := do("GET", "/healthz", ""); resp.StatusCode != 200 {
			t.Fatalf("probe limited: %d", resp.StatusCode)
		}
		if resp := do("GET", "/v1/webhooks", ""); resp.StatusCode != 200 {
			t.Fatalf("webhooks limited: %d", resp.StatusCode)
		}
	}
}

// TestRateLimitCaller: the limit's key is the principal the auth
// middleware found, else (no auth) the client's IP.
func TestRateLimitCaller(t *testing.T) {
	r, _ := http.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.7:51234"
	if got := caller(r); got != "ip:192.0.2.7" {
		t.Errorf("no principal: %q", got)
	}
	r = r.WithContext(auth.WithPrincipal(context.Background(), auth.Principal{ID: "anonymous", Kind: "none"}))
	if got := caller(r); got != "ip:192.0.2.7" {
		t.Errorf("auth off: %q", got)
	}
	r = r.WithContext(auth.WithPrincipal(context.Background(), auth.Principal{ID: "key_abc", Kind: "key"}))
	if got := caller(r); got != "principal:key_abc" {
		t.Errorf("a key: %q", got)
	}
}

// TestRateLimitsPerKey: with auth on, each API key has its own limit: one
// key past its burst gets 429 while another key's requests go through.
func TestRateLimitsPerKey(t *testing.T) {
	dir := t.TempDir()
	a := keysCmd(t, "create", "--scope", "ingest,read", "--data-dir", dir)
	b := keysCmd(t, "create", "--scope", "ingest,read", "--data-dir", dir)
	base, stop := startInProcess(t, upHooks{}, "--data-dir", dir, "--auth=on",
		"--rate-ingest", "0.001", "--rate-ingest-burst", "1", "--rate-read", "0.001", "--rate-read-burst", "1")
	defer stop()
	for i, c := range []struct {
		key         keyOut
		method, url string
		body        string
		want        int
	}{
		{a, "POST", "/v1/events", strictEvent("k-a-1", "Spain"), 202},
		{a, "POST", "/v1/events", strictEvent("k-a-2", "Spain"), 429},
		{b, "POST", "/v1/events", strictEvent("k-b-1", "Spain"), 202},
		{b, "POST", "/v1/events", strictEvent("k-b-2", "Spain"), 429},
		{a, "GET", "/v1/events?limit=1", "", 200},
		{a, "GET", "/v1/events?limit=1", "", 429},
		{b, "GET", "/v1/events?limit=1", "", 200},
	} {
		status, hdr, body := callBody(t, c.method, base+c.url, c.body, cred{name: c.key.ID, bearer: c.key.Token})
		if status != c.want {
			t.Errorf("request %d, %s %s with key %s: %d %s, want %d", i+1, c.method, c.url, c.key.ID, status, body, c.want)
		}
		if status == 429 && hdr.Get("Retry-After") == "" {
			t.Errorf("request %d: 429 without Retry-After", i+1)
		}
	}
}
