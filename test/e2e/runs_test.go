package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/test/testbin"
)

// TestUserRunsThroughTheBinary: `skyjoin up --duckdb-user-runs` cuts a
// user run once the main file holds enough records (262,144), and a
// user's records read through GET /v1/events?user_id= are then exactly
// the ones sent for that user, each once, newest first, across the run,
// the main file's newer records and the hot segments.
func TestUserRunsThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 340,000 events")
	}
	p := start(t, t.TempDir(), "--duckdb-user-runs", "--log-level", "debug")
	admin := p.Ready(testbin.AdminURL)
	c := newClient(p.base)
	const total, batch = 340_000, 1000
	now := time.Now().UTC()
	sent := map[string]map[string]bool{} // user -> event ids
	for i := 0; i < total; i += batch {
		events := make([]event.Event, batch)
		for k := range events {
			id := i + k
			events[k] = makeEvent(id, now.Add(-time.Duration(total-id)*time.Millisecond))
		}
		for tries := 0; ; tries++ {
			code, body := c.post("ndjson", events)
			if code == http.StatusAccepted {
				break
			}
			if code != http.StatusServiceUnavailable || tries == 200 {
				t.Fatalf("POST batch at %d: %d %s", i, code, body)
			}
			time.Sleep(100 * time.Millisecond) // admission control: the backlog drains
		}
		for _, e := range events {
			if sent[e.User.ID] == nil {
				sent[e.User.ID] = map[string]bool{}
			}
			sent[e.User.ID][e.EventID] = true
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(p.Logs(), "duckdb: user run cut") || testbin.Counters(t, admin).Stored < total {
		if time.Now().After(deadline) {
			t.Fatalf("after 3 minutes: %d of %d stored, user run cut: %v", testbin.Counters(t, admin).Stored, total,
				strings.Contains(p.Logs(), "duckdb: user run cut"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	read := 0
	defer func() { t.Logf("%d events stored, a user run cut; %d records of 14 users read", total, read) }()
	for u := 0; u < 500; u += 37 {
		user := fmt.Sprintf("user-%d", u)
		got := map[string]int{}
		var last int64
		cursor := ""
		for page := 0; ; page++ {
			u := c.base + "/v1/events?limit=100&user_id=" + url.QueryEscape(user)
			if cursor != "" {
				u += "&cursor=" + url.QueryEscape(cursor)
			}
			var body struct {
				Events     []event.Record `json:"events"`
				NextCursor string         `json:"next_cursor"`
			}
			testbin.GetJSON(t, c.hc, u, &body)
			for _, r := range body.Events {
				if r.User.ID != user {
					t.Errorf("%s: a record of %s", user, r.User.ID)
				}
				if last != 0 && r.Seq >= last {
					t.Errorf("%s: seq %d after %d: not newest stored first", user, r.Seq, last)
				}
				last = r.Seq
				got[r.EventID]++
				read++
			}
			if body.NextCursor == "" {
				break
			}
			if page > total/100 {
				t.Fatalf("%s: more pages than records", user)
			}
			cursor = body.NextCursor
		}
		if missing := testbin.Missing(got, sent[user]); missing > 0 || len(got) != len(sent[user]) {
			t.Errorf("%s: %d records read, %d sent, %d of them missing", user, len(got), len(sent[user]), missing)
		}
		if dup := testbin.Duplicated(t, got); dup > 0 {
			t.Errorf("%s: %d records read twice", user, dup)
		}
	}
}
