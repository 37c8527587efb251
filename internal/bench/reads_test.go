package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProbeReads: the prober takes the four reads in turn, with the
// users given (the users with a history for the fourth) and the key, counts a 404 of a user's latest record as an
// answer and any other failure as an error, and stops with its context.
func TestProbeReads(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu    sync.Mutex
		paths []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.RequestURI())
		n := len(paths)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/latest"):
			w.WriteHeader(http.StatusNotFound) // a user without records
		case r.URL.Path == "/v1/stats" && n == 3:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Write([]byte(`{}`))
		}
		if n == 12 {
			cancel()
		}
	}))
	defer srv.Close()
	c := NewClient(srv.URL, 1)
	c.Key = "k"
	got := probeReads(ctx, c, []string{"u 1"}, []string{"h 1"}, time.Millisecond)
	if len(got) != 4 {
		t.Fatalf("%d kinds of reads, want 4", len(got))
	}
	want := map[string][2]int64{ReadLatest: {3, 0}, ReadUserList: {3, 0}, ReadStatsHour: {2, 1}, ReadUserHistory: {3, 0}} // answered, errors
	for _, rs := range got {
		w := want[rs.Name]
		// The twelfth read may be cut short by the cancel it caused.
		if rs.Count+rs.Errors < w[0]+w[1]-1 || rs.Errors != w[1] {
			t.Errorf("%s: %d answered, %d errors; want %d and %d", rs.Name, rs.Count, rs.Errors, w[0], w[1])
		}
		if rs.Count > 0 && (rs.P50ms > rs.P99ms || rs.P99ms > rs.Maxms) {
			t.Errorf("%s: p50 %.3f, p99 %.3f, max %.3f out of order", rs.Name, rs.P50ms, rs.P99ms, rs.Maxms)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, p := range paths[:8] {
		wantPrefix := []string{"/v1/users/u%201/latest", "/v1/events?limit=100&user_id=u+1", "/v1/stats?group_by=country&since=", "/v1/events?limit=100&user_id=h+1"}[i%4]
		if !strings.HasPrefix(p, wantPrefix) {
			t.Errorf("read %d: %s, want %s...", i, p, wantPrefix)
		}
	}
}

func TestReadsMarkdown(t *testing.T) {
	r := Result{Latency: []LatencyStats{{Name: "fixed 5000 events/s", ReadEveryMS: 250, Reads: []ReadStats{{Name: ReadLatest, Count: 10, P50ms: 1.5, P99ms: 4, Maxms: 5}}}}}
	md := r.Markdown()
	if !strings.Contains(md, "| reads during fixed 5000 events/s, one at a time, one every 250 ms at most |") || !strings.Contains(md, "| "+ReadLatest+" | 10 | 1.5 | 4.0 | 5.0 | 0 |") {
		t.Errorf("Markdown lacks the reads:\n%s", md)
	}
}
