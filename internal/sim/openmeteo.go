package sim

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// MaxLocations is the most locations one simulated Open-Meteo request may ask
// for.
const MaxLocations = 1000

// omVariable is a weather variable the simulated API serves.
type omVariable struct {
	unit   string
	append func(b []byte, w *event.Weather, isDay bool) []byte
}

func appendFixed(prec int, f func(w *event.Weather) float64) func([]byte, *event.Weather, bool) []byte {
	return func(b []byte, w *event.Weather, _ bool) []byte {
		return strconv.AppendFloat(b, f(w), 'f', prec, 64)
	}
}

var omVariables = map[string]omVariable{
	"temperature_2m":       {"°C", appendFixed(1, func(w *event.Weather) float64 { return w.TemperatureC })},
	"relative_humidity_2m": {"%", appendFixed(0, func(w *event.Weather) float64 { return w.RelativeHumidity })},
	"apparent_temperature": {"°C", appendFixed(1, func(w *event.Weather) float64 { return w.ApparentTemperature })},
	"precipitation":        {"mm", appendFixed(2, func(w *event.Weather) float64 { return w.PrecipitationMM })},
	"weather_code":         {"wmo code", appendFixed(0, func(w *event.Weather) float64 { return float64(w.WeatherCode) })},
	"wind_speed_10m":       {"km/h", appendFixed(1, func(w *event.Weather) float64 { return w.WindSpeedKMH })},
	"wind_direction_10m":   {"°", appendFixed(0, func(w *event.Weather) float64 { return w.WindDirectionDeg })},
	"is_day": {"", func(b []byte, _ *event.Weather, isDay bool) []byte {
		if isDay {
			return append(b, '1')
		}
		return append(b, '0')
	}},
}

// IsDay reports whether the sun is up (elevation above -0.833 degrees) at
// the place and time: Open-Meteo's is_day.
func IsDay(lat, lon float64, t time.Time) bool {
	t = t.UTC()
	doy := float64(t.YearDay())
	decl := 23.44 * math.Pi / 180 * math.Sin(2*math.Pi*(284+doy)/365)
	solar := float64(t.Hour()) + float64(t.Minute())/60 + lon/15
	h := (solar - 12) * 15 * math.Pi / 180
	phi := lat * math.Pi / 180
	sinElev := math.Sin(phi)*math.Sin(decl) + math.Cos(phi)*math.Cos(decl)*math.Cos(h)
	return sinElev > math.Sin(-0.833*math.Pi/180)
}

type omError struct{ reason string }

func badRequest(format string, args ...any) *omError {
	return &omError{reason: fmt.Sprintf(format, args...)}
}

func writeOpenMeteoError(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(mustJSON(struct {
		Error  bool   `json:"error"`
		Reason string `json:"reason"`
	}{true, reason}))
}

func formatGiven(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func parseCoords(q map[string][]string, key string) ([]float64, *omError) {
	raw := first(q, key)
	if raw == "" {
		return nil, badRequest("Value of type 'Float' required for key '%s'.", key)
	}
	parts := strings.Split(raw, ",")
	out := make([]float64, len(parts))
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, badRequest("Value of type 'Float' required for key '%s'.", key)
		}
		out[i] = v
	}
	return out, nil
}

func parseVariables(q map[string][]string, key string) ([]string, *omError) {
	raw := strings.Join(q[key], ",")
	if raw == "" {
		return nil, nil
	}
	var out []string
	for v := range strings.SplitSeq(raw, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if _, ok := omVariables[v]; !ok {
			return nil, badRequest("Cannot initialize ForecastVariable from invalid String value %s.", v)
		}
		out = append(out, v)
	}
	return out, nil
}

func parseIntParam(q map[string][]string, key string, def, lo, hi int, name string) (int, *omError) {
	raw := first(q, key)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < lo || v > hi {
		return 0, badRequest("%s is invalid. Allowed range %d to %d.", name, lo, hi)
	}
	return v, nil
}

