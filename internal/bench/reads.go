package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
)

// The reads a downstream application makes while the pipeline writes,
// measured during the fixed-rate latency phase: a user's latest record, a
// user's records (a page of 100, newest first), and the last hour's
// counts by country. The users are the load's, whose newest records are
// the last seconds' writes; with a fill, also the fill's, whose records
// spread over its week (ReadUserHistory).
const (
	ReadLatest      = "GET /v1/users/{id}/latest"
	ReadUserList    = "GET /v1/events?user_id="
	ReadStatsHour   = "GET /v1/stats (by country, last hour)"
	ReadUserHistory = "GET /v1/events?user_id= (a week of history)"
)

// readKinds are the reads, in the order the prober takes them; it adds
// ReadUserHistory when it has users with a history.
var readKinds = []string{ReadLatest, ReadUserList, ReadStatsHour}

// ReadStats is the latency of one kind of read during a phase.
type ReadStats struct {
	Name   string  `json:"name"`
	Count  int64   `json:"count"`
	Errors int64   `json:"errors"` // an answer other than 200 (404 for a user without records counts as an answer)
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	Maxms  float64 `json:"max_ms"`
}

// readPath is the path and query of a read of kind for user at now.
func readPath(kind, user string, now time.Time) string {
	switch kind {
	case ReadLatest:
		return "/v1/users/" + url.PathEscape(user) + "/latest"
	case ReadUserList, ReadUserHistory:
		return "/v1/events?limit=100&user_id=" + url.QueryEscape(user)
	default:
		return "/v1/stats?group_by=country&since=" + url.QueryEscape(now.Add(-time.Hour).UTC().Format(time.RFC3339))
	}
}

// probeReads makes one read every `every`, taking the kinds in turn and a
// random user of users (of history, for ReadUserHistory: none, no such
// reads), until ctx is done; then it returns each kind's latencies. The
// reads run one at a time, so that they measure the server, not a queue
// of their own.
func probeReads(ctx context.Context, c *Client, users, history []string, every time.Duration) []ReadStats {
	kinds := readKinds
	if len(history) > 0 {
		kinds = append(slices.Clone(kinds), ReadUserHistory)
	}
	lat := make(map[string][]time.Duration, len(kinds))
	errs := make(map[string]int64, len(kinds))
	var mu sync.Mutex
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			out := make([]ReadStats, 0, len(kinds))
			for _, k := range kinds {
				out = append(out, readStats(k, lat[k], errs[k]))
			}
			return out
		case <-tick.C:
		}
		kind := kinds[i%len(kinds)]
		user := users[rand.IntN(len(users))]
		if kind == ReadUserHistory {
			user = history[rand.IntN(len(history))]
		}
		start := time.Now()
		status, err := c.get(ctx, readPath(kind, user, start))
		d := time.Since(start)
		if ctx.Err() != nil {
			continue // cut short by the end of the phase
		}
		mu.Lock()
		if err != nil || status != http.StatusOK && !(kind == ReadLatest && status == http.StatusNotFound) {
			errs[kind]++
		} else {
			lat[kind] = append(lat[kind], d)
		}
		mu.Unlock()
	}
}

func readStats(name string, l []time.Duration, errs int64) ReadStats {
	s := ReadStats{Name: name, Count: int64(len(l)), Errors: errs}
	if len(l) == 0 {
		return s
	}
	l = slices.Clone(l)
	slices.Sort(l)
	q := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) / 1000 }
	s.P50ms, s.P99ms, s.Maxms = q(0.50), q(0.99), float64(l[len(l)-1].Microseconds())/1000
	return s
}

// get reads path and returns the status, the body read and dropped.
func (c *Client) get(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.Base+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	return resp.StatusCode, nil
}
