package weather_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
	"github.com/skyjoin/skyjoin/internal/weather/openweathermap"
)

// TestProviderErrorsNeverHoldTheKey: whatever a provider answers, an echo
// of the key (as sent, URL-encoded, in the request URL it quotes), a long
// page or a broken connection, the error, which records copy into
// enrichment.error, holds no key and stays short. Loopback servers only.
func TestProviderErrorsNeverHoldTheKey(t *testing.T) {
	const key = "wx-k3y/0123456789+abcdef"
	providers := map[string]func(base string) (weather.Provider, error){
		"open-meteo": func(base string) (weather.Provider, error) {
			return openmeteo.New(openmeteo.Config{BaseURL: base, APIKey: key, Retries: -1})
		},
		"openweathermap": func(base string) (weather.Provider, error) {
			return openweathermap.New(openweathermap.Config{BaseURL: base, APIKey: key})
		},
	}
	query := func(r *http.Request) string {
		var vs []string
		for _, v := range r.URL.Query() {
			vs = append(vs, v...)
		}
		return strings.Join(vs, " ") + " " + r.URL.RawQuery
	}
	answers := map[string]http.HandlerFunc{
		"401 quotes the key": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":true,"reason":"API key %[1]s is not valid","cod":401,"message":"Invalid API key %[1]s"}`, query(r))
		},
		"429 quotes the request": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprintf(w, `{"error":true,"reason":"limit exceeded for %[1]s","message":"limit exceeded for %[1]s"}`, r.URL.String())
		},
		"502 page echoes the URL": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html>upstream failed for "+r.URL.String()+strings.Repeat(" padding", 1000)+"</html>", http.StatusBadGateway)
		},
		"hang up": func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		},
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + ln.Addr().String()
	ln.Close()
	for pname, newProvider := range providers {
		for aname, h := range answers {
			t.Run(pname+"/"+aname, func(t *testing.T) {
				srv := httptest.NewServer(h)
				defer srv.Close()
				checkNoKey(t, newProvider, srv.URL, key)
			})
		}
		t.Run(pname+"/connection refused", func(t *testing.T) { checkNoKey(t, newProvider, refused, key) })
	}
}

func checkNoKey(t *testing.T, newProvider func(string) (weather.Provider, error), base, key string) {
	t.Helper()
	p, err := newProvider(base)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 2}})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, form := range []string{key, "wx-k3y", "0123456789"} {
		if strings.Contains(msg, form) {
			t.Fatalf("the error holds the key (%q): %s", form, msg)
		}
	}
	if len(msg) > 400 {
		t.Fatalf("an error of %d bytes: %s", len(msg), msg)
	}
}