// hourRange returns the first and last hour of the hourly block.
func hourRange(q map[string][]string, now time.Time) (time.Time, time.Time, *omError) {
	sh, eh := first(q, "start_hour"), first(q, "end_hour")
	sd, ed := first(q, "start_date"), first(q, "end_date")
	switch {
	case sh != "" || eh != "":
		if sh == "" || eh == "" {
			return time.Time{}, time.Time{}, badRequest("Parameter 'start_hour' and 'end_hour' must be set both")
		}
		s, err1 := time.Parse("2006-01-02T15:04", sh)
		e, err2 := time.Parse("2006-01-02T15:04", eh)
		if err1 != nil || err2 != nil {
			return time.Time{}, time.Time{}, badRequest("Invalid date format. Make sure to use 'YYYY-MM-DDTHH:MM'")
		}
		s, e = s.Truncate(time.Hour), e.Truncate(time.Hour)
		if e.Before(s) {
			return time.Time{}, time.Time{}, badRequest("End-date must be larger or equals than start-date")
		}
		return s, e, nil
	case sd != "" || ed != "":
		if sd == "" || ed == "" {
			return time.Time{}, time.Time{}, badRequest("Parameter 'start_date' and 'end_date' must be set both")
		}
		s, err1 := time.Parse(time.DateOnly, sd)
		e, err2 := time.Parse(time.DateOnly, ed)
		if err1 != nil || err2 != nil {
			return time.Time{}, time.Time{}, badRequest("Invalid date format. Make sure to use 'YYYY-MM-DD'")
		}
		if e.Before(s) {
			return time.Time{}, time.Time{}, badRequest("End-date must be larger or equals than start-date")
		}
		return s, e.Add(23 * time.Hour), nil
	}
	past, perr := parseIntParam(q, "past_days", 0, 0, 92, "Past days")
	if perr != nil {
		return time.Time{}, time.Time{}, perr
	}
	fc, ferr := parseIntParam(q, "forecast_days", 7, 0, 16, "Forecast days")
	if ferr != nil {
		return time.Time{}, time.Time{}, ferr
	}
	day := now.UTC().Truncate(24 * time.Hour)
	s := day.AddDate(0, 0, -past)
	e := day.AddDate(0, 0, fc).Add(-time.Hour)
	return s, e, nil
}

// serveOpenMeteo answers GET /v1/forecast (archive false) or /v1/archive,
// applying the fault f.
func (s *Sim) serveOpenMeteo(w http.ResponseWriter, r *http.Request, archive bool, f Fault) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeOpenMeteoError(w, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}
	q := r.URL.Query()
	members, oe := s.forecast(q, archive)
	if oe != nil {
		writeOpenMeteoError(w, http.StatusBadRequest, oe.reason)
		return
	}
	if len(f.Missing) > 0 || f.Reverse {
		kept := make([][]byte, 0, len(members))
		for i, m := range members {
			if !slices.Contains(f.Missing, i) {
				kept = append(kept, m)
			}
		}
		if f.Reverse {
			slices.Reverse(kept)
		}
		s.faults.Add(1)
		members = kept
	}
	s.omRequests.Add(1)
	s.omLocations.Add(int64(len(members)))
	var b []byte
	if len(members) == 1 && len(first(q, "latitude")) > 0 && !strings.Contains(first(q, "latitude"), ",") {
		b = members[0]
	} else {
		b = append(b, '[')
		for i, m := range members {
			if i > 0 {
				b = append(b, ",\n"...)
			}
			b = append(b, m...)
		}
		b = append(b, ']')
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b)
	}
}

// forecastRange is how far back and ahead the simulated forecast API serves
// hours, as the real one: past_days up to 92, forecast_days up to 16.
const (
	forecastPastDays   = 92
	forecastFutureDays = 16
)

// archiveStart is the first day of the simulated archive API (ERA5: 1940).
var archiveStart = time.Date(1940, 1, 1, 0, 0, 0, 0, time.UTC)

