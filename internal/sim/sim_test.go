package sim_test

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/weather"
)

var now = time.Date(2026, 11, 26, 6, 52, 31, 0, time.UTC)

func clock() time.Time { return now }

func TestCell(t *testing.T) {
	tests := []struct {
		lat, lon, wantLat, wantLon float64
	}{
		{52.52, 13.41, 52.55, 13.45},
		{52.5, 13.4, 52.55, 13.45},
		{-33.87, 151.21, -33.85, 151.25},
		{-0.01, -0.01, -0.05, -0.05},
		{90, 180, 89.95, -179.95},
		{-90, -180, -89.95, -179.95},
	}
	for _, tt := range tests {
		gotLat, gotLon := sim.Cell(tt.lat, tt.lon)
		if gotLat != tt.wantLat || gotLon != tt.wantLon {
			t.Errorf("Cell(%g, %g) = %g, %g; want %g, %g", tt.lat, tt.lon, gotLat, gotLon, tt.wantLat, tt.wantLon)
		}
	}
}

func TestConditionsDeterministic(t *testing.T) {
	a := sim.Conditions(52.55, 13.45, now)
	b := sim.Conditions(52.55, 13.45, now.Add(-7*time.Minute)) // same slot
	if a != b {
		t.Errorf("same cell and slot differ:\n%+v\n%+v", a, b)
	}
	if want := time.Date(2026, 11, 26, 6, 45, 0, 0, time.UTC); !a.ObservedAt.Equal(want) {
		t.Errorf("ObservedAt = %s, want %s", a.ObservedAt, want)
	}
	if a.CellLatitude != 52.55 || a.CellLongitude != 13.45 || a.Provider != sim.ProviderName {
		t.Errorf("cell/provider = %g,%g %q", a.CellLatitude, a.CellLongitude, a.Provider)
	}
}

// TestConditionsPlausible sweeps cells and slots and checks ranges and the
// consistency of code, precipitation, temperature and humidity.
func TestConditionsPlausible(t *testing.T) {
	codes := map[int]int{}
	var tropics, arctic, n float64
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for lat := -75.05; lat < 80; lat += 7.3 {
		for lon := -179.95; lon < 180; lon += 23.1 {
			for h := 0; h < 365*24; h += 37 {
				w := sim.Conditions(lat, lon, start.Add(time.Duration(h)*time.Hour))
				n++
				codes[w.WeatherCode]++
				if !weather.KnownCode(w.WeatherCode) || w.Condition != weather.Condition(w.WeatherCode) {
					t.Fatalf("code %d condition %q", w.WeatherCode, w.Condition)
				}
				if w.TemperatureC < -70 || w.TemperatureC > 55 || w.RelativeHumidity < 0 || w.RelativeHumidity > 100 ||
					w.PrecipitationMM < 0 || w.PrecipitationMM > 10 || w.WindSpeedKMH < 0 || w.WindSpeedKMH > 120 ||
					w.WindDirectionDeg < 0 || w.WindDirectionDeg >= 360 {
					t.Fatalf("out of range: %+v", w)
				}
				wet := w.WeatherCode >= 51
				if wet != (w.PrecipitationMM > 0) {
					t.Fatalf("code %d with precipitation %g", w.WeatherCode, w.PrecipitationMM)
				}
				snow := w.WeatherCode >= 71 && w.WeatherCode <= 77 || w.WeatherCode == 85 || w.WeatherCode == 86
				if snow && w.TemperatureC > 1 {
					t.Fatalf("snow at %g °C", w.TemperatureC)
				}
				if (w.WeatherCode == 61 || w.WeatherCode == 63 || w.WeatherCode == 65) && w.TemperatureC <= 1 {
					t.Fatalf("rain at %g °C", w.TemperatureC)
				}
				if w.WeatherCode >= 95 && w.TemperatureC < 16 {
					t.Fatalf("thunderstorm at %g °C", w.TemperatureC)
				}
				if (w.WeatherCode == 45 || w.WeatherCode == 48) && w.RelativeHumidity < 98 {
					t.Fatalf("fog at %g %%", w.RelativeHumidity)
				}
				if wet && w.RelativeHumidity < 85 {
					t.Fatalf("precipitation at %g %%", w.RelativeHumidity)
				}
				if math.Abs(lat) < 15 {
					tropics += w.TemperatureC
				}
				if lat > 65 {
					arctic += w.TemperatureC
				}
			}
		}
	}
	for _, c := range []int{0, 1, 2, 3, 45, 51, 61, 63, 71, 80, 95} {
		if codes[c] == 0 {
			t.Errorf("code %d never occurs in %g samples; got %v", c, n, codes)
		}
	}
	if tropics <= arctic {
		t.Errorf("tropics not warmer than the arctic")
	}
	t.Logf("%g samples, codes %v", n, codes)
}

