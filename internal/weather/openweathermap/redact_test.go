package openweathermap_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openweathermap"
)

// TestErrorsNeverHoldTheKey: whatever the provider answers, an echo of the
// key (as sent, URL-encoded, in the request URL it quotes), a long page or
// a broken connection, the error, which records copy, holds no key and
// stays short. (Loopback servers only.)
func TestErrorsNeverHoldTheKey(t *testing.T) {
	const key = "owm-k3y/0123456789+abcdef"
	for _, tt := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"401 quotes the key", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(401)
			w.Write([]byte(`{"cod":401, "message": "Invalid API key ` + r.URL.Query().Get("appid") + `. Please see https://openweathermap.org/faq#error401 for more info."}`))
		}},
		{"500 echoes the URL", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "failed: GET "+r.URL.String()+" "+strings.Repeat("x", 5000), 500)
		}},
		{"hang up", func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.h)
			defer srv.Close()
			c, err := openweathermap.New(openweathermap.Config{BaseURL: srv.URL, APIKey: key})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 2}})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, form := range []string{key, "owm-k3y", "0123456789"} {
				if strings.Contains(msg, form) {
					t.Fatalf("the error holds the key (%q): %s", form, msg)
				}
			}
			if len(msg) > 400 {
				t.Fatalf("an error of %d bytes: %s", len(msg), msg)
			}
		})
	}
	// Not reachable at all: the error names no URL.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c, _ := openweathermap.New(openweathermap.Config{BaseURL: "http://" + addr, APIKey: key})
	if _, err := c.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 2}}); err == nil || strings.Contains(err.Error(), "owm-k3y") {
		t.Fatalf("connection refused: %v", err)
	}
}
