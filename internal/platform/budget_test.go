package platform

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBodyBudget: the bodies the requests in flight hold are bounded
// together: a body that does not fit beside those held is 503 with
// Retry-After, and fits once they are answered; decompressed bytes count.
func TestBodyBudget(t *testing.T) {
	hold, release := make(chan struct{}), make(chan struct{})
	budget := NewBodyBudget(1000)
	h := budget.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, berr := ReadBody(w, r, 1<<20, true)
		if berr != nil {
			berr.Write(w)
			return
		}
		if r.URL.Path == "/hold" {
			hold <- struct{}{}
			<-release
		}
		w.Write(body[:0])
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(path string, body []byte, gz bool) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// settle waits until free bytes of the budget are free: a request gives
	// back what it read once its handler returns, just after its answer.
	settle := func(free int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !budget.sem.TryAcquire(free); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d bytes of the budget never came free", free)
			}
		}
		budget.sem.Release(free)
	}
	defer func() {
		select {
		case <-release:
		default:
			close(release) // a failed test lets the held request go
		}
	}()
	done := make(chan *http.Response)
	go func() { done <- post("/hold", bytes.Repeat([]byte("a"), 800), false) }()
	<-hold // 800 bytes held, 801 charged: a body of announced length is charged at once, with its buffer's extra byte
	if resp := post("/", bytes.Repeat([]byte("b"), 300), false); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("300 bytes beside 800 held of 1000: %d %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	settle(199)
	if resp := post("/", bytes.Repeat([]byte("b"), 150), false); resp.StatusCode != http.StatusOK {
		t.Errorf("150 bytes beside 800 held of 1000: %d, want 200", resp.StatusCode)
	}
	settle(199)
	// 300 bytes sent as a few bytes of gzip: what counts is what they hold.
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte(strings.Repeat("c", 300)))
	zw.Close()
	if resp := post("/", zb.Bytes(), true); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("300 bytes, gzip, beside 800 held: %d, want 503", resp.StatusCode)
	}
	close(release)
	if resp := <-done; resp.StatusCode != http.StatusOK {
		t.Errorf("the held request: %d", resp.StatusCode)
	}
	settle(1000)
	if resp := post("/", bytes.Repeat([]byte("b"), 900), false); resp.StatusCode != http.StatusOK {
		t.Errorf("900 bytes once the held request was answered: %d, want 200", resp.StatusCode)
	}
}
