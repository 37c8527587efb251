//go:build !noduckdb

package serve_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/registry/natskv/natskvtest"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/store"
)

// untilDropped reads events until `event: dropped` and the end of the
// stream, within wait; it returns the records before it and the drop.
func (c *sseClient) untilDropped(t *testing.T) ([]event.Record, serve.DroppedEvent) {
	t.Helper()
	var got []event.Record
	timeout := time.After(wait)
	for {
		select {
		case ev := <-c.events:
			switch ev.event {
			case "record":
				var r event.Record
				if err := json.Unmarshal([]byte(ev.data), &r); err != nil {
					t.Fatal(err)
				}
				got = append(got, r)
			case "dropped":
				var d serve.DroppedEvent
				if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
					t.Fatal(err)
				}
				select {
				case <-c.done:
				case <-time.After(wait):
					t.Fatal("the server did not close the stream after the dropped event")
				}
				return got, d
			default:
				t.Fatalf("event %q %s", ev.event, ev.data)
			}
		case <-c.done:
			if len(c.events) == 0 {
				t.Fatalf("the stream ended without a dropped event after %d records: %v", len(got), c.err)
			}
		case <-timeout:
			t.Fatalf("the stream did not end within %s (%d records)", wait, len(got))
		}
	}
}

// TestStreamEndsWhenCredentialRevoked: a stream opened with an API key,
// and one opened with a browser session of that key, end (with a final
// `event: dropped` saying why) once the key is revoked, as a new request
// with it is refused.
func TestStreamEndsWhenCredentialRevoked(t *testing.T) {
	env := newStreamEnv(t, 0, serve.Options{})
	reg := natskvtest.Start(t, t.TempDir()).Registry(t)
	v, err := auth.NewVerifier(t.Context(), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	sessions, err := auth.NewSessions(t.Context(), reg, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := &auth.Authenticator{On: true, Keys: v, Sessions: sessions}
	sm := http.NewServeMux()
	(&auth.Handler{Auth: a}).RegisterSession(sm)
	mux := http.NewServeMux()
	mux.Handle("GET /v1/stream", a.Require(api.ScopeStream, env.h))
	mux.Handle("POST /v1/session", a.Require(api.ScopeRead, sm))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		env.h.SetDraining(true)
		srv.Close()
	})

	keys := auth.Keys{Reg: reg}
	k, tok, err := keys.Create(t.Context(), auth.KeySpec{Name: "streamer", Scopes: []string{api.ScopeRead, api.ScopeStream}})
	if err != nil {
		t.Fatal(err)
	}
	bearer := http.Header{"Authorization": {"Bearer " + tok}}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/session", nil)
	req.Header = bearer.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			cookie = c.Name + "=" + c.Value
		}
	}
	if resp.StatusCode != http.StatusOK || cookie == "" {
		t.Fatalf("POST /v1/session: %d, cookie %q", resp.StatusCode, cookie)
	}

	byKey := connect(t, srv.URL+"/v1/stream", bearer).start()
	bySession := connect(t, srv.URL+"/v1/stream", http.Header{"Cookie": {cookie}}).start()
	waitFor(t, "two subscribers", func() bool { return env.hub.Len() == 2 })
	stored := env.store(t, 5, nil)
	for _, c := range []*sseClient{byKey, bySession} {
		if got := c.records(t, 5); !slices.Equal(seqs(got), seqs(stored)) {
			t.Fatalf("records %v, want %v", seqs(got), seqs(stored))
		}
	}

	if _, err := keys.Revoke(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for name, c := range map[string]*sseClient{"key": byKey, "session": bySession} {
		_, d := c.untilDropped(t)
		if !strings.Contains(d.Reason, "credential is no longer accepted") || !strings.Contains(d.Reason, "revoked") {
			t.Errorf("%s: reason %q, want one that says the key was revoked", name, d.Reason)
		}
		if d.LastEventID != stored[4].Seq {
			t.Errorf("%s: last_event_id %d, want %d", name, d.LastEventID, stored[4].Seq)
		}
	}
	t.Logf("both streams ended %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	waitFor(t, "no subscriber", func() bool { return env.hub.Len() == 0 })
	// A new stream with the key is refused.
	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/v1/stream", nil)
	req.Header = bearer.Clone()
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a new stream with the revoked key: %d, want 401", resp.StatusCode)
	}
}

