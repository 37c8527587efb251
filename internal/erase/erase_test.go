package erase

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// memStore erases from a map of user id -> records.
type memStore struct {
	users map[string]int
	err   error
	asked []string
}

func (s *memStore) DeleteUsers(_ context.Context, ids []string) (int64, error) {
	s.asked = append(s.asked, ids...)
	if s.err != nil {
		return 0, s.err
	}
	var n int64
	for _, id := range ids {
		n += int64(s.users[id])
		delete(s.users, id)
	}
	return n, nil
}

func serve(e *Eraser) *httptest.Server {
	mux := http.NewServeMux()
	e.Register(mux)
	srv := httptest.NewServer(mux)
	return srv
}

func del(t *testing.T, base, id string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("DELETE", base+"/v1/users/"+url.PathEscape(id), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func TestEraseHandler(t *testing.T) {
	st := &memStore{users: map[string]int{"u-1": 3, "h(u-1)": 2, "u-2": 1}}
	e := &Eraser{Store: st, Log: platform.Discard,
		StoredIDs: func(id string) []string { return []string{id, "h(" + id + ")"} }}
	srv := serve(e)
	defer srv.Close()

	code, body, _ := del(t, srv.URL, "u-1")
	var res Result
	json.Unmarshal(body, &res)
	if code != 200 || res.Records != 5 || res.UserID != "u-1" {
		t.Fatalf("erase u-1: %d %s", code, body)
	}
	if !slices.Equal(st.asked, []string{"u-1", "h(u-1)"}) {
		t.Errorf("store asked for %v", st.asked)
	}
	// Idempotent.
	if code, body, _ := del(t, srv.URL, "u-1"); code != 200 || !strings.Contains(string(body), `"records":0`) {
		t.Errorf("again: %d %s", code, body)
	}
	for _, bad := range []string{strings.Repeat("x", 129), strings.Repeat("é", 129)} {
		if code, body, _ := del(t, srv.URL, bad); code != 400 {
			t.Errorf("id %q: %d %s, want 400", bad, code, body)
		}
	}
	// Every id an event may carry can be erased: 128 characters of two
	// bytes each, control characters.
	for _, ok := range []string{strings.Repeat("é", 128), "u\x00'; DROP", "a\tb"} {
		if code, body, _ := del(t, srv.URL, ok); code != 200 {
			t.Errorf("id %q: %d %s, want 200", ok, code, body)
		}
	}
	// A failure is a 503 to retry, with what was done.
	st.err = errors.New("disk full")
	code, body, h := del(t, srv.URL, "u-2")
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(string(body), "disk full") || !strings.Contains(string(body), `"done"`) {
		t.Errorf("failing store: %d %s", code, body)
	}
}
