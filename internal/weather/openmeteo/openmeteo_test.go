package openmeteo_test

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
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixed serves the same answer to every request and counts them.
func fixed(t *testing.T, status int, body []byte) (*httptest.Server, *atomic.Int64, *atomic.Value) {
	var n atomic.Int64
	var last atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		last.Store(r.URL)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n, &last
}

func client(t *testing.T, cfg openmeteo.Config) *openmeteo.Client {
	t.Helper()
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = time.Millisecond
	}
	c, err := openmeteo.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCurrentFixtures(t *testing.T) {
	tests := []struct {
		file   string
		points int
		want   []event.Weather
	}{
		{"current.json", 1, []event.Weather{{
			ObservedAt: time.Date(2026, 1, 15, 3, 0, 0, 0, time.UTC), TemperatureC: -8.1, ApparentTemperature: -14.8,
			RelativeHumidity: 64, PrecipitationMM: 0, WindSpeedKMH: 21.9, WindDirectionDeg: 319, WeatherCode: 3,
			Condition: "Overcast", Provider: "open-meteo", CellLatitude: 41.715942, CellLongitude: -87.63699,
		}}},
		{"current-multi.json", 2, []event.Weather{{
			ObservedAt: time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC), TemperatureC: 2.4, ApparentTemperature: -1.2,
			RelativeHumidity: 91, PrecipitationMM: 0.1, WindSpeedKMH: 12.6, WindDirectionDeg: 245, WeatherCode: 61,
			Condition: "Slight rain", Provider: "open-meteo", CellLatitude: 52.52, CellLongitude: 13.419998,
		}, {
			ObservedAt: time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC), TemperatureC: 6.8, ApparentTemperature: 4.1,
			RelativeHumidity: 84, PrecipitationMM: 0, WindSpeedKMH: 9.4, WindDirectionDeg: 210, WeatherCode: 3,
			Condition: "Overcast", Provider: "open-meteo", CellLatitude: 48.84, CellLongitude: 2.3599997,
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			srv, _, last := fixed(t, 200, fixture(t, tt.file))
			c := client(t, openmeteo.Config{BaseURL: srv.URL})
			points := []weather.Point{{Lat: 52.52, Lon: 13.41}, {Lat: 48.85, Lon: 2.35}}[:tt.points]
			got, err := c.Current(context.Background(), points)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d answers", len(got))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("point %d:\n got %+v\nwant %+v", i, got[i], tt.want[i])
				}
			}
			q := last.Load().(*url.URL).Query()
			if q["current"][0] != openmeteo.Variables || len(strings.Split(q["latitude"][0], ",")) != tt.points {
				t.Errorf("query %v", q)
			}
		})
	}
}

func TestWrongNumberOfLocations(t *testing.T) {
	srv, _, _ := fixed(t, 200, fixture(t, "current-multi.json"))
	c := client(t, openmeteo.Config{BaseURL: srv.URL})
	_, err := c.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 1}, {Lat: 2, Lon: 2}, {Lat: 3, Lon: 3}})
	if err == nil || !strings.Contains(err.Error(), "2 locations for 3 asked") {
		t.Errorf("err = %v", err)
	}
	// A single object for two points is wrong too.
	srv1, _, _ := fixed(t, 200, fixture(t, "current.json"))
	c1 := client(t, openmeteo.Config{BaseURL: srv1.URL})
	if _, err := c1.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 1}, {Lat: 2, Lon: 2}}); err == nil {
		t.Errorf("no error for one object for two points")
	}
	// Elements out of order (location_id) are caught.
	swapped := `[{"location_id":1,"latitude":1,"longitude":1,"current":{"time":"2026-01-01T00:00"}},{"latitude":2,"longitude":2,"current":{"time":"2026-01-01T00:00"}}]`
	srv2, _, _ := fixed(t, 200, []byte(swapped))
	c2 := client(t, openmeteo.Config{BaseURL: srv2.URL})
	if _, err := c2.Current(context.Background(), []weather.Point{{Lat: 1, Lon: 1}, {Lat: 2, Lon: 2}}); err == nil || !strings.Contains(err.Error(), "location_id") {
		t.Errorf("err = %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		file      string
		status    int
		reason    string
		retryable bool
		requests  int64
	}{
		{"error-400.json", 400, "Latitude must be in range of -90 to 90°. Given: 91.5.", false, 1},
		{"error-429.json", 429, "Minutely API request limit exceeded. Please try again in one minute.", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			srv, n, _ := fixed(t, tt.status, fixture(t, tt.file))
			c := client(t, openmeteo.Config{BaseURL: srv.URL})
			_, err := c.Current(context.Background(), []weather.Point{{Lat: 91.5, Lon: 0}})
			var ae *openmeteo.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want an *APIError", err)
			}
			if ae.StatusCode != tt.status || ae.Reason != tt.reason || ae.Retryable() != tt.retryable ||
				openmeteo.IsRetryable(err) != tt.retryable {
				t.Errorf("got %+v retryable %v", ae, ae.Retryable())
			}
			if n.Load() != tt.requests {
				t.Errorf("%d requests, want %d (4xx is not retried)", n.Load(), tt.requests)
			}
		})
	}
}

