package bench

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCPUProfile: the profile is asked of the admin listener, with the key
// and the length, and written to the file as served; a refusal is an error
// that quotes the server and writes nothing.
func TestCPUProfile(t *testing.T) {
	var got string
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.RequestURI()
		if r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "needs the admin scope", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("profile bytes"))
	}))
	defer admin.Close()
	dir := t.TempDir()
	c := NewClient("http://127.0.0.1:1", 1)
	c.Admin, c.Key = admin.URL, "k"
	path := filepath.Join(dir, "pipeline.pprof")
	if err := c.CPUProfile(t.Context(), 7, path); err != nil {
		t.Fatal(err)
	}
	if got != "/debug/pprof/profile?seconds=7" {
		t.Errorf("asked for %s", got)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "profile bytes" {
		t.Fatalf("file: %q, %v", b, err)
	}

	heap := filepath.Join(dir, "pipeline.heap.pprof")
	if err := c.HeapProfile(t.Context(), heap); err != nil {
		t.Fatal(err)
	}
	if got != "/debug/pprof/heap" {
		t.Errorf("asked for %s", got)
	}
	if b, err := os.ReadFile(heap); err != nil || string(b) != "profile bytes" {
		t.Fatalf("file: %q, %v", b, err)
	}

	c.Key = "wrong"
	other := filepath.Join(dir, "other.pprof")
	err := c.CPUProfile(t.Context(), 7, other)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "needs the admin scope") {
		t.Fatalf("refused profile: %v", err)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("a refused profile left a file: %v", err)
	}
}
