package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/auth"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) entries(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(s.b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// fakeAuth authenticates "Bearer NAME" as principal NAME with the admin
// scope, refuses "Bearer denied" with 403, and lets the rest through
// without a principal.
func fakeAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case name == "denied":
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		case ok:
			r = r.WithContext(auth.WithPrincipal(r.Context(), auth.Principal{ID: name, Kind: "key", Scopes: []string{"admin"}}))
		}
		h.ServeHTTP(w, r)
	})
}

func app() *http.ServeMux {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"ok":true}`) }
	mux.HandleFunc("GET /v1/events", ok)
	mux.HandleFunc("GET /v1/events/{event_id...}", ok)
	mux.HandleFunc("POST /v1/events", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	mux.HandleFunc("DELETE /v1/users/{id}", ok)
	mux.HandleFunc("GET /v1/deadletters", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) })
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /v1/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	return mux
}

func TestTrail(t *testing.T) {
	for _, order := range []string{"auth outside", "auth inside"} {
		t.Run(order, func(t *testing.T) {
			var buf syncBuffer
			// An error-level logger: the trail is written anyway.
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
			opts := Options{Param: func(route, name, v string) string {
				if route == "DELETE /v1/users/{id}" && name == "id" {
					return "hashed(" + v + ")"
				}
				return v
			}}
			var h http.Handler
			if order == "auth outside" {
				h = fakeAuth(Middleware(log, opts, app()))
			} else {
				h = Middleware(log, opts, fakeAuth(app()))
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			do := func(method, path, who string) int {
				req, _ := http.NewRequest(method, srv.URL+path, nil)
				if who != "" {
					req.Header.Set("Authorization", "Bearer "+who)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			do("GET", "/v1/events?country=Spain&limit=5&access_token=s3cret&api_key=k3y", "key_reader")
			do("GET", "/v1/events/a/b%2Fc", "")
			do("DELETE", "/v1/users/u%2042", "key_admin")
			do("GET", "/v1/deadletters", "key_admin")
			do("POST", "/v1/events", "key_ingest") // ingest: not audited
			do("GET", "/healthz", "")              // public: not audited
			do("GET", "/nowhere", "")              // no route
			if order == "auth inside" {
				do("DELETE", "/v1/users/u-9", "denied") // refused before the mux: still audited
			}

			// A live stream: flushed through the trail's writer, logged when it ends.
			req, _ := http.NewRequest("GET", srv.URL+"/v1/stream?user_id=u-1", nil)
			req.Header.Set("Authorization", "Bearer key_streamer")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			if line != "data: first\n" {
				t.Errorf("stream: %q (not flushed through?)", line)
			}
			resp.Body.Close()
			deadline := time.Now().Add(5 * time.Second)
			for len(buf.entries(t)) < 5+btoi(order == "auth inside") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}

			got := map[string]map[string]any{}
			for _, e := range buf.entries(t) {
				if e["msg"] != "audit" || e["audit"] != true || e["level"] != "INFO" {
					t.Errorf("not an audit entry: %v", e)
				}
				if labels, _ := e["logging.googleapis.com/labels"].(map[string]any); labels["audit"] != "true" {
					t.Errorf("no audit label: %v", e)
				}
				got[e["method"].(string)+" "+e["route"].(string)+" "+e["principal"].(string)] = e
			}
			check := func(key string, status float64, params map[string]string) {
				t.Helper()
				e, ok := got[key]
				if !ok {
					t.Errorf("no entry %q in %v", key, keys(got))
					return
				}
				if e["status"] != status {
					t.Errorf("%s: status %v, want %v", key, e["status"], status)
				}
				ps, _ := e["params"].(map[string]any)
				for k, v := range params {
					if ps[k] != v {
						t.Errorf("%s: param %s = %v, want %q (all: %v)", key, k, ps[k], v, ps)
					}
				}
				if len(ps) != len(params) {
					t.Errorf("%s: params %v, want %v", key, ps, params)
				}
				if _, err := time.Parse(time.RFC3339Nano, e["start"].(string)); err != nil || e["remote_ip"] != "127.0.0.1" {
					t.Errorf("%s: start %v remote %v", key, e["start"], e["remote_ip"])
				}
			}
			check("GET GET /v1/events key_reader", 200, map[string]string{"country": "Spain", "limit": "5", "access_token": Redacted, "api_key": Redacted})
			check("GET GET /v1/events/{event_id...} anonymous", 200, map[string]string{"event_id": "a/b/c"})
			check("DELETE DELETE /v1/users/{id} key_admin", 200, map[string]string{"id": "hashed(u 42)"})
			check("GET GET /v1/deadletters key_admin", 503, nil)
			check("GET GET /v1/stream key_streamer", 200, map[string]string{"user_id": "u-1"})
			n := 5
			if order == "auth inside" {
				check("DELETE DELETE /v1/users/{id} anonymous", 403, map[string]string{"id": "hashed(u-9)"})
				n++
			}
			if len(got) != n {
				t.Errorf("%d entries, want %d: %v", len(got), n, keys(got))
			}
			if strings.Contains(buf.b.String(), "s3cret") || strings.Contains(buf.b.String(), "k3y") {
				t.Error("a secret parameter is in the trail")
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestAction: an action outside the HTTP API is an entry whatever the log
// level, with its principal, action, parameters (a secret's redacted) and
// result.
func TestAction(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	who := auth.Principal{ID: "cli:ann@host", Kind: KindCLI}
	Action(t.Context(), log, Entry{Principal: who, Action: "keys.create", Params: map[string]string{"id": "key_1", "token": "sk_x"}, Start: time.Now()})
	Action(t.Context(), log, Entry{Principal: who, Action: "keys.revoke", Params: map[string]string{"id": "key_2"}, Start: time.Now(), Err: errors.New("no such key")})
	es := buf.entries(t)
	if len(es) != 2 {
		t.Fatalf("%d entries, want 2", len(es))
	}
	p0, _ := es[0]["params"].(map[string]any)
	if es[0]["msg"] != "audit" || es[0]["audit"] != true || es[0]["principal"] != who.ID || es[0]["principal_kind"] != KindCLI ||
		es[0]["action"] != "keys.create" || es[0]["result"] != ResultOK || p0["id"] != "key_1" || p0["token"] != Redacted {
		t.Errorf("entry %v", es[0])
	}
	if es[1]["result"] != ResultError || es[1]["error"] != "no such key" {
		t.Errorf("failed action's entry %v", es[1])
	}
}