func TestRetriesServerErrors(t *testing.T) {
	var n atomic.Int64
	body := fixture(t, "current.json")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			http.Error(w, "upstream down", http.StatusBadGateway)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	c := client(t, openmeteo.Config{BaseURL: srv.URL, Retries: 2})
	if _, err := c.Current(context.Background(), []weather.Point{{Lat: 41.7, Lon: -87.6}}); err != nil {
		t.Fatalf("err = %v", err)
	}
	if n.Load() != 3 {
		t.Errorf("%d requests, want 3", n.Load())
	}
	n.Store(0)
	c = client(t, openmeteo.Config{BaseURL: srv.URL, Retries: -1})
	_, err := c.Current(context.Background(), []weather.Point{{Lat: 41.7, Lon: -87.6}})
	var ae *openmeteo.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 502 || ae.Reason != "upstream down" || !ae.Retryable() || n.Load() != 1 {
		t.Errorf("err = %v after %d requests", err, n.Load())
	}
}

var simNow = time.Date(2026, 11, 26, 6, 52, 31, 0, time.UTC)

func TestCurrentAgainstSim(t *testing.T) {
	s := sim.New(sim.Options{Clock: func() time.Time { return simNow }, Users: 250})
	srv := httptest.NewServer(s.OpenMeteo())
	defer srv.Close()
	c := client(t, openmeteo.Config{BaseURL: srv.URL, MaxLocations: 100})
	var points []weather.Point
	for _, u := range s.Users() {
		points = append(points, weather.Point{Lat: u.Latitude, Lon: u.Longitude})
	}
	got, err := c.Current(context.Background(), points)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.OpenMeteoRequests != 3 || st.OpenMeteoLocations != 250 {
		t.Errorf("sim stats %+v, want 3 requests for 250 locations", st)
	}
	for i, p := range points {
		cl, cn := sim.Cell(p.Lat, p.Lon)
		want := sim.Conditions(cl, cn, simNow)
		if !sim.SameValues(got[i], want) || got[i].Provider != "open-meteo" {
			t.Fatalf("point %d %v:\n got %+v\nwant %+v", i, p, got[i], want)
		}
		if got[i].CellLatitude == p.Lat && got[i].CellLongitude == p.Lon {
			t.Errorf("point %d: the answer is for the point asked, not its cell", i)
		}
	}
}

func TestAPIKey(t *testing.T) {
	s := sim.New(sim.Options{Users: 1, APIKey: "secret"})
	srv := httptest.NewServer(s.OpenMeteo())
	defer srv.Close()
	if _, err := client(t, openmeteo.Config{BaseURL: srv.URL}).Current(context.Background(), []weather.Point{{Lat: 1, Lon: 1}}); err == nil {
		t.Errorf("no error without the key")
	}
	if _, err := client(t, openmeteo.Config{BaseURL: srv.URL, APIKey: "secret"}).Current(context.Background(), []weather.Point{{Lat: 1, Lon: 1}}); err != nil {
		t.Errorf("with the key: %v", err)
	}
}

func TestHourly(t *testing.T) {
	srv, _, last := fixed(t, 200, fixture(t, "hourly-past.json"))
	c := client(t, openmeteo.Config{BaseURL: srv.URL})
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	got, err := c.Hourly(context.Background(), []weather.Point{{Lat: 52.52, Lon: 13.41}}, start, start.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	q := last.Load().(*url.URL).Query()
	if q["start_hour"][0] != "2026-11-23T10:00" || q["end_hour"][0] != "2026-11-23T12:00" {
		t.Errorf("query %v", q)
	}
	if len(got) != 1 || len(got[0]) != 3 {
		t.Fatalf("got %v", got)
	}
	h := got[0][2]
	if !h.ObservedAt.Equal(start.Add(2*time.Hour)) || h.TemperatureC != 6.1 || h.WeatherCode != 61 || h.PrecipitationMM != 0.2 ||
		h.Condition != "Slight rain" || h.CellLongitude != 13.419998 {
		t.Errorf("hour 2: %+v", h)
	}

	// Against the simulator, for several points: every hour is Conditions at its start.
	s := sim.New(sim.Options{Clock: func() time.Time { return simNow }, Users: 1})
	ssrv := httptest.NewServer(s.OpenMeteo())
	defer ssrv.Close()
	c = client(t, openmeteo.Config{BaseURL: ssrv.URL, MaxLocations: 2})
	points := []weather.Point{{Lat: 52.52, Lon: 13.41}, {Lat: 48.85, Lon: 2.35}, {Lat: -33.87, Lon: 151.21}}
	start = simNow.Add(-30 * time.Hour)
	hours, err := c.Hourly(context.Background(), points, start, simNow)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range points {
		if len(hours[i]) != 31 {
			t.Fatalf("point %d: %d hours", i, len(hours[i]))
		}
		cl, cn := sim.Cell(p.Lat, p.Lon)
		for _, w := range hours[i] {
			if want := sim.Conditions(cl, cn, w.ObservedAt); !sim.SameValues(w, want) {
				t.Fatalf("point %d hour %s:\n got %+v\nwant %+v", i, w.ObservedAt, w, want)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	err := openmeteo.Config{BaseURL: "ftp://x", MaxLocations: 5000, Timeout: -1, Retries: -2}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"base URL", "max locations", "timeout", "retries"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in %v", want, err)
		}
	}
	if err := (openmeteo.Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
}