// TestStreamMaxLifetime: a stream ends after --stream-max-lifetime with a
// final `event: dropped` naming the last record sent; a reconnection
// with it continues without a gap.
func TestStreamMaxLifetime(t *testing.T) {
	// Long enough for the three records to be stored and streamed first
	// on a busy machine; the stream then ends by itself.
	env := newStreamEnv(t, 0, serve.Options{StreamMaxLifetime: 3 * time.Second})
	c := connect(t, env.srv.URL+"/v1/stream", nil).start()
	waitFor(t, "a subscriber", func() bool { return env.hub.Len() == 1 })
	stored := env.store(t, 3, nil)
	got, d := c.untilDropped(t)
	if !slices.Equal(seqs(got), seqs(stored)) {
		t.Errorf("records %v, want %v", seqs(got), seqs(stored))
	}
	if !strings.Contains(d.Reason, "maximum lifetime") || d.LastEventID != stored[2].Seq {
		t.Errorf("dropped %+v, want the maximum lifetime and last_event_id %d", d, stored[2].Seq)
	}
	more := env.store(t, 2, nil)
	r := connect(t, env.srv.URL+"/v1/stream", http.Header{"Last-Event-Id": {strconv.FormatInt(d.LastEventID, 10)}}).start()
	if got := r.records(t, 2); !slices.Equal(seqs(got), seqs(more)) {
		t.Errorf("after reconnecting: %v, want %v", seqs(got), seqs(more))
	}
}

// TestStreamResumeWindow: a resume replays from the newest
// --stream-resume-window stored records at most, whatever the filters; an
// older resume point gets an `event: gap` (its id the window's start)
// first.
func TestStreamResumeWindow(t *testing.T) {
	const window = 50
	env := newStreamEnv(t, 0, serve.Options{StreamResumeWindow: window})
	// More than a page of the store, from more than a year ago.
	env.store(t, 1200, func(i int, r *event.Record) {
		r.OccurredAt = time.Now().Add(-400*24*time.Hour - time.Duration(i)*time.Second)
	})
	// A filter matches records older than the window; the resume sends
	// only those in it.
	until := time.Now().Add(-365 * 24 * time.Hour).UTC().Truncate(time.Second)
	if n := len(matching(env.all, store.Query{Until: until})); n < 1000 {
		t.Fatalf("test data: %d records before %s", n, until)
	}
	// Each case is given the stored records, the newest window of them
	// and the seq below those (the window's start).
	tests := []struct {
		name  string
		query string
		from  func(all []event.Record, start int64) string // Last-Event-ID
		gap   bool
		want  func(all, inWindow []event.Record) []event.Record
	}{
		{"from 1", "", func([]event.Record, int64) string { return "1" }, true,
			func(_, w []event.Record) []event.Record { return w }},
		{"after=0", "?after=0", nil, true,
			func(_, w []event.Record) []event.Record { return w }},
		{"filtered", "?country=japan", func([]event.Record, int64) string { return "1" }, true,
			func(_, w []event.Record) []event.Record { return matching(w, store.Query{Country: "Japan"}) }},
		{"until cannot reach back", "?until=" + until.Format(time.RFC3339), func([]event.Record, int64) string { return "1" }, true,
			func(_, w []event.Record) []event.Record { return matching(w, store.Query{Until: until}) }},
		{"within the window", "", func(all []event.Record, _ int64) string { return fmt.Sprint(all[len(all)-20].Seq) }, false,
			func(all, _ []event.Record) []event.Record { return all[len(all)-19:] }},
		{"at the window's start", "", func(_ []event.Record, start int64) string { return fmt.Sprint(start) }, false,
			func(_, w []event.Record) []event.Record { return w }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env.mu.Lock()
			all := slices.Clone(env.all)
			env.mu.Unlock()
			inWindow, start := all[len(all)-window:], all[len(all)-window-1].Seq
			var h http.Header
			if tt.from != nil {
				h = http.Header{"Last-Event-Id": {tt.from(all, start)}}
			}
			c := connect(t, env.srv.URL+"/v1/stream"+tt.query, h).start()
			if tt.gap {
				select {
				case ev := <-c.events:
					var g serve.GapEvent
					if ev.event != "gap" || json.Unmarshal([]byte(ev.data), &g) != nil {
						t.Fatalf("first event %q %s, want a gap", ev.event, ev.data)
					}
					if ev.id != fmt.Sprint(start) || g.ResumesAfter != start || g.Reason == "" {
						t.Errorf("gap id %s %+v, want it to resume after %d", ev.id, g, start)
					}
				case <-time.After(wait):
					t.Fatal("no gap event")
				}
			}
			want := tt.want(all, inWindow)
			got := c.records(t, len(want))
			if !slices.Equal(seqs(got), seqs(want)) {
				t.Errorf("replayed %d records %v,\nwant %d %v", len(got), seqs(got), len(want), seqs(want))
			}
			// Nothing more: a marker record that every case's filter
			// takes arrives next.
			waitFor(t, "a subscriber", func() bool { return env.hub.Len() == 1 })
			marker := env.store(t, 1, func(_ int, r *event.Record) {
				r.Location.Country = "Japan"
				r.OccurredAt = time.Now().Add(-366 * 24 * time.Hour)
			})
			if got := c.records(t, 1); got[0].Seq != marker[0].Seq {
				t.Errorf("after the replay: seq %d, want the marker %d", got[0].Seq, marker[0].Seq)
			}
			c.resp.Body.Close()
			<-c.done
			waitFor(t, "no subscriber", func() bool { return env.hub.Len() == 0 })
		})
	}
}