func TestConditionsSeasonAndDay(t *testing.T) {
	// Berlin: July afternoons warmer than January nights, on average.
	var summer, winter float64
	for d := 0; d < 28; d++ {
		summer += sim.Conditions(52.55, 13.45, time.Date(2026, 7, 1+d, 14, 0, 0, 0, time.UTC)).TemperatureC
		winter += sim.Conditions(52.55, 13.45, time.Date(2026, 1, 1+d, 3, 0, 0, 0, time.UTC)).TemperatureC
	}
	if summer/28 < winter/28+10 {
		t.Errorf("summer afternoons %.1f, winter nights %.1f", summer/28, winter/28)
	}
	// Sydney's seasons are the other way round.
	var jan, jul float64
	for d := 0; d < 28; d++ {
		jan += sim.Conditions(-33.85, 151.25, time.Date(2026, 1, 1+d, 4, 0, 0, 0, time.UTC)).TemperatureC
		jul += sim.Conditions(-33.85, 151.25, time.Date(2026, 7, 1+d, 4, 0, 0, 0, time.UTC)).TemperatureC
	}
	if jan <= jul {
		t.Errorf("Sydney January %.1f not warmer than July %.1f", jan/28, jul/28)
	}
}

func get(t *testing.T, h http.Handler, target string) (int, http.Header, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec.Code, rec.Header(), rec.Body.Bytes()
}