// forecast returns the answer's members, one JSON object per location.
func (s *Sim) forecast(q map[string][]string, archive bool) ([][]byte, *omError) {
	if s.apiKey != "" && first(q, "apikey") != s.apiKey {
		return nil, badRequest("The supplied API key is invalid.")
	}
	lats, oe := parseCoords(q, "latitude")
	if oe != nil {
		return nil, oe
	}
	lons, oe := parseCoords(q, "longitude")
	if oe != nil {
		return nil, oe
	}
	if len(lats) != len(lons) {
		return nil, badRequest("Parameter 'latitude' and 'longitude' must have the same number of elements")
	}
	if len(lats) > MaxLocations {
		return nil, badRequest("Too many locations: %d. At most %d are allowed.", len(lats), MaxLocations)
	}
	for i := range lats {
		if lats[i] < -90 || lats[i] > 90 {
			return nil, badRequest("Latitude must be in range of -90 to 90°. Given: %s.", formatGiven(lats[i]))
		}
		if lons[i] < -180 || lons[i] > 180 {
			return nil, badRequest("Longitude must be in range of -180 to 180°. Given: %s.", formatGiven(lons[i]))
		}
	}
	switch tz := first(q, "timezone"); strings.ToUpper(tz) {
	case "", "GMT", "UTC", "AUTO":
	default:
		return nil, badRequest("Invalid timezone %s: the simulator answers in GMT only", tz)
	}
	current, oe := parseVariables(q, "current")
	if oe != nil {
		return nil, oe
	}
	if archive && len(current) > 0 {
		return nil, badRequest("Parameter 'current' is not supported by the historical weather API")
	}
	hourly, oe := parseVariables(q, "hourly")
	if oe != nil {
		return nil, oe
	}
	now := s.clock()
	today := now.UTC().Truncate(24 * time.Hour)
	var hStart, hEnd time.Time
	if archive {
		if first(q, "start_date") == "" || first(q, "end_date") == "" {
			return nil, badRequest("Parameter 'start_date' and 'end_date' are required")
		}
		if hStart, hEnd, oe = hourRange(q, now); oe != nil {
			return nil, oe
		}
		if hStart.Before(archiveStart) || hEnd.After(today.Add(23*time.Hour)) {
			return nil, badRequest("Parameter 'start_date' is out of allowed range from %s to %s",
				archiveStart.Format(time.DateOnly), today.Format(time.DateOnly))
		}
	} else if len(hourly) > 0 {
		if hStart, hEnd, oe = hourRange(q, now); oe != nil {
			return nil, oe
		}
		lo, hi := today.AddDate(0, 0, -forecastPastDays), today.AddDate(0, 0, forecastFutureDays)
		if hStart.Before(lo) || !hEnd.Before(hi) {
			return nil, badRequest("Parameter 'start_date' is out of allowed range from %s to %s",
				lo.Format(time.DateOnly), hi.AddDate(0, 0, -1).Format(time.DateOnly))
		}
	}
	if len(hourly) > 0 && hEnd.Sub(hStart) > (92+16)*24*time.Hour && !archive {
		return nil, badRequest("The time range is too long.")
	}
	if archive && hEnd.Sub(hStart) > 366*24*time.Hour {
		return nil, badRequest("The time range is too long.")
	}
	slot := weather.Slot(now)
	members := make([][]byte, len(lats))
	for i := range lats {
		cl, cn := Cell(lats[i], lons[i])
		var b []byte
		b = append(b, '{')
		if i > 0 {
			b = append(b, `"location_id":`...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, ',')
		}
		b = append(b, `"latitude":`...)
		b = strconv.AppendFloat(b, cl, 'f', -1, 64)
		b = append(b, `,"longitude":`...)
		b = strconv.AppendFloat(b, cn, 'f', -1, 64)
		b = append(b, `,"generationtime_ms":`...)
		b = strconv.AppendFloat(b, 0.02+float64(mix64(uint64(i)+uint64(slot.Unix()))%1000)/10000, 'f', -1, 64)
		b = append(b, `,"utc_offset_seconds":0,"timezone":"GMT","timezone_abbreviation":"GMT","elevation":`...)
		b = strconv.AppendFloat(b, Elevation(cl, cn), 'f', 1, 64)
		if len(current) > 0 {
			b = append(b, `,"current_units":{"time":"iso8601","interval":"seconds"`...)
			b = appendUnits(b, current)
			b = append(b, `},"current":{"time":"`...)
			b = slot.AppendFormat(b, "2006-01-02T15:04")
			b = append(b, `","interval":900`...)
			wx := Conditions(cl, cn, slot)
			day := IsDay(cl, cn, slot)
			for _, v := range current {
				b = append(b, `,"`...)
				b = append(b, v...)
				b = append(b, `":`...)
				b = omVariables[v].append(b, &wx, day)
			}
			b = append(b, '}')
		}
		if len(hourly) > 0 {
			b = append(b, `,"hourly_units":{"time":"iso8601"`...)
			b = appendUnits(b, hourly)
			b = append(b, `},"hourly":{"time":[`...)
			for t := hStart; !t.After(hEnd); t = t.Add(time.Hour) {
				if !t.Equal(hStart) {
					b = append(b, ',')
				}
				b = append(b, '"')
				b = t.AppendFormat(b, "2006-01-02T15:04")
				b = append(b, '"')
			}
			b = append(b, ']')
			n := int(hEnd.Sub(hStart)/time.Hour) + 1
			wxs := make([]event.Weather, n)
			days := make([]bool, n)
			for k := range n {
				t := hStart.Add(time.Duration(k) * time.Hour)
				wxs[k] = Conditions(cl, cn, t)
				days[k] = IsDay(cl, cn, t)
			}
			for _, v := range hourly {
				b = append(b, `,"`...)
				b = append(b, v...)
				b = append(b, `":[`...)
				for k := range wxs {
					if k > 0 {
						b = append(b, ',')
					}
					b = omVariables[v].append(b, &wxs[k], days[k])
				}
				b = append(b, ']')
			}
			b = append(b, '}')
		}
		b = append(b, '}')
		members[i] = b
	}
	return members, nil
}

func appendUnits(b []byte, vars []string) []byte {
	for _, v := range vars {
		b = append(b, `,"`...)
		b = append(b, v...)
		b = append(b, `":"`...)
		b = append(b, omVariables[v].unit...)
		b = append(b, '"')
	}
	return b
}
