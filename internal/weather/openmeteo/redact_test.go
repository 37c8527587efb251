package openmeteo_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

// TestErrorsNeverHoldTheKey: whatever the provider answers, an echo of the
// key (as sent, URL-encoded, in the request URL it quotes), a long page or
// a broken connection, the error, which records copy into
// enrichment.error, holds no key and stays short. (Loopback servers only.)
func TestErrorsNeverHoldTheKey(t *testing.T) {
	const key = "om-k3y/0123456789+abcdef"
	for _, tt := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"400 quotes the key", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			w.Write([]byte(`{"error":true,"reason":"API key ` + r.URL.Query().Get("apikey") + ` is not valid"}`))
		}},
		{"429 quotes the raw query", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(429)
			w.Write([]byte(`{"error":true,"reason":"limit exceeded for ` + r.URL.RawQuery + `"}`))
		}},
		{"502 page echoes the URL", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html>upstream failed for "+r.URL.String()+strings.Repeat(" padding", 1000)+"</html>", 502)
		}},
		{"hang up", func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.h)
			defer srv.Close()
			c := client(t, openmeteo.Config{BaseURL: srv.URL, APIKey: key, Retries: -1})
			_, err := c.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 2}})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, form := range []string{key, "om-k3y", "0123456789"} {
				if strings.Contains(msg, form) {
					t.Fatalf("the error holds the key (%q): %s", form, msg)
				}
			}
			if len(msg) > 400 {
				t.Fatalf("an error of %d bytes: %s", len(msg), msg)
			}
		})
	}
}