func TestRandomUserShape(t *testing.T) {
	s := sim.New(sim.Options{Clock: clock, Users: 500})
	code, hdr, body := get(t, s.RandomUser(), "/api/?results=200")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d %s: %s", code, hdr.Get("Content-Type"), body)
	}
	var a struct {
		Results []map[string]json.RawMessage `json:"results"`
		Info    struct {
			Seed    string `json:"seed"`
			Results int    `json:"results"`
			Page    int    `json:"page"`
			Version string `json:"version"`
		} `json:"info"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Results) != 200 || a.Info.Results != 200 || a.Info.Page != 1 || a.Info.Version != "1.4" || len(a.Info.Seed) != 16 {
		t.Fatalf("results %d, info %+v", len(a.Results), a.Info)
	}
	postcodeKinds := map[string]map[byte]bool{}
	nullIDs := 0
	for _, u := range a.Results {
		for _, f := range []string{"gender", "name", "location", "email", "login", "dob", "registered", "phone", "cell", "id", "picture", "nat"} {
			if _, ok := u[f]; !ok {
				t.Fatalf("no %s in %s", f, body)
			}
		}
		var loc struct {
			Street struct {
				Number int    `json:"number"`
				Name   string `json:"name"`
			} `json:"street"`
			Postcode    json.RawMessage `json:"postcode"`
			Coordinates struct{ Latitude, Longitude string }
			Timezone    struct{ Offset, Description string }
		}
		if err := json.Unmarshal(u["location"], &loc); err != nil {
			t.Fatalf("location: %v: %s", err, u["location"])
		}
		if loc.Coordinates.Latitude == "" || loc.Street.Number == 0 || loc.Timezone.Description == "" ||
			!strings.Contains(loc.Timezone.Offset, ":") {
			t.Errorf("location %s", u["location"])
		}
		var nat string
		json.Unmarshal(u["nat"], &nat)
		if postcodeKinds[nat] == nil {
			postcodeKinds[nat] = map[byte]bool{}
		}
		postcodeKinds[nat][loc.Postcode[0]] = true
		var id struct{ Value *string }
		json.Unmarshal(u["id"], &id)
		if id.Value == nil {
			nullIDs++
		}
	}
	if k := postcodeKinds["US"]; k != nil && !k['"'] {
		t.Errorf("US postcodes not strings")
	}
	if k := postcodeKinds["DE"]; k != nil && k['"'] {
		t.Errorf("DE postcodes not numbers")
	}
	if nullIDs == 0 {
		t.Errorf("no null id.value in 200 users")
	}

	// The info seed gives the same users again; another page others.
	_, _, again := get(t, s.RandomUser(), "/api/?results=200&seed="+a.Info.Seed)
	if string(again) != string(body) {
		t.Errorf("seed %s did not reproduce the answer", a.Info.Seed)
	}
	_, _, page2 := get(t, s.RandomUser(), "/api/?results=200&page=2&seed="+a.Info.Seed)
	if string(page2) == string(body) {
		t.Errorf("page 2 equals page 1")
	}
}

func TestRandomUserParams(t *testing.T) {
	s := sim.New(sim.Options{Clock: clock, Users: 300})
	tests := []struct {
		name, target string
		check        func(t *testing.T, results []map[string]json.RawMessage, raw map[string]json.RawMessage)
	}{
		{"default one", "/api/", func(t *testing.T, r []map[string]json.RawMessage, _ map[string]json.RawMessage) {
			if len(r) != 1 {
				t.Errorf("%d results", len(r))
			}
		}},
		{"version path", "/api/1.4/?results=3", func(t *testing.T, r []map[string]json.RawMessage, _ map[string]json.RawMessage) {
			if len(r) != 3 {
				t.Errorf("%d results", len(r))
			}
		}},
		{"capped", "/api/?results=9000&inc=nat", func(t *testing.T, r []map[string]json.RawMessage, _ map[string]json.RawMessage) {
			if len(r) != sim.MaxResults {
				t.Errorf("%d results", len(r))
			}
		}},
		{"nat", "/api/?results=50&nat=fi,de", func(t *testing.T, r []map[string]json.RawMessage, _ map[string]json.RawMessage) {
			for _, u := range r {
				if n := string(u["nat"]); n != `"FI"` && n != `"DE"` {
					t.Errorf("nat %s", n)
				}
			}
		}},
		{"inc", "/api/?results=5&inc=name,nat", func(t *testing.T, r []map[string]json.RawMessage, _ map[string]json.RawMessage) {
			for _, u := range r {
				if len(u) != 2 || u["name"] == nil || u["nat"] == nil {
					t.Errorf("fields %v", u)
				}
			}
		}},
		{"exc", "/api/?results=5&exc=login,id", func(t *testing.T, r []map[string]json.RawMessage, _ map[string]json.RawMessage) {
			for _, u := range r {
				if len(u) != 10 || u["login"] != nil || u["id"] != nil {
					t.Errorf("fields %v", u)
				}
			}
		}},
		{"noinfo", "/api/?results=2&noinfo", func(t *testing.T, _ []map[string]json.RawMessage, raw map[string]json.RawMessage) {
			if raw["info"] != nil {
				t.Errorf("info present")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := get(t, s.RandomUser(), tt.target)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			var raw map[string]json.RawMessage
			var results []map[string]json.RawMessage
			if err := json.Unmarshal(body, &raw); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw["results"], &results); err != nil {
				t.Fatal(err)
			}
			tt.check(t, results, raw)
		})
	}
}

func TestPopulationStable(t *testing.T) {
	a := sim.New(sim.Options{Seed: 7, Users: 50, Clock: clock}).Users()
	b := sim.New(sim.Options{Seed: 7, Users: 100, Clock: clock}).Users()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("user %d differs with the population size: %+v %+v", i, a[i], b[i])
		}
	}
	c := sim.New(sim.Options{Seed: 8, Users: 50, Clock: clock}).Users()
	if a[0] == c[0] {
		t.Errorf("seed does not change users")
	}
	// Users cluster in cities: many share a weather cell.
	all := sim.New(sim.Options{Clock: clock}).Users()
	cells := map[[2]float64]bool{}
	for _, u := range all {
		la, lo := sim.Cell(u.Latitude, u.Longitude)
		cells[[2]float64{la, lo}] = true
	}
	if len(cells) > len(all)/3 {
		t.Errorf("%d users in %d cells", len(all), len(cells))
	}
	t.Logf("%d users in %d cells", len(all), len(cells))
}

func TestOpenMeteoCurrent(t *testing.T) {
	s := sim.New(sim.Options{Clock: clock, Users: 1})
	code, _, body := get(t, s.OpenMeteo(), "/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m,weather_code,is_day")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var one struct {
		Latitude, Longitude float64
		LocationID          *int              `json:"location_id"`
		CurrentUnits        map[string]string `json:"current_units"`
		Current             map[string]any    `json:"current"`
	}
	if err := json.Unmarshal(body, &one); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	w := sim.Conditions(52.55, 13.45, now)
	if one.Latitude != 52.55 || one.Longitude != 13.45 || one.LocationID != nil ||
		one.Current["time"] != "2026-11-26T06:45" || one.Current["interval"] != 900.0 ||
		one.Current["temperature_2m"] != w.TemperatureC || one.Current["weather_code"] != float64(w.WeatherCode) ||
		one.CurrentUnits["temperature_2m"] != "°C" || one.Current["is_day"] == nil || len(one.Current) != 5 {
		t.Errorf("answer %s, want %+v", body, w)
	}

	_, _, body = get(t, s.OpenMeteo(), "/v1/forecast?latitude=52.52,48.85,-33.87&longitude=13.41,2.35,151.21&current=temperature_2m")
	var many []struct {
		LocationID *int `json:"location_id"`
		Latitude   float64
		Longitude  float64
	}
	if err := json.Unmarshal(body, &many); err != nil || len(many) != 3 {
		t.Fatalf("%v, %d elements: %s", err, len(many), body)
	}
	for i, m := range many {
		if (i == 0) != (m.LocationID == nil) || (i > 0 && *m.LocationID != i) {
			t.Errorf("element %d location_id %v", i, m.LocationID)
		}
	}
	if many[2].Latitude != -33.85 || many[2].Longitude != 151.25 {
		t.Errorf("order: %s", body)
	}
}

func TestOpenMeteoHourly(t *testing.T) {
	s := sim.New(sim.Options{Clock: clock, Users: 1})
	type hourly struct {
		Hourly struct {
			Time        []string  `json:"time"`
			Temperature []float64 `json:"temperature_2m"`
			Code        []int     `json:"weather_code"`
		} `json:"hourly"`
	}
	tests := []struct {
		query      string
		first, end string
		n          int
	}{
		{"start_hour=2026-11-23T10:00&end_hour=2026-11-23T12:00", "2026-11-23T10:00", "2026-11-23T12:00", 3},
		{"past_days=2&forecast_days=1", "2026-11-24T00:00", "2026-11-26T23:00", 72},
		{"past_days=1&forecast_days=0", "2026-11-25T00:00", "2026-11-25T23:00", 24},
		{"start_date=2026-11-20&end_date=2026-11-21", "2026-11-20T00:00", "2026-11-21T23:00", 48},
		{"", "2026-11-26T00:00", "2026-12-02T23:00", 7 * 24},
	}
	for _, tt := range tests {
		code, _, body := get(t, s.OpenMeteo(), "/v1/forecast?latitude=52.52&longitude=13.41&hourly=temperature_2m,weather_code&"+tt.query)
		if code != 200 {
			t.Fatalf("%s: status %d: %s", tt.query, code, body)
		}
		var h hourly
		if err := json.Unmarshal(body, &h); err != nil {
			t.Fatal(err)
		}
		ts := h.Hourly.Time
		if len(ts) != tt.n || ts[0] != tt.first || ts[len(ts)-1] != tt.end || len(h.Hourly.Temperature) != tt.n || len(h.Hourly.Code) != tt.n {
			t.Errorf("%s: %d times %s..%s", tt.query, len(ts), ts[0], ts[len(ts)-1])
			continue
		}
		for i, s := range ts {
			at, _ := time.Parse("2006-01-02T15:04", s)
			w := sim.Conditions(52.55, 13.45, at)
			if h.Hourly.Temperature[i] != w.TemperatureC || h.Hourly.Code[i] != w.WeatherCode {
				t.Errorf("%s: hour %s: %g/%d, want %g/%d", tt.query, s, h.Hourly.Temperature[i], h.Hourly.Code[i], w.TemperatureC, w.WeatherCode)
			}
		}
	}
}

func TestOpenMeteoErrors(t *testing.T) {
	s := sim.New(sim.Options{Clock: clock, Users: 1, APIKey: ""})
	tests := []struct {
		query, reason string
	}{
		{"latitude=91.5&longitude=13&current=temperature_2m", "Latitude must be in range of -90 to 90°. Given: 91.5."},
		{"latitude=52&longitude=-181&current=temperature_2m", "Longitude must be in range of -180 to 180°. Given: -181."},
		{"latitude=52,53&longitude=13&current=temperature_2m", "Parameter 'latitude' and 'longitude' must have the same number of elements"},
		{"longitude=13&current=temperature_2m", "Value of type 'Float' required for key 'latitude'."},
		{"latitude=abc&longitude=13", "Value of type 'Float' required for key 'latitude'."},
		{"latitude=52&longitude=13&current=temprature_2m", "Cannot initialize ForecastVariable from invalid String value temprature_2m."},
		{"latitude=52&longitude=13&hourly=temperature_2m&past_days=93", "Past days is invalid. Allowed range 0 to 92."},
		{"latitude=52&longitude=13&hourly=temperature_2m&start_hour=2026-11-23T10:00", "Parameter 'start_hour' and 'end_hour' must be set both"},
	}
	for _, tt := range tests {
		code, hdr, body := get(t, s.OpenMeteo(), "/v1/forecast?"+tt.query)
		var e struct {
			Error  bool   `json:"error"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(body, &e); err != nil || code != 400 || !e.Error || e.Reason != tt.reason ||
			!strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %s, want 400 %q", tt.query, code, body, tt.reason)
		}
	}
	keyed := sim.New(sim.Options{Clock: clock, Users: 1, APIKey: "k1"})
	if code, _, _ := get(t, keyed.OpenMeteo(), "/v1/forecast?latitude=1&longitude=1&current=temperature_2m"); code != 400 {
		t.Errorf("no key: %d", code)
	}
	if code, _, _ := get(t, keyed.OpenMeteo(), "/v1/forecast?latitude=1&longitude=1&current=temperature_2m&apikey=k1"); code != 200 {
		t.Errorf("key: %d", code)
	}
}

func TestFaultAndStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fail := true
	srv, err := sim.Start(ctx, "127.0.0.1:0", sim.Options{Clock: clock, Users: 10, Fault: func(api string, r *http.Request) int {
		if api == sim.APIOpenMeteo && fail {
			return http.StatusTooManyRequests
		}
		return 0
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.Get(srv.OpenMeteoURL + "/v1/forecast?latitude=1&longitude=1&current=temperature_2m")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || !strings.Contains(string(body), `"reason":"Minutely API request limit exceeded`) {
		t.Errorf("fault: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(srv.RandomUserURL + "/api/?results=3")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("randomuser: %d", resp.StatusCode)
	}
	if st := srv.Stats(); st.Faults != 1 || st.RandomUserRequests != 1 || st.OpenMeteoRequests != 0 {
		t.Errorf("stats %+v", st)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
