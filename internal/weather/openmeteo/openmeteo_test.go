package openmeteo_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

func TestAnswerMembers(t *testing.T) {
	cur := func(lat float64) string {
		return fmt.Sprintf(`"latitude":%g,"longitude":%g,"current":{"time":"2026-01-01T00:00","temperature_2m":%g}`, lat, lat, lat)
	}
	tests := []struct {
		name        string
		body        string
		points      int
		wantErr     string // "" for success
		wantMissing []int  // with a *weather.PartialError
		wantTemps   []float64
	}{
		{"in order", "[{" + cur(1) + `},{"location_id":1,` + cur(2) + "}]", 2, "", nil, []float64{1, 2}},
		{"in order without ids", "[{" + cur(1) + "},{" + cur(2) + "}]", 2, "", nil, []float64{1, 2}},
		{"reordered by location_id", `[{"location_id":2,` + cur(3) + `},{"location_id":1,` + cur(2) + "},{" + cur(1) + "}]", 3, "", nil, []float64{1, 2, 3}},
		{"one missing, named by location_id", "[{" + cur(1) + `},{"location_id":2,` + cur(3) + "}]", 3, "lacks 1 of 3", []int{1}, []float64{1, 0, 3}},
		{"first missing", `[{"location_id":1,` + cur(2) + "}]", 2, "lacks 1 of 2", []int{0}, []float64{0, 2}},
		{"too few without ids", "[{" + cur(1) + "},{" + cur(2) + "}]", 3, "2 locations for 3 asked", nil, nil},
		{"one object for two points", "{" + cur(1) + "}", 2, "1 locations for 2 asked", nil, nil},
		{"too many", "[{" + cur(1) + `},{"location_id":1,` + cur(2) + "}]", 1, "2 locations for 1 asked", nil, nil},
		{"duplicate location_id", `[{"location_id":1,` + cur(1) + `},{"location_id":1,` + cur(2) + "}]", 2, "duplicate", nil, nil},
		{"location_id out of range", "[{" + cur(1) + `},{"location_id":7,` + cur(2) + "}]", 2, "duplicate or out of", nil, nil},
		{"malformed", `[{"latitude":52.5,"longitude":13.4,"current":{"time":"2026-`, 1, "decode answer", nil, nil},
		{"not JSON", `<html>oops</html>`, 1, "not a JSON object or array", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, _ := fixed(t, 200, []byte(tt.body))
			c := client(t, openmeteo.Config{BaseURL: srv.URL})
			pts := make([]weather.Point, tt.points)
			for i := range pts {
				pts[i] = weather.Point{Lat: float64(i + 1), Lon: float64(i + 1)}
			}
			got, err := c.Current(context.Background(), pts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			var pe *weather.PartialError
			if errors.As(err, &pe) != (tt.wantMissing != nil) || (pe != nil && !slices.Equal(pe.Missing, tt.wantMissing)) {
				t.Errorf("partial error %+v, want missing %v", pe, tt.wantMissing)
			}
			if tt.wantTemps == nil {
				return
			}
			for i, w := range got {
				if w.TemperatureC != tt.wantTemps[i] {
					t.Errorf("point %d: temperature %g, want %g", i, w.TemperatureC, tt.wantTemps[i])
				}
			}
		})
	}
}

