package serve_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/serve"
)

// TestCursorBoundToQuery: a next_cursor continues the listing it was issued
// for, with any page size, and is refused (400 naming cursor) with other
// filters or another order; one filter that is case-insensitive may change
// case.
func TestCursorBoundToQuery(t *testing.T) {
	env := newEnv(t, serve.Options{})
	first := decode[serve.ListResponse](t, do(t, env.h, http.MethodGet, "/v1/events?limit=2&country=Japan&order=asc"))
	if first.NextCursor == "" {
		t.Fatal("no next_cursor")
	}
	c := url.QueryEscape(first.NextCursor)
	for _, tt := range []struct {
		query string
		ok    bool
	}{
		{"limit=2&country=Japan&order=asc", true},
		{"limit=50&country=japan&order=asc", true},
		{"country=Japan&order=asc&user_id=u1", false},
		{"limit=2&country=Norway&order=asc", false},
		{"limit=2&country=Japan&order=desc", false},
		{"limit=2&country=Japan", false},
		{"limit=2&order=asc", false},
		{"limit=2&country=Japan&order=asc&since=2026-11-05", false},
	} {
		a := do(t, env.h, http.MethodGet, "/v1/events?"+tt.query+"&cursor="+c)
		if tt.ok {
			if a.status != http.StatusOK {
				t.Errorf("%s: %d %s", tt.query, a.status, a.body)
			}
			continue
		}
		wantError(t, a, http.StatusBadRequest, "cursor: was issued for another query")
	}
	// A cursor cut or made up is refused as before.
	for _, bad := range []string{first.NextCursor[:5], "x" + first.NextCursor, strings.ReplaceAll(first.NextCursor, ".", "")} {
		wantError(t, do(t, env.h, http.MethodGet, "/v1/events?limit=2&country=Japan&order=asc&cursor="+url.QueryEscape(bad)),
			http.StatusBadRequest, "cursor: must be a next_cursor")
	}
}

// TestInvalidUTF8InQueryAndPath: 400 naming the parameter or the path's
// value, not a store error (500).
func TestInvalidUTF8InQueryAndPath(t *testing.T) {
	env := newEnv(t, serve.Options{})
	for target, want := range map[string]string{
		"/v1/events?city=%ff":                 "city: is not valid UTF-8",
		"/v1/events?user_id=a%c3%28":          "user_id: is not valid UTF-8",
		"/v1/stats?group_by=city&country=%fe": "country: is not valid UTF-8",
		"/v1/events/%ff%fe":                   "event_id: is not valid UTF-8",
		"/v1/users/%ed%a0%80/latest":          "id: is not valid UTF-8",
		"/v1/events?%ff=1":                    `\xff: unknown parameter`,
	} {
		wantError(t, do(t, env.h, http.MethodGet, target), http.StatusBadRequest, want)
	}
	if strings.Contains(env.logs.String(), "ERROR") {
		t.Errorf("logged an error:\n%s", env.logs)
	}
}

// TestReadBounds: page size, the number of time buckets and the window of
// /v1/stats are bounded, and a 400 says which.
func TestReadBounds(t *testing.T) {
	env := newVariedEnv(t, serve.Options{MaxStatsRange: 7 * 24 * time.Hour})
	for _, tt := range []struct {
		target, msg string
	}{
		{"/v1/events?limit=1001", "limit: must be an integer from 1 to 1000"},
		{"/v1/stats?group_by=time&bucket=1s&since=2000-01-01T00:00:00Z&until=9999-12-31T00:00:00Z", "bucket: makes"},
		{"/v1/stats?group_by=time&bucket=1m&since=2026-11-01T00:00:00Z&until=2026-11-30T00:00:00Z", "bucket: makes 41761 buckets"},
		{"/v1/stats?group_by=time&bucket=1h&since=2026-11-01T00:00:00Z&until=2026-11-30T00:00:00Z", "since: the window from since to until is longer than 7d"},
		{"/v1/stats?group_by=country", "since: is required: statistics cover a window of at most 7d"},
		{"/v1/stats?group_by=city&since=2000-01-01", "since: the window from since to now is longer than 7d"},
	} {
		wantError(t, do(t, env.h, http.MethodGet, tt.target), http.StatusBadRequest, tt.msg)
	}
	a := do(t, env.h, http.MethodGet, "/v1/stats?group_by=country&since=2026-11-01&until=2026-11-08")
	if a.status != http.StatusOK {
		t.Errorf("a window of 7d: %d %s", a.status, a.body)
	}
}
