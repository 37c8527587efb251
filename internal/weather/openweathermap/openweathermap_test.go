package openweathermap_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openweathermap"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// server answers every request with status and body, and records the last
// query.
func server(t *testing.T, status int, body []byte, header map[string]string) (*httptest.Server, *atomic.Value, *atomic.Int64) {
	var last atomic.Value
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		last.Store(r.URL)
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &last, &n
}

func TestCurrentFixture(t *testing.T) {
	srv, last, _ := server(t, 200, fixture(t, "current.json"), nil)
	c, err := openweathermap.New(openweathermap.Config{BaseURL: srv.URL, APIKey: "k3y"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Current(context.Background(), []weather.Point{{Lat: 52.52, Lon: 13.405}})
	if err != nil {
		t.Fatal(err)
	}
	want := event.Weather{ObservedAt: time.Unix(1795676700, 0).UTC(), TemperatureC: 6.85, ApparentTemperature: 3.9,
		RelativeHumidity: 87, PrecipitationMM: 1.31, WindSpeedKMH: 14.8, WindDirectionDeg: 240, WeatherCode: 63,
		Condition: "Moderate rain", Provider: "openweathermap", CellLatitude: 52.52, CellLongitude: 13.41}
	if len(got) != 1 || got[0] != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	u := last.Load().(*url.URL)
	q := u.Query()
	if u.Path != "/data/2.5/weather" || q.Get("lat") != "52.52" || q.Get("lon") != "13.405" || q.Get("appid") != "k3y" || q.Get("units") != "metric" {
		t.Errorf("request %s", u)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       []byte
		header     map[string]string
		wantStatus int
		retryable  bool
		retryAfter time.Duration
		errHas     string
	}{
		{"401 bad key", 401, fixture(t, "error-401.json"), nil, 401, false, 0, "Invalid API key"},
		{"429", 429, fixture(t, "error-429.json"), map[string]string{"Retry-After": "30"}, 429, true, 30 * time.Second, "temporary blocked"},
		{"502 html", 502, []byte("<html>bad gateway</html>"), nil, 502, true, 0, "bad gateway"},
		{"malformed", 200, []byte(`{"coord":{"lon":13.4`), nil, 0, true, 0, "decode answer"},
		{"no main", 200, []byte(`{"coord":{"lon":1,"lat":2},"dt":5}`), nil, 0, true, 0, "no main"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, n := server(t, tt.status, tt.body, tt.header)
			c, err := openweathermap.New(openweathermap.Config{BaseURL: srv.URL, APIKey: "secret-key"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 2}})
			if err == nil || !strings.Contains(err.Error(), tt.errHas) || strings.Contains(err.Error(), "secret-key") {
				t.Fatalf("err = %v, want %q (and no key)", err, tt.errHas)
			}
			var ae *weather.APIError
			if errors.As(err, &ae) != (tt.wantStatus != 0) || ae != nil && (ae.StatusCode != tt.wantStatus || ae.RetryAfter() != tt.retryAfter) {
				t.Errorf("API error %+v", ae)
			}
			if weather.Retryable(err) != tt.retryable {
				t.Errorf("retryable %v, want %v", weather.Retryable(err), tt.retryable)
			}
			if n.Load() != 1 {
				t.Errorf("%d requests", n.Load())
			}
		})
	}
}

// TestThroughService: the second provider behind the same Service: one
// location per call, current conditions only.
func TestThroughService(t *testing.T) {
	srv, _, n := server(t, 200, fixture(t, "current.json"), nil)
	c, err := openweathermap.New(openweathermap.Config{BaseURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1795676700, 0)
	s := weather.NewService(c, weather.ServiceConfig{Clock: func() time.Time { return now }})
	defer s.Close()
	reqs := []weather.Request{
		{Point: weather.Point{Lat: 52.52, Lon: 13.41}, At: now},
		{Point: weather.Point{Lat: 48.85, Lon: 2.35}, At: now},
		{Point: weather.Point{Lat: 52.52, Lon: 13.41}, At: now},
		{Point: weather.Point{Lat: 52.52, Lon: 13.41}, At: now.Add(-2 * time.Hour)},
	}
	res := s.Lookup(context.Background(), reqs)
	for i, r := range res[:3] {
		if r.Err != nil || r.Weather.Condition != "Moderate rain" || r.Weather.Provider != "openweathermap" {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if !errors.Is(res[3].Err, weather.ErrNoHistory) {
		t.Errorf("past event: %+v", res[3])
	}
	if st := s.Stats(); n.Load() != 2 || st.Calls != 2 || st.Points != 2 {
		t.Errorf("%d requests, stats %+v", n.Load(), st)
	}
}

func TestWMOCode(t *testing.T) {
	for id, want := range map[int]int{200: 95, 232: 95, 300: 51, 500: 61, 501: 63, 504: 65, 511: 66, 522: 82,
		600: 71, 602: 75, 622: 86, 701: 45, 741: 45, 721: 5, 781: 19, 800: 0, 801: 1, 802: 2, 804: 3, 999: -1} {
		if got := openweathermap.WMOCode(id); got != want {
			t.Errorf("WMOCode(%d) = %d, want %d", id, got, want)
		}
	}
	// Every code in the Open-Meteo subset it maps to has a text.
	for id := 200; id < 900; id++ {
		if c := openweathermap.WMOCode(id); c >= 0 && c > 19 && !weather.KnownCode(c) {
			t.Errorf("id %d maps to %d, not an Open-Meteo code", id, c)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	err := openweathermap.Config{BaseURL: "ftp://x", Timeout: -1}.Validate()
	for _, want := range []string{"API key", "base URL", "timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q not in %v", want, err)
		}
	}
}