// TestSimFaults runs the client against the simulator's injected faults.
func TestSimFaults(t *testing.T) {
	pts := []weather.Point{{Lat: 52.52, Lon: 13.41}, {Lat: 48.85, Lon: 2.35}, {Lat: -33.87, Lon: 151.21}}
	tests := []struct {
		name        string
		fault       sim.Fault
		wantErr     string
		wantStatus  int
		retryAfter  time.Duration
		wantMissing []int
	}{
		{"500", sim.Fault{Status: 500}, "HTTP 500", 500, 0, nil},
		{"429 with Retry-After", sim.Fault{Status: 429, RetryAfter: 7 * time.Second}, "HTTP 429", 429, 7 * time.Second, nil},
		{"429 default Retry-After", sim.Fault{Status: 429}, "HTTP 429", 429, time.Minute, nil},
		{"slow", sim.Fault{Delay: time.Hour}, "deadline exceeded", 0, 0, nil},
		{"malformed", sim.Fault{Malformed: true}, "decode answer", 0, 0, nil},
		{"reordered", sim.Fault{Reverse: true}, "", 0, 0, nil},
		{"missing member", sim.Fault{Missing: []int{1}}, "lacks 1 of 3", 0, 0, []int{1}},
		{"missing first and reordered", sim.Fault{Missing: []int{0}, Reverse: true}, "lacks 1 of 3", 0, 0, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sim.New(sim.Options{Clock: func() time.Time { return simNow }, Users: 1,
				Inject: func(api string, r *http.Request) sim.Fault { return tt.fault }})
			srv := httptest.NewServer(s.OpenMeteo())
			defer srv.Close()
			c := client(t, openmeteo.Config{BaseURL: srv.URL, Retries: -1})
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if tt.fault.Delay == 0 {
				ctx = context.Background()
			}
			got, err := c.Current(ctx, pts)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			var ae *openmeteo.APIError
			if errors.As(err, &ae) != (tt.wantStatus != 0) || ae != nil && (ae.StatusCode != tt.wantStatus || ae.RetryAfter() != tt.retryAfter) {
				t.Errorf("API error %+v, want status %d retry after %s", ae, tt.wantStatus, tt.retryAfter)
			}
			var pe *weather.PartialError
			if errors.As(err, &pe) && !slices.Equal(pe.Missing, tt.wantMissing) {
				t.Errorf("missing %v, want %v", pe.Missing, tt.wantMissing)
			}
			if err == nil || pe != nil {
				for i, p := range pts {
					if slices.Contains(tt.wantMissing, i) {
						continue
					}
					cl, cn := sim.Cell(p.Lat, p.Lon)
					if want := sim.Conditions(cl, cn, simNow); !sim.SameValues(got[i], want) {
						t.Errorf("point %d:\n got %+v\nwant %+v", i, got[i], want)
					}
				}
			}
		})
	}
}

// TestHourlyArchive: hours older than the forecast API's 92 days come from
// the archive API, which the simulator serves too.
func TestHourlyArchive(t *testing.T) {
	s := sim.New(sim.Options{Clock: func() time.Time { return simNow }, Users: 1})
	var paths []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path+"?"+r.URL.Query().Get("start_date")+r.URL.Query().Get("start_hour"))
		mu.Unlock()
		s.OpenMeteo().ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := client(t, openmeteo.Config{BaseURL: srv.URL, Clock: func() time.Time { return simNow }})
	pts := []weather.Point{{Lat: 52.52, Lon: 13.41}, {Lat: 40.42, Lon: -3.7}}
	tests := []struct {
		name  string
		start time.Time
		path  string
	}{
		{"yesterday: forecast API", simNow.Add(-24 * time.Hour), "/v1/forecast?2026-11-25T06:00"},
		{"91 days ago: forecast API", simNow.AddDate(0, 0, -91), "/v1/forecast?2026-08-27T06:00"},
		{"93 days ago: archive API", simNow.AddDate(0, 0, -93), "/v1/archive?2026-08-25"},
		{"1999: archive API", time.Date(1999, 12, 31, 23, 30, 0, 0, time.UTC), "/v1/archive?1999-12-31"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			paths = nil
			mu.Unlock()
			got, err := c.Hourly(context.Background(), pts, tt.start, tt.start.Add(2*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if len(paths) != 1 || paths[0] != tt.path {
				t.Errorf("requests %v, want %s", paths, tt.path)
			}
			for i, p := range pts {
				if len(got[i]) != 3 {
					t.Fatalf("point %d: %d hours, want 3", i, len(got[i]))
				}
				cl, cn := sim.Cell(p.Lat, p.Lon)
				for h, w := range got[i] {
					at := tt.start.Truncate(time.Hour).Add(time.Duration(h) * time.Hour)
					if want := sim.Conditions(cl, cn, at); !w.ObservedAt.Equal(at) || !sim.SameValues(w, want) {
						t.Errorf("point %d hour %d:\n got %+v\nwant %+v", i, h, w, want)
					}
				}
			}
		})
	}
	// The forecast API refuses hours beyond its range, as the real one.
	old := simNow.AddDate(0, 0, -100)
	_, err := client(t, openmeteo.Config{BaseURL: srv.URL, Clock: func() time.Time { return simNow.AddDate(0, 0, -50) }}).Hourly(context.Background(), pts, old, old)
	if err == nil || !strings.Contains(err.Error(), "out of allowed range") {
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
